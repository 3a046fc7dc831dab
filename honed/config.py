"""The training config: typed, validated, YAML in, every problem reported at once.

A config is built from three layers, later ones winning: the defaults below, a YAML file
(`--config run.yaml`), then `--set key=value` overrides and the common CLI flags. Every problem
(unknown field, wrong type, out-of-range value) is collected and raised once as a ConfigError listing
`field: problem`. The fully resolved config (learning rate and epochs filled in, paths absolute) is
saved as `config.yaml` in the run directory, so a run can always be repeated and resumed.

Defaults aim at a good first run: LoRA r=16 on all linear layers, the learning rate from the method and the
model's width (honed.train.hparams: 1.3e-3 for LoRA on SmolLM2-135M), cosine schedule with 3% warmup,
AdamW without weight decay, gradient clipping at 1.0, `epochs: auto` (auto_epochs below).

>>> cfg = load_config(None, overrides=["lora.r=8", "epochs=2"])
>>> cfg.lora.r, cfg.epochs
(8, 2)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from honed.errors import ConfigError

# `epochs: auto` follows the rule the OpenAI fine-tuning API documents: aim for 3 epochs, but make sure
# a tiny dataset is seen at least ~100 times in total and a large one no more than ~25,000 examples,
# capped to 1..10 epochs.
AUTO_TARGET_EPOCHS = 3
AUTO_MIN_EXAMPLES_SEEN = 100
AUTO_MAX_EXAMPLES_SEEN = 25_000
AUTO_MIN_EPOCHS = 1
AUTO_MAX_EPOCHS = 10


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoraSettings(_Strict):
    """LoRA adapter shape; `target_modules: all-linear` adapts every linear layer except the output head."""

    r: int = Field(16, ge=1, le=1024)
    alpha: float = Field(32.0, gt=0)
    # 0 as peft, torchtune, LLaMA-Factory and Unsloth default: a dropout mask on the input of every adapted
    # layer cost 1.28x in training steps here (smollm2-135m, 16 banking77 chats a step, CPU: 226 vs 290 tokens/s),
    # and early stopping on the holdout already guards against overfitting (BENCHMARKS.md, banking77).
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: str | list[str] = "all-linear"


class DataSettings(_Strict):
    """Where the examples come from. Without `holdout`, `holdout_fraction` of train is split off.

    `format`, `prompt_col`, `response_col`, `system` and `system_col` are read as `honed data check`
    reads them (e.g. banking77's CSV: prompt_col text, response_col category); `train`/`holdout` may be a
    file, a folder of shards, a glob or a save_to_disk folder; `skip_invalid` drops bad rows (written to
    `<input>.invalid.jsonl`) instead of stopping; `strict` refuses data holding content a text model does
    not train on (images, `<image>` placeholders, double-encoded tool arguments) instead of warning.
    """

    train: str | None = None
    holdout: str | None = None
    format: str = "auto"
    prompt_col: str | None = None
    response_col: str | None = None
    system: str | None = None
    system_col: str | None = None
    skip_invalid: bool = False
    strict: bool = False
    holdout_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    split_seed: int = Field(0, ge=0, le=2**32 - 1)
    eval_max_examples: int | None = Field(None, ge=1)
    # Continuing a run with new data (train --from-run): this share of the new examples' count is drawn
    # (seeded) from `mix_from`, the parent's training data, and trained on too, against forgetting.
    mix_from: str | None = None
    mix_ratio: float = Field(0.0, ge=0.0, le=10.0)


class TrainConfig(_Strict):
    """Everything a training run needs. See the module docstring for the layering rules."""

    model: str = "smollm2-135m"
    # A family name (chatml, gemma, llama3, phi3, mistral) or a .jinja file; None: the model's own template,
    # else its family's (honed.model.template). The choice is stored in RUN/template.json.
    chat_template: str | None = None
    method: Literal["lora", "full", "qlora"] = "lora"
    # Start from these weights instead of fresh LoRA / the base model: a run's checkpoint folder (an adapter
    # for lora, a whole model for full). `parent_run` is that run's directory, recorded as the lineage.
    init_from: str | None = None
    parent_run: str | None = None
    data: DataSettings = DataSettings()
    lora: LoraSettings = LoraSettings()
    lr: float | None = Field(None, gt=0, lt=1)
    epochs: int | str = "auto"
    max_steps: int | None = Field(None, ge=1)
    max_length: int = Field(1024, ge=8)
    batch_size: int = Field(16, ge=1, description="examples per optimizer step (all ranks together)")
    micro_batch_tokens: int = Field(4096, ge=8, description="token budget of one forward/backward pass")
    packing: bool = True
    loss_chunk_size: int = Field(1024, ge=1, description="supervised positions per lm_head chunk")
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(0.03, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = Field(1.0, gt=0)
    seed: int = Field(0, ge=0, le=2**32 - 1, description="numpy and torch accept 0..2**32-1")
    eval_every: int | None = Field(None, ge=1, description="steps between holdout evals; None = ~5 per run, fewer when a short run cannot afford them")
    # Intermediate holdout evaluations use a fixed seeded sample of this many examples; step 0, the end and
    # the best checkpoint use the full holdout. auto: evaluations cost about 10% of training (at least 200).
    eval_subsample: int | str | None = Field("auto", description="examples per intermediate eval; auto; None = full holdout")
    save_every: int | None = Field(None, ge=1, description="steps between checkpoints; None = at each eval")
    keep_last: int = Field(1, ge=1, description="recent checkpoints kept besides the best one")
    early_stopping_patience: int | None = Field(3, ge=1, description="evals without improvement; None = off")
    select_by: str = "holdout_loss"
    # Task metric during training (honed.evaluate.scorer): generated answers on a fixed holdout sample,
    # logged as holdout_<metric>; `select_by: holdout_field_f1` then picks the checkpoint by it.
    eval_metric: str | None = Field(None, description="auto, field_f1, label_accuracy, ... or module:function; None = off")
    eval_metric_examples: int = Field(64, ge=1, description="holdout examples generated for eval_metric")
    final: Literal["best", "last"] = "best"
    merge: bool = False
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    compile: Literal["auto", "on", "off"] = Field(
        "auto", description="torch.compile each decoder layer; auto = runs of >= 200 steps in one process (honed/train/compile.py)"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    sharding: Literal["auto", "none", "fsdp"] = Field(
        "auto", description="with --nproc: fsdp shards the model (FSDP2); auto = fsdp for full fine-tuning on GPUs"
    )
    num_threads: int | None = Field(None, ge=1)
    log_every: int = Field(1, ge=1)
    # Experiment trackers the finished run is exported to (honed.report.trackers): mlflow, tensorboard,
    # wandb. `--set tracking=mlflow`, `tracking=mlflow,tensorboard` or a YAML list.
    tracking: list[Literal["mlflow", "tensorboard", "wandb"]] = Field(default_factory=list)

    @field_validator("epochs", mode="before")
    @classmethod
    def _epochs_int_or_auto(cls, value: Any) -> int | str:
        if value == "auto":
            return value
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
        raise ValueError("must be a whole number of epochs >= 1, or 'auto'")

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_yaml_booleans(cls, value: Any) -> Any:
        # YAML reads `compile: on` / `--set compile=off` as a boolean
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    @field_validator("eval_subsample", mode="before")
    @classmethod
    def _subsample_int_auto_or_none(cls, value: Any) -> int | str | None:
        if value is None or value == "auto":
            return value
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
        raise ValueError("must be a number of examples >= 1, 'auto', or null (always the full holdout)")
    @field_validator("tracking", mode="before")
    @classmethod
    def _tracking_list(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, str):  # "mlflow" or "mlflow,tensorboard" from --set
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("adam_betas")
    @classmethod
    def _betas_in_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        # AdamW would otherwise refuse them with a bare ValueError after the model is loaded.
        if not all(0.0 <= beta < 1.0 for beta in value):
            raise ValueError("both betas must be in [0, 1), e.g. [0.9, 0.999]")
        return value

    def resolved_lr(self) -> float:
        """The lr a run uses. `lr: null` means honed's rule for the model's width, which only
        honed.train.build.resolve_config can apply (it needs the model), so there is no second default here."""
        if self.lr is None:
            raise RuntimeError("lr is not resolved: pass the config through honed.train.build.resolve_config first")
        return self.lr


def auto_epochs(n_examples: int) -> int:
    """The `epochs: auto` rule (OpenAI's documented default, capped to 1..10).

    >>> auto_epochs(20), auto_epochs(1000), auto_epochs(20000)
    (5, 3, 1)
    """
    if n_examples <= 0:
        return AUTO_MIN_EPOCHS
    epochs = AUTO_TARGET_EPOCHS
    if n_examples * AUTO_TARGET_EPOCHS < AUTO_MIN_EXAMPLES_SEEN:
        epochs = math.ceil(AUTO_MIN_EXAMPLES_SEEN / n_examples)
    elif n_examples * AUTO_TARGET_EPOCHS > AUTO_MAX_EXAMPLES_SEEN:
        epochs = AUTO_MAX_EXAMPLES_SEEN // n_examples
    return max(AUTO_MIN_EPOCHS, min(AUTO_MAX_EPOCHS, epochs))


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. --set lora.r=8")
    key, raw = text.split("=", 1)
    # YAML parses the value, so `lr=1e-4`, `packing=false` and `target_modules=[q_proj,v_proj]` all work.
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML ({exc})") from exc
    return key.strip().split("."), value


def apply_overrides(base: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `base` with dotted `key=value` overrides applied.

    >>> apply_overrides({"lora": {"r": 16}}, ["lora.r=8", "lr=0.0001"])
    {'lora': {'r': 8}, 'lr': 0.0001}
    """
    out: dict[str, Any] = _deep_copy(base)
    for text in overrides:
        keys, value = _parse_override(text)
        node = out
        for key in keys[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                child = {}
                node[key] = child
            node = child
        node[keys[-1]] = value
    return out


def _deep_copy(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in obj.items()}


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing, unreadable or bad file (or a key given twice) is a ConfigError naming it."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"--config {path}: is a folder, not a YAML file; pass the config file itself, e.g. {path}/run.yaml")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save the config as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}:{yaml_error_line(exc)}: not valid YAML: {yaml_problem(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config fields at the top level")
    return data


def yaml_error_line(exc: yaml.YAMLError) -> str:
    """The 1-based line of a YAML error ("?" when PyYAML gives none)."""
    mark = getattr(exc, "problem_mark", None)
    return str(mark.line + 1) if mark is not None else "?"


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error on one line (PyYAML's own text spans several, with a caret drawing)."""
    problem = getattr(exc, "problem", None)
    context = getattr(exc, "context", None)
    return " ".join(str(part) for part in (context, problem) if part) or str(exc).splitlines()[0]


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML silently keeps the last one,
    so `lr: 1e-4 ... lr: 1e-3` would train with a value the user may not have meant)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}' (line {line}; first given on line {seen[key]}): keep one",
                    key_node.start_mark)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _format_error(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "(config)"
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown field (check the spelling; see `honed train --help`)"
    return f"{where}: {error['msg']} (got {error.get('input')!r})"


def validate_config(data: dict[str, Any], *, origin: str = "config") -> TrainConfig:
    """Validate a plain mapping into a TrainConfig, raising one ConfigError listing every problem."""
    try:
        config = TrainConfig.model_validate(data)
    except ValidationError as exc:
        problems = [_format_error(e) for e in exc.errors()]
        raise ConfigError(f"{origin} has {len(problems)} problem(s); fix them and retry", details=problems)
    _check_cross_field(config, origin=origin)
    return config


def _check_cross_field(config: TrainConfig, *, origin: str) -> None:
    problems: list[str] = []
    if config.max_length > config.micro_batch_tokens:
        problems.append(
            f"micro_batch_tokens: must be at least max_length ({config.max_length}) so the longest example fits"
        )
    if (config.data.prompt_col is None) != (config.data.response_col is None):
        problems.append("data.prompt_col: prompt_col and response_col go together; set both column names")
    if config.merge and config.method == "full":
        problems.append("merge: only meaningful for lora/qlora (full fine-tuning already saves whole weights)")
    if problems:
        raise ConfigError(f"{origin} has {len(problems)} problem(s); fix them and retry", details=problems)


def load_config(
    path: str | Path | None, *, overrides: list[str] | None = None, flags: dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
) -> TrainConfig:
    """Defaults <- `base` (a parent run's config) <- YAML file <- `--set` overrides <- CLI flags (None
    flags are ignored).

    >>> load_config(None, flags={"method": "full", "lr": 1e-5}).resolved_lr()
    1e-05
    """
    data = _deep_merge(base or {}, read_yaml(path) if path is not None else {})
    data = apply_overrides(data, list(overrides or []))
    for key, value in (flags or {}).items():
        if value is not None:
            _set_dotted(data, key, value)
    origin = str(path) if path is not None else "config"
    return validate_config(data, origin=origin)


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`base` with `top`'s values over it, nested mappings merged key by key."""
    out = dict(base)
    for key, value in top.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def config_to_yaml(config: TrainConfig) -> str:
    """The YAML text saved as RUN_DIR/config.yaml (round-trips through load_config)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def flatten_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"lora": {"r": 8}} -> {"lora.r": 8}: dotted keys, as `--set` takes them and trackers want them.

    >>> flatten_config({"lora": {"r": 8}, "lr": 1e-4})
    {'lora.r': 8, 'lr': 0.0001}
    """
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        out.update(flatten_config(value, name) if isinstance(value, dict) else {name: value})
    return out
