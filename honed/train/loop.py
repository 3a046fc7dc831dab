"""The training loop: one explicit `fit`, no Trainer.

`train(config, out=RUN_DIR)` does, top to bottom:
  1. open the run directory (fresh, or `resume=True` to continue from its newest complete checkpoint);
  2. read the data, split a holdout off when none is given, resolve `epochs: auto` and the learning rate,
     save config.yaml, data.json and run.json, and register the run;
  3. render every example once (honed.data.render decides the loss mask), report truncation, refuse data
     without supervised tokens, print the first example's mask preview;
  4. build the model (LoRA through peft, full, or QLoRA on a GPU), AdamW and a warmup + cosine schedule;
  5. fit: per optimizer step, take `batch_size` examples in the (seed, epoch) order, split them into
     micro-batches, accumulate sum-of-token-losses / (supervised tokens of the whole step, all ranks),
     clip, step; evaluate the holdout every `eval_every` steps (and at step 0: the "before" number),
     keep the best checkpoint, stop early when the selected metric stops improving;
  6. export final/ (and merged/ on request) and mark the run completed.

Distributed (torchrun): when torch.distributed is initialised, each rank takes its share of every step's
examples, the loss normaliser and the gradients are summed over ranks, and only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from rich.console import Console

from honed.config import DataSettings, TrainConfig, auto_epochs, config_to_yaml, validate_config
from honed.data.read import ColumnMapping, load_or_fail, sha256_file, write_jsonl
from honed.data.render import Rendered, ensure_chat_template, render_batch
from honed.data.types import Conversation
from honed.errors import ConfigError, DataError, HonedError
from honed.atomic import write_text_atomic
from honed.registry import record_run
from honed.rundir import DataRecord, FileEntry, RunDir, RunRecord, SplitRecord, now_iso
from honed.train import checkpoint as ckpt
from honed.train.batching import Example, MicroBatch, micro_batches, shard, step_examples, steps_in_epoch
from honed.train.distributed import all_reduce_gradients, gathered_state, pad_micro_batch_count, prepare_model
from honed.train.guards import DataSummary, Watchdog, mask_preview, require_targets, summarise
from honed.train.loss import loss_sum, model_parts, step_normaliser, token_losses

ScoreFn = Callable[[Any, Any], dict[str, float]]
EVALS_PER_RUN = 5


@dataclass(frozen=True)
class RunResult:
    """What `train` returns: where the run is and how it went.

    `first_eval` is the holdout evaluation at step 0 (before training), `last_eval` the last one.
    """

    run_dir: Path
    status: str
    steps: int
    best: dict[str, Any]
    best_checkpoint: str | None
    final_dir: Path | None
    first_eval: dict[str, float]
    last_eval: dict[str, float]


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def dist_info() -> Dist:
    """Rank and world size when launched by torchrun with an initialised process group, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return Dist(
            rank=torch.distributed.get_rank(),
            world_size=torch.distributed.get_world_size(),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        )
    return Dist()


def all_reduce_sum(values: list[float], *, dist: Dist, device: str) -> list[float]:
    """Sum a few numbers over ranks (identity when not distributed)."""
    if not dist.active:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(tensor)
    return tensor.tolist()


def sync_gradients(params: Sequence[torch.nn.Parameter], *, dist: Dist) -> None:
    """Sum gradients over ranks: each rank already divided by the global token count, so a sum is exact."""
    if not dist.active:
        return
    # One collective over a flat buffer instead of one per parameter (LoRA has ~400 small tensors).
    all_reduce_gradients(params)


# ---------------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class Datasets:
    train: list[Conversation]
    holdout: list[Conversation]
    info: DataRecord


def _file_entry(path: str | Path, count: int) -> FileEntry:
    return FileEntry(path=str(Path(path).resolve()), sha256=sha256_file(path), count=count)


def split_holdout(
    conversations: Sequence[Conversation], *, fraction: float, seed: int
) -> tuple[list[Conversation], list[Conversation]]:
    """The same deterministic, leak-free split as `honed data split` (near duplicates stay on one side,
    label-like data is stratified). `fraction` 0 means no holdout."""
    from honed.data.split import split_conversations

    if fraction <= 0:
        return list(conversations), []
    result = split_conversations(conversations, holdout_fraction=fraction, seed=seed)
    return result.train, result.holdout


