"""The most common response: what a constant answer would score, measured before any training.

On data where 75% of the responses are `{}`, answering `{}` every time scores 0.75 exact match; a tuned
model that "beats the base model" at 0.8 may have learned little more. `data check` reports the share so
the bar is known up front; `honed eval` evaluates that constant answer (the `majority` baseline) too.

Responses are compared as `honed eval`'s exact match compares them: Unicode NFKC, case-folded, whitespace
collapsed and trimmed.

>>> most_common_response(["{}", "{ }", '{"a": 1}', "{}"]).share
0.5
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from honed.data.types import Conversation

DOMINANT_SHARE = 0.5  # above this, most responses are one answer: the report warns
TEXT_SHOWN = 160


def normalize_answer(text: str) -> str:
    """The form exact match compares (same rule as honed.evaluate.metrics.normalize_text).

    >>> normalize_answer("  Café\\n  AU  lait ")
    'café au lait'
    """
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip().casefold()


@dataclass
class MostCommonResponse:
    """The most common response of a data file and what answering it every time would score."""

    text: str  # as first written (an excerpt of at most 160 characters)
    count: int  # examples with this response
    share: float  # count / examples = the exact match of always answering it, on this file
    holdout_exact_match: float | None  # the exact match of always answering it on --holdout (None without)


def most_common_response(
    responses: Sequence[str], *, holdout: Sequence[str] | None = None
) -> MostCommonResponse | None:
    """The most common of `responses` (ties: the first seen), its share, and its exact match on `holdout`.

    >>> most_common_response(["yes", "no", "yes"], holdout=["yes", "no"]).holdout_exact_match
    0.5
    """
    if not responses:
        return None
    keys = [normalize_answer(r) for r in responses]
    counts = Counter(keys)
    best = max(counts.values())
    first = next(i for i, key in enumerate(keys) if counts[key] == best)
    on_holdout = None
    if holdout:
        on_holdout = round(sum(normalize_answer(h) == keys[first] for h in holdout) / len(holdout), 4)
    text = " ".join(responses[first].split())
    return MostCommonResponse(
        text=text if len(text) <= TEXT_SHOWN else text[: TEXT_SHOWN - 1] + "…",
        count=best,
        share=round(best / len(responses), 4),
        holdout_exact_match=on_holdout,
    )


def of_conversations(
    train: Sequence[Conversation], *, holdout: Sequence[Conversation] | None = None
) -> MostCommonResponse | None:
    """`most_common_response` of the conversations' last assistant turns."""
    held = [c.response_text() for c in holdout] if holdout is not None else None
    return most_common_response([c.response_text() for c in train], holdout=held)


def dominant_warning(found: MostCommonResponse | None) -> tuple[str, int, str] | None:
    """(code, count, message) when more than half the responses are one answer, else None."""
    if found is None or found.share <= DOMINANT_SHARE:
        return None
    message = (f"examples ({found.share:.0%}) have the same response `{found.text}`: always answering it scores "
               f"{found.share:.2f} exact match; judge a tuned model against that constant answer (honed eval's "
               "majority baseline) and on the other examples (its nonempty/ metrics)")
    return "dominant_response", found.count, message
