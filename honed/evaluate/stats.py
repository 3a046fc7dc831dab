"""Paired bootstrap confidence intervals: is system A better than system B on the same examples?

Every system answers the same holdout examples, so the comparison is paired: one resample draws n
example indices with replacement and both systems are scored on the same draw. The 95% interval is the
2.5th and 97.5th percentile of the resampled statistic (percentile bootstrap). Per-example metrics are
averaged; a corpus metric (macro-F1) is recomputed on each resampled corpus. Seeded: same inputs, same
interval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from honed.evaluate.settings import DEFAULT_RESAMPLES


@dataclass(frozen=True)
class Interval:
    """A point estimate and its 95% percentile-bootstrap interval."""

    value: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    @property
    def width(self) -> float:
        return self.high - self.low

    def to_json(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


def resample_indices(n: int, *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """A [resamples, n] matrix of example indices drawn with replacement (shared by all comparisons)."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _interval(value: float, samples: np.ndarray, *, level: float = 0.95) -> Interval:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return Interval(float(value), float(low), float(high))


def mean_interval(scores: Sequence[float], *, indices: np.ndarray | None = None, seed: int = 0) -> Interval:
    """Mean of per-example scores with its bootstrap interval.

    >>> mean_interval([1.0] * 10).low
    1.0
    """
    values = np.asarray(scores, dtype=float)
    if len(values) == 0:
        return Interval(0.0, 0.0, 0.0)
    idx = resample_indices(len(values), seed=seed) if indices is None else indices
    return _interval(values.mean(), values[idx].mean(axis=1))


def paired_difference(
    a: Sequence[float], b: Sequence[float], *, indices: np.ndarray | None = None, seed: int = 0
) -> Interval:
    """mean(a) - mean(b) over the same examples, with its paired bootstrap interval.

    >>> paired_difference([1, 1, 0, 1], [0, 0, 0, 1]).value
    0.5
    """
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if len(diff) == 0:
        return Interval(0.0, 0.0, 0.0)
    idx = resample_indices(len(diff), seed=seed) if indices is None else indices
    return _interval(diff.mean(), diff[idx].mean(axis=1))


CorpusStatistic = Callable[[Sequence[str], Sequence[str]], float]


def corpus_interval(
    statistic: CorpusStatistic, references: Sequence[str], outputs: Sequence[str], *, indices: np.ndarray
) -> Interval:
    """A corpus-level statistic (e.g. macro-F1) with its bootstrap interval: recomputed per resample."""
    samples = np.array(
        [statistic([references[i] for i in row], [outputs[i] for i in row]) for row in indices]
    )
    return _interval(statistic(references, outputs), samples)


def corpus_difference(
    statistic: CorpusStatistic,
    references: Sequence[str],
    outputs_a: Sequence[str],
    outputs_b: Sequence[str],
    *,
    indices: np.ndarray,
) -> Interval:
    """statistic(a) - statistic(b) on the same resampled corpora, with its paired interval."""
    samples = np.array(
        [
            statistic([references[i] for i in row], [outputs_a[i] for i in row])
            - statistic([references[i] for i in row], [outputs_b[i] for i in row])
            for row in indices
        ]
    )
    value = statistic(references, outputs_a) - statistic(references, outputs_b)
    return _interval(value, samples)


PooledValue = Callable[[np.ndarray], np.ndarray]


def _resampled_sums(counts: np.ndarray, indices: np.ndarray, *, chunk: int = 256) -> np.ndarray:
    """[resamples, k]: each resample's example counts summed, as (times drawn) @ counts, `chunk` rows at a time
    (a [chunk, n] weight matrix: fast, and memory stays small on large holdouts)."""
    n = len(counts)
    sums = [np.zeros((0, counts.shape[1]))]
    for start in range(0, len(indices), chunk):
        rows = indices[start : start + chunk]
        offsets = rows + np.arange(len(rows))[:, None] * n
        drawn = np.bincount(offsets.ravel(), minlength=len(rows) * n).reshape(len(rows), n)
        sums.append(drawn.astype(float) @ counts)
    return np.concatenate(sums)


@dataclass(frozen=True)
class Pooled:
    """Per-example counts (e.g. matched, predicted, reference pairs) summed over all examples and over each
    resample: computed once per system, shared by every pooled metric and paired difference."""

    total: np.ndarray  # [k]
    resampled: np.ndarray  # [resamples, k]

    @classmethod
    def of(cls, counts: np.ndarray, *, indices: np.ndarray) -> Pooled:
        counts = np.asarray(counts, dtype=float).reshape(len(counts), -1)
        return cls(counts.sum(axis=0), _resampled_sums(counts, indices))


def pooled_interval(pooled: Pooled, value: PooledValue) -> Interval:
    """A micro-averaged statistic with its bootstrap interval: resample examples, pool their counts.

    >>> counts = np.array([[1, 1, 1], [0, 0, 0], [0, 1, 1]], dtype=float)
    >>> f1 = lambda s: 2 * s[..., 0] / np.maximum(s[..., 1] + s[..., 2], 1)
    >>> pooled_interval(Pooled.of(counts, indices=resample_indices(3)), f1).value
    0.5
    """
    return _interval(float(value(pooled.total)), value(pooled.resampled))


def pooled_difference(a: Pooled, b: Pooled, value: PooledValue) -> Interval:
    """value(pooled a) - value(pooled b) on the same resampled examples, with its paired interval."""
    point = float(value(a.total)) - float(value(b.total))
    return _interval(point, value(a.resampled) - value(b.resampled))
