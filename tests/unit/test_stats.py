"""The paired bootstrap on synthetic data whose true difference is known."""

from __future__ import annotations

import numpy as np
import pytest

from honed.evaluate.metrics import macro_f1
from honed.evaluate.stats import corpus_difference, mean_interval, paired_difference, resample_indices


def test_interval_covers_the_true_difference_of_two_bernoullis() -> None:
    rng = np.random.default_rng(1)
    a = rng.random(400) < 0.7
    b = rng.random(400) < 0.5
    diff = paired_difference(a, b, seed=0)
    assert diff.low < 0.2 < diff.high
    assert diff.excludes_zero and diff.low > 0
    # Standard error of a difference of two independent proportions at n=400: ~0.034, so the 95% interval
    # is ~0.13 wide.
    assert 0.09 < diff.width < 0.18


def test_identical_systems_give_an_interval_centred_on_zero() -> None:
    rng = np.random.default_rng(2)
    a = (rng.random(300) < 0.6).astype(float)
    diff = paired_difference(a, a.copy())
    assert (diff.value, diff.low, diff.high) == (0.0, 0.0, 0.0)
    b = (rng.random(300) < 0.6).astype(float)  # same distribution, independent draws
    noisy = paired_difference(a, b)
    assert noisy.low < 0 < noisy.high or abs(noisy.value) < 0.1
    assert abs((noisy.low + noisy.high) / 2 - noisy.value) < 0.02


def test_coverage_over_many_synthetic_holdouts() -> None:
    # A 95% interval should cover the true difference (0.2) in roughly 95% of repeated experiments.
    rng = np.random.default_rng(3)
    covered = 0
    for trial in range(60):
        a = rng.random(200) < 0.7
        b = rng.random(200) < 0.5
        d = paired_difference(a, b, indices=resample_indices(200, resamples=500, seed=trial))
        covered += d.low <= 0.2 <= d.high
    assert covered >= 51  # 85%: loose enough never to flake with these fixed seeds, tight enough to catch a bug


def test_paired_bootstrap_is_tighter_than_unpaired_for_correlated_systems() -> None:
    rng = np.random.default_rng(4)
    base = rng.random(400) < 0.5
    better = base | (rng.random(400) < 0.1)  # same examples right, plus a few more
    paired = paired_difference(better, base)
    lone = mean_interval(better.astype(float))
    assert paired.low > 0
    assert paired.width < lone.width


def test_seeded_and_mean_interval_of_a_constant() -> None:
    assert paired_difference([1, 0, 1, 1], [0, 0, 1, 0], seed=5) == paired_difference([1, 0, 1, 1], [0, 0, 1, 0], seed=5)
    assert mean_interval([0.5] * 20).to_json() == {"value": 0.5, "low": 0.5, "high": 0.5}


def test_corpus_metric_difference() -> None:
    refs = ["a", "b", "c", "d"] * 25
    perfect = list(refs)
    half = [r if i % 2 else "x" for i, r in enumerate(refs)]
    diff = corpus_difference(macro_f1, refs, perfect, half, indices=resample_indices(100, resamples=300))
    assert diff.value == pytest.approx(1.0 - macro_f1(refs, half))
    assert diff.low > 0


def test_pooled_interval_resamples_examples_and_pools_their_counts() -> None:
    """Micro-F1 of resampled examples equals the micro-F1 computed from scratch on those examples."""
    from honed.evaluate.metrics import POOLED, micro_f1
    from honed.evaluate.stats import Pooled, pooled_difference, pooled_interval

    rng = np.random.default_rng(3)
    refs = ['{"a": "1", "b": "2"}' if rng.random() < 0.3 else "{}" for _ in range(80)]
    outs = [r if rng.random() < 0.6 else '{"a": "1"}' for r in refs]
    metric = POOLED["field_f1_micro"]
    counts = metric.count_matrix(refs, outs)
    indices = resample_indices(len(refs), resamples=50, seed=0)
    interval = pooled_interval(Pooled.of(counts, indices=indices), micro_f1)
    assert interval.value == pytest.approx(metric(refs, outs))
    by_hand = [metric([refs[i] for i in row], [outs[i] for i in row]) for row in indices]
    assert interval.low == pytest.approx(np.percentile(by_hand, 2.5))
    assert interval.high == pytest.approx(np.percentile(by_hand, 97.5))
    pooled = Pooled.of(counts, indices=indices)
    same = pooled_difference(pooled, Pooled.of(counts.copy(), indices=indices), micro_f1)
    assert (same.value, same.low, same.high) == (0.0, 0.0, 0.0)
    worse = metric.count_matrix(refs, ["{}"] * len(refs))
    diff = pooled_difference(pooled, Pooled.of(worse, indices=indices), micro_f1)
    assert diff.value == pytest.approx(metric(refs, outs)) and diff.low > 0
