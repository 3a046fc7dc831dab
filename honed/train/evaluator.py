"""The holdout evaluator: when to evaluate, what, which step was best, and when to stop.

`HoldoutEvaluator` owns everything about evaluation during training:
- when: every `eval_every` steps (default: about 5 evaluations a run, fewer in a short run whose holdout
  would cost more than EVAL_SHARE_PERCENT of training to evaluate that often), at the last step, and at
  step 0 (the "before training" number);
- what: holdout loss (mean over every supervised token, over all ranks) and token accuracy, plus the
  numbers of an optional task-metric hook `score_fn(model, tokenizer) -> {"holdout_<metric>": value}`
  (run on rank 0, its numbers shared, so every rank decides alike);
- best tracking by `select_by` (lower is better for a name ending in "loss", else higher), and early
  stopping after `early_stopping_patience` evaluations without improvement; a run that starts from
  existing weights (`init_from`, as `train --from-run` sets it) counts step 0 as a candidate, so its best
  checkpoint is never worse than the weights it started from;
- on which examples: with a holdout larger than `eval_subsample` (default `auto`: about 10% of the
  training compute, at least 200 examples), the intermediate evaluations use a fixed seeded sample of the
  holdout (the same examples every time, so they compare with each other; metrics.jsonl marks them with
  `holdout_examples`); step 0 uses the full holdout, and at the end the last weights and the best
  checkpoint are evaluated on the full holdout (run.json's `first_eval`, `last_eval` and `best`).

Its state (best step, patience count, first/last evaluation) goes into every checkpoint's
trainer_state.json, so a resumed run decides exactly as the uninterrupted one would have.

Usage (a model is evaluated: tests/unit/test_train_loop.py's evaluation, early-stopping and resume tests):

    evaluator = HoldoutEvaluator(batches, config=config, total_steps=18, eval_every=4, dist=dist,
                                 device="cpu", autocast=None, score_fn=None, has_holdout=True)
    evaluation = evaluator.maybe_evaluate(model, tokenizer, step=3)
    evaluation.metrics["holdout_loss"], evaluation.improved, evaluator.stopped_early  # (5.97, True, False)
"""

from __future__ import annotations

import contextlib
import math
import random
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from honed.config import TrainConfig
from honed.errors import ConfigError
from honed.train.batching import MicroBatch
from honed.train.distributed import Dist
from honed.train.loss import model_parts, token_losses

ScoreFn = Callable[[Any, Any], dict[str, float]]
EVALS_PER_RUN = 5
SUBSAMPLE_MIN = 200  # examples: below this a holdout loss is too noisy to pick checkpoints by
EVAL_SHARE_PERCENT = 10  # `eval_subsample: auto` keeps the intermediate evaluations near this share of training


