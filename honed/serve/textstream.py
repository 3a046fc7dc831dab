"""Token ids in, text out, one token at a time: what a streamed answer sends, and where `stop` cuts it.

Text is decoded from all the tokens so far (so multi-byte characters split across tokens come out whole),
and a delta is released only when it is final: text that might still become a `stop` string, or a
character still incomplete (U+FFFD at the end), is held back until the next token decides. The deltas
joined are exactly the non-streamed answer. `starts` records where each token's text begins in the
decoded answer, so a token's log-probability goes out with the text it starts (`released`).

    stream = TextStream(tokenizer, stop=["\\n\\n"])
    delta, stopped = stream.push(token_id)  # the newly final text, and whether a stop string ended it
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def held_back(text: str, *, stops: Sequence[str]) -> int:
    """How many characters at the end of `text` could be the start of a stop string.

    >>> held_back("hello wor", stops=["world"])
    3
    >>> held_back("hello", stops=["world"])
    0
    """
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


class TextStream:
    """The answer's text as tokens arrive, cut at the first `stop` string."""

    def __init__(self, tokenizer: Any, *, stop: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stops = [s for s in stop if s]
        self.token_ids: list[int] = []
        self.text = ""  # the final text released so far
        self.stopped = False
        self.starts: list[int] = []  # where each token's text begins in the decoded answer
        self._decoded = 0  # length of the decoded text so far

    def released(self) -> int:
        """How many tokens have text in the released answer (a token counts from where its text starts)."""
        count = 0
        while count < len(self.starts) and self.starts[count] < len(self.text):
            count += 1
        return count

    def push(self, token_id: int) -> tuple[str, bool]:
        """Add one token; return the newly final text and whether a stop string ended the answer."""
        self.token_ids.append(token_id)
        full = self.tokenizer.decode(self.token_ids, skip_special_tokens=True)
        self.starts.append(min(self._decoded, len(full)))
        self._decoded = len(full)
        hit = self._first_stop(full)
        if hit is not None:
            self.stopped = True
            return self._release(full[:hit]), True
        end = len(full) - held_back(full, stops=self.stops)
        while end > 0 and full[end - 1] == "\ufffd":  # an incomplete multi-byte character: wait for the rest
            end -= 1
        return self._release(full[:end]), False

    def flush(self) -> str:
        """The held-back rest, when the answer ends for another reason (end-of-turn, max_tokens)."""
        if self.stopped:
            return ""
        return self._release(self.tokenizer.decode(self.token_ids, skip_special_tokens=True))

    def _first_stop(self, full: str) -> int | None:
        # Only a stop that ends in the new text can be new: search from just before the released text.
        start = max(0, len(self.text) - max((len(s) for s in self.stops), default=0))
        found = [at for at in (full.find(stop, start) for stop in self.stops) if at >= 0]
        return min(found) if found else None

    def _release(self, final: str) -> str:
        if not final.startswith(self.text):  # the decoder rewrote earlier text (rare): send only what is new
            delta = final[len(self.text) :] if len(final) > len(self.text) else ""
        else:
            delta = final[len(self.text) :]
        self.text = self.text + delta
        return delta
