"""What `honed eval` compares the tuned model with: the `--baselines` systems and how each picks its prompts.

    parse_baselines("base,few-shot:5,few-shot-knn:4,endpoint:gpt=http://localhost:8000/v1#gpt-4o-mini,export:out/m")

- `base` (or `zero-shot`): the base model, zero-shot, with the data's own system prompt.
- `few-shot:K`: the base model with K training examples (seeded; one per label first for label data) as
  user/assistant turns after the system prompt; the same K for every holdout prompt.
- `few-shot-knn:K`: the same, but the K examples are chosen per holdout prompt: the training examples
  whose user text is most similar to it by BM25 (bm25s), the most similar last (next to the question).
  A base model that ships no chat template gets these prompts as plain text instead of turns
  (honed/evaluate/base_prompt.py).
- `majority`: always the most common training response (for label data the most common label). No model,
  so it is always evaluated: a tuned model must beat it to mean anything.
- `endpoint:NAME=URL[#model]`: any OpenAI-compatible chat endpoint (see honed/evaluate/endpoint.py).
- `export:PATH` / `model:PATH` (optionally `export:NAME=PATH`): a model folder (Hugging Face layout, e.g.
  what `honed export` wrote) or a .gguf file, loaded with `honed.model.loading.load_model`.
"""

from __future__ import annotations

import dataclasses

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from honed.data.labels import looks_like_classification
from honed.data.types import Conversation, Message
from honed.errors import ConfigError
from honed.evaluate import metrics as M

TUNED = "tuned"
MAJORITY = "majority"
RESERVED = {TUNED, "base", MAJORITY}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # a system name is also a file name: eval/<name>.jsonl
ENDPOINT_EXAMPLE = "endpoint:gpt=https://api.openai.com/v1#gpt-4o-mini"


@dataclass(frozen=True)
class System:
    """One thing that answers the holdout.

    `model` says which weights generate: "tuned", "base", a model path (export), or "" (no local model:
    the constant answer and endpoints). `kind` is how the verdict describes it.
    """

    name: str  # also the file name eval/<name>.jsonl
    model: str
    shots: int = 0
    kind: str = "base"  # tuned | base | prompting | retrieval | constant | endpoint | export
    url: str | None = None  # endpoint base URL
    endpoint_model: str | None = None  # the endpoint's model id; None: the first one it lists
    constrain: str | None = None  # "labels" or "json": decoding restricted (honed.evaluate.constrain)

    @property
    def retrieves(self) -> bool:
        return self.kind == "retrieval"

    @property
    def verdict_kind(self) -> str:
        """How the verdict words a comparison with this system (honed.evaluate.verdict.Comparison.kind)."""
        return {"endpoint": "system", "export": "system"}.get(self.kind, self.kind)


def _shots(item: str, value: str, *, default: str = "5") -> int:
    value = value or default
    if not value.isdigit() or int(value) < 1:
        stem = item.partition(":")[0]
        raise ConfigError(f"--baselines {item!r}: write {stem}:K with K a whole number >= 1, e.g. {stem}:5")
    return int(value)


def _checked_name(name: str, item: str) -> str:
    if not NAME.match(name) or name in RESERVED:
        raise ConfigError(f"--baselines {item!r}: the name {name!r} must be letters, digits, '.', '_' or '-' and "
                          f"not one of {', '.join(sorted(RESERVED))}")
    return name


def parse_endpoint(item: str) -> System:
    """`endpoint:NAME=URL[#model]` -> an endpoint system.

    >>> parse_endpoint("endpoint:gpt=http://localhost:8000/v1#gpt-4o-mini").endpoint_model
    'gpt-4o-mini'
    """
    spec = item.partition(":")[2]
    name, eq, rest = spec.partition("=")
    url, _, model = rest.partition("#")
    if not eq or not name or not re.match(r"^https?://[^/\s]+", url):
        raise ConfigError(f"--baselines {item!r}: write endpoint:NAME=URL[#model] with an http(s) URL, "
                          f"e.g. {ENDPOINT_EXAMPLE}")
    return System(_checked_name(name, item), "", kind="endpoint", url=url.rstrip("/"), endpoint_model=model or None)


