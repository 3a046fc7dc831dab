"""Duplicates, repeats and leakage: exact (string equality) and near (MinHash + LSH from `datasketch`).

Definitions used by `honed data check` (and its documented JSON):
- normalized text: lower-cased and trimmed (`"  Hello " -> "hello"`), nothing else;
- a *repeated* row is one whose key (prompt, response, pair, whole conversation) already appeared on an
  earlier row, so a key seen three times counts 2;
- near duplicates: texts whose estimated Jaccard similarity of 3-word shingles reaches a threshold.
  LSH finds candidate pairs without comparing every pair (not O(n^2)); each candidate is then checked
  with the MinHash estimate, and connected pairs form clusters.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Hashable, Iterable, Sequence

import numpy as np
from datasketch import LeanMinHash, MinHash, MinHashLSH

NUM_PERM = 64  # 64 permutations estimate a Jaccard of 0.85 within about +-0.05, at half the cost of 128
SHINGLE_WORDS = 3
SEED = 1
SCHEME = "affine32"  # datasketch >= 2.0 hashing scheme; 32-bit values halve the memory of signatures


def normalize(text: str) -> str:
    """Lower-case and trim: the normalization behind every "normalized" count.

    >>> normalize("  Where is my CARD? ")
    'where is my card?'
    """
    return text.strip().lower()


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
    """An empty LSH index tuned for `threshold`.

    datasketch picks bands x rows for the threshold but refuses fewer than 2 bands, which it would need
    for thresholds near 1; 2 bands of num_perm/2 rows still find every pair that similar, and candidates
    are checked against the threshold anyway.
    """
    try:
        return MinHashLSH(threshold=threshold, num_perm=num_perm)
    except ValueError:
        return MinHashLSH(threshold=threshold, num_perm=num_perm, params=(2, num_perm // 2))


@dataclass(frozen=True)
class NearPair:
    """Two rows whose texts are near duplicates, with the estimated Jaccard similarity."""

    left: int
    right: int
    similarity: float


def near_duplicate_clusters(sigs: np.ndarray, *, threshold: float) -> list[list[int]]:
    """Clusters (lists of row indices, each of 2 or more) of near-duplicate rows.

    Rows should be distinct texts: exact duplicates are reported separately and would only inflate this.

    >>> sigs = signatures(["the cat sat on the mat today", "the cat sat on the mat today!", "dogs bark"])
    >>> near_duplicate_clusters(sigs, threshold=0.5)
    [[0, 1]]
    """
    num_perm = sigs.shape[1] if len(sigs) else NUM_PERM
    lsh = _index(threshold, num_perm)
    parent = list(range(len(sigs)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for index, row in enumerate(sigs):
        lean = _lean(row)
        for other in lsh.query(lean):  # only earlier rows are indexed, so each pair is seen once
            if _similar(row, sigs[other]) >= threshold:
                parent[root(index)] = root(other)
        lsh.insert(index, lean)
    clusters: dict[int, list[int]] = defaultdict(list)
    for index in range(len(sigs)):
        clusters[root(index)].append(index)
    return sorted((c for c in clusters.values() if len(c) > 1), key=lambda c: (-len(c), c[0]))


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