def read_data(path: str, settings: DataSettings, *, log: Callable[[str], None]) -> list[Conversation]:
    """Read one data file as `honed data check` does; with skip_invalid, bad rows are set aside and counted."""
    columns = None
    if settings.prompt_col and settings.response_col:
        columns = ColumnMapping(settings.prompt_col, settings.response_col, system=settings.system)
    result = load_or_fail(path, fmt=settings.format, columns=columns, skip_invalid=settings.skip_invalid)
    if result.bad_rows:
        log(f"skipped {len(result.bad_rows)} invalid row(s) of {path}; they are in {result.invalid_path}")
    if not result.conversations:
        raise DataError(f"{path}: no examples found; the file is empty")
    return result.conversations


def load_datasets(config: TrainConfig, run_dir: Path, *, write: bool, log: Callable[[str], None]) -> Datasets:
    """Read train (and holdout) data; split a holdout off train when none is given and say so."""
    if not config.data.train:
        raise ConfigError("data.train: no training data given; pass --data TRAIN.jsonl")
    train = read_data(config.data.train, config.data, log=log)
    if config.data.holdout:
        holdout = read_data(config.data.holdout, config.data, log=log)
        info = DataRecord(
            train=_file_entry(config.data.train, len(train)), holdout=_file_entry(config.data.holdout, len(holdout))
        )
        return Datasets(train, holdout, info)
    fraction, seed = config.data.holdout_fraction, config.data.split_seed
    train_part, holdout_part = split_holdout(train, fraction=fraction, seed=seed)
    if holdout_part:
        log(
            f"no --holdout given: split {len(holdout_part)} of {len(train)} examples off as holdout "
            f"(fraction {fraction}, seed {seed}; written to {run_dir / 'data'})"
        )
    else:
        log("no holdout (data.holdout_fraction is 0): no evaluation, no early stopping; final/ = the last weights")
    train_path, holdout_path = run_dir / "data" / "train.jsonl", run_dir / "data" / "holdout.jsonl"
    if write:
        write_jsonl(train_path, train_part)
        write_jsonl(holdout_path, holdout_part)
    info = DataRecord(
        train=_file_entry(train_path, len(train_part)) if write else None,
        holdout=_file_entry(holdout_path, len(holdout_part)) if write else None,
        split=SplitRecord(seed=seed, holdout_fraction=fraction, source=_file_entry(config.data.train, len(train))),
    )
    return Datasets(train_part, holdout_part, info)


def load_run_datasets(run_dir: Path, settings: DataSettings) -> Datasets:
    """On resume: read exactly the files recorded in data.json and check they have not changed."""
    info = RunDir(run_dir).read_data()
    parts: dict[str, list[Conversation]] = {}
    for name, entry in (("train", info.train), ("holdout", info.holdout)):
        if entry is None or entry.count == 0:  # holdout_fraction 0 writes an empty holdout file
            parts[name] = []
            continue
        if not Path(entry.path).is_file():
            raise DataError(
                f"{entry.path}: the run's {name} file is gone (recorded in data.json); resume needs the same "
                "data: restore the file or start a new run with another --out"
            )
        if sha256_file(entry.path) != entry.sha256:
            raise DataError(
                f"{entry.path} changed since the run started (sha256 differs from data.json); "
                "resume needs the same data: restore the file or start a new run with another --out"
            )
        parts[name] = read_data(entry.path, settings, log=lambda message: None)
    return Datasets(parts["train"], parts["holdout"], info)


def to_examples(
    conversations: Sequence[Conversation], tokenizer: Any, *, max_length: int
) -> tuple[list[Example], DataSummary, list[Rendered]]:
    """Render once; keep the examples with at least one target (indexed 0..n-1 in that order)."""
    rendered = render_batch(conversations, tokenizer, max_length=max_length)
    kept = [r for r in rendered if sum(r.loss_mask[1:]) > 0]
    examples = [Example(index=k, input_ids=r.input_ids, loss_mask=r.loss_mask) for k, r in enumerate(kept)]
    return examples, summarise(rendered), rendered


# ---------------------------------------------------------------------------------------------------
# Config resolution, device and model


