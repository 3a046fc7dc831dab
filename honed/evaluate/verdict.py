"""The one-line verdict: did fine-tuning help on the main metric, by how much, and does it beat prompting?

Rules (documented in docs/evaluate.md and pinned by tests/unit/test_verdict.py):
- A difference is *significant* when its 95% paired-bootstrap interval excludes 0.
- The holdout is *too small to tell* when it has fewer than MIN_EXAMPLES examples, or when the interval of
  tuned - base is wider than MAX_WIDTH (metrics are in [0, 1]: an interval that wide says nothing).
- Against the base model: "helped" (interval above 0), "hurt" (below 0) or "no significant difference".
- Against each prompting baseline (few-shot): "a significant gain over prompting", "not significantly
  better than prompting", or "prompting is significantly better".
- Against prompting with retrieved examples (few-shot-knn): the same, and when the tuned model is not
  significantly better, "prompting with retrieved examples is enough here".
- Against the constant answer (majority): only when the tuned model is not significantly better than it
  ("not significantly better than always answering ...") or worse.
- Against another system (an endpoint or an exported model): "better than", "worse than" or "no
  significant difference from" it.
- When more than half the references are one answer, a note says what that constant answer scores (`notes`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
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
    kind: str = "prompting"  # base | prompting | retrieval | constant | system
    answer: str = ""  # the constant answer, for kind "constant"


def _ci(diff: Interval) -> str:
    return f"{diff.value:+.3f}, 95% CI {diff.low:+.3f} to {diff.high:+.3f}"


def _by_sign(diff: Interval, *, above: str, below: str, neither: str) -> str:
    """The phrase for an interval above 0, below 0, or across 0."""
    return above if diff.low > 0 else below if diff.high < 0 else neither


def _against_base(metric: str, tuned: float, base: Comparison) -> str:
    numbers = f"{metric} {tuned:.3f} vs {base.baseline_value:.3f} for the base model ({_ci(base.difference)})"
    lead = _by_sign(base.difference, above="Fine-tuning helped", below="Fine-tuning hurt",
                    neither="No significant difference from the base model")
    return f"{lead}: {numbers}"


def _against_prompting(prompt: Comparison) -> str:
    numbers = f"vs {prompt.baseline} prompting {prompt.baseline_value:.3f} ({_ci(prompt.difference)})"
    return numbers + ": " + _by_sign(prompt.difference, above="a significant gain over prompting",
                                     below="prompting is significantly better",
                                     neither="not significantly better than prompting")


def _against_retrieval(prompt: Comparison) -> str:
    numbers = (f"vs {prompt.baseline} (prompting with retrieved examples) {prompt.baseline_value:.3f} "
               f"({_ci(prompt.difference)})")
    return numbers + ": " + _by_sign(
        prompt.difference, above="a significant gain over prompting with retrieved examples",
        below="prompting with retrieved examples is significantly better",
        neither="not significantly better; prompting with retrieved examples is enough here")


def _against_constant(constant: Comparison) -> str | None:
    if constant.difference.low > 0:
        return None  # better than a constant answer is the least to expect; the table shows it
    answer = _short(constant.answer)
    numbers = f"{constant.baseline} {constant.baseline_value:.3f}, {_ci(constant.difference)}"
    lead = _by_sign(constant.difference, above="", below="worse than",
                    neither="not significantly better than")
    return f"{lead} always answering `{answer}` ({numbers})"


def _against_system(other: Comparison) -> str:
    numbers = f"vs {other.baseline} {other.baseline_value:.3f} ({_ci(other.difference)})"
    return numbers + ": " + _by_sign(other.difference, above=f"significantly better than {other.baseline}",
                                     below=f"{other.baseline} is significantly better",
                                     neither=f"no significant difference from {other.baseline}")


def _short(text: str, limit: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def constant_note(references: list[str], *, normalize: Callable[[str], str], threshold: float = 0.5) -> str | None:
    """A note such as "74% of the references are `{}`: ..." when one answer is more than `threshold` of them.

    >>> constant_note(["{}", "{}", "{}", '{"a": 1}'], normalize=str.strip)
    '75% of the references are `{}`: a constant answer scores 0.75 exact match'
    """
    if not references:
        return None
    counts = Counter(normalize(r) for r in references)
    key, count = counts.most_common(1)[0]
    share = count / len(references)
    if share <= threshold:
        return None
    text = next(r for r in references if normalize(r) == key)
    return f"{share:.0%} of the references are `{_short(text)}`: a constant answer scores {share:.2f} exact match"


def _describe(comparison: Comparison) -> str | None:
    if comparison.kind == "retrieval":
        return _against_retrieval(comparison)
    if comparison.kind == "constant":
        return _against_constant(comparison)
    if comparison.kind == "system":
        return _against_system(comparison)
    return _against_prompting(comparison)


def verdict(
    *, metric: str, n: int, tuned: float, comparisons: list[Comparison], notes: Sequence[str] = ()
) -> str:
    """One line saying whether fine-tuning helped on `metric`, by how much, and against each baseline;
    `notes` (e.g. `constant_note`) are appended. The comparison named "base" (or of kind "base") is the
    base model zero-shot; every other one is described by its `kind`.

    >>> verdict(metric="field_f1", n=200, tuned=0.8,
    ...         comparisons=[Comparison("base", 0.3, Interval(0.5, 0.44, 0.56))])
    'Fine-tuning helped: field_f1 0.800 vs 0.300 for the base model (+0.500, 95% CI +0.440 to +0.560).'
    """
    line = _verdict(metric=metric, n=n, tuned=tuned, comparisons=comparisons)
    return "; ".join([line.removesuffix("."), *notes]) + "." if notes else line


def _verdict(*, metric: str, n: int, tuned: float, comparisons: list[Comparison]) -> str:
    base = next((c for c in comparisons if c.baseline == "base" or c.kind == "base"), None)
    prompts = [c for c in comparisons if c is not base]
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
    parts += [text for text in (_describe(p) for p in prompts) if text]
    if base is None and not prompts:
        parts.append("no baseline was evaluated")
    return "; ".join(parts) + "."
