"""What `honed eval --constrain` asks for: a checked plan (labels from training, JSON, a schema) that builds
the decoding constraint (honed.model.constrain) for one model.

>>> plan_constraint("labels", train_targets=["yes", "no", "yes", "no"]).kind
'labels'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from honed.data.labels import looks_like_classification
from honed.errors import ConfigError
from honed.model.constrain import Constraint, JsonConstraint, LabelConstraint, compile_json

KINDS = ("labels", "json")


@dataclass(frozen=True)
class ConstraintPlan:
    """A checked `--constrain` request: the kind, the label set or the schema; `build` makes it for a model."""

    kind: str
    labels: tuple[str, ...] = ()
    schema: dict[str, Any] | None = None

    def build(self, model: Any, tokenizer: Any) -> Constraint:
        """The constraint for this model's tokenizer, end-of-turn tokens and vocabulary (logits) size."""
        from honed.model.decode import stops_for

        stop_ids = stops_for(tokenizer, model).id_list
        head = model.get_output_embeddings()  # the logits' width, which may exceed the tokenizer's vocabulary
        vocab_size = int(head.weight.shape[0]) if head is not None else int(model.config.vocab_size)
        if self.kind == "labels":
            return LabelConstraint(self.labels, tokenizer, stop_ids=stop_ids, vocab_size=vocab_size)
        return JsonConstraint(compile_json(self.schema), tokenizer, stop_ids=stop_ids, vocab_size=vocab_size)

    def min_new_tokens(self, tokenizer: Any) -> int:
        """Room for the longest label and its end-of-turn token (0 for JSON: answers have no fixed length)."""
        if self.kind != "labels":
            return 0
        return 1 + max(len(ids) for ids in tokenizer(list(self.labels), add_special_tokens=False)["input_ids"])


def plan_constraint(kind: str, *, train_targets: Sequence[str], schema: dict[str, Any] | None = None,
                    schema_path: str | None = None) -> ConstraintPlan:
    """Check `--constrain KIND` against the run's training answers; a mismatch is a ConfigError.

    labels: the training answers must be labels (short, repeated: `honed.data.labels.looks_like_classification`); the
    constraint is their distinct set. json: the answers must be JSON; with a schema, it must compile.

    >>> plan_constraint("labels", train_targets=["yes", "no", "yes", "no"]).labels
    ('no', 'yes')
    """
    from honed.evaluate import metrics as M

    if kind not in KINDS:
        raise ConfigError(f"--constrain {kind}: unknown constraint; use labels (classification data) "
                          "or json (JSON answers, with --schema to follow a schema)")
    if not train_targets:
        raise ConfigError(f"--constrain {kind}: the run's training examples are gone, and the constraint is "
                          "built from them; drop --constrain")
    if kind == "labels":
        if not looks_like_classification(train_targets):
            raise ConfigError(f"--constrain labels: the run's training answers are not labels "
                              f"({len(set(train_targets))} distinct answers; labels are short one-line answers "
                              "that repeat); use --constrain json for JSON answers, or drop --constrain")
        return ConstraintPlan("labels", labels=tuple(sorted({t.strip() for t in train_targets})))
    shape_ok = M.is_json_task(train_targets) if schema is not None else all(
        isinstance(M.parse_json(t), dict) for t in train_targets)
    if not shape_ok:
        raise ConfigError("--constrain json: the run's training answers are not JSON objects; "
                          "use --constrain labels for classification data, or drop --constrain")
    compile_json(schema, where=schema_path or "--schema")  # fail now, before any model is loaded
    return ConstraintPlan("json", schema=schema)