def resolve_config(config: TrainConfig, *, num_train: int) -> TrainConfig:
    """Fill in what `auto`/None stood for, so config.yaml says exactly what ran."""
    from honed.models import resolve

    source = resolve(config.model)
    model = config.model if (source.builtin or source.is_hub) else str(Path(config.model).resolve())
    data = config.data.model_copy(
        update={
            "train": str(Path(config.data.train).resolve()) if config.data.train else None,
            "holdout": str(Path(config.data.holdout).resolve()) if config.data.holdout else None,
        }
    )
    epochs = auto_epochs(num_train) if config.epochs == "auto" else config.epochs
    return config.model_copy(update={"model": model, "data": data, "epochs": epochs, "lr": config.resolved_lr()})


def resolve_device(config: TrainConfig, *, dist: Dist) -> tuple[str, torch.dtype | None]:
    """(device, autocast dtype or None). bf16 and QLoRA need a CUDA GPU; the error says so on CPU."""
    has_cuda = torch.cuda.is_available()
    if config.device == "cuda" and not has_cuda:
        raise ConfigError("device: cuda was asked for but no CUDA GPU is visible; use device: auto or cpu")
    use_cuda = has_cuda and config.device != "cpu"
    if config.method == "qlora" and not use_cuda:
        raise ConfigError(
            "method: qlora needs a CUDA GPU (bitsandbytes 4-bit kernels); on this machine use method: lora"
        )
    if config.precision == "bf16" and not use_cuda and not cpu_has_fast_bf16():
        raise ConfigError(
            "precision: bf16 needs a CUDA GPU or a CPU with AMX / AVX-512 BF16; this CPU has neither "
            "(fp32 is faster here): use precision: auto or fp32"
        )
    device = f"cuda:{dist.local_rank}" if use_cuda else "cpu"
    if use_cuda:
        bf16 = config.precision in ("auto", "bf16") and torch.cuda.is_bf16_supported()
    else:
        # On CPU, auto stays fp32 (exact, reproducible across machines); bf16 autocast is opt-in. Measured
        # with AMX: LoRA forward+backward of smollm2-135m ~1.5x faster than fp32 (BENCHMARKS.md).
        bf16 = config.precision == "bf16"
    return device, (torch.bfloat16 if bf16 else None)


def cpu_has_fast_bf16() -> bool:
    """True when this CPU multiplies bf16 in hardware (AMX tiles or AVX-512 BF16), so autocast pays off."""
    get_capabilities = getattr(torch.cpu, "get_capabilities", None)  # torch >= 2.9
    capabilities = get_capabilities() if get_capabilities is not None else {}
    return bool(capabilities.get("amx_bf16") or capabilities.get("avx512_bf16"))


def build_model(config: TrainConfig, *, device: str) -> Any:
    """Base model plus, for LoRA/QLoRA, a peft adapter on `lora.target_modules`; weights in fp32."""
    from honed.models import load_model

    if config.method == "qlora":
        model = _load_4bit(config.model, device=device)
    else:
        model = load_model(config.model, device=device)
    if config.method == "full":
        model.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=config.lora.target_modules,
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():
        # peft 0.21 reads transformers' deprecated `is_gradient_checkpointing`; the warning is theirs, not ours.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        try:
            return get_peft_model(model, lora)
        except ValueError as exc:  # peft: "Target modules {...} not found in the base model"
            linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
            raise ConfigError(
                f"lora.target_modules: {str(exc).rstrip('.')}; this model's linear layers are {', '.join(linear)} "
                "(or use all-linear)"
            ) from exc


