"""What the page shows beyond summary.json, computed from the per-example rows of eval/<system>.jsonl.

- label tasks: per-label precision/recall/F1 and a confusion matrix of the most confused labels;
- JSON tasks: per-field precision/recall (a field is a key path, list items folded together);
- every task: the examples table, each system's output with its differences from the reference marked.

Labels and values are normalised exactly as the metrics compare them (honed.evaluate.metrics).

>>> per_label(["a", "a", "b"], ["a", "b", "b"])[0]
LabelScore(label='a', support=2, precision=1.0, recall=0.5, f1=0.6666666666666666)
"""

from __future__ import annotations

import difflib
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup, escape

from honed.evaluate.metrics import normalize_label, normalize_text, parse_json

OTHER = "(other)"  # predictions that are none of the labels shown
MAX_CONFUSED = 8  # labels in the confusion matrix
MAX_DIFF_TOKENS = 3000  # longer texts are shown without marks (difflib is quadratic in the worst case)
TOKEN = re.compile(r"\w+|[^\w\s]+|\s+")


@dataclass
class LabelScore:
    label: str
    support: int
    precision: float
    recall: float
    f1: float


def per_label(references: Sequence[str], outputs: Sequence[str]) -> list[LabelScore]:
    """Precision, recall and F1 of every reference label, most frequent first (macro_f1's definition)."""
    gold = [normalize_label(r) for r in references]
    pred = [normalize_label(o) for o in outputs]
    hits = Counter(g for g, p in zip(gold, pred) if g == p)
    gold_counts, pred_counts = Counter(gold), Counter(pred)
    scores = []
    for label, support in gold_counts.most_common():
        tp = hits[label]
        precision = tp / pred_counts[label] if pred_counts[label] else 0.0
        recall = tp / support
        f1 = 2 * tp / (support + pred_counts[label]) if tp else 0.0
        scores.append(LabelScore(label, support, precision, recall, f1))
    return scores


@dataclass
class Confusion:
    """counts[i][j]: examples of label rows[i] answered as columns[j]; the last column is OTHER."""

    rows: list[str]
    columns: list[str]
    counts: list[list[int]]


def confusion(references: Sequence[str], outputs: Sequence[str], *, top: int = MAX_CONFUSED) -> Confusion:
    """The `top` labels most involved in mistakes (as truth or as answer), and what they were answered as.

    >>> confusion(["a", "a", "b", "c"], ["b", "a", "a", "c"], top=2).counts
    [[1, 1, 0], [1, 0, 0]]
    """
    gold = [normalize_label(r) for r in references]
    pred = [normalize_label(o) for o in outputs]
    labels = set(gold)
    errors: Counter[str] = Counter()
    for g, p in zip(gold, pred):
        if g != p:
            errors[g] += 1
            if p in labels:
                errors[p] += 1
    chosen = [label for label, _ in errors.most_common(top)] or [label for label, _ in Counter(gold).most_common(top)]
    columns = chosen + [OTHER]
    counts = [[0] * len(columns) for _ in chosen]
    for g, p in zip(gold, pred):
        if g in chosen:
            counts[chosen.index(g)][chosen.index(p) if p in chosen else len(chosen)] += 1
    return Confusion(chosen, columns, counts)


@dataclass
class FieldScore:
    field: str
    support: int  # references that have the field
    precision: float
    recall: float


def _pairs(value: Any, prefix: str = "") -> set[tuple[str, str]]:
    """(field, normalised value) pairs as field_f1 compares them, list items folded into `field[]`."""
    if isinstance(value, dict):
        return {pair for key, item in value.items() for pair in _pairs(item, f"{prefix}.{key}" if prefix else str(key))}
    if isinstance(value, list):
        return {pair for item in value for pair in _pairs(item, f"{prefix}[]")}
    return {(prefix, normalize_text(value if isinstance(value, str) else json.dumps(value)))}


