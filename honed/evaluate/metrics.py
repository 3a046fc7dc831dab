"""Task metrics on generated answers, chosen from the data and overridable.

A per-example metric is a plain function `score(reference: str, output: str) -> float` (the `Metric`
Protocol), so a user metric is just a Python function named `module:function`. Corpus-level metrics
(macro-F1) are computed from the per-example (reference, output) pairs by `macro_f1`.

Which metrics apply (`pick_metrics`):
- JSON targets (every target parses as a JSON object or array): json_valid, schema_valid (JSON-schema
  conformance against a given schema or one inferred from the targets), field_precision/recall/f1_micro
  (flattened (key path, normalised value) pairs pooled over the whole holdout, as slot-filling papers
  report them), field_f1_mean (the per-example mean; `field_f1` in older summaries), exact_match.
  Main metric: field_f1_micro.
- classification-like targets (honed.data.labels: short one-line labels, few distinct values that
  repeat): label_accuracy, macro_f1, exact_match. Main metric: label_accuracy.
- free text: chrf (sacrebleu's chrF, a well-kept reference implementation), exact_match. Main: chrf.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import re
import sys
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from honed.data.labels import looks_like_classification
from honed.errors import ConfigError

JSON_METRICS = ["json_valid", "schema_valid", "field_precision_micro", "field_recall_micro", "field_f1_micro",
                "field_f1_mean", "exact_match"]
LABEL_METRICS = ["label_accuracy", "macro_f1", "exact_match"]
TEXT_METRICS = ["chrf", "exact_match"]
CORPUS_METRICS = {"macro_f1"}
KNOWN_METRICS = set(JSON_METRICS) | set(LABEL_METRICS) | set(TEXT_METRICS)


class Metric(Protocol):
    """A per-example score in [0, 1] (higher is better) of one output against its reference."""

    def __call__(self, reference: str, output: str) -> float: ...


# ---- normalisation ---------------------------------------------------------------------------------------


def normalize_text(text: str) -> str:
    """NFKC, case-folded, whitespace collapsed and trimmed: what "the same answer" means for exact match.

    >>> normalize_text("  Café\\n  AU  lait ")
    'café au lait'
    """
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip().casefold()


@functools.lru_cache(maxsize=65536)  # bootstrap resamples normalise the same outputs thousands of times
def normalize_label(text: str) -> str:
    """A label as the model wrote it: first line, quotes and trailing punctuation dropped, normalised.

    >>> normalize_label('"Card_Arrival."\\nBecause ...')
    'card_arrival'
    """
    first = text.strip().splitlines()[0] if text.strip() else ""
    return normalize_text(first).strip("\"'`.!").strip()


# ---- exact match and labels ------------------------------------------------------------------------------


def exact_match(reference: str, output: str) -> float:
    """1.0 when the normalised texts are equal.

    >>> exact_match("Paris", " paris ")
    1.0
    """
    return float(normalize_text(reference) == normalize_text(output))


def label_accuracy(reference: str, output: str) -> float:
    """1.0 when the output's label (first line, quotes and final period dropped) is the reference label.

    >>> label_accuracy("card_arrival", "card_arrival.")
    1.0
    """
    return float(normalize_label(reference) == normalize_label(output))


def macro_f1(references: Sequence[str], outputs: Sequence[str]) -> float:
    """Macro-averaged F1 over the labels that occur in the references.

    A prediction that is no reference label (e.g. a sentence) counts as a miss for the true label; it is
    not a class of its own, so invented labels cannot dilute the average with zero-F1 classes.

    >>> macro_f1(["a", "a", "b"], ["a", "b", "b"])
    0.6666666666666666
    """
    gold = [normalize_label(r) for r in references]
    pred = [normalize_label(o) for o in outputs]
    if not gold:
        return 0.0
    # Counts in one pass (this runs once per bootstrap resample): F1 = 2tp / (2tp + fp + fn).
    true_positives = Counter(g for g, p in zip(gold, pred) if g == p)
    gold_counts, pred_counts = Counter(gold), Counter(pred)
    total = 0.0
    for label, n_gold in gold_counts.items():
        tp = true_positives[label]
        total += 2 * tp / (n_gold + pred_counts[label]) if tp else 0.0
    return total / len(gold_counts)


# ---- JSON ------------------------------------------------------------------------------------------------

_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def parse_json(text: str) -> Any | None:
    """The JSON value of an output, or None when it is not valid JSON (a ```json fence is allowed).

    >>> parse_json('```json\\n{"a": 1}\\n```')
    {'a': 1}
    """
    text = text.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None


def json_valid(reference: str, output: str) -> float:
    """1.0 when the output is valid JSON (the reference is not looked at)."""
    return float(parse_json(output) is not None)


def _flatten(value: Any, prefix: str = "") -> set[tuple[str, str]]:
    """(key path, normalised scalar) pairs: {"a": {"b": "X"}} -> {("a.b", "x")}; list items keyed by index."""
    if isinstance(value, dict):
        pairs: set[tuple[str, str]] = set()
        for key, item in value.items():
            pairs |= _flatten(item, f"{prefix}.{key}" if prefix else str(key))
        return pairs
    if isinstance(value, list):
        pairs = set()
        for i, item in enumerate(value):
            pairs |= _flatten(item, f"{prefix}[{i}]")
        return pairs
    scalar = value if isinstance(value, str) else json.dumps(value)
    return {(prefix, normalize_text(scalar))}


@dataclass(frozen=True)
class FieldScores:
    precision: float
    recall: float
    f1: float


def field_scores(reference: str, output: str) -> FieldScores:
    """Field-level precision, recall and F1 of the output's (key path, value) pairs against the reference's.

    Values are compared normalised (case, whitespace, unicode form). Invalid JSON scores 0 everywhere;
    two empty objects score 1.

    >>> field_scores('{"date": "Friday", "people": "4"}', '{"date": "friday", "time": "7pm"}')
    FieldScores(precision=0.5, recall=0.5, f1=0.5)
    """
    ref, out = parse_json(reference), parse_json(output)
    if out is None:
        return FieldScores(0.0, 0.0, 0.0)
    gold = _flatten(ref) if ref is not None else set()
    pred = _flatten(out)
    matched = len(gold & pred)
    precision = matched / len(pred) if pred else float(not gold)
    recall = matched / len(gold) if gold else float(not pred)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return FieldScores(precision, recall, f1)


def field_precision(reference: str, output: str) -> float:
    return field_scores(reference, output).precision


def field_recall(reference: str, output: str) -> float:
    return field_scores(reference, output).recall


def field_f1(reference: str, output: str) -> float:
    return field_scores(reference, output).f1


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    return {dict: "object", list: "array", str: "string", float: "number", type(None): "null"}[type(value)]


def infer_schema(targets: Sequence[str]) -> dict[str, Any]:
    """A JSON schema every target conforms to: object, observed property types, only the observed keys
    (additionalProperties false), keys present in every target required. Nested values are typed only.

    >>> infer_schema(['{"a": "x", "b": 1}', '{"a": "y"}'])["required"]
    ['a']
    """
    objects = [v for v in (parse_json(t) for t in targets) if isinstance(v, dict)]
    if not objects:
        types = sorted({_json_type(v) for v in (parse_json(t) for t in targets) if v is not None})
        return {"type": types[0] if len(types) == 1 else types} if types else {}
    properties: dict[str, set[str]] = {}
    for obj in objects:
        for key, value in obj.items():
            properties.setdefault(key, set()).add(_json_type(value))
    required = [key for key in properties if all(key in obj for obj in objects)]
    return {
        "type": "object",
        "properties": {k: {"type": sorted(t)[0] if len(t) == 1 else sorted(t)} for k, t in properties.items()},
        "required": required,
        "additionalProperties": False,
    }


def schema_metric(schema: dict[str, Any]) -> Metric:
    """A metric: 1.0 when the output is valid JSON that conforms to `schema` (checked with jsonschema).

    >>> schema_metric({"type": "object"})("", '{"a": 1}')
    1.0
    """
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)

    def schema_valid(reference: str, output: str) -> float:
        value = parse_json(output)
        return float(value is not None and validator.is_valid(value))

    return schema_valid


# ---- free text -------------------------------------------------------------------------------------------


def chrf(reference: str, output: str) -> float:
    """chrF (character n-gram F-score, sacrebleu's implementation) scaled to [0, 1].

    >>> chrf("the cat sat", "the cat sat")
    1.0
    """
    from sacrebleu.metrics import CHRF

    return CHRF().sentence_score(output, [reference]).score / 100.0


# ---- choosing metrics ------------------------------------------------------------------------------------


def is_json_task(targets: Sequence[str]) -> bool:
    """True when every target is a JSON object or array."""
    return bool(targets) and all(isinstance(parse_json(t), (dict, list)) for t in targets)



def pick_metrics(targets: Sequence[str]) -> tuple[str, list[str]]:
    """(main metric, metric names) for the kind of targets.

    >>> pick_metrics(['{"a": 1}', '{"a": 2}'])[0]
    'field_f1_micro'
    """
    if is_json_task(targets):
        return "field_f1_micro", list(JSON_METRICS)
    if looks_like_classification(targets):
        return "label_accuracy", list(LABEL_METRICS)
    return "chrf", list(TEXT_METRICS)


def load_user_metric(spec: str) -> Metric:
    """Import a user metric `module:function` (the module must be importable, e.g. from the cwd)."""
    module_name, _, function_name = spec.partition(":")
    if not module_name or not function_name:
        raise ConfigError(f"metric '{spec}' is not known; name a built-in ({', '.join(sorted(KNOWN_METRICS))}) "
                          "or a Python function as module:function")
    if os.getcwd() not in sys.path and "" not in sys.path:
        # `python -m honed` puts the current folder on sys.path, the installed `honed` script does not;
        # a metric module beside the data should be found either way.
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"metric '{spec}': cannot import module {module_name} ({exc}); "
                          "run from the folder that holds it or install it") from exc
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ConfigError(f"metric '{spec}': {module_name} has no function {function_name}")
    return function  # type: ignore[no-any-return]


def score_one(name: str, metric: Metric, reference: str, output: str, *, index: int) -> float:
    """`metric(reference, output)` as a float; a metric that raises or returns no number is a ConfigError
    naming it and the example (0-based index in the evaluated holdout), not a traceback.

    >>> score_one("exact_match", exact_match, "a", "a", index=0)
    1.0
    """
    try:
        return float(metric(reference, output))
    except Exception as exc:  # noqa: BLE001 (user code: anything can come out of it)
        raise ConfigError(f"metric {name}: failed on holdout example {index} ({type(exc).__name__}: {exc}); "
                          "fix the metric function (it gets reference and output strings, returns a number)") from exc


def metric_name(spec: str) -> str:
    """The column name of a metric spec: `mymod:score` -> `score`."""
    return spec.partition(":")[2] if ":" in spec else spec


BUILTIN: dict[str, Metric] = {
    "exact_match": exact_match,
    "label_accuracy": label_accuracy,
    "json_valid": json_valid,
    "field_precision": field_precision,
    "field_recall": field_recall,
    "field_f1": field_f1,
    "chrf": chrf,
}


def resolve_metrics(specs: Sequence[str], *, schema: dict[str, Any]) -> dict[str, Metric]:
    """Per-example metric functions by column name (corpus metrics like macro_f1 are left out here).

    >>> sorted(resolve_metrics(["exact_match", "macro_f1"], schema={}))
    ['exact_match']
    """
    resolved: dict[str, Metric] = {}
    for spec in specs:
        if spec in CORPUS_METRICS:
            continue
        if spec == "schema_valid":
            resolved[spec] = schema_metric(schema)
        elif spec in BUILTIN:
            resolved[spec] = BUILTIN[spec]
        else:
            resolved[metric_name(spec)] = load_user_metric(spec)
    return resolved


CorpusMetric = Callable[[Sequence[str], Sequence[str]], float]
CORPUS: dict[str, CorpusMetric] = {"macro_f1": macro_f1}


# ---- pooled (micro-averaged) field scores ----------------------------------------------------------------
# Slot-filling papers report precision/recall/F1 over all (key, value) pairs of the test set pooled: an
# example with an empty reference and an empty answer adds nothing, so a data set where most answers are
# `{}` cannot score well by answering `{}`. The per-example mean (`field_f1_mean`, the old `field_f1`)
# scores each such example 1.0, which is why it is only a secondary metric.

FIELD_MICRO_METRICS = ["field_precision_micro", "field_recall_micro", "field_f1_micro"]
LEGACY_FIELD_METRICS = {"field_f1": "field_f1_mean"}  # summaries before 0.2 called the per-example mean field_f1


@functools.lru_cache(maxsize=65536)  # the three pooled metrics and every paired difference count the same pairs
def field_counts(reference: str, output: str) -> tuple[int, int, int]:
    """(matched, predicted, reference) (key path, value) pairs of one example: what micro-averaging pools.

    An output that is not valid JSON predicts no pair, so every reference pair counts as missed.

    >>> field_counts('{"a": "x", "b": "y"}', '{"a": "X", "c": "z"}')
    (1, 2, 2)
    >>> field_counts("{}", "{}")
    (0, 0, 0)
    """
    ref, out = parse_json(reference), parse_json(output)
    gold = _flatten(ref) if ref is not None else set()
    pred = _flatten(out) if out is not None else set()
    return len(gold & pred), len(pred), len(gold)


def micro_precision(sums: Any) -> Any:
    """Pooled precision from summed (matched, predicted, reference) counts (numpy, any leading shape).
    Nothing predicted: 1.0 when there was nothing to find, else 0."""
    import numpy as np

    matched, predicted, gold = sums[..., 0], sums[..., 1], sums[..., 2]
    return np.where(predicted > 0, matched / np.maximum(predicted, 1), (gold == 0).astype(float))


def micro_recall(sums: Any) -> Any:
    """Pooled recall from summed counts; nothing to find: 1.0 when nothing was predicted, else 0."""
    import numpy as np

    matched, predicted, gold = sums[..., 0], sums[..., 1], sums[..., 2]
    return np.where(gold > 0, matched / np.maximum(gold, 1), (predicted == 0).astype(float))


def micro_f1(sums: Any) -> Any:
    """Pooled F1 = 2 matched / (predicted + reference); 1.0 when both are 0 (nothing to find, nothing said).

    >>> import numpy as np
    >>> float(micro_f1(np.array([1.0, 2.0, 2.0])))
    0.5
    """
    import numpy as np

    matched, predicted, gold = sums[..., 0], sums[..., 1], sums[..., 2]
    total = predicted + gold
    return np.where(total > 0, 2 * matched / np.maximum(total, 1), 1.0)


@dataclass(frozen=True)
class PooledMetric:
    """A corpus metric computed from per-example counts summed over the corpus (micro-averaging).

    `counts(reference, output)` gives one example's counts; `value(sums)` turns counts summed over any set
    of examples into the metric (vectorised over leading axes). The bootstrap sums the counts of the
    resampled examples instead of re-scoring texts. Called on whole lists it is a plain corpus metric.

    >>> POOLED["field_f1_micro"](['{"a": 1}', '{}', '{}'], ['{"a": 1}', '{}', '{"b": 2}'])
    0.6666666666666666
    """

    counts: Callable[[str, str], tuple[int, ...]]
    value: Callable[[Any], Any]

    def count_matrix(self, references: Sequence[str], outputs: Sequence[str]) -> Any:
        """[n examples, k counts] float array."""
        import numpy as np

        rows = [self.counts(r, o) for r, o in zip(references, outputs)]
        return np.array(rows, dtype=float).reshape(len(rows), -1)

    def __call__(self, references: Sequence[str], outputs: Sequence[str]) -> float:
        return float(self.value(self.count_matrix(references, outputs).sum(axis=0)))


POOLED: dict[str, PooledMetric] = {
    "field_precision_micro": PooledMetric(field_counts, micro_precision),
    "field_recall_micro": PooledMetric(field_counts, micro_recall),
    "field_f1_micro": PooledMetric(field_counts, micro_f1),
}
CORPUS.update(POOLED)
CORPUS_METRICS.update(POOLED)
BUILTIN["field_f1_mean"] = field_f1
# The per-example means keep their old names for --metrics and eval_metric (field_f1 = field_f1_mean).
KNOWN_METRICS.update({"field_precision", "field_recall", "field_f1"})


def is_empty_reference(reference: str) -> bool:
    """True for a reference with nothing in it: blank text, or JSON without a single (key, value) pair.

    >>> [is_empty_reference(r) for r in ["{}", "[]", " ", '{"a": 1}', "no"]]
    [True, True, True, False, False]
    """
    if not normalize_text(reference):
        return True
    value = parse_json(reference)
    return isinstance(value, (dict, list)) and not _flatten(value)