def _load_4bit(spec: str, *, device: str) -> Any:
    """QLoRA base: 4-bit NF4 weights with bf16 compute (bitsandbytes, GPU only)."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise ConfigError("method: qlora needs the bitsandbytes package: pip install bitsandbytes") from exc
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from honed.models import local_path

    path, gguf_file = local_path(spec)
    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch.bfloat16,
        bnb_4bit_use_double_quant=True,
    )
    extra: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {"use_safetensors": True}
    model = AutoModelForCausalLM.from_pretrained(
        path, quantization_config=quant, dtype=torch.bfloat16, device_map={"": device}, **extra
    )
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def lr_factor(step_index: int, *, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the base lr for the `step_index`-th optimizer step (0-based): linear warmup, then
    cosine/linear decay towards 0 (never exactly 0 on the last step) or constant.

    >>> [round(lr_factor(i, total_steps=4, warmup_steps=1, schedule="cosine"), 3) for i in range(4)]
    [1.0, 0.854, 0.5, 0.146]
    """
    if step_index < warmup_steps:
        return (step_index + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step_index - warmup_steps + 1) / max(1, total_steps - warmup_steps + 1)
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(model: Any, config: TrainConfig, *, total_steps: int) -> tuple[torch.optim.Optimizer, Any]:
    params = [p for p in model.parameters() if p.requires_grad]
    # fused: one kernel for all parameters instead of a dozen ops per tensor (LoRA has ~400 small ones);
    # measured on 2 shared CPU cores, the per-op thread sync of the unfused step cost up to seconds a step.
    optimizer = torch.optim.AdamW(
        params, lr=config.resolved_lr(), betas=tuple(config.adam_betas), weight_decay=config.weight_decay, fused=True
    )
    warmup = max(1, math.ceil(config.warmup_ratio * total_steps)) if config.warmup_ratio > 0 else 0

    def factor(step_index: int) -> float:
        return lr_factor(step_index, total_steps=total_steps, warmup_steps=warmup, schedule=config.schedule)

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ---------------------------------------------------------------------------------------------------
# Evaluation and metrics


def evaluate(
    model: Any, batches: Sequence[MicroBatch], *, chunk_size: int, device: str, autocast: torch.dtype | None, dist: Dist
) -> dict[str, float]:
    """Holdout loss (mean over all supervised tokens) and token accuracy (argmax == target)."""
    was_training = model.training
    model.eval()
    parts = model_parts(model)
    loss_total, correct_total, count = 0.0, 0.0, 0.0
    with torch.no_grad(), _autocast(device, autocast):
        for batch in batches:
            losses, correct = token_losses(model, batch.to(device), chunk_size=chunk_size, parts=parts)
            loss_total += float(losses.double().sum())
            correct_total += float(correct.double().sum())
            count += losses.numel()
    loss_total, correct_total, count = all_reduce_sum([loss_total, correct_total, count], dist=dist, device=device)
    model.train(was_training)
    if count == 0:
        return {}
    return {"holdout_loss": loss_total / count, "holdout_token_accuracy": correct_total / count}


def _autocast(device: str, dtype: torch.dtype | None) -> Any:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype)


def _score(score_fn: ScoreFn | None, model: Any, tokenizer: Any, *, dist: Dist) -> dict[str, float]:
    """Run the task-metric hook on rank 0 and share its numbers, so every rank decides alike."""
    if score_fn is None:
        return {}
    was_training = model.training
    model.eval()
    scores = [dict(score_fn(model, tokenizer)) if dist.is_main else None]
    model.train(was_training)
    if dist.active:
        torch.distributed.broadcast_object_list(scores, src=0)
    return {k: float(v) for k, v in (scores[0] or {}).items()}


def lower_is_better(metric: str) -> bool:
    return metric.endswith("loss")


