"""Scoring and summarising `honed eval`: metrics with intervals per system, paired differences, the verdict.

    plan = plan_metrics(references, train_targets=train_targets)
    summary = summarize(plan, references, results, train_targets=train_targets, seed=0, resamples=2000)

Per-example metrics are averaged; pooled metrics (field_*_micro) sum each example's (matched, predicted,
reference) pair counts over the resampled examples; other corpus metrics (macro_f1) are recomputed on each
resampled corpus. When some references are empty (`{}`, blank), every metric is reported again on the
non-empty ones alone as `nonempty/<metric>`, with its own intervals and differences.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from honed.errors import ConfigError
from honed.evaluate import metrics as M
from honed.evaluate.stats import (
    Interval,
    Pooled,
    corpus_difference,
    corpus_interval,
    mean_interval,
    paired_difference,
    pooled_difference,
    pooled_interval,
    resample_indices,
)
from honed.evaluate.systems import TUNED, System, majority_answer
from honed.evaluate.verdict import Comparison, constant_note, verdict
from honed.runs.rundir import EvalSummary

NONEMPTY = "nonempty/"  # prefix of the metrics on the non-empty references alone


@dataclass
class MetricPlan:
    """Which metrics to compute and which one the verdict is about."""

    main: str
    names: list[str]
    per_example: dict[str, M.Metric]
    corpus: dict[str, M.CorpusMetric]
    schema: dict[str, Any] = field(default_factory=dict)


def plan_metrics(
    references: Sequence[str], *, train_targets: Sequence[str] = (), requested: Sequence[str] | None = None,
    schema: dict[str, Any] | None = None,
) -> MetricPlan:
    """Metrics picked from the targets (or `requested`), the schema given or inferred from the targets.

    >>> plan_metrics(['{"a": 1}', '{}']).main
    'field_f1_micro'
    """
    targets = list(references) + list(train_targets)
    main, names = M.pick_metrics(list(references))
    if requested:
        names = list(dict.fromkeys(requested))
        main = M.metric_name(names[0])
    for name in names:
        if name not in M.KNOWN_METRICS and ":" not in name:
            raise ConfigError(f"--metrics: unknown metric {name!r}; use {', '.join(sorted(M.KNOWN_METRICS))} "
                              "or a Python function as module:function")
    schema = schema if schema is not None else M.infer_schema(targets) if "schema_valid" in names else {}
    per_example = M.resolve_metrics(names, schema=schema)
    corpus = {n: M.CORPUS[n] for n in names if n in M.CORPUS}
    return MetricPlan(main=main, names=[M.metric_name(n) for n in names], per_example=per_example,
                      corpus=corpus, schema=schema)


def score_examples(plan: MetricPlan, references: Sequence[str], outputs: Sequence[str]) -> list[dict[str, float]]:
    """Per-example scores: one {metric: value} per example (corpus metrics are not per example)."""
    return [
        {name: M.score_one(name, metric, ref, out, index=i) for name, metric in plan.per_example.items()}
        for i, (ref, out) in enumerate(zip(references, outputs))
    ]


def memorised_share(outputs: Sequence[str], references: Sequence[str], train_targets: Sequence[str]) -> float:
    """Share of outputs that copy a training response verbatim where the reference says something else.

    >>> memorised_share(["a", "b", "c"], ["x", "b", "c"], ["a", "b"])
    0.3333333333333333
    """
    seen = {M.normalize_text(t) for t in train_targets}
    copies = sum(
        1 for out, ref in zip(outputs, references)
        if M.normalize_text(out) in seen and M.normalize_text(out) != M.normalize_text(ref)
    )
    return copies / len(outputs) if outputs else 0.0


@dataclass
class SystemResult:
    """One system's answers to the holdout, their per-example scores, and what generating them cost."""

    system: System
    outputs: list[str]
    stopped: list[bool]
    scores: list[dict[str, float]]
    tokens_per_s: float = 0.0
    new_tokens: int = 0
    seconds: float = 0.0
    raw: list[str] | None = None  # the outputs before the baselines' answer-end cut (honed.evaluate.answer_end)

    def subset(self, keep: Sequence[int]) -> SystemResult:
        """The same system on the examples `keep` only."""
        return SystemResult(self.system, [self.outputs[i] for i in keep], [self.stopped[i] for i in keep],
                            [self.scores[i] for i in keep], self.tokens_per_s, self.new_tokens, self.seconds,
                            [self.raw[i] for i in keep] if self.raw is not None else None)


