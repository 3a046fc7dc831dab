"""What `honed serve RUN|EXPORT...` serves: one loaded base model per base, one LoRA adapter per run.

A target on the command line is a run directory (served by its name, from `--checkpoint`, default the
best one) or any Hugging Face model folder or `.gguf` file (an export, served by its folder name);
`NAME=PATH` picks another name. Runs trained with LoRA on the same base share one copy of the base
model: each run's adapter is loaded onto one `PeftModel` under its own adapter name and selected per
request (`set_adapter`), as vLLM serves many LoRA adapters on one base. Adapters stay unmerged, which
costs a few small matmuls per layer but keeps a single copy of the base weights. Full fine-tunes and
exports are whole models and get their own copy.

    served = load_targets(["runs/support", "runs/billing"])
    [s.name for s in served], served[0].model is served[1].model  # (['support', 'billing'], True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from honed.errors import ConfigError
from honed.model.prompt import render_messages
from honed.model.stops import StopRule
from honed.model.tools import CallFormat
from honed.runs.rundir import RunDir

NO_CONTEXT_LIMIT = 1 << 30


@dataclass(frozen=True)
class Target:
    """One thing to serve, before loading: its name, weights folder and (for an adapter) base model."""

    name: str
    weights: Path  # the adapter folder, the full model folder, or the .gguf file
    base: str | None  # the base model spec when `weights` is a LoRA adapter
    run: Path | None  # the run directory, when it came from one
    checkpoint: str  # what the request log records: checkpoints/step-N, final, or the export path


@dataclass(eq=False)
class ServedModel:
    """A name clients ask for, and what answers it."""

    name: str
    model: Any  # the torch module (shared by every adapter on the same base)
    tokenizer: Any
    adapter: str | None  # the peft adapter to select, None for a whole model
    stops: StopRule  # the end of turn and eos: ids, and the end of turn as a string when it is several tokens
    pad_id: int
    context_length: int
    run: Path | None
    checkpoint: str
    base: str
    created: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    tool_format: CallFormat | None = None  # how its chat template writes a tool call; None: it writes none
    tool_examples: int | None = None  # a run's training examples with tool calls; None: not a run (an export)

    def tools_refusal(self) -> str | None:
        """Why this model cannot take `tools` (None: it can): its template writes no tool calls, or it is a
        run that no tool-calling example trained."""
        if self.tool_format is None:
            return (f"the model '{self.name}' cannot call tools: its chat template does not write tool calls; "
                    "drop `tools`, or train with a template that does (`--chat-template chatml` writes them as "
                    "Qwen 2.5 does)")
        if self.tool_examples == 0:
            return (f"the run '{self.name}' was not trained on tool calls (no training example has an assistant "
                    "tool call), so it cannot call tools; drop `tools`, or train on tool-calling data (OpenAI "
                    "`tools`/`tool_calls` or ShareGPT function_call rows)")
        return None

    @property
    def stop_ids(self) -> list[int]:
        """The single-token stops (what the engines check per token and vLLM takes as stop_token_ids)."""
        return self.stops.id_list

    def render(self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None) -> list[int]:
        """Prompt token ids as training rendered them (honed.model.prompt): the run's template, with `tools`
        where given, plus the assistant header. Raises jinja2's TemplateError when the template refuses them."""
        return render_messages(messages, self.tokenizer, tools=tools)

    @property
    def default_log(self) -> Path:
        """Where its request log goes: RUN/requests.jsonl, or beside an export (docs/request-log.md)."""
        if self.run is not None:
            return RunDir(self.run).requests_log
        folder = Path(self.checkpoint)
        return (folder.parent if folder.is_file() else folder) / "requests.jsonl"


def parse_target(text: str, *, checkpoint: str = "best") -> Target:
    """`[NAME=]PATH` -> a Target. A run directory resolves its checkpoint; anything else is a model.

    >>> parse_target("tests/assets/tiny-llama").name
    'tiny-llama'
    """
    name, _, path_text = text.partition("=") if "=" in text and not Path(text).exists() else ("", "", text)
    path = Path(path_text).expanduser()
    if not path.exists():
        raise ConfigError(f"{path_text}: no such run directory or model; pass a `honed train --out` folder, "
                          "an exported model folder or a .gguf file")
    run = RunDir(path)
    if not run.is_run():
        from honed.model.loading import resolve

        resolve(str(path))  # a folder that is not a model is a ModelError naming it
        label = str(path.resolve())
        return Target(name=name or path.stem, weights=path, base=None, run=None, checkpoint=label)
    folder = run.resolve_checkpoint(checkpoint)
    relative = str(folder.relative_to(run.path)) if folder.is_relative_to(run.path) else str(folder)
    base = None
    if (folder / "adapter_config.json").is_file():
        base = run.base_model()
    return Target(name=name or run.path.resolve().name, weights=folder, base=base, run=run.path.resolve(),
                  checkpoint=relative)


def _check_names(targets: list[Target]) -> None:
    seen: dict[str, Path] = {}
    for target in targets:
        if not target.name:
            raise ConfigError(f"{target.weights}: empty model name; write NAME=PATH")
        if target.name in seen:
            raise ConfigError(f"two targets are both named '{target.name}' ({seen[target.name]} and "
                              f"{target.weights}); name one with NAME=PATH, e.g. {target.name}-2={target.weights}")
        seen[target.name] = target.weights


