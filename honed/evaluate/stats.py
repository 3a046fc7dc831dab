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

DEFAULT_RESAMPLES = 2000


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


def _resampled_sums(counts: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """[resamples, k]: the counts of each resample's examples summed (one row at a time: n x k memory)."""
    return np.stack([counts[row].sum(axis=0) for row in indices]) if len(indices) else np.zeros((0, counts.shape[1]))


def pooled_interval(counts: np.ndarray, value: PooledValue, *, indices: np.ndarray) -> Interval:
    """A micro-averaged statistic with its bootstrap interval: resample examples, pool their counts.

    `counts` is [n examples, k] (e.g. matched, predicted and reference pairs); `value` maps summed
    counts to the statistic.

    >>> counts = np.array([[1, 1, 1], [0, 0, 0], [0, 1, 1]], dtype=float)
    >>> f1 = lambda s: 2 * s[..., 0] / np.maximum(s[..., 1] + s[..., 2], 1)
    >>> pooled_interval(counts, f1, indices=resample_indices(3)).value
    0.5
    """
    if len(counts) == 0:
        return Interval(0.0, 0.0, 0.0)
    return _interval(float(value(counts.sum(axis=0))), value(_resampled_sums(counts, indices)))


def pooled_difference(
    counts_a: np.ndarray, counts_b: np.ndarray, value: PooledValue, *, indices: np.ndarray
) -> Interval:
    """value(pooled a) - value(pooled b) on the same resampled examples, with its paired interval."""
    if len(counts_a) == 0:
        return Interval(0.0, 0.0, 0.0)
    point = float(value(counts_a.sum(axis=0))) - float(value(counts_b.sum(axis=0)))
    samples = value(_resampled_sums(counts_a, indices)) - value(_resampled_sums(counts_b, indices))
    return _interval(point, samples)