def eval_interval(config: TrainConfig, *, total_steps: int, holdout: int = 0) -> int:
    """Steps between holdout evaluations: `eval_every`, or about EVALS_PER_RUN evaluations a run; with
    `eval_subsample: auto`, fewer when even the smallest evaluation (SUBSAMPLE_MIN examples, or the whole
    `holdout` when it is smaller) would take the intermediate evaluations past EVAL_SHARE_PERCENT of training.
    Step 0 and the last step are always evaluated.

    >>> eval_interval(TrainConfig(), total_steps=18)
    4
    >>> eval_interval(TrainConfig(), total_steps=25, holdout=100)  # 200 examples trained, no room: the end only
    25
    >>> eval_interval(TrainConfig(), total_steps=1000, holdout=5000)
    200
    """
    if config.eval_every:
        return config.eval_every
    evaluations = EVALS_PER_RUN
    if holdout and config.eval_subsample == "auto":
        smallest = min(holdout, SUBSAMPLE_MIN)
        evaluations = max(1, min(evaluations, eval_budget(total_steps, config.batch_size) // smallest))
    return max(1, math.ceil(total_steps / evaluations))


def eval_budget(total_steps: int, batch_size: int) -> int:
    """Holdout examples the intermediate evaluations may forward in a run: a forward pass costs about a third
    of a training step's forward + backward, so 3 * EVAL_SHARE_PERCENT% of the examples trained.

    >>> eval_budget(1000, 16)
    4800
    """
    return 3 * EVAL_SHARE_PERCENT * total_steps * batch_size // 100


def subsample_size(
    setting: int | str | None, *, holdout: int, total_steps: int, batch_size: int, eval_every: int
) -> int | None:
    """Holdout examples per intermediate evaluation, or None when every evaluation uses the whole holdout.

    `auto`: a forward pass costs about a third of a training step's forward + backward, so n examples at
    each of the run's evaluations cost about EVAL_SHARE_PERCENT of training when n = 3 * share * (examples
    trained) / (evaluations); never fewer than SUBSAMPLE_MIN.

    >>> subsample_size("auto", holdout=5000, total_steps=1000, batch_size=16, eval_every=200)
    960
    >>> subsample_size("auto", holdout=150, total_steps=1000, batch_size=16, eval_every=200) is None
    True
    """
    if setting is None:
        return None
    if setting == "auto":
        evaluations = math.ceil(total_steps / eval_every)
        size = max(SUBSAMPLE_MIN, -(-eval_budget(total_steps, batch_size) // evaluations))  # integer ceil
    else:
        size = int(setting)
    return size if size < holdout else None


def holdout_sample(examples: list[Any], *, size: int | None, seed: int) -> list[Any]:
    """A fixed seeded sample of `size` examples, in their holdout order (all of them when `size` is None).

    >>> holdout_sample(list(range(10)), size=3, seed=0)
    [0, 6, 9]
    """
    if size is None or size >= len(examples):
        return list(examples)
    return [examples[i] for i in sorted(random.Random(seed).sample(range(len(examples)), size))]


def lower_is_better(metric: str) -> bool:
    """Losses go down when a model gets better; every other metric goes up."""
    return metric.endswith("loss")


def autocast(device: str, dtype: torch.dtype | None) -> Any:
    """torch.autocast to `dtype` on `device`'s type, or nothing when `dtype` is None (fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype)


def holdout_loss(
    model: Any, batches: Sequence[MicroBatch], *, chunk_size: int, device: str, dtype: torch.dtype | None, dist: Dist
) -> dict[str, float]:
    """Holdout loss (mean over all supervised tokens of all ranks) and token accuracy (argmax == target)."""
    was_training = model.training
    model.eval()
    parts = model_parts(model)
    loss_total, correct_total, count = 0.0, 0.0, 0.0
    with torch.no_grad(), autocast(device, dtype):
        for batch in batches:
            losses, correct = token_losses(model, batch.to(device), chunk_size=chunk_size, parts=parts)
            loss_total += float(losses.double().sum())
            correct_total += float(correct.double().sum())
            count += losses.numel()
    loss_total, correct_total, count = dist.all_reduce_sum([loss_total, correct_total, count], device=device)
    model.train(was_training)
    if count == 0:
        return {}
    return {"holdout_loss": loss_total / count, "holdout_token_accuracy": correct_total / count}


def task_scores(score_fn: ScoreFn | None, model: Any, tokenizer: Any, *, dist: Dist) -> dict[str, float]:
    """Run the task-metric hook on rank 0 (model in eval mode) and share its numbers with every rank."""
    if score_fn is None:
        return {}
    was_training = model.training
    model.eval()
    with warnings.catch_warnings():
        # transformers 5 deprecates its own `past_key_values` argument inside generate(); not ours to fix.
        warnings.filterwarnings("ignore", message=".*past_key_values.*deprecated.*", category=FutureWarning)
        scores = dict(score_fn(model, tokenizer)) if dist.is_main else None
    model.train(was_training)
    return {k: float(v) for k, v in (dist.broadcast(scores) or {}).items()}


def check_select_by(select_by: str, metrics: dict[str, float]) -> None:
    """A ConfigError when `select_by` names none of the evaluation's metrics."""
    if select_by not in metrics:
        raise ConfigError(
            f"select_by: '{select_by}' is not among the evaluation metrics ({', '.join(sorted(metrics))}); "
            "use holdout_loss or a metric the scoring function returns"
        )


@dataclass(frozen=True)
class Evaluation:
    """One evaluation's numbers and whether the selected metric improved on the best so far."""

    step: int
    metrics: dict[str, float]
    improved: bool
    sample_size: int | None = None  # holdout examples when a sample was evaluated; None = the full holdout

    def record(self) -> dict[str, Any]:
        """The evaluation's part of the step's metrics.jsonl line."""
        return {**self.metrics, "holdout_examples": self.sample_size} if self.sample_size else dict(self.metrics)


@dataclass
class EvalState:
    """What the evaluator remembers between evaluations (saved in trainer_state.json; keys kept stable)."""

    best_value: float | None = None
    best_step: int | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    bad_evals: int = 0
    stopped_early: bool = False
    first_eval: dict[str, float] = field(default_factory=dict)
    last_eval: dict[str, float] = field(default_factory=dict)
    first_sample: dict[str, float] = field(default_factory=dict)  # step 0 on the sample (when sampling)


class HoldoutEvaluator:
    """Evaluates the holdout when due, tracks the best step by `select_by`, and decides early stopping."""

    def __init__(
        self,
        batches: list[MicroBatch],
        *,
        sample: tuple[int, list[MicroBatch]] | None = None,
        config: TrainConfig,
        total_steps: int,
        eval_every: int,
        dist: Dist,
        device: str,
        autocast: torch.dtype | None,
        score_fn: ScoreFn | None,
        has_holdout: bool,
    ) -> None:
        self.batches = batches  # this rank's share of the holdout
        # (size, this rank's share of the fixed sample) for the intermediate evaluations; None = full holdout
        self.sample_size, self.sample_batches = sample if sample is not None else (None, batches)
        self.select_by = config.select_by
        self.patience = config.early_stopping_patience
        self.chunk_size = config.loss_chunk_size
        self.eval_every = eval_every  # eval_interval(...), decided with the holdout's size by the caller
        self.total_steps = total_steps
        self.dist, self.device, self.dtype, self.score_fn = dist, device, autocast, score_fn
        # Whether ANY rank has holdout examples: a rank whose share is empty must still join the
        # evaluation's collectives, so this cannot be read off this rank's own batches.
        self.enabled = has_holdout or score_fn is not None
        self.start_is_candidate = config.init_from is not None  # the parent's weights can be the best
        self.state = EvalState()

    @property
    def stopped_early(self) -> bool:
        return self.state.stopped_early

    @property
    def best_step(self) -> int | None:
        return self.state.best_step

    def evaluate(self, model: Any, tokenizer: Any, *, full: bool = True) -> dict[str, float]:
        """Holdout loss and token accuracy (on the whole holdout, or on the sample when `full` is False),
        plus the task metric's numbers when a hook is set."""
        metrics = holdout_loss(
            model, self.batches if full else self.sample_batches, chunk_size=self.chunk_size, device=self.device,
            dtype=self.dtype, dist=self.dist,
        )
        metrics.update(task_scores(self.score_fn, model, tokenizer, dist=self.dist))
        return metrics

    def evaluate_before_training(self, model: Any, tokenizer: Any) -> dict[str, float] | None:
        """The step-0 evaluation (None without a holdout); a `select_by` it lacks is refused here."""
        if not self.enabled:
            return None
        metrics = self.evaluate(model, tokenizer)
        check_select_by(self.select_by, metrics)
        self.state.first_eval = self.state.last_eval = metrics
        if self.sample_size:  # the reference the intermediate (sampled) evaluations are compared with
            self.state.first_sample = holdout_loss(
                model, self.sample_batches, chunk_size=self.chunk_size, device=self.device, dtype=self.dtype,
                dist=self.dist,
            )
        if self.start_is_candidate:
            self._start_is_best(metrics)
        return metrics

    def _start_is_best(self, metrics: dict[str, float]) -> None:
        """Step 0 (the weights the run started from) is the best so far. Later evaluations compare with its
        value on the examples they use (the sample, when sampling); its record keeps the full holdout's numbers."""
        compared = {**metrics, **self.state.first_sample}
        state = self.state
        state.best_value, state.best_step, state.best_metrics = compared[self.select_by], 0, dict(metrics)
        state.bad_evals = 0

    def reference(self) -> dict[str, float]:
        """Step 0's numbers on the examples the intermediate evaluations use."""
        return self.state.first_sample or self.state.first_eval

    def due(self, step: int) -> bool:
        return self.enabled and (step % self.eval_every == 0 or step == self.total_steps)

    def maybe_evaluate(self, model: Any, tokenizer: Any, *, step: int) -> Evaluation | None:
        """Evaluate when due; record the best step and decide early stopping. None when not due."""
        if not self.due(step):
            return None
        metrics = self.evaluate(model, tokenizer, full=self.sample_size is None)
        self.state.last_eval = metrics
        improved = self._update_best(metrics, step=step)
        patience = self.patience
        self.state.stopped_early = patience is not None and self.state.bad_evals >= patience and step < self.total_steps
        return Evaluation(step=step, metrics=metrics, improved=improved, sample_size=self.sample_size)

    def evaluate_at_end(self, model: Any, tokenizer: Any, *, step: int, load_best: Callable[[int], None]) -> None:
        """With sampled evaluations: the last weights, then the best checkpoint (`load_best(step)` puts its
        weights into `model`), on the full holdout; their numbers become last_eval and best. Every rank calls it."""
        if not (self.enabled and self.sample_size):
            return
        self.state.last_eval = self.evaluate(model, tokenizer)
        best_step = self.state.best_step
        if best_step is None:
            return
        if best_step != step:
            load_best(best_step)
        full = self.state.last_eval if best_step == step else self.evaluate(model, tokenizer)
        self.state.best_metrics = dict(full)

    def _update_best(self, metrics: dict[str, float], *, step: int) -> bool:
        check_select_by(self.select_by, metrics)
        value, state = metrics[self.select_by], self.state
        better = state.best_value is None or (
            value < state.best_value if lower_is_better(self.select_by) else value > state.best_value
        )
        if better:
            state.best_value, state.best_step, state.best_metrics = value, step, dict(metrics)
            state.bad_evals = 0
        else:
            state.bad_evals += 1
        return better

    def best(self) -> dict[str, Any]:
        """{"step": N, <metrics of step N>} for the best evaluation; {} when there was none."""
        return {"step": self.state.best_step, **self.state.best_metrics} if self.state.best_step is not None else {}

    def state_dict(self) -> dict[str, Any]:
        return dict(self.state.__dict__)

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.state = EvalState(**{k: v for k, v in saved.items() if k in EvalState.__dataclass_fields__})
