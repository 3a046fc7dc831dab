"""Constrained decoding: restrict what `generate` may emit, row by row, so every answer has a valid shape.

A `Constraint` hands each generated row its own `RowState`; before every greedy step the generator asks
the state which tokens may come next (`allowed() -> bool mask over the vocabulary`) and masks the rest,
then tells it the token chosen (`advance(token)`). The end-of-turn token is allowed only where the answer
may end, so a row that stops has a complete answer.

- `LabelConstraint`: the answer is one of a fixed set of labels (a token trie over the tokenized labels,
  each followed by end-of-turn). `honed eval --constrain labels` uses the labels seen in training.
- `JsonConstraint`: the answer is a JSON object, or one that matches a JSON schema; the grammar and the
  per-row matchers are xgrammar's (see `compile_json`).

Usage: `generate(model, tokenizer, prompts, max_new_tokens=8, constraint=LabelConstraint(["bug", "billing"],
tokenizer, stop_ids=[2], vocab_size=model.config.vocab_size))`: every finished answer is "bug" or "billing"
(tests/unit/test_constrain.py decodes a tiny model under each constraint).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from honed.errors import ConfigError


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

    >>> def characters(texts, add_special_tokens):  # a stand-in tokenizer: one id per character
    ...     return {"input_ids": [[ord(c) for c in text] for text in texts]}
    >>> state = LabelConstraint(["bug", "billing"], characters, stop_ids=[2], vocab_size=128).start()
    >>> allowed = lambda: [chr(t) if t > 2 else t for t in state.allowed().nonzero().flatten().tolist()]
    >>> allowed()
    ['b']
    >>> state.advance(ord("b")); allowed()
    ['i', 'u']
    >>> state.advance(ord("u")); state.advance(ord("g")); allowed()  # "bug" is whole: only the stop id
    [2]
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

    >>> type(compile_json({"type": "object", "properties": {"a": {"type": "integer"}}})).__name__
    'Grammar'
    >>> compile_json({"type": "object", "properties": {"a": {"type": "nonsense"}}}, where="schema.json")
    Traceback (most recent call last):
    honed.errors.ConfigError: schema.json: xgrammar cannot constrain decoding to this schema (Unsupported ...
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

    Usage: `generate(model, tokenizer, prompts, max_new_tokens=64, constraint=JsonConstraint(
    compile_json(None), tokenizer, stop_ids=[2], vocab_size=model.config.vocab_size))` (needs a tokenizer:
    tests/unit/test_constrain.py).
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
