"""The run's life cycle and the training loop: one explicit loop, no Trainer framework.

`train(config, out=RUN_DIR)` does, top to bottom:
  1. open the run directory (fresh, or `resume=True` to continue from its newest complete checkpoint):
     read the data and split a holdout off when none is given (honed.train.data), resolve `epochs: auto`
     and the learning rate (honed.train.build), save config.yaml, data.json and run.json, register the run;
  2. build the pieces (`Trainer.__init__`): render every example once and run the data guards, the model
     and optimizer (honed.train.build), the holdout evaluator (honed.train.evaluator), the checkpointer
     (honed.train.checkpoint) and metrics.jsonl (honed.train.metrics_log); on resume, restore the state;
  3. loop (`Trainer.fit`): for each optimizer step, `train_step` -> `evaluator.maybe_evaluate` ->
     `checkpointer.maybe_save`; the evaluator decides when to evaluate, which step is best and when to
     stop early, the checkpointer when to save and what to keep;
  4. export final/ (and merged/ on request) and mark the run completed (or failed / stopped).

A step: take `batch_size` examples in the (seed, epoch) order, split them into micro-batches, accumulate
sum-of-token-losses / (supervised tokens of the whole step, all ranks), sum gradients over ranks, clip,
check the numbers (honed.train.guards), step.

Distributed (torchrun): when torch.distributed is initialised, each rank takes its share of every step's
examples, the loss normaliser and the gradients are summed over ranks, and only rank 0 writes files
(honed.train.distributed.Dist says which rank this is).

The task metric (`eval_metric` in the config) is generation-based evaluation, which belongs to the
evaluate stage; train does not import it (stages only meet through the run directory): the caller passes
`make_score_fn` (the CLI passes `score_fn_from_config` of the evaluate stage's scorer module) or a ready
`score_fn`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from rich.console import Console

from honed.config import TrainConfig, config_to_yaml
from honed.data.types import Conversation
from honed.errors import ConfigError, HonedError
from honed.machine import machine_info
from honed.model.template import ChatTemplate, write_template
from honed.runs.registry import record_run
from honed.runs.rundir import RunDir, RunRecord, now_iso
from honed.threads import apply_threads
from honed.train.batching import (
    Example, micro_batches, packed_row_capacity, shard, shared_prefix_length, step_examples, steps_in_epoch,
)
from honed.train.build import attention_length, build_model, build_optimizer, quiet_transformers, resolve_config, resolve_device, total_steps
from honed.train.checkpoint import Checkpointer
from honed.train.compile import compile_layers, compile_plan
from honed.train.data import Datasets, load_datasets, load_run_datasets, to_examples
from honed.train.distributed import Dist, all_reduce_gradients, is_fsdp, pad_micro_batch_count, prepare_model
from honed.train.evaluator import (
    Evaluation, HoldoutEvaluator, ScoreFn, autocast, eval_interval, holdout_sample, subsample_size,
)
from honed.train.guards import Watchdog, mask_preview, require_end_of_turn, require_targets
from honed.train.loss import loss_sum, model_parts, step_normaliser
from honed.train.metrics_log import MetricsLog, TrainProgress
from honed.train.timings import Timings
from honed.train.ownership import owning, refuse_existing
from honed.train.preflight import check_before_writing, require_scorer

MakeScoreFn = Callable[[TrainConfig, Sequence[Conversation]], "ScoreFn | None"]


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


# ---------------------------------------------------------------------------------------------------
# The pieces and the loop


class Trainer:
    """One run's pieces, built from its config, and the loop over them."""

    def __init__(
        self, config: TrainConfig, run: RunDir, datasets: Datasets, *, resume: bool, dist: Dist, console: Console,
        score_fn: ScoreFn | None, timings: Timings | None = None,
    ) -> None:
        self.config, self.run, self.dist, self.console = config, run, dist, console
        self.timings = timings or Timings()
        with self.timings.phase("render"):
            self.tokenizer, self.template = load_tokenizer(config, run, resume=resume)
            if dist.is_main:
                write_template(run.template_json, self.template)
            self.say(f"chat template: {self.template.name} (end of turn {self.template.end_of_turn!r}): "
                     f"{self.template.reason}")
            self.examples, holdout = render_examples(config, datasets, self.tokenizer, self.template, dist=dist,
                                                     console=console)
        self.device, self.autocast = resolve_device(config, dist=dist)
        with self.timings.phase("model"):
            self.model = prepare_model(  # FSDP2 when asked (or full fine-tuning on several GPUs); else unchanged
                build_model(config, device=self.device, tokenizer=self.tokenizer,
                            added_tokens=self.template.added_tokens),
                sharding=config.sharding, method=config.method,
                device=self.device, world_size=dist.world_size, resume=resume, task_metric=score_fn is not None,
            )
        self.attention_length = attention_length(self.model)  # how long packed rows with a shared prefix may be
        self.total_steps = total_steps(config, num_examples=len(self.examples))
        compiling, why = compile_plan(config, total_steps=self.total_steps, world_size=dist.world_size,
                                      task_metric=score_fn is not None, device=self.device)
        if compiling:
            compile_layers(self.model)
        if compiling or config.compile == "on":
            self.say(why)
        self.optimizer, self.scheduler = build_optimizer(self.model, config, total_steps=self.total_steps)
        self.evaluator = self.build_evaluator(holdout, score_fn=score_fn)
        self.checkpointer = Checkpointer(
            run.path, model=self.model, tokenizer=self.tokenizer, optimizer=self.optimizer, scheduler=self.scheduler,
            save_every=config.save_every or self.evaluator.eval_every, keep_last=config.keep_last,
            total_steps=self.total_steps, dist=dist, log=self.say,
        )
        self.metrics = MetricsLog(run.metrics_jsonl, enabled=dist.is_main)
        self.watchdog = Watchdog(lr=config.resolved_lr())
        self.step = 0
        if resume:
            self.restore()
        else:
            self.say(
                f"training {config.method} on {config.model}: {len(self.examples)} examples, "
                f"{config.epochs} epoch(s), {self.total_steps} steps of {config.batch_size}, "
                f"lr {config.resolved_lr():g}, {len(holdout)} holdout examples, device {self.device}"
            )
        prefix = shared_prefix_length(self.examples) if config.packing else 0
        if prefix:
            self.say(f"every example starts with the same {prefix} tokens: packed rows hold them once (exact)")
        if self.evaluator.sample_size:
            self.say(f"intermediate evaluations on a fixed sample of {self.evaluator.sample_size} holdout examples "
                     "(eval_subsample); step 0, the last step and the best checkpoint on all of them")

    def say(self, message: str) -> None:
        if self.dist.is_main:
            self.console.print(message)

    def build_evaluator(self, holdout: list[Example], *, score_fn: ScoreFn | None) -> HoldoutEvaluator:
        """The holdout evaluator over this rank's share of the holdout (and of its fixed sample)."""
        config, dist = self.config, self.dist
        every = eval_interval(config, total_steps=self.total_steps, holdout=len(holdout))
        size = subsample_size(
            config.eval_subsample, holdout=len(holdout), total_steps=self.total_steps, batch_size=config.batch_size,
            eval_every=every,
        )
        if is_fsdp(self.model):  # the best checkpoint cannot be loaded back into sharded weights (yet)
            size = None
        sample = None
        if size is not None:
            chosen = holdout_sample(holdout, size=size, seed=config.seed)
            sample = (size, self.micro_batches(shard(chosen, rank=dist.rank, world_size=dist.world_size)))
        return HoldoutEvaluator(
            self.micro_batches(shard(holdout, rank=dist.rank, world_size=dist.world_size)), sample=sample,
            config=config, total_steps=self.total_steps, eval_every=every, dist=dist, device=self.device,
            autocast=self.autocast, score_fn=score_fn, has_holdout=bool(holdout),
        )

    def micro_batches(self, examples: list[Example]) -> list[Any]:
        """`examples` as micro-batches of at most `micro_batch_tokens` (the same count on every rank under FSDP2)."""
        pad_id = self.tokenizer.pad_token_id or 0
        prefix = shared_prefix_length(examples) if self.config.packing else 0
        capacity = packed_row_capacity(examples, max_length=self.config.max_length, shared_prefix=prefix,
                                       attention_length=self.attention_length)
        batches = micro_batches(
            examples, max_tokens=self.config.micro_batch_tokens, packing=self.config.packing,
            row_capacity=capacity, pad_id=pad_id, shared_prefix=prefix,
        )
        return pad_micro_batch_count(batches, model=self.model, pad_id=pad_id)

    def trainer_state(self) -> dict[str, Any]:
        """What resume needs besides weights and optimizer (trainer_state.json)."""
        return {"step": self.step, **self.evaluator.state_dict()}

    def restore(self) -> None:
        """Continue from the newest complete checkpoint and drop metrics.jsonl lines written after it."""
        restored = self.checkpointer.restore()
        if restored is None:
            self.say("--resume: no complete checkpoint yet; starting from step 0")
            self.metrics.truncate_after(-1)
            return
        folder, saved = restored
        self.step = int(saved["step"])
        self.evaluator.load_state_dict(saved)
        self.metrics.truncate_after(self.step if self.step else -1)  # from step 0 (--from-run), fit evaluates it again
        self.say(f"resuming from {folder.relative_to(self.run.path)} (step {self.step} of {self.total_steps})")

    def fit(self) -> None:
        """Optimizer steps from the restored step to the end, or to an early stop."""
        # A run resumed from its early-stop checkpoint (killed while exporting final/) is already done.
        last_step = self.step if self.evaluator.stopped_early else self.total_steps
        with TrainProgress(self.console, total=self.total_steps, start_step=self.step, enabled=self.dist.is_main) as progress:
            if self.step == 0:
                with progress.phase("evaluating the holdout before training"), self.timings.phase("evaluations"):
                    self.evaluate_before_training()
                progress.start_clock()  # elapsed and eta count the steps
            for step in range(self.step + 1, last_step + 1):
                with self.timings.phase("steps"):
                    record = self.train_step(step)
                with progress.phase(f"evaluating the holdout after step {step}"), self.timings.phase("evaluations"):
                    evaluation = self.evaluator.maybe_evaluate(self.model, self.tokenizer, step=step)
                if evaluation is not None:
                    record.update(evaluation.record())
                    self.report(evaluation)
                self.metrics.write(record)
                progress.update(step, loss=record["loss"], tokens_per_s=record["tokens_per_s"])
                with progress.phase(f"saving the checkpoint of step {step}"), self.timings.phase("checkpoints"):
                    self.checkpointer.maybe_save(
                        step, trainer_state=self.trainer_state(), best_step=self.evaluator.best_step,
                        improved=evaluation is not None and evaluation.improved, stopping=self.evaluator.stopped_early,
                    )
                if self.evaluator.stopped_early:
                    self.say(f"early stop at step {step}: {self.config.select_by} did not improve "
                             f"for {self.evaluator.state.bad_evals} evals")
                    break

    def evaluate_before_training(self) -> None:
        first = self.evaluator.evaluate_before_training(self.model, self.tokenizer)
        if first is not None:
            self.metrics.write({"step": 0, "epoch": 0.0, **first})
            self.say("before training: " + format_metrics(first))
        if self.evaluator.best_step == 0:  # started from a parent's weights: they are a checkpoint candidate
            self.checkpointer.save(0, trainer_state=self.trainer_state(), best_step=0)

    def report(self, evaluation: Evaluation) -> None:
        """Print an evaluation and the guards' warnings about it (a holdout loss that never moves)."""
        before = self.evaluator.reference().get("holdout_loss")  # step 0 on the same examples
        now = evaluation.metrics.get("holdout_loss")
        for warning in self.watchdog.check_eval(step=evaluation.step, before=before, now=now):
            self.say(f"[yellow]warning:[/] {warning}")
        best = " (best)" if evaluation.improved else ""
        self.say(f"step {evaluation.step}: " + format_metrics(evaluation.metrics) + best)

    def train_step(self, step: int) -> dict[str, Any]:
        """One optimizer step: forward and backward over the step's micro-batches, each normalised by the
        supervised tokens of the whole step; gradients summed over ranks and clipped; the numbers checked
        before the update (so a NaN never reaches the weights or a checkpoint); then the update."""
        started = time.perf_counter()
        record = self.forward_backward(step)
        for warning in self.watchdog.check(step=step, loss=record["loss"], grad_norm=record["grad_norm"]):
            self.say(f"[yellow]warning:[/] {warning}")
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step = step
        # Real (non-padding) tokens over the whole step, optimizer included.
        record["tokens_per_s"] = round(record["tokens"] / max(time.perf_counter() - started, 1e-9), 1)
        return record

    def forward_backward(self, step: int) -> dict[str, Any]:
        """Accumulate the step's gradients; return its record (loss, lr, grad norm, tokens) for metrics.jsonl."""
        config, dist = self.config, self.dist
        epoch, indices = step_examples(len(self.examples), seed=config.seed, step=step, batch_size=config.batch_size)
        batches = self.micro_batches([self.examples[i] for i in shard(indices, rank=dist.rank, world_size=dist.world_size)])
        normaliser = step_normaliser(batches, device=self.device)
        parts = model_parts(self.model)
        loss_total = 0.0
        for batch in batches:
            with autocast(self.device, self.autocast):
                summed = loss_sum(self.model, batch.to(self.device), chunk_size=config.loss_chunk_size, parts=parts)
            (summed / normaliser).backward()
            loss_total += float(summed.detach())
        params = [p for p in self.model.parameters() if p.requires_grad]
        # Each rank already divided by the global token count, so a sum over ranks is exact.
        all_reduce_gradients(params)
        tokens = sum(b.num_tokens for b in batches)
        loss_total, tokens = dist.all_reduce_sum([loss_total, float(tokens)], device=self.device)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip or float("inf"))
        if hasattr(grad_norm, "full_tensor"):  # FSDP2: a DTensor, the same total norm on every rank
            grad_norm = grad_norm.full_tensor()
        per_epoch = steps_in_epoch(len(self.examples), batch_size=config.batch_size)
        return {
            "step": step,
            "epoch": round(epoch + ((step - 1) % per_epoch + 1) / per_epoch, 4),
            "loss": loss_total / normaliser,
            "lr": self.scheduler.get_last_lr()[0],
            "grad_norm": float(grad_norm),
            "tokens": int(tokens),
            "supervised_tokens": normaliser,
        }

    def finish(self) -> Path | None:
        """Evaluate the full holdout when the evaluations were sampled; export final/ (the best or the last
        checkpoint, as config.final says) and merged/ on request."""
        self.evaluator.evaluate_at_end(self.model, self.tokenizer, step=self.step, load_best=self.checkpointer.load)
        return self.checkpointer.export(
            step=self.step, best_step=self.evaluator.best_step, final=self.config.final,
            merge_with=self.config.model if self.config.merge else None, trainer_state=self.trainer_state(),
        )