def _tokenizer_for(target: Target) -> Any:
    """A run's tokenizer with its stored template; an export's own tokenizer and template."""
    from honed.model.tokenizers import model_tokenizer, run_tokenizer

    if target.run is not None:
        return run_tokenizer(RunDir(target.run), target.weights if target.weights.is_dir() else None)[0]
    return model_tokenizer(str(target.weights))[0]


def tool_support(target: Target, tokenizer: Any) -> dict[str, Any]:
    """ServedModel's tool fields: the template's tool-call format, and a run's tool-calling examples."""
    from honed.model.template import end_of_turn_of
    from honed.model.tools import call_format

    template = getattr(tokenizer, "chat_template", None)
    fmt = call_format(tokenizer, end_of_turn_of(tokenizer, template)) if isinstance(template, str) and template else None
    examples = RunDir(target.run).read_data().tool_call_examples if target.run is not None else None
    return {"tool_format": fmt, "tool_examples": examples}


def _context_length(config: Any) -> int:
    value = getattr(config, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else NO_CONTEXT_LIMIT


def _load_adapters(base_spec: str, targets: list[Target], *, device: str, dtype: str) -> tuple[Any, list[str | None]]:
    """One base model with every target's adapter loaded under a safe internal name (a0, a1, ...).

    Run names may hold dots, which peft refuses in adapter names (they become module keys). A base that
    carries one adapter gets it merged into its weights, as `honed eval` loads a run (honed.model.run): the
    same numbers as the evaluation, and no LoRA matmuls per token (measured: one client's decode step 1.2x
    faster on smollm2-135m). Several adapters on one base stay apart, switched per batch.
    """
    from honed.model.loading import load_model, quiet_transformers
    from honed.model.run import fit_vocabulary, load_adapter, merged_model

    tokenizer = _tokenizer_for(targets[0])
    if len(targets) == 1:
        return merged_model(base_spec, targets[0].weights, tokenizer, device=device, dtype=dtype), [None]
    base = fit_vocabulary(load_model(base_spec, device=device, dtype=dtype), tokenizer)
    names: list[str | None] = [f"a{i}" for i in range(len(targets))]
    model = load_adapter(base, targets[0].weights, adapter_name=names[0])
    with quiet_transformers():  # as load_adapter: peft reads a deprecated transformers attribute
        for target, adapter in zip(targets[1:], names[1:]):
            model.load_adapter(str(target.weights), adapter_name=adapter)
    model.eval()
    return model, names


def load_targets(texts: list[str], *, checkpoint: str = "best", device: str = "cpu",
                 dtype: str = "float32") -> list[ServedModel]:
    """Load everything named on the command line; runs on one base share that base's weights."""
    import time

    from honed.model.decode import pad_token_id, stops_for
    from honed.model.loading import load_model

    if not texts:
        raise ConfigError("nothing to serve; pass one or more run directories or exported model folders")
    targets = [parse_target(text, checkpoint=checkpoint) for text in texts]
    _check_names(targets)
    loaded: dict[str, tuple[Any, str | None]] = {}
    by_base: dict[str, list[Target]] = {}
    for target in targets:
        if target.base is not None:
            by_base.setdefault(target.base, []).append(target)
        else:
            model = load_model(str(target.weights), device=device, dtype=dtype)
            loaded[target.name] = (model.eval(), None)
    for base_spec, group in by_base.items():
        model, adapters = _load_adapters(base_spec, group, device=device, dtype=dtype)
        loaded.update({t.name: (model, adapter) for t, adapter in zip(group, adapters)})
    served = []
    for target in targets:
        model, adapter = loaded[target.name]
        tokenizer = _tokenizer_for(target)
        stops = stops_for(tokenizer, model)
        served.append(ServedModel(
            name=target.name, model=model, tokenizer=tokenizer, adapter=adapter, stops=stops,
            pad_id=pad_token_id(tokenizer, stops), context_length=_context_length(model.config), run=target.run,
            checkpoint=target.checkpoint, base=target.base or str(target.weights), created=int(time.time()),
            **tool_support(target, tokenizer),
        ))
    return served


def vllm_front_models(targets: list[Target]) -> list[ServedModel]:
    """What honed's front needs when vLLM decodes: names, tokenizers, stop ids, context lengths; no weights."""
    import time

    from transformers import AutoConfig

    from honed.model.decode import pad_token_id, stops_for
    from honed.model.loading import local_path

    _check_names(targets)
    served = []
    for target in targets:
        tokenizer = _tokenizer_for(target)
        stops = stops_for(tokenizer)
        config = AutoConfig.from_pretrained(local_path(target.base)[0] if target.base else str(target.weights))
        served.append(ServedModel(
            name=target.name, model=None, tokenizer=tokenizer, adapter=None, stops=stops,
            pad_id=pad_token_id(tokenizer, stops), context_length=_context_length(config), run=target.run,
            checkpoint=target.checkpoint, base=target.base or str(target.weights), created=int(time.time()),
            **tool_support(target, tokenizer),
        ))
    return served