def parse_export(item: str) -> System:
    """`export:PATH`, `model:PATH` or `export:NAME=PATH` -> a system that loads that model (it must exist).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     merged = Path(folder) / "merged"
    ...     merged.mkdir()
    ...     _ = (merged / "config.json").write_text('{"model_type": "llama"}')  # a Hugging Face folder
    ...     parse_export(f"export:{merged}").name, parse_export(f"export:mine={merged}").name
    ('export-merged', 'mine')
    """
    prefix, _, spec = item.partition(":")
    name, eq, path = spec.partition("=")
    if not eq or not NAME.match(name):  # no NAME=: the whole spec is the path
        name, path = "", spec
    if not path:
        raise ConfigError(f"--baselines {item!r}: write {prefix}:PATH with a model folder or a .gguf file")
    if not Path(path).expanduser().exists():
        raise ConfigError(f"--baselines {item!r}: {path}: no such file or folder; give the folder `honed export` "
                          "wrote (Hugging Face layout) or a .gguf file")
    from honed.model.loading import resolve

    resolve(path)  # a folder that is no model is a ModelError now, before any model loads
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(path).expanduser().resolve().stem) or "model"
    return System(_checked_name(name or f"{prefix}-{stem}", item), path, kind="export")


def _parse_one(item: str) -> System | None:
    head = item.partition(":")[0]
    if item in ("", "none"):
        return None
    if item in ("base", "zero-shot"):
        return System("base", "base")
    if item == MAJORITY:
        return System(MAJORITY, "", kind="constant")
    if head == "few-shot-knn":
        k = _shots(item, item.partition(":")[2])
        return System(f"few-shot-knn-{k}", "base", k, kind="retrieval")
    if head == "few-shot":
        k = _shots(item, item.partition(":")[2])
        return System(f"few-shot-{k}", "base", k, kind="prompting")
    if head == "endpoint":
        return parse_endpoint(item)
    if head in ("export", "model") and ":" in item:
        return parse_export(item)
    raise ConfigError(f"--baselines: unknown baseline {item!r}; use base, majority, few-shot:K, few-shot-knn:K, "
                      f"endpoint:NAME=URL[#model], export:PATH, or none")


def parse_baselines(text: str) -> list[System]:
    """`base,few-shot:5` -> the systems to compare with the tuned model ('' or 'none' for none).

    The constant `majority` answer is always among them (it costs nothing and every model must beat it).

    >>> [s.name for s in parse_baselines("base,few-shot:5")]
    ['base', 'few-shot-5', 'majority']
    """
    systems: list[System] = []
    for item in (part.strip() for part in text.split(",")):
        system = _parse_one(item)
        same_name = next((s for s in systems if system is not None and s.name == system.name), None)
        if same_name is not None and same_name != system:
            raise ConfigError(f"--baselines {item!r}: another baseline is already named {same_name.name!r}; "
                              "name this one with NAME=, e.g. export:mine=PATH")
        if system is not None and same_name is None:
            systems.append(system)
    if all(s.name != MAJORITY for s in systems):
        systems.append(System(MAJORITY, "", kind="constant"))
    return systems


# ---- the constant answer ----------------------------------------------------------------------------------


def majority_answer(train_targets: Sequence[str]) -> str:
    """The most common training response (compared normalised; label data by label), as first written.

    Ties go to the response seen first, so the answer does not depend on the hash seed.

    >>> majority_answer(["{}", '{"a": 1}', "{ }", "{}"])
    '{}'
    """
    if not train_targets:
        return ""
    key = M.normalize_label if looks_like_classification(train_targets) else M.normalize_text
    keys = [key(t) for t in train_targets]
    counts = Counter(keys)
    best = max(counts.values())
    first = next(i for i, k in enumerate(keys) if counts[k] == best)
    return train_targets[first].strip()


# ---- few-shot prompts -------------------------------------------------------------------------------------