class MetricsLog:
    """metrics.jsonl: one JSON object per line, flushed as written (rank 0 only)."""

    def __init__(self, path: Path, *, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled

    def truncate_after(self, step: int) -> None:
        """Drop lines past `step` (written by a run killed after its last checkpoint) and torn lines."""
        if not self.enabled or not self.path.is_file():
            return
        kept: list[str] = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("step", 0) <= step:
                kept.append(line)
        write_text_atomic(self.path, "".join(f"{line}\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


# ---------------------------------------------------------------------------------------------------
# The fit loop


@dataclass
class TrainState:
    """Everything besides weights/optimizer that resume needs (saved as trainer_state.json)."""

    step: int = 0
    best_value: float | None = None
    best_step: int | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    bad_evals: int = 0
    stopped_early: bool = False
    first_eval: dict[str, float] = field(default_factory=dict)
    last_eval: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainState:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass
class Fit:
    """The pieces one run's loop works with (built by `train`)."""

    config: TrainConfig
    run_dir: Path
    model: Any
    tokenizer: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train: list[Example]
    holdout_batches: list[MicroBatch]
    total_steps: int
    eval_every: int
    save_every: int
    device: str
    autocast: torch.dtype | None
    dist: Dist
    console: Console
    metrics: MetricsLog
    score_fn: ScoreFn | None = None
    # Whether ANY rank has holdout examples: a rank whose share is empty must still join the evaluation's
    # collectives, so this cannot be read off this rank's own holdout_batches.
    has_holdout: bool = False

    @property
    def steps_per_epoch(self) -> int:
        return steps_in_epoch(len(self.train), batch_size=self.config.batch_size)


def train_step(fit: Fit, step: int) -> dict[str, Any]:
    """Forward and backward of one optimizer step: accumulate the step's micro-batches, each normalised
    by the supervised tokens of the whole step, then sum gradients over ranks and clip. The caller checks
    the numbers and applies the update."""
    config = fit.config
    epoch, indices = step_examples(len(fit.train), seed=config.seed, step=step, batch_size=config.batch_size)
    mine = [fit.train[i] for i in shard(indices, rank=fit.dist.rank, world_size=fit.dist.world_size)]
    pad_id = fit.tokenizer.pad_token_id or 0
    batches = micro_batches(
        mine, max_tokens=config.micro_batch_tokens, packing=config.packing, row_capacity=config.max_length, pad_id=pad_id
    )
    batches = pad_micro_batch_count(batches, model=fit.model, pad_id=pad_id)
    normaliser = step_normaliser(batches, device=fit.device)
    parts = model_parts(fit.model)
    loss_total = 0.0
    for batch in batches:
        with _autocast(fit.device, fit.autocast):
            summed = loss_sum(fit.model, batch.to(fit.device), chunk_size=config.loss_chunk_size, parts=parts)
        (summed / normaliser).backward()
        loss_total += float(summed.detach())
    params = [p for p in fit.model.parameters() if p.requires_grad]
    sync_gradients(params, dist=fit.dist)
    tokens = sum(b.num_tokens for b in batches)
    loss_total, tokens = all_reduce_sum([loss_total, float(tokens)], dist=fit.dist, device=fit.device)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip or float("inf"))
    if hasattr(grad_norm, "full_tensor"):  # FSDP2: a DTensor, the same total norm on every rank
        grad_norm = grad_norm.full_tensor()
    lr = fit.scheduler.get_last_lr()[0]
    return {
        "step": step,
        "epoch": round(epoch + ((step - 1) % fit.steps_per_epoch + 1) / fit.steps_per_epoch, 4),
        "loss": loss_total / normaliser,
        "lr": lr,
        "grad_norm": float(grad_norm),
        "tokens": int(tokens),
        "supervised_tokens": normaliser,
    }


def run_eval(fit: Fit) -> dict[str, float]:
    config = fit.config
    metrics = evaluate(
        fit.model, fit.holdout_batches, chunk_size=config.loss_chunk_size, device=fit.device, autocast=fit.autocast, dist=fit.dist
    )
    metrics.update(_score(fit.score_fn, fit.model, fit.tokenizer, dist=fit.dist))
    return metrics


def check_select_by(select_by: str, metrics: dict[str, float]) -> None:
    if select_by not in metrics:
        raise ConfigError(
            f"select_by: '{select_by}' is not among the evaluation metrics ({', '.join(sorted(metrics))}); "
            "use holdout_loss or a metric the scoring function returns"
        )


def update_best(state: TrainState, metrics: dict[str, float], *, step: int, select_by: str) -> bool:
    """Record `metrics` as the best when the selected metric improved; return whether it did."""
    check_select_by(select_by, metrics)
    value = metrics[select_by]
    better = state.best_value is None or (
        value < state.best_value if lower_is_better(select_by) else value > state.best_value
    )
    if better:
        state.best_value, state.best_step, state.best_metrics = value, step, dict(metrics)
        state.bad_evals = 0
    else:
        state.bad_evals += 1
    return better


def save(fit: Fit, state: TrainState) -> None:
    gathered = gathered_state(fit.model, fit.optimizer)  # FSDP2: every rank helps gather the shards
    if not fit.dist.is_main:
        return
    ckpt.save_checkpoint(
        fit.run_dir,
        state.step,
        model=fit.model,
        tokenizer=fit.tokenizer,
        optimizer=fit.optimizer,
        scheduler=fit.scheduler,
        trainer_state=state.to_json(),
        gathered=gathered,
    )
    keep = {ckpt.checkpoint_name(state.best_step)} if state.best_step else set()
    ckpt.prune(fit.run_dir, keep_last=fit.config.keep_last, keep=keep)


def fit_loop(fit: Fit, state: TrainState) -> TrainState:
    """Run optimizer steps from `state.step + 1` to the end (or an early stop)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    config = fit.config
    watchdog = Watchdog(lr=config.resolved_lr())
    has_holdout = fit.has_holdout or fit.score_fn is not None
    if state.step == 0 and has_holdout:
        state.first_eval = state.last_eval = run_eval(fit)
        check_select_by(config.select_by, state.first_eval)
        fit.metrics.write({"step": 0, "epoch": 0.0, **state.first_eval})
        _say(fit, "before training: " + _format_metrics(state.first_eval))
    columns = (
        TextColumn("step {task.completed}/{task.total}"),
        BarColumn(),
        TextColumn("loss {task.fields[loss]}  {task.fields[tps]} tok/s"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=fit.console, disable=not fit.dist.is_main) as progress:
        task = progress.add_task("train", total=fit.total_steps, completed=state.step, loss="-", tps="-")
        # A run resumed from its early-stop checkpoint (killed while exporting final/) is already done.
        last_step = state.step if state.stopped_early else fit.total_steps
        for step in range(state.step + 1, last_step + 1):
            started = time.perf_counter()
            record = train_step(fit, step)
            # Checked before the update, so a NaN never reaches the weights or a checkpoint.
            for warning in watchdog.check(step=step, loss=record["loss"], grad_norm=record["grad_norm"]):
                _say(fit, f"[yellow]warning:[/] {warning}")
            fit.optimizer.step()
            fit.scheduler.step()
            fit.optimizer.zero_grad(set_to_none=True)
            # Real (non-padding) tokens over the whole step, optimizer included.
            record["tokens_per_s"] = round(record["tokens"] / max(time.perf_counter() - started, 1e-9), 1)
            state.step = step
            improved = False
            if has_holdout and (step % fit.eval_every == 0 or step == fit.total_steps):
                state.last_eval = run_eval(fit)
                record.update(state.last_eval)
                improved = update_best(state, state.last_eval, step=step, select_by=config.select_by)
                before, now = state.first_eval.get("holdout_loss"), state.last_eval.get("holdout_loss")
                for warning in watchdog.check_eval(step=step, before=before, now=now):
                    _say(fit, f"[yellow]warning:[/] {warning}")
                _say(fit, f"step {step}: " + _format_metrics(state.last_eval) + (" (best)" if improved else ""))
                patience = config.early_stopping_patience
                state.stopped_early = patience is not None and state.bad_evals >= patience and step < fit.total_steps
            fit.metrics.write(record)
            progress.update(task, completed=step, loss=f"{record['loss']:.4f}", tps=f"{record['tokens_per_s']:.0f}")
            if improved or step % fit.save_every == 0 or step == fit.total_steps or state.stopped_early:
                save(fit, state)
            if state.stopped_early:
                _say(fit, f"early stop at step {step}: {config.select_by} did not improve for {state.bad_evals} evals")
                break
    return state


def _format_metrics(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())


def _say(fit: Fit, message: str) -> None:
    if fit.dist.is_main:
        fit.console.print(message)


# ---------------------------------------------------------------------------------------------------
# The public entry point


def train(
    config: TrainConfig,
    *,
    out: str | Path,
    resume: bool = False,
    score_fn: ScoreFn | None = None,
    console: Console | None = None,
) -> RunResult:
    """Train a model as `config` says, into the run directory `out`; see the module docstring.

    `score_fn(model, tokenizer) -> {"holdout_<metric>": value}` is called at every evaluation (rank 0,
    model in eval mode); its numbers go to metrics.jsonl and `select_by` may name one of them (higher is
    better, unless the name ends in "loss"). Without it, `eval_metric` in the config builds one.

    >>> from honed.config import load_config
    >>> result = train(load_config("run.yaml"), out="runs/first")  # doctest: +SKIP
    >>> result.first_eval["holdout_loss"], result.best["holdout_loss"]  # doctest: +SKIP
    (2.31, 0.84)
    """
    from honed.models import resolve

    console = console or Console()
    dist = dist_info()
    run_dir = Path(out)
    if not resume:  # fail on a bad model spec or a GPU-only option before anything is written
        resolve(config.model)
        resolve_device(config, dist=dist)
    config, datasets = _open_run(config, run_dir, resume=resume, dist=dist, console=console)
    if score_fn is None:  # `eval_metric` in the config: generate on a holdout sample at each eval (honed.evaluate)
        from honed.evaluate.scorer import score_fn_from_config

        score_fn = score_fn_from_config(config, datasets.holdout)
    torch.set_num_threads(config.num_threads or max(1, (os.cpu_count() or 1) // max(1, _local_world_size())))
    torch.manual_seed(config.seed)
    run = RunDir(run_dir)
    record = run.read_run() if resume else RunRecord(name=run.name)
    record = record.model_copy(update={"name": run.name, "status": "running", "model": config.model,
                                       "method": config.method, "started_at": record.started_at or now_iso(),
                                       "finished_at": None})
    _write_run(run, record, dist=dist)
    try:
        fit, state = _prepare(config, run_dir, datasets, resume=resume, dist=dist, console=console, score_fn=score_fn)
        state = fit_loop(fit, state)
        final_dir = _finish(fit, state)
    except KeyboardInterrupt:
        _write_run(run, record.model_copy(update={"status": "stopped", "finished_at": now_iso()}), dist=dist)
        raise
    except BaseException as exc:
        failed = {"status": "failed", "finished_at": now_iso(), "error": _message(exc)}
        _write_run(run, record.model_copy(update=failed), dist=dist)
        raise
    best_checkpoint = f"checkpoints/{ckpt.checkpoint_name(state.best_step)}" if state.best_step else None
    best = {"step": state.best_step, **state.best_metrics} if state.best_step else {}
    record = record.model_copy(
        update={
            "status": "completed",
            "finished_at": now_iso(),
            "steps": state.step,
            "stopped_early": state.stopped_early,
            "best_checkpoint": best_checkpoint,
            "best": best,
            "selected_by": config.select_by if state.best_step else "last",
            "first_eval": state.first_eval,
            "last_eval": state.last_eval,
        }
    )
    _write_run(run, record, dist=dist)
    return RunResult(run_dir, "completed", state.step, best, best_checkpoint, final_dir, state.first_eval, state.last_eval)


def _message(exc: BaseException) -> str:
    return exc.message if isinstance(exc, HonedError) else f"{type(exc).__name__}: {exc}"


def _local_world_size() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", 1))


def _write_run(run: RunDir, record: RunRecord, *, dist: Dist) -> None:
    if not dist.is_main:
        return
    run.write_run(record)
    record_run(run)


def _open_run(
    config: TrainConfig, run_dir: Path, *, resume: bool, dist: Dist, console: Console
) -> tuple[TrainConfig, Datasets]:
    """Fresh run: check `out` is new, read/split data, save config.yaml + data.json.
    Resume: reload the saved config and the exact data files it recorded."""

    def log(message: str) -> None:
        if dist.is_main:
            console.print(message)

    if resume:
        run = RunDir(run_dir)
        if not run.is_run():
            raise ConfigError(f"--resume: {run_dir} has no config.yaml; it is not a run started by `honed train`")
        saved = validate_config(run.read_config(), origin=str(run.config_yaml))
        return saved, load_run_datasets(run_dir, saved.data)
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(f"--out {run_dir} already exists and is not empty; pass --resume to continue it or choose a new --out")
    if dist.active:
        torch.distributed.barrier()  # every rank has seen an empty --out before rank 0 writes into it
    datasets = load_datasets(config, run_dir, write=dist.is_main, log=log)
    if dist.active:
        torch.distributed.barrier()  # rank 0 has written the split files before anyone goes on
    resolved = resolve_config(config, num_train=len(datasets.train))
    if dist.is_main:
        RunDir(run_dir).write_config(config_to_yaml(resolved))
        RunDir(run_dir).write_data(datasets.info)
    return resolved, datasets


def _prepare(
    config: TrainConfig,
    run_dir: Path,
    datasets: Datasets,
    *,
    resume: bool,
    dist: Dist,
    console: Console,
    score_fn: ScoreFn | None,
) -> tuple[Fit, TrainState]:
    """Render data, run the guards, build model/optimizer, and restore a checkpoint when resuming."""
    from honed.models import load_tokenizer

    tokenizer = ensure_chat_template(load_tokenizer(config.model))
    train_examples, summary, rendered = to_examples(datasets.train, tokenizer, max_length=config.max_length)
    require_targets(summary, path=str(config.data.train), max_length=config.max_length)
    holdout_examples, _, _ = to_examples(datasets.holdout, tokenizer, max_length=config.max_length)
    if config.data.eval_max_examples is not None:
        holdout_examples = holdout_examples[: config.data.eval_max_examples]
    if dist.is_main:
        for line in summary.lines(max_length=config.max_length):
            console.print(line)
        first = next(r for r in rendered if sum(r.loss_mask[1:]) > 0)
        console.print("first example ([bold green]«trained on»[/], [dim]context[/]):")
        console.print(mask_preview(first, tokenizer), soft_wrap=True)
    device, autocast = resolve_device(config, dist=dist)
    model = build_model(config, device=device)
    model = prepare_model(  # FSDP2 when asked (or full fine-tuning on several GPUs); else unchanged
        model, sharding=config.sharding, method=config.method, device=device, world_size=dist.world_size,
        resume=resume, task_metric=score_fn is not None,
    )
    steps_per_epoch = steps_in_epoch(len(train_examples), batch_size=config.batch_size)
    total_steps = int(config.epochs) * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    optimizer, scheduler = build_optimizer(model, config, total_steps=total_steps)
    eval_every = config.eval_every or max(1, math.ceil(total_steps / EVALS_PER_RUN))
    pad_id = tokenizer.pad_token_id or 0
    holdout_batches = micro_batches(
        shard(holdout_examples, rank=dist.rank, world_size=dist.world_size),
        max_tokens=config.micro_batch_tokens,
        packing=config.packing,
        row_capacity=config.max_length,
        pad_id=pad_id,
    )
    holdout_batches = pad_micro_batch_count(holdout_batches, model=model, pad_id=pad_id)
    metrics = MetricsLog(run_dir / "metrics.jsonl", enabled=dist.is_main)
    fit = Fit(
        config=config,
        run_dir=run_dir,
        model=model,
        tokenizer=tokenizer,
        optimizer=optimizer,
        scheduler=scheduler,
        train=train_examples,
        holdout_batches=holdout_batches,
        total_steps=total_steps,
        eval_every=eval_every,
        save_every=config.save_every or eval_every,
        device=device,
        autocast=autocast,
        dist=dist,
        console=console,
        metrics=metrics,
        score_fn=score_fn,
        has_holdout=bool(holdout_examples),
    )
    state = TrainState()
    if resume:
        state = _restore(fit)
    elif dist.is_main:
        console.print(
            f"training {config.method} on {config.model}: {len(train_examples)} examples, "
            f"{config.epochs} epoch(s), {total_steps} steps of {config.batch_size}, lr {config.resolved_lr():g}, "
            f"{len(holdout_examples)} holdout examples, device {device}"
        )
    return fit, state


def _restore(fit: Fit) -> TrainState:
    """Load the newest complete checkpoint (temp folders are ignored) and trim metrics past it."""
    if fit.dist.is_main:
        ckpt.clean_temp(fit.run_dir)
    if fit.dist.active:
        torch.distributed.barrier()
    latest = ckpt.latest_checkpoint(fit.run_dir)
    if latest is None:
        _say(fit, "--resume: no complete checkpoint yet; starting from step 0")
        fit.metrics.truncate_after(-1)
        return TrainState()
    saved = ckpt.load_checkpoint(latest, model=fit.model, optimizer=fit.optimizer, scheduler=fit.scheduler)
    state = TrainState.from_json(saved)
    fit.metrics.truncate_after(state.step)
    _say(fit, f"resuming from {latest.relative_to(fit.run_dir)} (step {state.step} of {fit.total_steps})")
    return state


def _finish(fit: Fit, state: TrainState) -> Path | None:
    """Export final/ (the best or the last checkpoint, as config.final says) and merged/ on request."""
    if not fit.dist.is_main:
        return None
    use_best = fit.config.final == "best" and state.best_step is not None
    source = fit.run_dir / "checkpoints" / ckpt.checkpoint_name(state.best_step if use_best else state.step)
    if not source.is_dir():  # the last step is always saved; this only guards odd configs
        save(fit, state)
        source = fit.run_dir / "checkpoints" / ckpt.checkpoint_name(state.step)
    final_dir = ckpt.export_final(source, fit.run_dir / "final")
    fit.console.print(f"final weights ({'best' if use_best else 'last'} checkpoint, {source.name}) in {final_dir}")
    if fit.config.merge:
        merged = ckpt.export_merged(fit.config.model, final_dir, fit.run_dir / "merged")
        fit.console.print(f"merged weights in {merged}")
    return final_dir
