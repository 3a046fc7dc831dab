"""What "looks like a classification task" means, in one place.

`data check` reports the label distribution, `data split` stratifies by label, and `eval` picks label
metrics and one few-shot example per label, all when `looks_like_classification(targets)` says so.

The rule: every target (stripped) is one line of at most MAX_LABEL_CHARS characters, and the targets
repeat: 2 or more distinct ones, at most half as many as there are targets (each label is used twice on
average), and few of them (at most MAX_LABELS, or at most LABEL_SHARE of the targets when that is more).
Characters, not words, bound a label, so a label in a language written without spaces is measured too.
On ../shared/data: banking77 (77 one-word labels of at most 48 characters) is classification;
restaurant8k (3,169 distinct JSON targets of up to 110 characters in 8,198 rows) is not;
examples/support_triage.jsonl (47 distinct JSON objects of up to 76 characters in 400 rows) is.
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_LABEL_CHARS = 100
MAX_LABELS = 200
LABEL_SHARE = 0.05


def looks_like_classification(targets: Sequence[str]) -> bool:
    """True for short one-line targets drawn from a small set of labels that repeat.

    >>> looks_like_classification(["yes", "no", "yes", "no"])
    True
    >>> looks_like_classification(["a long free-text answer", "another one", "and a third"])
    False
    """
    labels = [target.strip() for target in targets]
    if any(len(label) > MAX_LABEL_CHARS or "\n" in label for label in labels):
        return False
    distinct = len(set(labels))
    few = distinct <= max(MAX_LABELS, LABEL_SHARE * len(labels))
    return few and 2 <= distinct <= len(labels) / 2