def load_tokenizer(config: TrainConfig, run: RunDir, *, resume: bool) -> tuple[Any, ChatTemplate]:
    """The model's tokenizer with its chat template: chosen for a new run (honed.model.template), the
    stored one when resuming, so a resumed run renders exactly as it started."""
    from honed.model.tokenizers import model_tokenizer, run_tokenizer

    with quiet_transformers():
        if resume and run.template_json.is_file():
            return run_tokenizer(run)
        return model_tokenizer(config.model, chat_template=config.chat_template)


def render_examples(
    config: TrainConfig, datasets: Datasets, tokenizer: Any, template: ChatTemplate, *, dist: Dist, console: Console
) -> tuple[list[Example], list[Example]]:
    """Render train and holdout once; refuse data without supervised tokens or without the end of turn in
    them; on rank 0 print the data summary (truncation) and the first example's loss-mask preview."""
    train_examples, summary, rendered = to_examples(datasets.train, tokenizer, max_length=config.max_length)
    require_targets(summary, path=str(config.data.train), max_length=config.max_length)
    eos = str(tokenizer.eos_token or "")
    ends = [eos if c.plain else template.end_of_turn for c in datasets.train]
    require_end_of_turn(rendered, ends, tokenizer, path=str(config.data.train))
    holdout, _, _ = to_examples(datasets.holdout, tokenizer, max_length=config.max_length)
    if config.data.eval_max_examples is not None:
        holdout = holdout[: config.data.eval_max_examples]
    if dist.is_main:
        for line in summary.lines(max_length=config.max_length):
            console.print(line)
        first = next(r for r in rendered if sum(r.loss_mask[1:]) > 0)
        console.print("first example ([bold green]«trained on»[/], [dim]context[/]):")
        console.print(mask_preview(first, tokenizer), soft_wrap=True)
    return train_examples, holdout


