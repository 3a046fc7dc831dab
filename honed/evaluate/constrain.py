"""Constrained decoding: restrict what `generate` may emit, row by row, so every answer has a valid shape.

A `Constraint` hands each generated row its own `RowState`; before every greedy step the generator asks
the state which tokens may come next (`allowed() -> bool mask over the vocabulary`) and masks the rest,
then tells it the token chosen (`advance(token)`). The end-of-turn token is allowed only where the answer
may end, so a row that stops has a complete answer.

- `LabelConstraint`: the answer is one of a fixed set of labels (a token trie over the tokenized labels,
  each followed by end-of-turn). `honed eval --constrain labels` uses the labels seen in training.
- `JsonConstraint`: the answer is a JSON object, or one that matches a JSON schema; the grammar and the
  per-row matchers are xgrammar's (see `compile_json`).

>>> constraint = LabelConstraint(["bug", "billing"], tokenizer, stop_ids=[2], vocab_size=427)  # doctest: +SKIP
>>> outputs, _ = generate(model, tokenizer, prompts, max_new_tokens=8, constraint=constraint)  # doctest: +SKIP
>>> {o.text for o in outputs} <= {"bug", "billing"}  # doctest: +SKIP
True
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from honed.data.labels import looks_like_classification
from honed.errors import ConfigError

KINDS = ("labels", "json")


class RowState(Protocol):
    """Where one generated answer stands under a constraint."""

    def allowed(self) -> Any:
        """A bool tensor over the vocabulary: True for every token that may come next."""
        ...

    def advance(self, token: int) -> None:
        """Record that `token` was generated (always one `allowed()` said was fine)."""
        ...


class Constraint(Protocol):
    """A rule every answer must follow; `start()` gives the state of one new answer."""

    name: str  # "labels" or "json": the suffix of the constrained system, e.g. tuned+labels

    def start(self) -> RowState: ...


# ---- labels: a token trie -------------------------------------------------------------------------------


@dataclass
class _Node:
    children: dict[int, _Node] = field(default_factory=dict)
    end: bool = False  # a whole label ends here: end-of-turn may come next
    mask: Any = None  # the allowed-token mask, built on first use


class LabelConstraint:
    """Answers restricted to one of `labels`: a trie over their token ids, then end-of-turn.

    Labels are tokenized as the start of an assistant turn (no special tokens), as training saw them.

    >>> c = LabelConstraint(["bug", "billing"], tokenizer, stop_ids=[2], vocab_size=427)  # doctest: +SKIP
    >>> state = c.start(); state.allowed().sum().item()  # doctest: +SKIP
    2
    """

    name = "labels"

    def __init__(self, labels: Sequence[str], tokenizer: Any, *, stop_ids: Sequence[int], vocab_size: int) -> None:
        if not labels or not stop_ids:
            raise ValueError("a label constraint needs at least one label and one stop token")
        self.labels = sorted(set(labels))
        self.stop_ids = list(stop_ids)
        self.vocab_size = vocab_size
        self.root = _Node()
        for ids in tokenizer(self.labels, add_special_tokens=False)["input_ids"]:
            node = self.root
            for token in ids:
                node = node.children.setdefault(int(token), _Node())
            node.end = True

    def start(self) -> _LabelState:
        return _LabelState(self, self.root)

    def mask(self, node: _Node) -> Any:
        """The tokens allowed at `node`: its children, and end-of-turn where a label is complete."""
        import torch

        if node.mask is None:
            node.mask = torch.zeros(self.vocab_size, dtype=torch.bool)
            node.mask[list(node.children)] = True
            if node.end or not node.children:  # not node.children: never strand a row with nothing allowed
                node.mask[self.stop_ids] = True
        return node.mask


class _LabelState:
    def __init__(self, constraint: LabelConstraint, node: _Node) -> None:
        self.constraint = constraint
        self.node = node

    def allowed(self) -> Any:
        return self.constraint.mask(self.node)

    def advance(self, token: int) -> None:
        self.node = self.node.children[token]


# ---- JSON: xgrammar -------------------------------------------------------------------------------------
# xgrammar over outlines(-core) and lm-format-enforcer, measured here (SmolLM2's 49,152-token vocabulary,
# per-step mask while feeding 20 reference answers): 0.12-0.22 ms a step against 0.16-11.7 (outlines-core)
# and 1.1-4.1 (lm-format-enforcer), and 0.3-0.5 s to compile against 16.8 s for outlines' "any object"
# regex. It compiles a grammar (any nesting), not a regex, and runs on CPU without its triton kernels.

JSON_SEPARATORS = (", ", ": ")  # json.dumps' defaults: no free whitespace a model could loop in


def _xgrammar() -> Any:
    try:
        import xgrammar
    except ImportError as exc:
        raise ConfigError("--constrain json needs the xgrammar package; install it with "
                          "`pip install 'honed[constrain]'`") from exc
    return xgrammar


def _library_message(exc: Exception) -> str:
    """xgrammar's error without its C++ source location ('[23:39:29] /project/cpp/x.cc:94: ...')."""
    return re.sub(r"^\[[^\]]*\]\s*\S+:\d+:\s*", "", str(exc).strip()).strip()


