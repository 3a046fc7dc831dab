"""The shared definitions of near duplicates and prompt keys (honed/data/dedup.py)."""

from __future__ import annotations

import random

import numpy as np

from honed.data import dedup
from honed.data.types import Conversation, Message


def test_whitespace_and_case_differences_are_near_duplicates_not_normalized_equal() -> None:
    a = Conversation((Message("user", "Thank you.  Bye"), Message("assistant", "{}")))
    b = Conversation((Message("user", "thank you. bye"), Message("assistant", "{}")))
    assert dedup.prompt_key(a, normalized=True) != dedup.prompt_key(b, normalized=True)  # inner spaces kept
    sigs = dedup.signatures([dedup.dialogue_text(a), dedup.dialogue_text(b)])
    assert (sigs[0] == sigs[1]).all()  # the same 3-word shingles: similarity 1


def test_lsh_finds_every_pair_that_reaches_the_threshold() -> None:
    """datasketch's default bands (4 x 15 at 0.85 with 64 permutations) proposed pairs of estimated
    similarity ~0.9 only about 60% of the time; every pair at or above the threshold must be found."""
    rng = random.Random(0)
    vocabulary = [f"w{k}" for k in range(2000)]
    texts = []
    for _ in range(60):
        words = rng.sample(vocabulary, 40)
        texts.append(" ".join(words))
        words[rng.randrange(40)] = rng.choice(vocabulary)  # one word changed: Jaccard 35/41 to 37/39
        texts.append(" ".join(words))
    sigs = dedup.signatures(texts)
    estimates = [float(np.mean(sigs[i] == sigs[i + 1])) for i in range(0, len(texts), 2)]
    reaching = [i for i, e in zip(range(0, len(texts), 2), estimates) if e >= 0.85]
    assert len(reaching) >= 20  # the test means something: many pairs reach the threshold
    clusters = dedup.near_duplicate_clusters(sigs, threshold=0.85)
    assert sorted(c for c in clusters if len(c) == 2) == [[i, i + 1] for i in reaching]
    pairs = dedup.near_matches(sigs[1::2], sigs[0::2], threshold=0.85)
    assert [(p.left * 2 + 1, p.right * 2) for p in pairs] == [(i + 1, i) for i in reaching]


def test_similar_rows_joins_equal_and_near_texts_through_chains() -> None:
    base = "please refund the duplicate charge on my last invoice from the shop in town today"
    texts = [base, "unrelated text about passwords", base, base.upper() + "!", "reset my password now please"]
    assert dedup.similar_rows(texts, threshold=0.85) == [[0, 2, 3]]
