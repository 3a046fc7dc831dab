"""Two-sample tests: is this traffic window drawn from the same distribution as the training prompts?

Input drift is tested on embeddings with the kernel maximum mean discrepancy (MMD, Gretton et al. 2012):
an RBF kernel whose bandwidth is the median pairwise distance of the pooled sample, the unbiased MMD^2
statistic, and a permutation p-value (the pooled sample's labels shuffled `permutations` times). Under
the null the p-value is uniform, so at `alpha` = 0.01 a same-distribution window raises a false alarm
about 1 time in 100; the test suite measures it.

>>> result = mmd_test(train_vectors, window_vectors, seed=0)  # doctest: +SKIP
>>> result.p_value < 0.01  # doctest: +SKIP
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_ALPHA = 0.01
DEFAULT_PERMUTATIONS = 200


@dataclass(frozen=True)
class TwoSampleResult:
    """The statistic (MMD^2, unbiased), its permutation p-value, and how many permutations were drawn."""

    statistic: float
    p_value: float
    permutations: int


def mmd_test(
    reference: np.ndarray, sample: np.ndarray, *, permutations: int = DEFAULT_PERMUTATIONS, seed: int = 0
) -> TwoSampleResult:
    """MMD^2 between two sets of vectors with a permutation p-value (both need at least 2 rows)."""
    pooled = np.concatenate([reference, sample]).astype(np.float64)
    squared = _squared_distances(pooled)
    bandwidth = np.median(squared[np.triu_indices_from(squared, k=1)])
    kernel = np.exp(-squared / max(bandwidth, 1e-12))
    first = np.arange(len(pooled)) < len(reference)
    rng = np.random.default_rng(seed)
    shuffled = np.stack([first] + [rng.permutation(first) for _ in range(permutations)], axis=1)
    values = _mmd2(kernel, shuffled)  # column 0 is the observed split
    exceed = int((values[1:] >= values[0]).sum())
    return TwoSampleResult(float(values[0]), (exceed + 1) / (permutations + 1), permutations)


def _squared_distances(x: np.ndarray) -> np.ndarray:
    norms = (x * x).sum(1)
    return np.maximum(norms[:, None] + norms[None, :] - 2.0 * x @ x.T, 0.0)


def _mmd2(kernel: np.ndarray, splits: np.ndarray) -> np.ndarray:
    """Unbiased MMD^2 for each column of `splits` (a boolean [N, P] matrix: True = first sample), from the
    pooled kernel matrix, all columns in one matrix product. The RBF kernel's diagonal is 1."""
    a = splits.astype(np.float64)
    b = 1.0 - a
    m, n = a[:, 0].sum(), b[:, 0].sum()
    ka = kernel @ a
    sum_aa = (a * ka).sum(0)
    sum_ab = (b * ka).sum(0)
    sum_bb = (b * (kernel @ b)).sum(0)
    return (sum_aa - m) / (m * (m - 1)) + (sum_bb - n) / (n * (n - 1)) - 2.0 * sum_ab / (m * n)


def least_like(reference: np.ndarray, sample: np.ndarray, *, k: int = 5) -> list[tuple[int, float]]:
    """The `k` sample rows whose nearest reference row is farthest (cosine similarity; vectors are unit
    length): (row index, similarity to its nearest training prompt), least similar first."""
    nearest = (sample @ reference.T).max(axis=1)
    order = np.argsort(nearest)[:k]
    return [(int(i), float(nearest[i])) for i in order]
