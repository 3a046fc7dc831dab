"""The one-line verdict: did fine-tuning help on the main metric, by how much, and does it beat prompting?

Rules (documented in the README and pinned by tests/unit/test_verdict.py):
- A difference is *significant* when its 95% paired-bootstrap interval excludes 0.
- The holdout is *too small to tell* when it has fewer than MIN_EXAMPLES examples, or when the interval of
  tuned - base is wider than MAX_WIDTH (metrics are in [0, 1]: an interval that wide says nothing).
- Against the base model: "helped" (interval above 0), "hurt" (below 0) or "no significant difference".
- Against each prompting baseline (few-shot): "a significant gain over prompting", "not significantly
  better than prompting", or "prompting is significantly better".
"""

from __future__ import annotations

from dataclasses import dataclass

from honed.evaluate.stats import Interval

MIN_EXAMPLES = 30
MAX_WIDTH = 0.5


@dataclass(frozen=True)
class Comparison:
    """The tuned model against one baseline on the main metric: the baseline's value and tuned - baseline."""

    baseline: str  # system name: "base", "few-shot-5", ...
    baseline_value: float
    difference: Interval


def _ci(diff: Interval) -> str:
    return f"{diff.value:+.3f}, 95% CI {diff.low:+.3f} to {diff.high:+.3f}"


def _against_base(metric: str, tuned: float, base: Comparison) -> str:
    diff = base.difference
    numbers = f"{metric} {tuned:.3f} vs {base.baseline_value:.3f} for the base model ({_ci(diff)})"
    if diff.low > 0:
        return f"Fine-tuning helped: {numbers}"
    if diff.high < 0:
        return f"Fine-tuning hurt: {numbers}"
    return f"No significant difference from the base model: {numbers}"


def _against_prompting(prompt: Comparison) -> str:
    diff = prompt.difference
    numbers = f"vs {prompt.baseline} prompting {prompt.baseline_value:.3f} ({_ci(diff)})"
    if diff.low > 0:
        return f"{numbers}: a significant gain over prompting"
    if diff.high < 0:
        return f"{numbers}: prompting is significantly better"
    return f"{numbers}: not significantly better than prompting"


def verdict(*, metric: str, n: int, tuned: float, comparisons: list[Comparison]) -> str:
    """One line saying whether fine-tuning helped on `metric`, by how much, and against prompting.

    The comparison named "base" is the base model zero-shot; every other one is a prompting baseline.

    >>> verdict(metric="field_f1", n=200, tuned=0.8,
    ...         comparisons=[Comparison("base", 0.3, Interval(0.5, 0.44, 0.56))])
    'Fine-tuning helped: field_f1 0.800 vs 0.300 for the base model (+0.500, 95% CI +0.440 to +0.560).'
    """
    base = next((c for c in comparisons if c.baseline == "base"), None)
    prompts = [c for c in comparisons if c.baseline != "base"]
    if n < MIN_EXAMPLES:
        head = f"Too small to tell: {n} holdout examples (need at least {MIN_EXAMPLES})"
        numbers = f"{metric} {tuned:.3f}"
        if base is not None:
            numbers += f" vs {base.baseline_value:.3f} for the base model ({_ci(base.difference)})"
        return f"{head}; {numbers}."
    if base is not None and base.difference.width > MAX_WIDTH:
        return (
            f"Too small to tell: the 95% CI of tuned - base on {metric} spans {base.difference.width:.2f} "
            f"({_ci(base.difference)}, {n} examples); evaluate on more holdout examples."
        )
    parts = [_against_base(metric, tuned, base)] if base is not None else [f"Tuned model: {metric} {tuned:.3f}"]
    parts += [_against_prompting(p) for p in prompts]
    if base is None and not prompts:
        parts.append("no baseline was evaluated")
    return "; ".join(parts) + "."