def format_metrics(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())


# ---------------------------------------------------------------------------------------------------
# The run's life cycle


def train(
    config: TrainConfig,
    *,
    out: str | Path,
    resume: bool = False,
    score_fn: ScoreFn | None = None,
    make_score_fn: MakeScoreFn | None = None,
    console: Console | None = None,
    force: bool = False,
    discard_completed: bool = False,
) -> RunResult:
    """Train a model as `config` says, into the run directory `out`; see the module docstring.

    `score_fn(model, tokenizer) -> {"holdout_<metric>": value}` is called at every evaluation (rank 0,
    model in eval mode); its numbers go to metrics.jsonl and `select_by` may name one of them (higher is
    better, unless the name ends in "loss"). `make_score_fn(config, holdout)` builds one from the run's
    resolved config and holdout (on resume too); `eval_metric` in the config needs one of the two.

    Usage: `train(load_config("run.yaml"), out="runs/first", make_score_fn=score_fn_from_config).best`
    (`honed train` calls it; tests/unit/test_train_loop.py and tests/e2e/test_train_cli.py run it).
    """
    console = console or Console()
    dist = Dist.current()
    run = RunDir(out)
    if not resume:  # fail on a bad model spec, a GPU-only option or a missing scorer before anything is written
        check_before_writing(config, dist=dist, has_scorer=score_fn is not None or make_score_fn is not None,
                             score_fn_given=score_fn is not None)
    # --force clears a failed (or, with discard_completed, a completed) run in `out` once the lock is held.
    with owning(run, command="train --resume" if resume else "train", dist=dist, force=force and not resume,
                discard_completed=discard_completed):
        return _train(config, run, resume=resume, score_fn=score_fn, make_score_fn=make_score_fn, dist=dist,
                      console=console)