def choose_shots(train: Sequence[Conversation], *, k: int, seed: int = 0) -> list[Conversation]:
    """k training examples, deterministic for a seed; one per label first when the data is classification-like.

    >>> train = [Conversation((Message("user", str(i)), Message("assistant", "ab"[i % 2]))) for i in range(10)]
    >>> sorted({c.response_text() for c in choose_shots(train, k=2)})
    ['a', 'b']
    """
    rng = random.Random(seed)
    targets = [c.response_text() for c in train]
    if not looks_like_classification(targets):
        return [train[i] for i in sorted(rng.sample(range(len(train)), min(k, len(train))))]
    by_label: dict[str, list[int]] = {}
    for i, target in enumerate(targets):
        by_label.setdefault(M.normalize_label(target), []).append(i)
    labels = sorted(by_label)
    rng.shuffle(labels)
    for label in labels:
        rng.shuffle(by_label[label])
    # Round-robin over the shuffled labels: one example per label before any label gets a second.
    chosen: list[Conversation] = []
    for round_ in range(max(len(v) for v in by_label.values())):
        for label in labels:
            if round_ < len(by_label[label]) and len(chosen) < k:
                chosen.append(train[by_label[label][round_]])
    rng.shuffle(chosen)  # no label order the model could latch on to
    return chosen


def nearest_shots(
    train: Sequence[Conversation], queries: Sequence[Conversation], *, k: int, seed: int = 0
) -> list[list[Conversation]]:
    """For each query, the k training examples whose user text is most similar by BM25, most similar last.

    BM25 comes from bm25s (sparse-matrix BM25, numpy only, maintained; rank-bm25 has had no release since
    2022 and scores in pure Python). A query that shares no word with any training prompt gets the
    seeded `choose_shots` examples instead of an arbitrary "top k" of zeros.

    >>> train = [Conversation((Message("user", t), Message("assistant", t[:3]))) for t in ["red apple", "blue sky"]]
    >>> query = Conversation((Message("user", "a red apple?"), Message("assistant", "")))
    >>> nearest_shots(train, [query], k=1)[0][0].user_text()
    'red apple'
    """
    import bm25s

    k = min(k, len(train))
    if k == 0:
        return [[] for _ in queries]
    tokenize = dict(stopwords="en", return_ids=False, show_progress=False)
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize([c.user_text() for c in train], **tokenize), show_progress=False)
    found, scores = retriever.retrieve(bm25s.tokenize([q.user_text() for q in queries], **tokenize), k=k,
                                       show_progress=False)
    fallback = choose_shots(train, k=k, seed=seed)
    return [[train[int(i)] for i in reversed(row)] if row_scores.max() > 0 else fallback
            for row, row_scores in zip(found, scores)]


def with_shots(conversation: Conversation, shots: Sequence[Conversation]) -> Conversation:
    """The conversation with each shot's user/assistant turns inserted after its system prompt.

    >>> conv = Conversation((Message("system", "S"), Message("user", "q"), Message("assistant", "a")))
    >>> shot = Conversation((Message("system", "S"), Message("user", "q1"), Message("assistant", "a1")))
    >>> [m.content for m in with_shots(conv, [shot]).messages]
    ['S', 'q1', 'a1', 'q', 'a']
    """
    head = [m for m in conversation.messages[:1] if m.role == "system"]
    turns: list[Message] = []
    for shot in shots:
        end = shot.last_assistant_index()
        turns += [Message(m.role, m.content) for m in shot.messages[: (end or 0) + 1] if m.role != "system"]
    rest = list(conversation.messages[len(head) :])
    return Conversation(messages=tuple(head + turns + rest), tools=conversation.tools, source=conversation.source)


def prompts_for(
    system: System, holdout: Sequence[Conversation], train: Sequence[Conversation], *, seed: int
) -> list[Conversation]:
    """The holdout conversations as `system` sees them: with its shots (the same k, or the k nearest)."""
    if not system.shots:
        return list(holdout)
    if system.retrieves:
        return [with_shots(c, shots) for c, shots in zip(holdout, nearest_shots(train, holdout, k=system.shots,
                                                                                  seed=seed))]
    shots = choose_shots(train, k=system.shots, seed=seed)
    return [with_shots(c, shots) for c in holdout]


def with_constrained(systems: Sequence[System], kind: str | None) -> list[System]:
    """Each local model's system followed by its constrained twin, so the table shows what the constraint
    adds (the constant answer and endpoints decode nothing here, so they get no twin).

    >>> [s.name for s in with_constrained([System("tuned", "tuned"), System("base", "base")], "labels")]
    ['tuned', 'tuned+labels', 'base', 'base+labels']
    """
    if not kind:
        return list(systems)
    out: list[System] = []
    for s in systems:
        out.append(s)
        if s.kind not in ("constant", "endpoint"):
            out.append(dataclasses.replace(s, name=f"{s.name}+{kind}", constrain=kind))
    return out