# ---- intervals ---------------------------------------------------------------------------------------------


class PooledCache:
    """Each system's pooled counts (per count function), computed once for all pooled metrics and pairs."""

    def __init__(self, references: Sequence[str], indices: np.ndarray) -> None:
        self.references, self.indices = references, indices
        self._found: dict[tuple[str, int], Pooled] = {}

    def get(self, result: SystemResult, metric: M.PooledMetric) -> Pooled:
        key = (result.system.name, id(metric.counts))
        if key not in self._found:
            counts = metric.count_matrix(self.references, result.outputs)
            self._found[key] = Pooled.of(counts, indices=self.indices)
        return self._found[key]


def metric_intervals(
    plan: MetricPlan, references: Sequence[str], result: SystemResult, *, indices: np.ndarray,
    pooled: PooledCache | None = None,
) -> dict[str, Interval]:
    """Every planned metric of one system with its bootstrap interval, in plan order."""
    pooled = pooled or PooledCache(references, indices)
    values = {n: mean_interval([s[n] for s in result.scores], indices=indices) for n in plan.per_example}
    for name, fn in plan.corpus.items():
        if isinstance(fn, M.PooledMetric):
            values[name] = pooled_interval(pooled.get(result, fn), fn.value)
        else:
            values[name] = corpus_interval(fn, references, result.outputs, indices=indices)
    return {name: values[name] for name in plan.names}


def metric_differences(
    plan: MetricPlan, references: Sequence[str], a: SystemResult, b: SystemResult, *, indices: np.ndarray,
    pooled: PooledCache | None = None,
) -> dict[str, Interval]:
    """a - b for every planned metric on the same resampled examples (paired), in plan order."""
    pooled = pooled or PooledCache(references, indices)
    diffs = {n: paired_difference([s[n] for s in a.scores], [s[n] for s in b.scores], indices=indices)
             for n in plan.per_example}
    for name, fn in plan.corpus.items():
        if isinstance(fn, M.PooledMetric):
            diffs[name] = pooled_difference(pooled.get(a, fn), pooled.get(b, fn), fn.value)
        else:
            diffs[name] = corpus_difference(fn, references, a.outputs, b.outputs, indices=indices)
    return {name: diffs[name] for name in plan.names}


def _all_intervals(
    plan: MetricPlan, references: Sequence[str], results: Sequence[SystemResult], *, seed: int, resamples: int,
    prefix: str = "",
) -> tuple[dict[str, dict[str, Interval]], dict[str, dict[str, Interval]]]:
    """({system: {metric: interval}}, {"tuned - X": {metric: interval}}), metric names with `prefix`."""
    indices = resample_indices(len(references), resamples=resamples, seed=seed)
    tuned = next(r for r in results if r.system.name == TUNED)
    pooled = PooledCache(references, indices)
    values = {r.system.name: metric_intervals(plan, references, r, indices=indices, pooled=pooled) for r in results}
    diffs = {f"{TUNED} - {r.system.name}": metric_differences(plan, references, tuned, r, indices=indices,
                                                              pooled=pooled)
             for r in results if r.system.name != TUNED}
    return _prefixed(values, prefix), _prefixed(diffs, prefix)


def _prefixed(table: dict[str, dict[str, Interval]], prefix: str) -> dict[str, dict[str, Interval]]:
    return {key: {prefix + metric: value for metric, value in row.items()} for key, row in table.items()}


