"""Simple shifts that explain drift: prompt length, words never seen in training, a change of script.

>>> train = ["reset my password", "where is my invoice", "the app crashes on start", "refund my order"] * 5
>>> shifts = simple_shifts(train, ["Как сбросить пароль", "Где мой счёт"] * 5)
>>> shifts.oov_share, shifts.train_oov_share, shifts.script, shifts.train_script
(1.0, 0.0, 'CYRILLIC', 'LATIN')
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import ks_2samp

WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Shifts:
    """Per window: prompt lengths (words) vs training (Kolmogorov-Smirnov), the share of words never seen
    in training prompts (and the same share between two halves of training, for scale), and the main
    writing script of the prompts (Latin, Cyrillic, CJK, ...) with its share."""

    length_median: float
    train_length_median: float
    length_p_value: float
    oov_share: float
    train_oov_share: float
    script: str
    script_share: float
    train_script: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def simple_shifts(train: Sequence[str], window: Sequence[str]) -> Shifts:
    """Length, vocabulary and script of `window` prompts compared with `train` prompts."""
    train_lengths = [len(WORD.findall(t)) for t in train]
    lengths = [len(WORD.findall(t)) for t in window]
    half = len(train) // 2
    script, share = main_script(window)
    return Shifts(
        length_median=float(np.median(lengths)) if lengths else 0.0,
        train_length_median=float(np.median(train_lengths)) if train_lengths else 0.0,
        length_p_value=float(ks_2samp(train_lengths, lengths).pvalue) if lengths and train_lengths else 1.0,
        oov_share=round(oov_share(vocabulary(train), window), 4),
        train_oov_share=round(oov_share(vocabulary(train[:half]), train[half:]), 4) if half else 0.0,
        script=script,
        script_share=round(share, 4),
        train_script=main_script(train)[0],
    )


def vocabulary(texts: Sequence[str]) -> set[str]:
    return {w.lower() for t in texts for w in WORD.findall(t)}


def oov_share(vocab: set[str], texts: Sequence[str]) -> float:
    """Share of word tokens in `texts` that are not in `vocab` (lower-cased)."""
    words = [w.lower() for t in texts for w in WORD.findall(t)]
    return sum(w not in vocab for w in words) / len(words) if words else 0.0


def main_script(texts: Sequence[str]) -> tuple[str, float]:
    """The most common writing script of the letters in `texts` and its share of letters.

    >>> main_script(["Привет мир", "hello"])
    ('CYRILLIC', 0.6429)
    """
    counts: Counter[str] = Counter()
    for text in texts:
        for ch in text:
            if ch.isalpha():
                counts[unicodedata.name(ch, "UNKNOWN").split(" ")[0]] += 1
    if not counts:
        return "NONE", 0.0
    script, n = counts.most_common(1)[0]
    return script, round(n / sum(counts.values()), 4)