def _train(config: TrainConfig, run: RunDir, *, resume: bool, score_fn: ScoreFn | None,
           make_score_fn: MakeScoreFn | None, dist: Dist, console: Console) -> RunResult:
    timings = Timings()
    timings.mark_start()
    with timings.phase("data"):
        config, datasets = open_run(config, run, resume=resume, dist=dist, console=console)
    if score_fn is None and make_score_fn is not None:
        score_fn = make_score_fn(config, datasets.holdout)
    require_scorer(config, has_scorer=score_fn is not None)
    apply_threads(config.num_threads, processes=dist.local_world_size)  # the rule: honed/threads.py
    torch.manual_seed(config.seed)
    record = started_record(run, config, resume=resume, device=dist.device(config.device))
    write_run(run, record, dist=dist)
    try:
        trainer = Trainer(config, run, datasets, resume=resume, dist=dist, console=console, score_fn=score_fn,
                          timings=timings)
        trainer.fit()
        with timings.phase("checkpoints"):
            final_dir = trainer.finish()
    except KeyboardInterrupt:
        write_run(run, record.model_copy(update={"status": "stopped", "finished_at": now_iso()}), dist=dist)
        raise
    except BaseException as exc:
        failed = {"status": "failed", "finished_at": now_iso(), "error": _message(exc)}
        write_run(run, record.model_copy(update=failed), dist=dist)
        raise
    record = completed_record(record, trainer).model_copy(update={"timings": timings.record()})
    write_run(run, record, dist=dist)
    trainer.say(timings.line())
    return RunResult(
        run.path, "completed", trainer.step, record.best, record.best_checkpoint, final_dir,
        record.first_eval, record.last_eval,
    )