def nonempty_indices(references: Sequence[str]) -> list[int] | None:
    """The examples whose reference holds something, when some (not all, not none) are empty; else None.

    >>> nonempty_indices(["{}", '{"a": 1}', "{}"])
    [1]
    """
    keep = [i for i, ref in enumerate(references) if not M.is_empty_reference(ref)]
    return keep if 0 < len(keep) < len(references) else None


# ---- the summary ------------------------------------------------------------------------------------------


def _system_entry(result: SystemResult, metrics: dict[str, Interval], *, references: Sequence[str],
                  train_targets: Sequence[str]) -> dict[str, Any]:
    system = result.system
    entry: dict[str, Any] = {
        "kind": system.kind,
        "metrics": {name: value.to_json() for name, value in metrics.items()},
        "memorised": memorised_share(result.outputs, references, train_targets),
        "unfinished": sum(not s for s in result.stopped),
        "generation": {"new_tokens": result.new_tokens, "seconds": round(result.seconds, 3),
                       "tokens_per_s": round(result.tokens_per_s, 2)},
    }
    if system.kind == "endpoint":
        entry.update(url=system.url, model=system.endpoint_model)
    elif system.kind == "export":
        entry["path"] = system.model
    elif system.kind == "constant":
        entry["answer"] = result.outputs[0] if result.outputs else ""
    return entry


def _notes(references: Sequence[str], values: dict[str, dict[str, Interval]], nonempty: list[int] | None) -> list[str]:
    """The verdict's note on a dominant reference, with the tuned model's exact match on the other ones."""
    note = constant_note(list(references), normalize=M.normalize_text)
    if note is None:
        return []
    key = NONEMPTY + "exact_match"
    if nonempty is not None and key in values[TUNED]:
        note += (f"; on the {len(nonempty)} non-empty references the tuned model's exact match is "
                 f"{values[TUNED][key].value:.3f}")
    return [note]


def summarize(
    plan: MetricPlan, references: Sequence[str], results: Sequence[SystemResult], *,
    train_targets: Sequence[str], seed: int, resamples: int,
) -> EvalSummary:
    """Metrics with intervals per system, paired differences against the tuned model, and the verdict."""
    values, diffs = _all_intervals(plan, references, results, seed=seed, resamples=resamples)
    names = list(plan.names)
    nonempty = nonempty_indices(references)
    if nonempty is not None:
        sub_refs = [references[i] for i in nonempty]
        sub_values, sub_diffs = _all_intervals(plan, sub_refs, [r.subset(nonempty) for r in results], seed=seed,
                                               resamples=resamples, prefix=NONEMPTY)
        for table, extra in ((values, sub_values), (diffs, sub_diffs)):
            for key, row in extra.items():
                table[key].update(row)
        names += [NONEMPTY + name for name in plan.names]
    comparisons = [
        Comparison(r.system.name, values[r.system.name][plan.main].value,
                   diffs[f"{TUNED} - {r.system.name}"][plan.main], kind=r.system.verdict_kind,
                   answer=r.outputs[0] if r.outputs else "")
        # the verdict is about the systems as users run them; constrained twins are in the table
        for r in results if r.system.name != TUNED and not r.system.constrain
    ]
    line = verdict(metric=plan.main, n=len(references), tuned=values[TUNED][plan.main].value,
                   comparisons=comparisons, notes=_notes(references, values, nonempty))
    systems = {r.system.name: _system_entry(r, values[r.system.name], references=references,
                                            train_targets=train_targets) for r in results}
    return EvalSummary.model_validate({
        "n": len(references), "main_metric": plan.main, "metrics": names, "systems": systems,
        "differences": {k: {m: v.to_json() for m, v in row.items()} for k, row in diffs.items()},
        "verdict": line, "resamples": resamples,
        "nonempty_n": len(nonempty) if nonempty is not None else None,
        "majority_answer": majority_answer(train_targets) if train_targets else None,
    })
