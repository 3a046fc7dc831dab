"""Split examples into train and holdout: deterministic, leak-free, stratified when the data has labels.

    result = split_conversations(conversations, holdout_fraction=0.1, seed=0)
    result.train, result.holdout       # lists of Conversation, each in input order

Three rules, in order of importance:
1. Same input and seed, same split (no dependence on hash seeds, dict order or the machine).
2. Near duplicates never straddle the split, or the holdout score measures memory, not skill. Examples
   that `data check` would call duplicates, near duplicates or holdout leakage (honed/data/dedup.py holds
   those definitions) are joined into clusters with union-find, and whole clusters go to one side, so a
   fresh split passes `data check --holdout` with no leakage.
3. For classification-like data (honed/data/labels.py: few distinct, short responses) every label gets
   about the same holdout share, so a rare label is not missing from the holdout by bad luck.

`split_file` does the same for a file and writes train.jsonl, holdout.jsonl and manifest.json into a new
folder, all or nothing.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from honed.atomic import atomic_folder, write_text_atomic
from honed.data import dedup
from honed.data.settings import DEFAULT_NEAR_THRESHOLD
from honed.data.labels import looks_like_classification
from honed.data.read import ColumnMapping, load_or_fail, sha256_file, write_jsonl
from honed.data.types import Conversation
from honed.errors import ConfigError, DataError

TRAIN_FILE, HOLDOUT_FILE, MANIFEST_FILE = "train.jsonl", "holdout.jsonl", "manifest.json"


@dataclass(frozen=True)
class SplitResult:
    """The two sides, in input order, and how they were made.

    `holdout_indices` are positions in the input; `cluster_of[i]` is the cluster of input example i
    (clusters numbered in order of first appearance); `num_labels` is set when the split was stratified.
    """

    train: list[Conversation]
    holdout: list[Conversation]
    holdout_indices: list[int]
    cluster_of: list[int]
    num_clusters: int
    stratified: bool
    num_labels: int | None


def split_conversations(
    conversations: Sequence[Conversation],
    *,
    holdout_fraction: float,
    seed: int = 0,
    near_threshold: float = DEFAULT_NEAR_THRESHOLD,
) -> SplitResult:
    """Split off about `holdout_fraction` of the examples, keeping near-duplicate clusters whole.

    >>> words = "apple river engine violin planet garden copper winter market tunnel".split()
    >>> convs = [Conversation.from_json({"messages": [{"role": "user", "content": f"what is a {w}?"},
    ...                                              {"role": "assistant", "content": f"a {w} is a thing"}]})
    ...          for w in words]
    >>> result = split_conversations(convs, holdout_fraction=0.2, seed=1)
    >>> len(result.train), len(result.holdout), result.holdout_indices
    (8, 2, [2, 7])
    """
    check_split_args(holdout_fraction=holdout_fraction, near_threshold=near_threshold)
    if len(conversations) < 2:
        raise DataError(f"{len(conversations)} example(s): need at least 2 to split off a holdout")
    clusters = near_duplicate_clusters(conversations, threshold=near_threshold)
    if len(clusters) < 2:
        raise DataError(
            f"{len(conversations)} examples form only {len(clusters)} near-duplicate cluster: too few to "
            "hold out any without leaking; add more distinct examples"
        )
    labels = classification_labels(conversations)
    strata = _strata(clusters, labels)
    # Only a stratum with two or more clusters can give some to the holdout and keep some for training.
    sizes = {key: sum(map(len, members)) for key, members in strata.items() if len(members) > 1}
    if not sizes:  # no label has two clusters: stratifying cannot work, so split the clusters as a whole
        labels, strata = None, _strata(clusters, None)
        sizes = {"": len(conversations)}
    rng = random.Random(seed)
    quotas = _quotas(sizes, max(1, round(holdout_fraction * len(conversations))), rng)
    chosen: set[int] = set()
    for key in sorted(sizes):
        for cluster in _pick_clusters(strata[key], quotas[key], rng):
            chosen.update(cluster)
    if not chosen:
        smallest = min(map(len, clusters))
        raise DataError(
            f"every near-duplicate cluster is too large to hold out about {holdout_fraction:.0%} of "
            f"{len(conversations)} examples (the smallest has {smallest}); raise --holdout-fraction, or "
            "raise --near-threshold if the examples are not really duplicates"
        )
    return _result(conversations, clusters, chosen, labels)


def check_split_args(*, holdout_fraction: float, near_threshold: float) -> None:
    """Raise ConfigError for a fraction outside (0, 1) or a threshold outside (0, 1]."""
    if not 0 < holdout_fraction < 1:
        raise ConfigError(
            f"--holdout-fraction must be between 0 and 1 (exclusive), got {holdout_fraction}; e.g. 0.1"
        )
    dedup.check_threshold(near_threshold)


def _result(
    conversations: Sequence[Conversation],
    clusters: list[list[int]],
    chosen: set[int],
    labels: list[str] | None,
) -> SplitResult:
    cluster_of = [0] * len(conversations)
    for number, members in enumerate(clusters):
        for i in members:
            cluster_of[i] = number
    return SplitResult(
        train=[c for i, c in enumerate(conversations) if i not in chosen],
        holdout=[c for i, c in enumerate(conversations) if i in chosen],
        holdout_indices=sorted(chosen),
        cluster_of=cluster_of,
        num_clusters=len(clusters),
        stratified=labels is not None,
        num_labels=None if labels is None else len(set(labels)),
    )


# --- near-duplicate clusters --------------------------------------------------------------------------


def near_duplicate_clusters(
    conversations: Sequence[Conversation], *, threshold: float = DEFAULT_NEAR_THRESHOLD
) -> list[list[int]]:
    """Group example indices that `data check` would call duplicates, near duplicates or leakage.

    Joined (with union-find, so joins chain): the same prompt key after normalizing (check's exact and
    normalized leakage); equal or near-duplicate dialogue text (check's near duplicates); equal or
    near-duplicate prompt text (check's near leakage: prompts that nearly match stay together even when
    their responses differ). Every definition is honed.data.dedup's, at the same threshold.
    Clusters are lists of ascending indices, ordered by their first index.

    >>> chats = [("Where is my refund?", "billing"), ("where is my  refund?", "billing"),
    ...          ("App crashes", "bug")]
    >>> near_duplicate_clusters([Conversation.from_json({"messages": [{"role": "user", "content": q},
    ...                                                               {"role": "assistant", "content": a}]})
    ...                          for q, a in chats])
    [[0, 1], [2]]
    """
    joins = dedup.UnionFind(len(conversations))
    for rows in dedup.groups_of([dedup.prompt_key(c, normalized=True) for c in conversations]).values():
        for row in rows[1:]:
            joins.union(rows[0], row)
    for prompt_only in (False, True):
        texts = [dedup.dialogue_text(c, prompt_only=prompt_only) for c in conversations]
        for group in dedup.similar_rows(texts, threshold=threshold):
            for row in group[1:]:
                joins.union(group[0], row)
    return joins.groups()


# --- stratification --------------------------------------------------------------------------------------


def classification_labels(conversations: Sequence[Conversation]) -> list[str] | None:
    """Each example's response (stripped) as its label when the data looks like classification
    (honed.data.labels), else None."""
    labels = [c.response_text().strip() for c in conversations]
    return labels if looks_like_classification(labels) else None


def _strata(clusters: list[list[int]], labels: list[str] | None) -> dict[str, list[list[int]]]:
    """Clusters grouped by label (a cluster's label is its most common one), or all in one stratum."""
    strata: dict[str, list[list[int]]] = defaultdict(list)
    for members in clusters:
        if labels is None:
            strata[""].append(members)
        else:
            counts = Counter(labels[i] for i in members)
            strata[min(counts, key=lambda label: (-counts[label], label))].append(members)
    return dict(strata)


def _quotas(sizes: dict[str, int], total: int, rng: random.Random) -> dict[str, int]:
    """Holdout rows per stratum, proportional to its size and summing to `total` (largest remainder).

    Ties in the remainders are broken at random (seeded) so no label is always favoured by its name.
    """
    grand = sum(sizes.values())
    exact = {key: total * size / grand for key, size in sizes.items()}
    quotas = {key: int(value) for key, value in exact.items()}
    keys = sorted(sizes)
    tie_break = {key: rng.random() for key in keys}
    by_remainder = sorted(keys, key=lambda key: (quotas[key] - exact[key], tie_break[key]))
    for key in by_remainder[: total - sum(quotas.values())]:
        quotas[key] += 1
    return quotas


def _pick_clusters(clusters: list[list[int]], quota: int, rng: random.Random) -> list[list[int]]:
    """Clusters for the holdout, in random (seeded) order, while each one brings the count nearer the quota.

    At least one cluster of every stratum stays in train: a label the model never saw cannot be learned.
    """
    order = list(clusters)
    rng.shuffle(order)
    picked: list[list[int]] = []
    count = 0
    for members in order:
        if len(picked) == len(clusters) - 1:
            break
        if abs(count + len(members) - quota) < abs(count - quota):
            picked.append(members)
            count += len(members)
    return picked


# --- the file version ----------------------------------------------------------------------------------


def _manifest(path: str | Path, read: Any, result: Any, *, seed: int, holdout_fraction: float,
              near_threshold: float) -> dict[str, Any]:
    """manifest.json: where the split came from, how it was made, and its counts."""
    return {
        "source": {"path": str(Path(path).resolve()), "sha256": sha256_file(path)},
        "format": read.format,
        "seed": seed,
        "holdout_fraction": holdout_fraction,
        "near_threshold": near_threshold,
        "stratified": result.stratified,
        "labels": result.num_labels,
        "clusters": result.num_clusters,
        "counts": {
            "input": len(read.conversations),
            "train": len(result.train),
            "holdout": len(result.holdout),
        },
        "skipped_invalid": len(read.bad_rows),
        "notices": [str(notice) for notice in read.notices],  # content read but not trained on
    }


def split_file(
    path: str | Path,
    *,
    out: str | Path,
    holdout_fraction: float,
    seed: int = 0,
    near_threshold: float = DEFAULT_NEAR_THRESHOLD,
    fmt: str = "auto",
    columns: ColumnMapping | None = None,
    force: bool = False,
    skip_invalid: bool = False,
    strict: bool = False,
) -> dict[str, Any]:
    """Split a data file into OUT/train.jsonl, OUT/holdout.jsonl and OUT/manifest.json; return the manifest.

    All three are written to a temporary folder beside OUT and renamed into place together, so OUT is
    either complete or untouched. An existing non-empty OUT is refused unless `force`, and OUT may never
    hold the input (`force` would delete it). With `skip_invalid`, bad rows go to `<path>.invalid.jsonl`
    and the manifest counts them (`skipped_invalid`).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     data = Path(folder) / "data.jsonl"
    ...     rows = (f'{{"prompt": "what is {i} times {i + 3}?", "completion": "{i * (i + 3)}"}}\\n'
    ...             for i in range(20))
    ...     _ = data.write_text("".join(rows))
    ...     manifest = split_file(data, out=Path(folder) / "split", holdout_fraction=0.1, seed=0)
    ...     sorted(p.name for p in (Path(folder) / "split").iterdir())
    ['holdout.jsonl', 'manifest.json', 'train.jsonl']
    >>> manifest["counts"]
    {'input': 20, 'train': 18, 'holdout': 2}
    """
    check_split_args(holdout_fraction=holdout_fraction, near_threshold=near_threshold)
    out = Path(out)
    _check_out(out, force=force)
    source = Path(path).resolve()
    if out.resolve() == source or out.resolve() in source.parents:  # the input may be a folder of shards
        raise ConfigError(
            f"--out {out} holds the input file {path}, and --force would delete it; pick another folder"
        )
    read = load_or_fail(path, fmt=fmt, columns=columns, skip_invalid=skip_invalid, strict=strict)
    result = split_conversations(
        read.conversations, holdout_fraction=holdout_fraction, seed=seed, near_threshold=near_threshold
    )
    manifest = _manifest(path, read, result, seed=seed, holdout_fraction=holdout_fraction,
                         near_threshold=near_threshold)
    try:
        _write_all(out, result, manifest, force=force)
    except OSError as exc:  # a parent that is a file, a read-only folder, a full disk
        reason = f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else str(exc)
        raise ConfigError(
            f"--out {out}: cannot write the split there ({reason}); pick a folder you can write to"
        ) from None
    return manifest


def _check_out(out: Path, *, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; pass a folder path for the split")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ConfigError(f"--out {out} already exists and is not empty; pick a new folder or pass --force")


def _write_all(out: Path, result: SplitResult, manifest: dict[str, Any], *, force: bool) -> None:
    """Write everything to a temp folder beside `out`, then swap it in whole (honed.atomic)."""
    with atomic_folder(out) as tmp:
        files: dict[str, Any] = {}
        for name, rows in ((TRAIN_FILE, result.train), (HOLDOUT_FILE, result.holdout)):
            write_jsonl(tmp / name, rows)
            files[name] = {"rows": len(rows), "sha256": sha256_file(tmp / name)}
        manifest["files"] = files
        write_text_atomic(tmp / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")
        _check_out(out, force=force)  # again: something may have appeared while we worked