def started_record(run: RunDir, config: TrainConfig, *, resume: bool, device: str) -> RunRecord:
    record = run.read_run() if resume else RunRecord(name=run.name)
    return record.model_copy(update={
        "name": run.name, "status": "running", "model": config.model, "method": config.method,
        "started_at": record.started_at or now_iso(), "finished_at": None, "parent": config.parent_run,
        "machine": machine_info(device),  # a resumed run records the machine it finished on
    })


def completed_record(record: RunRecord, trainer: Trainer) -> RunRecord:
    state, best_step = trainer.evaluator.state, trainer.evaluator.best_step
    return record.model_copy(update={
        "status": "completed",
        "finished_at": now_iso(),
        "steps": trainer.step,
        "stopped_early": state.stopped_early,
        "best_checkpoint": f"checkpoints/{trainer.run.checkpoint(best_step).name}" if best_step is not None else None,
        "best": trainer.evaluator.best(),
        "selected_by": trainer.config.select_by if best_step is not None else "last",
        "first_eval": state.first_eval,
        "last_eval": state.last_eval,
    })


def _message(exc: BaseException) -> str:
    return exc.message if isinstance(exc, HonedError) else f"{type(exc).__name__}: {exc}"


def write_run(run: RunDir, record: RunRecord, *, dist: Dist) -> None:
    """run.json and the registry row (rank 0 only)."""
    if not dist.is_main:
        return
    run.write_run(record)
    record_run(run)


