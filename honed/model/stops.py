"""When an answer ends: the end of turn as text, and the token ids that stand for it.

The end of turn is a string (`<end_of_turn>`, `<|eot_id|>`, or text several tokens long when a template's
marker is not a token of the vocabulary). `StopRule` holds the single-token stops as ids (checked per
token, for free) and the longer ones as strings, which the decoder matches on the decoded tail of a row,
so an answer stops on the whole sequence whatever the token boundaries, and never contains it.

Usage: `stop_rule(tokenizer, "<|im_end|>")`: ChatML's one-token marker becomes an id (`ids` holds 2 for
SmolLM2) and `strings` stays empty; `stop_rule`'s own example runs, with a longer stop becoming a string.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StopRule:
    """Token ids that end an answer at once, and stop strings that take several tokens."""

    ids: frozenset[int]
    strings: tuple[str, ...] = ()
    window: int = 0  # tokens to decode when looking for a stop string (its longest tokenization + 2)
    end_of_turn_id: int | None = None  # the end of turn's id when it is one token: first in `id_list`

    @property
    def id_list(self) -> list[int]:
        """The single-token stops, the end of turn first (what a config's one `eos_token_id` should name),
        then the others in a stable order (what xgrammar and vLLM take)."""
        first = [self.end_of_turn_id] if self.end_of_turn_id in self.ids else []
        return first + sorted(i for i in self.ids if i != self.end_of_turn_id)

    def cut(self, tokenizer: Any, ids: Sequence[int]) -> int | None:
        """Where to cut `ids` when their tail completes a stop string: the number of ids to keep, else None.

        The kept ids are those before the token in which the stop string starts (that token may carry text
        before the stop; `answer_text` keeps that text).
        """
        if not self.strings or not ids:
            return None
        tail = list(ids[-self.window:])
        text = tokenizer.decode(tail, skip_special_tokens=False)
        if not any(s in text for s in self.strings):
            return None
        for start in range(len(tail) - 1, -1, -1):  # the shortest suffix that still holds a stop string
            piece = tokenizer.decode(tail[start:], skip_special_tokens=False)
            if any(s in piece for s in self.strings):
                return len(ids) - len(tail) + start
        return len(ids) - len(tail)

    def answer_text(self, tokenizer: Any, ids: Sequence[int]) -> str:
        """The answer's text: specials removed and anything from the first stop string on cut off."""
        text = tokenizer.decode(list(ids), skip_special_tokens=False)
        for stop in self.strings:
            at = text.find(stop)
            if at >= 0:
                text = text[:at]
        return _strip_specials(tokenizer, text).strip()


def _strip_specials(tokenizer: Any, text: str) -> str:
    for special in sorted(set(getattr(tokenizer, "all_special_tokens", [])), key=len, reverse=True):
        if special:
            text = text.replace(special, "")
    return text


def stop_rule(tokenizer: Any, end_of_turn: str, model: Any | None = None, *, extra: Sequence[str] = ()) -> StopRule:
    """The stops of a model: its end of turn, the tokenizer's and the model's eos, and `extra` strings.

    A stop that encodes to one token becomes an id; a longer one a string.

    >>> class Tokenizer:  # a stand-in: "<|im_end|>" is token 2, other text one id per character
    ...     eos_token_id = 0
    ...     def __call__(self, text, add_special_tokens):
    ...         return {"input_ids": [2] if text == "<|im_end|>" else [ord(c) for c in text]}
    >>> rule = stop_rule(Tokenizer(), "<|im_end|>", extra=["User:"])
    >>> rule.ids, rule.strings, rule.end_of_turn_id
    (frozenset({0, 2}), ('User:',), 2)
    """
    ids: set[int] = set()
    strings: list[str] = []
    turn_ids = tokenizer(end_of_turn, add_special_tokens=False)["input_ids"] if end_of_turn else []
    for text in (end_of_turn, *extra):
        encoded = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        if len(encoded) == 1:
            ids.add(int(encoded[0]))
        elif encoded and text not in strings:
            strings.append(text)
    for source in (tokenizer, getattr(model, "generation_config", None)):
        eos = getattr(source, "eos_token_id", None)
        for value in eos if isinstance(eos, list) else [eos]:
            if value is not None:
                ids.add(int(value))
    longest = max((len(tokenizer(s, add_special_tokens=False)["input_ids"]) for s in strings), default=0)
    return StopRule(frozenset(ids), tuple(strings), window=longest + 2 if strings else 0,
                    end_of_turn_id=int(turn_ids[0]) if len(turn_ids) == 1 else None)


def stop_strings(tokenizer: Any, rule: StopRule) -> list[str]:
    """Every stop as text (ids as their tokens' text): what a GGUF Modelfile and llama.cpp's server take."""
    return [*(tokenizer.convert_ids_to_tokens(i) for i in rule.id_list), *rule.strings]


def runtime_stops(tokenizer: Any, model: Any | None = None) -> StopRule:
    """What a plain runtime stops on: only the eos ids the artifact itself names (its tokenizer's and its
    generation config's), never honed's reading of the template. Export parity decodes with this, so an
    artifact whose eos is not the end of turn fails parity instead of passing on honed's own stop ids.

    >>> from types import SimpleNamespace as Namespace  # stand-ins for a tokenizer and a model
    >>> model = Namespace(generation_config=Namespace(eos_token_id=[2, 7]))
    >>> runtime_stops(Namespace(eos_token_id=2), model).ids
    frozenset({2, 7})
    """
    ids: set[int] = set()
    for source in (tokenizer, getattr(model, "generation_config", None)):
        eos = getattr(source, "eos_token_id", None)
        for value in eos if isinstance(eos, list) else [eos]:
            if value is not None:
                ids.add(int(value))
    return StopRule(frozenset(ids))