def compile_json(schema: dict[str, Any] | None, *, where: str = "--schema") -> Any:
    """The xgrammar Grammar for a JSON object (`schema` None) or for JSON matching `schema`.

    A schema the library cannot turn into a grammar is a ConfigError naming `where` (the schema file).

    >>> compile_json({"type": "object", "properties": {"a": {"type": "integer"}}})  # doctest: +SKIP
    <xgrammar.grammar.Grammar object at ...>
    """
    xgr = _xgrammar()
    # Without a schema: any object, whatever keys. With one: strict_mode keeps to the keys it names
    # (every output still validates against it).
    text = json.dumps(schema if schema is not None else {"type": "object"})
    try:
        return xgr.Grammar.from_json_schema(text, any_whitespace=False, separators=JSON_SEPARATORS,
                                            strict_mode=schema is not None)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: xgrammar cannot constrain decoding to this schema "
                          f"({_library_message(exc)}); simplify the schema or drop --constrain json") from exc


def _unpack(bitmask: Any, vocab_size: int) -> Any:
    """xgrammar's int32 bitmask (bit i of word w = token 32*w + i) as a bool tensor of `vocab_size`."""
    import torch

    bits = (bitmask.reshape(-1, 1) >> torch.arange(32, dtype=torch.int32)) & 1
    return bits.reshape(-1)[:vocab_size].bool()


class JsonConstraint:
    """Answers restricted to a JSON object (or JSON matching a schema), through xgrammar's grammar matcher.

    >>> c = JsonConstraint(compile_json(None), tokenizer, stop_ids=[2], vocab_size=427)  # doctest: +SKIP
    >>> outputs, _ = generate(model, tokenizer, prompts, max_new_tokens=64, constraint=c)  # doctest: +SKIP
    """

    name = "json"

    def __init__(self, grammar: Any, tokenizer: Any, *, stop_ids: Sequence[int], vocab_size: int) -> None:
        import torch

        xgr = _xgrammar()
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=list(stop_ids))
        compiler = xgr.GrammarCompiler(info, max_threads=max(1, torch.get_num_threads()))
        self.compiled = compiler.compile_grammar(grammar)
        self.vocab_size = vocab_size

    def start(self) -> _JsonState:
        return _JsonState(self)


class _JsonState:
    def __init__(self, constraint: JsonConstraint) -> None:
        xgr = _xgrammar()
        self.vocab_size = constraint.vocab_size
        self.matcher = xgr.GrammarMatcher(constraint.compiled)
        self.bitmask = xgr.allocate_token_bitmask(1, constraint.vocab_size)

    def allowed(self) -> Any:
        self.matcher.fill_next_token_bitmask(self.bitmask)
        return _unpack(self.bitmask, self.vocab_size)

    def advance(self, token: int) -> None:
        if not self.matcher.accept_token(token):
            raise AssertionError(f"token {token} was not allowed by the JSON grammar")  # the mask forbade it


# ---- what `honed eval --constrain` asks for -----------------------------------------------------------------


@dataclass(frozen=True)
class ConstraintPlan:
    """A checked `--constrain` request: the kind, the label set or the schema; `build` makes it for a model."""

    kind: str
    labels: tuple[str, ...] = ()
    schema: dict[str, Any] | None = None

    def build(self, model: Any, tokenizer: Any) -> Constraint:
        """The constraint for this model's tokenizer, end-of-turn tokens and vocabulary (logits) size."""
        from honed.evaluate.generate import stop_token_ids

        stop_ids = stop_token_ids(tokenizer, model)
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
