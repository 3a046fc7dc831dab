"""Parity: does the exported artifact answer the holdout like the tuned model honed evaluated?

    parity = check_parity(run, checkpoint="best", artifact=answer_with_transformers(model, tokenizer), n=64)
    print("\\n".join(parity.lines()))

Both answer the first `n` holdout examples with the same greedy decoding and are scored with the same
metrics as `honed eval` (the run's own metric list when it was evaluated). The tuned model's answers are
reused from eval/tuned.jsonl when that evaluation covered the same checkpoint and holdout; otherwise they
are generated. The artifact is *significantly worse* when the paired bootstrap interval of
(artifact - tuned) on the main metric lies below zero, as in eval's verdict.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from honed.config import DataSettings
from honed.data.read import sha256_file
from honed.data.types import Conversation
from honed.evaluate.run_eval import plan_metrics, read_examples, score_examples
from honed.evaluate.stats import Interval, corpus_difference, paired_difference, resample_indices
from honed.model.decode import default_max_new_tokens, generate
from honed.model.prompt import render_prompt
from honed.model.stops import runtime_stops
from honed.export.settings import DEFAULT_PARITY_EXAMPLES
from honed.runs.rundir import RunDir

# (holdout conversations, max_new_tokens) -> one answer per conversation
Answerer = Callable[[Sequence[Conversation], int], list[str]]


@dataclass(frozen=True)
class Parity:
    """The tuned model and the artifact on the same examples: main metric, paired difference, identity."""

    n: int
    metric: str
    tuned: float
    artifact: float
    difference: Interval  # artifact - tuned, paired bootstrap 95% interval
    identical: float  # share of examples where both answered exactly the same text
    backend: str
    tuned_source: str  # "eval/tuned.jsonl" (reused) or "generated"

    @property
    def significantly_worse(self) -> bool:
        return self.difference.high < 0

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "metric": self.metric, "tuned": self.tuned, "artifact": self.artifact,
                "difference": self.difference.to_json(), "identical": self.identical, "backend": self.backend,
                "tuned_source": self.tuned_source, "significantly_worse": self.significantly_worse}

    def lines(self) -> list[str]:
        """What `honed export` prints."""
        d = self.difference
        head = (f"parity on {self.n} holdout examples ({self.backend}): {self.metric} tuned {self.tuned:.3f}, "
                f"artifact {self.artifact:.3f} (difference {d.value:+.3f}, 95% CI {d.low:+.3f} to {d.high:+.3f}); "
                f"identical outputs {self.identical:.0%}")
        if not self.significantly_worse:
            return [head]
        return [head, f"WARNING: the exported artifact is significantly worse than the tuned model on {self.metric} "
                      "(the interval lies below 0); do not ship it without finding out why (try another --quant)"]


def answer_with_transformers(model: Any, tokenizer: Any, *, batch_size: int = 16, artifact: bool = False) -> Answerer:
    """Answers from a loaded transformers model with honed's batched greedy decoding and the model's own
    chat template (an artifact's template is part of what parity checks). For an `artifact` the answers
    stop only where the artifact's own eos ids say (honed.model.stops.runtime_stops), as a plain runtime
    would: an export whose eos is not the end of turn then runs on and fails parity."""

    def answer(holdout: Sequence[Conversation], max_new_tokens: int) -> list[str]:
        prompts = [render_prompt(c, tokenizer) for c in holdout]
        stops = runtime_stops(tokenizer, model) if artifact else None
        return [g.text for g in generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                          batch_size=batch_size, stops=stops)[0]]

    return answer


def _usable_eval(run: RunDir, *, checkpoint: str, holdout_path: Path, n: int) -> Any | None:
    """The run's evaluation summary when its tuned answers can stand in for this parity check."""
    if not run.has_summary():
        return None
    summary = run.read_summary()
    same_data = summary.holdout is not None and summary.holdout.sha256 == sha256_file(holdout_path)
    if summary.checkpoint != checkpoint or not same_data or summary.n < n or not run.eval_rows_path("tuned").is_file():
        return None
    return summary


def _tuned_answers(run: RunDir, holdout: Sequence[Conversation], *, checkpoint: str, summary: Any | None,
                   max_new_tokens: int, batch_size: int) -> tuple[list[str], str]:
    if summary is not None:
        rows = run.read_eval_rows("tuned")[: len(holdout)]
        return [row["output"] for row in rows], "eval/tuned.jsonl"
    from honed.model.run import load_run_model

    model, tokenizer = load_run_model(run, checkpoint=checkpoint)
    answers = answer_with_transformers(model, tokenizer, batch_size=batch_size)(holdout, max_new_tokens)
    return answers, "generated"


def check_parity(
    run: RunDir, *, checkpoint: str, artifact: Answerer, n: int = DEFAULT_PARITY_EXAMPLES, backend: str,
    batch_size: int = 16, seed: int = 0,
) -> Parity:
    """Answer the first `n` holdout examples with the tuned model and the artifact; compare them.

    Usage: `check_parity(run, checkpoint="best", artifact=answer_with_transformers(m, t), n=64,
    backend="transformers").significantly_worse` (it runs both models: tests/e2e/test_export_cli.py checks
    an export's parity; tests/unit/test_export.py the comparison on given answers).
    """
    reading = run.config().data
    holdout_path = run.holdout_file()
    holdout = read_examples(holdout_path, reading=reading)[:n]
    references = [c.response_text() for c in holdout]
    summary = _usable_eval(run, checkpoint=checkpoint, holdout_path=holdout_path, n=len(holdout))
    plan = _metric_plan(run, references, summary=summary, reading=reading)
    max_new = _max_new_tokens(run, references, summary=summary)
    tuned, source = _tuned_answers(run, holdout, checkpoint=checkpoint, summary=summary, max_new_tokens=max_new,
                                   batch_size=batch_size)
    answers = artifact(holdout, max_new)
    return _compare(plan, references, tuned, answers, seed=seed, backend=backend, source=source)


def _metric_plan(run: RunDir, references: list[str], *, summary: Any | None, reading: DataSettings) -> Any:
    """The metrics `honed eval` used on this run (or would pick), with the same JSON schema."""
    train_file = run.train_file()
    train = read_examples(train_file, reading=reading) if train_file is not None else []
    if summary is not None:  # eval's metrics, its main one first (plan_metrics takes the first as main)
        requested = [summary.main_metric] + [m for m in summary.metrics if m != summary.main_metric]
        return plan_metrics(references, train_targets=[c.response_text() for c in train], requested=requested,
                            schema=summary.schema_)
    return plan_metrics(references, train_targets=[c.response_text() for c in train])


def _max_new_tokens(run: RunDir, references: list[str], *, summary: Any | None) -> int:
    if summary is not None and summary.decoding.get("max_new_tokens"):
        return int(summary.decoding["max_new_tokens"])
    from honed.model.loading import load_tokenizer

    tokenizer = load_tokenizer(run.base_model())
    return default_max_new_tokens([len(ids) for ids in tokenizer(references, add_special_tokens=False)["input_ids"]])


def _compare(plan: Any, references: list[str], tuned: list[str], artifact: list[str], *, seed: int, backend: str,
             source: str) -> Parity:
    indices = resample_indices(len(references), seed=seed)
    main = plan.main
    if main in plan.corpus:
        statistic = plan.corpus[main]
        difference = corpus_difference(statistic, references, artifact, tuned, indices=indices)
        tuned_value, artifact_value = statistic(references, tuned), statistic(references, artifact)
    else:
        tuned_scores = [s[main] for s in score_examples(plan, references, tuned)]
        artifact_scores = [s[main] for s in score_examples(plan, references, artifact)]
        difference = paired_difference(artifact_scores, tuned_scores, indices=indices)
        tuned_value = sum(tuned_scores) / len(tuned_scores)
        artifact_value = sum(artifact_scores) / len(artifact_scores)
    identical = sum(a == b for a, b in zip(tuned, artifact)) / len(references)
    return Parity(len(references), main, tuned_value, artifact_value, difference, identical, backend, source)