def open_run(
    config: TrainConfig, run: RunDir, *, resume: bool, dist: Dist, console: Console
) -> tuple[TrainConfig, Datasets]:
    """Fresh run: check `out` is new, read/split data, save config.yaml + data.json.
    Resume: reload the saved config and the exact data files it recorded."""

    def log(message: str) -> None:
        if dist.is_main:
            console.print(message)

    if resume:
        if not run.is_run():
            raise ConfigError(f"--resume: {run.path} has no config.yaml; it is not a run started by `honed train`")
        saved = run.config()
        return saved, load_run_datasets(run.path, saved.data)
    if not run.is_empty():
        raise refuse_existing(run)  # says what the folder holds and whether --resume or --force recovers it
    dist.barrier()  # every rank has seen an empty --out before rank 0 writes into it
    datasets = load_datasets(config, run.path, write=dist.is_main, log=log)
    dist.barrier()  # rank 0 has written the split files before anyone goes on
    resolved = resolve_config(config, num_train=len(datasets.train))
    if dist.is_main:
        run.write_config(config_to_yaml(resolved))
        calls = sum(1 for c in datasets.train if any(m.tool_calls and m.trainable for m in c.messages))
        run.write_data(datasets.info.model_copy(update={"tool_call_examples": calls}))
    return resolved, datasets
