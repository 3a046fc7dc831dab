"""What counts as the same example, in one place: `data check` (report.py) and `data split` (split.py,
and so `train`'s own split) use these definitions and nothing else, so a split never fails the check.

- normalized text: lower-cased and trimmed (`"  Hello " -> "hello"`), nothing else; whitespace inside a
  text is kept (two texts that differ only there are near duplicates, similarity 1.0, instead);
- the prompt key: every message before the last assistant turn as `role: content` lines, system
  included, optionally normalized message by message (`prompt_key`);
- the dialogue text: the non-system turns' text, whole or prompt only (`dialogue_text`);
- a *repeated* row is one whose key (prompt, response, pair, whole conversation) already appeared on an
  earlier row, so a key seen three times counts 2;
- near duplicates: texts whose estimated Jaccard similarity of lower-cased 3-word shingles reaches a
  threshold (default 0.85). LSH finds candidate pairs without comparing every pair (not O(n^2)); each
  candidate is then checked with the MinHash estimate, and connected pairs form clusters.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Hashable, Iterable, Sequence

import numpy as np
from datasketch import LeanMinHash, MinHash, MinHashLSH

from honed.data.settings import DEFAULT_NEAR_THRESHOLD
from honed.data.types import Conversation
from honed.errors import ConfigError

NUM_PERM = 64  # 64 permutations estimate a Jaccard of 0.85 within about +-0.05, at half the cost of 128
SHINGLE_WORDS = 3
SEED = 1
SCHEME = "affine32"  # datasketch >= 2.0 hashing scheme; 32-bit values halve the memory of signatures
LSH_WEIGHTS = (0.01, 0.99)  # (false positive, false negative) weights for choosing LSH bands: see _index


def check_threshold(threshold: float) -> None:
    """Raise ConfigError unless 0 < `threshold` <= 1 (the `--near-threshold` of data check and split)."""
    if not 0 < threshold <= 1:
        raise ConfigError(
            f"--near-threshold must be in (0, 1], got {threshold}; the default {DEFAULT_NEAR_THRESHOLD} is a "
            "good start"
        )


# ---------------------------------------------------------------- keys: exact and normalized


def normalize(text: str) -> str:
    """Lower-case and trim: the normalization behind every "normalized" count.

    >>> normalize("  Where is my CARD? ")
    'where is my card?'
    """
    return text.strip().lower()


def prompt_key(conversation: Conversation, *, normalized: bool = False) -> str:
    """Everything before the last assistant turn, one `role: content` line per message.

    Two rows with the same key ask the same thing: they are repeated prompts, conflicting when their
    responses differ, and leakage when one is in train and one in the holdout.

    >>> from honed.data.types import Message
    >>> c = Conversation((Message("user", " Hi THERE "), Message("assistant", "Hello")))
    >>> prompt_key(c, normalized=True)
    'user: hi there'
    """
    fix = normalize if normalized else (lambda s: s)
    return "\n".join(f"{m.role}: {fix(m.content)}" for m in conversation.prompt_messages())


def dialogue_text(conversation: Conversation, *, prompt_only: bool = False) -> str:
    """The non-system turns' text: what near-duplicate detection compares.

    System prompts are left out because many datasets share one long system prompt, which would make
    every pair of short examples look alike.

    >>> from honed.data.types import Message
    >>> c = Conversation((Message("system", "Be brief."), Message("user", "Hi"), Message("assistant", "Hello")))
    >>> dialogue_text(c), dialogue_text(c, prompt_only=True)
    ('Hi\\nHello', 'Hi')
    """
    messages = conversation.prompt_messages() if prompt_only else conversation.messages
    return "\n".join(m.content for m in messages if m.role != "system")


def repeated_rows(keys: Iterable[Hashable]) -> list[int]:
    """Indices of rows whose key already appeared on an earlier row.

    >>> repeated_rows(["a", "b", "a", "a"])
    [2, 3]
    """
    seen: set[Hashable] = set()
    repeats: list[int] = []
    for index, key in enumerate(keys):
        if key in seen:
            repeats.append(index)
        else:
            seen.add(key)
    return repeats


def groups_of(keys: Sequence[Hashable]) -> dict[Hashable, list[int]]:
    """Row indices for each key, in first-seen order."""
    groups: dict[Hashable, list[int]] = defaultdict(list)
    for index, key in enumerate(keys):
        groups[key].append(index)
    return groups


class UnionFind:
    """Disjoint sets of row indices: `union` joins two rows' sets, `groups` lists the sets.

    >>> joins = UnionFind(4)
    >>> joins.union(0, 2)
    >>> joins.groups()
    [[0, 2], [1], [3]]
    """

    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]  # path halving keeps trees flat
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def groups(self) -> list[list[int]]:
        """Every set as ascending indices, ordered by first index."""
        groups: dict[int, list[int]] = defaultdict(list)
        for i in range(len(self.parent)):
            groups[self.find(i)].append(i)
        return sorted(groups.values(), key=lambda members: members[0])


# ---------------------------------------------------------------- near duplicates (MinHash + LSH)


def shingles(text: str, *, size: int = SHINGLE_WORDS) -> list[bytes]:
    """Overlapping `size`-word shingles of the lower-cased text (the whole text when it is shorter).

    >>> shingles("The cat sat on")
    [b'the cat sat', b'cat sat on']
    """
    words = text.lower().split()
    if len(words) <= size:
        return [" ".join(words).encode()]
    return [" ".join(words[i : i + size]).encode() for i in range(len(words) - size + 1)]


def signatures(texts: Sequence[str], *, num_perm: int = NUM_PERM) -> np.ndarray:
    """MinHash signatures, one row of `num_perm` values per text (picklable, for worker processes).

    crc32 (zlib, C) hashes the shingles: several times faster than datasketch's default sha1, and 32 bits
    are plenty for estimating similarity.
    """
    minhashes = MinHash.bulk(
        [shingles(t) for t in texts], num_perm=num_perm, seed=SEED, scheme=SCHEME, hashfunc=zlib.crc32
    )
    if not minhashes:
        return np.zeros((0, num_perm), dtype=np.uint32)
    return np.stack([m.hashvalues for m in minhashes])


def _lean(row: np.ndarray) -> LeanMinHash:
    return LeanMinHash(seed=SEED, hashvalues=row, scheme=SCHEME)


def _similar(a: np.ndarray, b: np.ndarray) -> float:
    """The MinHash estimate of Jaccard similarity: the share of equal signature values."""
    return float(np.count_nonzero(a == b)) / len(a)


def _index(threshold: float, num_perm: int) -> MinHashLSH:
    """An empty LSH index tuned for `threshold`, so that it (almost) never misses a pair that reaches it.

    LSH only proposes candidates, and every candidate is checked against the threshold, so a false
    positive costs one comparison while a false negative is a missed duplicate or leak. datasketch's
    default weights balance the two: at 0.85 with 64 permutations (4 bands of 15 rows) it proposed a pair
    of estimated similarity 0.91 only about 60% of the time. LSH_WEIGHTS picks 10 bands of 6 rows there:
    a pair at the threshold is proposed with probability 0.99.
    datasketch refuses fewer than 2 bands, which it would need for thresholds near 1; 2 bands of
    num_perm/2 rows still find every pair that similar.
    """
    try:
        return MinHashLSH(threshold=threshold, num_perm=num_perm, weights=LSH_WEIGHTS)
    except ValueError:
        return MinHashLSH(threshold=threshold, num_perm=num_perm, params=(2, num_perm // 2))


@dataclass(frozen=True)
class NearPair:
    """Two rows whose texts are near duplicates, with the estimated Jaccard similarity."""

    left: int
    right: int
    similarity: float


def near_duplicate_clusters(sigs: np.ndarray, *, threshold: float) -> list[list[int]]:
    """Clusters (lists of row indices, each of 2 or more) of near-duplicate rows, largest first.

    Rows should be distinct texts: exact duplicates are reported separately and would only inflate this.

    >>> sigs = signatures(["the cat sat on the mat today", "the cat sat on the mat today!", "dogs bark"])
    >>> near_duplicate_clusters(sigs, threshold=0.5)
    [[0, 1]]
    """
    num_perm = sigs.shape[1] if len(sigs) else NUM_PERM
    lsh = _index(threshold, num_perm)
    joins = UnionFind(len(sigs))
    for index, row in enumerate(sigs):
        lean = _lean(row)
        for other in lsh.query(lean):  # only earlier rows are indexed, so each pair is seen once
            if _similar(row, sigs[other]) >= threshold:
                joins.union(index, other)
        lsh.insert(index, lean)
    clusters = [members for members in joins.groups() if len(members) > 1]
    return sorted(clusters, key=lambda c: (-len(c), c[0]))


def similar_rows(texts: Sequence[str], *, threshold: float) -> list[list[int]]:
    """Groups of 2+ rows whose texts are equal or near duplicates (connected pairs join), by first row.

    Each distinct text is signed once; this runs in the calling process (data check signs in workers).

    >>> similar_rows(["the cat sat on the mat today", "dogs bark", "The cat sat on the mat  today"],
    ...              threshold=0.85)
    [[0, 2]]
    """
    by_text = groups_of(texts)
    distinct = list(by_text)
    joins = UnionFind(len(texts))
    for rows in by_text.values():
        for row in rows[1:]:
            joins.union(rows[0], row)
    for cluster in near_duplicate_clusters(signatures(distinct), threshold=threshold):
        for i in cluster[1:]:
            joins.union(by_text[distinct[cluster[0]]][0], by_text[distinct[i]][0])
    return [members for members in joins.groups() if len(members) > 1]


def near_matches(queries: np.ndarray, index: np.ndarray, *, threshold: float) -> list[NearPair]:
    """For each query row with a near-duplicate among the index rows, its most similar index row.

    `left` is the query row, `right` the index row (e.g. a holdout example and the train example it leaks).
    """
    num_perm = index.shape[1] if len(index) else NUM_PERM
    lsh = _index(threshold, num_perm)
    with lsh.insertion_session() as session:
        for position, row in enumerate(index):
            session.insert(position, _lean(row), check_duplication=False)
    pairs: list[NearPair] = []
    for position, row in enumerate(queries):
        best: NearPair | None = None
        for other in lsh.query(_lean(row)):
            similarity = _similar(row, index[other])
            if similarity >= threshold and (best is None or similarity > best.similarity):
                best = NearPair(position, other, similarity)
        if best is not None:
            pairs.append(best)
    return pairs