def per_field(references: Sequence[str], outputs: Sequence[str]) -> list[FieldScore]:
    """Precision and recall of each JSON field over the examples, most frequent field first.

    >>> per_field(['{"a": 1, "b": "x"}'], ['{"a": 1, "b": "y"}'])
    [FieldScore(field='a', support=1, precision=1.0, recall=1.0), FieldScore(field='b', support=1, precision=0.0, recall=0.0)]
    """
    gold_n: Counter[str] = Counter()
    pred_n: Counter[str] = Counter()
    hits: Counter[str] = Counter()
    for reference, output in zip(references, outputs):
        ref, out = parse_json(reference), parse_json(output)
        gold = _pairs(ref) if ref is not None else set()
        pred = _pairs(out) if out is not None else set()
        gold_n.update(sorted(f for f, _ in gold))  # sorted: ties keep one order from run to run
        pred_n.update(f for f, _ in pred)
        hits.update(f for f, _ in gold & pred)
    return [FieldScore(name, support, hits[name] / pred_n[name] if pred_n[name] else 0.0, hits[name] / support)
            for name, support in gold_n.most_common()]


def mark_differences(reference: str, output: str) -> Markup:
    """`output` as HTML with the words that differ from `reference` wrapped in <mark>.

    >>> str(mark_differences("a b c", "a x c"))
    'a <mark>x</mark> c'
    """
    ref_tokens, out_tokens = TOKEN.findall(reference), TOKEN.findall(output)
    if len(ref_tokens) > MAX_DIFF_TOKENS or len(out_tokens) > MAX_DIFF_TOKENS:
        return escape(output)
    matcher = difflib.SequenceMatcher(None, ref_tokens, out_tokens, autojunk=False)
    parts = []
    for tag, _, _, start, end in matcher.get_opcodes():
        text = escape("".join(out_tokens[start:end]))
        if text and tag != "equal" and "".join(out_tokens[start:end]).strip():
            parts.append(Markup("<mark>") + text + Markup("</mark>"))
        else:
            parts.append(text)
    return Markup("").join(parts)


@dataclass
class Answer:
    """One system's output on one example."""

    text: str
    html: Markup  # the text with its differences from the reference marked
    score: float | None  # the main metric's per-example score, when it has one
    correct: bool | None


@dataclass
class ExampleRow:
    id: Any
    source: str | None
    prompt: str
    reference: str
    answers: dict[str, Answer] = field(default_factory=dict)

    @property
    def wrong(self) -> bool:
        """The first system (the tuned model) got it wrong."""
        first = next(iter(self.answers.values()), None)
        return bool(first and first.correct is False)

    @property
    def disagree(self) -> bool:
        """The systems' outputs are not all the same (compared normalised)."""
        return len({normalize_text(a.text) for a in self.answers.values()}) > 1


def correctness_metric(main_metric: str, scores: dict[str, Any]) -> str | None:
    """The per-example score that says right or wrong: the main metric when it is per-example (macro_f1
    is not), else label_accuracy, else exact_match."""
    for name in (main_metric, "label_accuracy", "exact_match"):
        if isinstance(scores.get(name), (int, float)):
            return name
    return None


def _answer(row: dict[str, Any], main_metric: str) -> Answer:
    scores = row.get("scores") or {}
    name = correctness_metric(main_metric, scores)
    score = float(scores[name]) if name else None
    output = str(row.get("output", ""))
    return Answer(output, mark_differences(str(row.get("reference", "")), output), score,
                  None if score is None else score >= 1.0 - 1e-9)


def example_rows(rows: dict[str, list[dict[str, Any]]], *, main_metric: str, limit: int) -> list[ExampleRow]:
    """One ExampleRow per holdout example (the first `limit`), with every system's answer, by row order."""
    if not rows:
        return []
    first = next(iter(rows.values()))
    out = []
    for i, base in enumerate(first[:limit]):
        example = ExampleRow(base.get("id", i), base.get("source"), str(base.get("prompt", "")),
                             str(base.get("reference", "")))
        for system, system_rows in rows.items():
            if i < len(system_rows):
                example.answers[system] = _answer(system_rows[i], main_metric)
        out.append(example)
    return out
