"""The data quality report: what `honed data check` measures on a set of conversations.

`build_report(train, tokenizer=..., ...)` returns a `Report` (plain dataclasses; `report.to_json()` is the
documented `--json` output, see docs/data-check.md). Every count is defined in terms a user can re-check:
- tokens come from `render_batch`, the same function training uses (real tokenizer and chat template);
- "repeated", "normalized", the prompt key and near duplicates are defined once, in honed/data/dedup.py,
  which `data split` uses too.

Heavy per-example work (template rendering + tokenizing, MinHash signatures) runs in chunks over forked
worker processes; everything else is a single pass with dicts and sets.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from functools import partial
from typing import Any, Callable, Sequence

import numpy as np

from honed.data import dedup, responses
from honed.data.chunks import Chunked, default_workers
from honed.data.dedup import dialogue_text, prompt_key
from honed.data.settings import DEFAULT_MAX_LENGTH, DEFAULT_NEAR_THRESHOLD
from honed.data.labels import looks_like_classification
from honed.data.notices import Notice
from honed.data.render import render_batch, supervised_spans, trains_end_of_turn
from honed.data.report_sections import (
    Conflicts,
    Duplicates,
    Example,
    Finding,
    LabelCount,
    Labels,
    Leakage,
    LengthStats,
    Refusals,
    Report,
    TemplateUsed,
    Tokens,
)
from honed.data.types import Conversation
from honed.model.template import ChatTemplate, end_of_turn_of

EXAMPLES_SHOWN = 5  # examples listed per finding; counts always cover every row
TEXT_SHOWN = 160  # characters of a text shown in an example

# Phrases that open or carry a refusal in assistant replies. Matched case-insensitively anywhere in a
# trained-on assistant turn; a straight or curly apostrophe both match.
REFUSAL_PATTERNS = [
    r"\bI[’']m sorry\b",
    r"\bI am sorry\b",
    r"\bI apologi[sz]e\b",
    r"\bI (?:cannot|can[’']t|can not) (?:help|assist|provide|do that|comply|answer|fulfil)",
    r"\bI[’']m (?:not able|unable) to\b",
    r"\bI am (?:not able|unable) to\b",
    r"\bI (?:won[’']t|will not) be able to\b",
    r"\bAs an AI\b",
    r"\bas a language model\b",
    r"\bI[’']m just an AI\b",
    r"\bI must decline\b",
    r"\bagainst my (?:guidelines|programming|policy)\b",
]
REFUSAL_RE = re.compile("|".join(REFUSAL_PATTERNS), re.IGNORECASE)

IMBALANCE_WARNING_RATIO = 10.0  # largest / smallest label count at which label_imbalance is raised


# ---------------------------------------------------------------- helpers


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= TEXT_SHOWN else text[: TEXT_SHOWN - 1] + "…"


def _where(conversation: Conversation) -> str:
    return str(conversation.source) if conversation.source is not None else "?"


def _example(conversation: Conversation, text: str) -> Example:
    return Example(_where(conversation), _excerpt(text))


def _conversation_key(conversation: Conversation) -> str:
    return json.dumps(conversation.to_json(), sort_keys=True, ensure_ascii=False)


def _signatures(texts: Sequence[str]) -> list[np.ndarray]:
    return list(dedup.signatures(texts))


def _stack(rows: list[np.ndarray]) -> np.ndarray:
    return np.stack(rows) if rows else np.zeros((0, dedup.NUM_PERM), dtype=np.uint32)


# ---------------------------------------------------------------- tokens


def _count_tokens(
    conversations: Sequence[Conversation], *, tokenizer: Any, max_length: int, end_of_turn: str
) -> list[tuple[int, int, int, bool]]:
    """(length, supervised tokens, supervised tokens kept within max_length, whether the supervised tokens
    hold the end of turn) per conversation. Plain text ends with the eos token instead."""
    counts = []
    eos = str(getattr(tokenizer, "eos_token", None) or "")
    for conversation, rendered in zip(conversations, render_batch(conversations, tokenizer)):
        mask = rendered.loss_mask
        end = eos if conversation.plain else end_of_turn
        stops = trains_end_of_turn(rendered, tokenizer, end) if end else True
        counts.append((len(mask), mask.count(True), mask[:max_length].count(True), stops))
    return counts


def token_stats(counts: Sequence[tuple[int, int, int, bool]], *, max_length: int) -> Tokens:
    """Summarise per-example (length, supervised, kept supervised, trains end of turn) counts."""
    lengths = np.array([c[0] for c in counts] or [0], dtype=np.int64)
    supervised = np.array([c[1] for c in counts] or [0], dtype=np.int64)
    kept = np.array([c[2] for c in counts] or [0], dtype=np.int64)
    total = int(lengths.sum())
    return Tokens(
        total=total,
        supervised=int(supervised.sum()),
        supervised_share=round(float(supervised.sum()) / total, 4) if total else 0.0,
        length=LengthStats(
            p50=float(np.percentile(lengths, 50)),
            p95=float(np.percentile(lengths, 95)),
            max=int(lengths.max()),
            mean=round(float(lengths.mean()), 1),
        ),
        max_length=max_length,
        truncated=int((lengths > max_length).sum()),
        all_supervised_lost=int(((supervised > 0) & (kept == 0)).sum()),
        no_supervised=int((supervised == 0).sum()) if counts else 0,
        end_of_turn_untrained=sum(1 for c in counts if c[1] > 0 and not c[3]),
        per_epoch=int(np.minimum(lengths, max_length).sum()),
        supervised_per_epoch=int(kept.sum()),
    )


# ---------------------------------------------------------------- duplicates, conflicts


def near_texts(conversations: Sequence[Conversation]) -> dict[str, list[int]]:
    """Rows per distinct dialogue text: near duplicates are searched among distinct texts only."""
    return dedup.groups_of([dialogue_text(c) for c in conversations])


def duplicates(
    conversations: Sequence[Conversation],
    *,
    by_text: dict[str, list[int]],
    sigs: np.ndarray,
    near_threshold: float,
) -> Duplicates:
    """Exact repeats of whole conversations, prompts and pairs; near-duplicate clusters of dialogue text.

    `by_text` is `near_texts(conversations)` and `sigs` the MinHash signatures of its keys, in order.
    """
    prompts = [prompt_key(c) for c in conversations]
    responses = [c.response_text() for c in conversations]
    whole = [_conversation_key(c) for c in conversations]
    exact_groups = [rows for rows in dedup.groups_of(whole).values() if len(rows) > 1]
    distinct = list(by_text)
    clusters = dedup.near_duplicate_clusters(sigs, threshold=near_threshold)
    return Duplicates(
        exact=len(dedup.repeated_rows(whole)),
        exact_groups=len(exact_groups),
        repeated_prompts=len(dedup.repeated_rows(prompts)),
        repeated_pairs=len(dedup.repeated_rows(zip(prompts, responses))),
        exact_examples=[
            [_example(conversations[i], dialogue_text(conversations[i])) for i in rows[:3]]
            for rows in exact_groups[:EXAMPLES_SHOWN]
        ],
        near_threshold=near_threshold,
        near_clusters=len(clusters),
        near_rows=sum(len(by_text[distinct[i]]) for cluster in clusters for i in cluster),
        near_examples=[
            [_example(conversations[by_text[distinct[i]][0]], distinct[i]) for i in cluster[:3]]
            for cluster in clusters[:EXAMPLES_SHOWN]
        ],
    )


def _one_row_per_response(conversations: Sequence[Conversation], rows: list[int]) -> list[Example]:
    first: dict[str, int] = {}
    for i in rows:
        first.setdefault(conversations[i].response_text(), i)
    return [
        _example(conversations[i], f"{conversations[i].user_text()} -> {response}")
        for response, i in list(first.items())[:4]
    ]


def conflicts(conversations: Sequence[Conversation]) -> Conflicts:
    """Prompts that appear with different responses (exact strings, and after normalizing)."""
    by_prompt = dedup.groups_of([prompt_key(c) for c in conversations])
    conflicting = [
        rows for rows in by_prompt.values() if len({conversations[i].response_text() for i in rows}) > 1
    ]
    normalized: dict[str, set[str]] = {}
    for c in conversations:
        normalized.setdefault(prompt_key(c, normalized=True), set()).add(dedup.normalize(c.response_text()))
    return Conflicts(
        prompts=len(conflicting),
        rows=sum(len(rows) for rows in conflicting),
        prompts_normalized=sum(1 for responses in normalized.values() if len(responses) > 1),
        examples=[_one_row_per_response(conversations, rows) for rows in conflicting[:EXAMPLES_SHOWN]],
    )


# ---------------------------------------------------------------- labels, refusals


def labels(conversations: Sequence[Conversation]) -> Labels | None:
    """The label distribution when the responses look like class labels (honed.data.labels), else None."""
    responses = [c.response_text() for c in conversations]
    if not looks_like_classification(responses):
        return None
    counts = Counter(response.strip() for response in responses)
    ranked = counts.most_common()
    return Labels(
        distinct=len(counts),
        top=[LabelCount(label, n) for label, n in ranked[:10]],
        smallest=[LabelCount(label, n) for label, n in ranked[::-1][:5]],
        imbalance_ratio=round(ranked[0][1] / ranked[-1][1], 2),
    )


def refusals(conversations: Sequence[Conversation]) -> Refusals:
    """Examples with a refusal-like phrase in a trained-on assistant turn."""
    found: list[tuple[Conversation, str]] = []
    for c in conversations:
        for m in c.messages:
            if m.trainable and REFUSAL_RE.search(m.content):
                found.append((c, m.content))
                break
    return Refusals(
        count=len(found),
        share=round(len(found) / len(conversations), 4) if conversations else 0.0,
        examples=[_example(c, text) for c, text in found[:EXAMPLES_SHOWN]],
    )


def unrendered_tool_calls(conversations: Sequence[Conversation], *, tokenizer: Any) -> int:
    """Examples with a trained-on tool call that the chat template does not write out.

    Many templates (ChatML, SmolLM2's) ignore `tool_calls`: such a turn is trained as an empty reply, so
    the model learns to answer nothing instead of calling the tool. Only examples with tool calls are
    rendered here; a call counts as written when its function name appears in its supervised span.
    """
    count = 0
    for c in conversations:
        trainable = [m for m in c.messages if m.trainable]
        if not any(m.tool_calls for m in trainable):
            continue
        text, spans = supervised_spans(tokenizer, c)
        for message, (start, end) in zip(trainable, spans):
            names = [str((call.get("function") or {}).get("name", "")) for call in message.tool_calls or []]
            if any(name not in text[start:end] for name in names):
                count += 1
                break
    return count


# ---------------------------------------------------------------- leakage


def leakage(
    train: Sequence[Conversation],
    holdout: Sequence[Conversation],
    *,
    holdout_file: str,
    near_threshold: float,
    train_sigs: np.ndarray,
    holdout_sigs: np.ndarray,
) -> Leakage:
    """Holdout rows whose prompt appears in train: exactly, after normalizing, or nearly (MinHash).

    `train_sigs` and `holdout_sigs` are the signatures of `dialogue_text(c, prompt_only=True)` per row.
    """
    train_exact = {prompt_key(c): i for i, c in enumerate(train)}
    train_normalized = {prompt_key(c, normalized=True): i for i, c in enumerate(train)}
    exact_rows = [h for h, c in enumerate(holdout) if prompt_key(c) in train_exact]
    normalized_rows = [h for h, c in enumerate(holdout) if prompt_key(c, normalized=True) in train_normalized]
    matched = set(normalized_rows)
    first_per_prompt = {prompt_key(holdout[h], normalized=True): h for h in reversed(normalized_rows)}
    pairs = [(h, train_normalized[key]) for key, h in first_per_prompt.items()]

    train_texts = [dialogue_text(c, prompt_only=True) for c in train]
    rest = [h for h in range(len(holdout)) if h not in matched]
    near = dedup.near_matches(holdout_sigs[rest], train_sigs, threshold=near_threshold)
    near_pairs = [(rest[p.left], p.right) for p in near]

    def shown(h: int, t: int) -> list[Example]:
        held = _example(holdout[h], dialogue_text(holdout[h], prompt_only=True))
        return [held, _example(train[t], train_texts[t])]

    return Leakage(
        file=holdout_file,
        holdout_examples=len(holdout),
        exact=len(exact_rows),
        exact_distinct=len({prompt_key(holdout[h]) for h in exact_rows}),
        normalized=len(normalized_rows),
        near=len(near),
        near_threshold=near_threshold,
        examples=[shown(h, t) for h, t in sorted(pairs)[:EXAMPLES_SHOWN]],
        near_examples=[shown(h, t) for h, t in near_pairs[:EXAMPLES_SHOWN]],
    )


# ---------------------------------------------------------------- warnings and the whole report


def findings(report: Report) -> list[Finding]:
    """The warnings a report raises (`--strict` turns any of them into exit status 1)."""
    t, d, c, n = report.tokens, report.duplicates, report.conflicts, report.tokens.max_length
    checks = [
        ("skipped_invalid", report.skipped_invalid,
         "invalid rows were skipped (--skip-invalid); fix them to use them"),
        ("no_supervised_tokens", t.no_supervised,
         "examples have no supervised (assistant) token and teach nothing; add an answer or drop them"),
        ("end_of_turn_not_trained", t.end_of_turn_untrained,
         "examples train an answer without its end of turn, so they teach the model not to stop; check how "
         "their last assistant turn is written (weight, template)"),
        ("all_supervised_lost", t.all_supervised_lost,
         f"examples lose every supervised token when cut to --max-length {n}; raise it or shorten prompts"),
        ("truncated", t.truncated, f"examples are longer than --max-length {n} and will be cut"),
        ("exact_duplicates", d.exact,
         "rows repeat an earlier conversation exactly: they overweight those examples; deduplicate"),
        ("near_duplicates", d.near_clusters,
         f"groups of near-duplicate examples (similarity >= {d.near_threshold}); check they are meant"),
        ("conflicting_responses", c.prompts,
         "prompts appear with different responses the model cannot all learn; fix the labels or add context"),
        ("refusals", report.refusals.count,
         "examples contain refusal-like responses; the model will learn to refuse"),
    ]
    if report.labels is not None and report.labels.imbalance_ratio >= IMBALANCE_WARNING_RATIO:
        checks.append(("label_imbalance", report.labels.distinct,
                       f"labels are imbalanced (largest/smallest = {report.labels.imbalance_ratio}); "
                       "rebalance or expect weak small classes"))
    if report.leakage is not None:
        leak = report.leakage
        checks += [
            ("holdout_leakage", leak.exact,
             "holdout prompts also appear in the training data, so the evaluation overstates quality; "
             "remove them from one side"),
            ("holdout_leakage_normalized", leak.normalized - leak.exact,
             "more holdout prompts equal a training prompt after lower-casing and trimming"),
            ("holdout_near_leakage", leak.near,
             f"more holdout prompts nearly equal a training prompt (similarity >= {leak.near_threshold})"),
        ]
    dominant = responses.dominant_warning(report.most_common_response)
    if dominant is not None:
        checks.append(dominant)
    return [Finding(code, count, f"{count} {message}") for code, count, message in checks if count > 0]


def notice_findings(notices: Sequence[Notice]) -> list[Finding]:
    """Warnings for content the reader kept but does not train on (images, `<image>`, double-encoded calls)."""
    return [Finding(n.code, n.count, str(n)) for n in notices]


Progress = Callable[[str, int], Callable[[int], None]]  # progress(stage name, total) -> advance(n)


def no_progress(name: str, total: int) -> Callable[[int], None]:
    return lambda n: None


def build_report(
    train: Sequence[Conversation],
    *,
    tokenizer: Any,
    file: str,
    format: str,
    model: str,
    max_length: int = DEFAULT_MAX_LENGTH,
    near_threshold: float = DEFAULT_NEAR_THRESHOLD,
    holdout: Sequence[Conversation] | None = None,
    holdout_file: str = "",
    skipped_invalid: int = 0,
    invalid_files: Sequence[str] = (),
    workers: int | None = None,
    progress: Progress = no_progress,
    template: ChatTemplate | None = None,
) -> Report:
    """Measure everything `honed data check` reports.

    Usage: `build_report(conversations, tokenizer=tokenizer, file="train.jsonl", format="openai-chat",
    model="smollm2-135m").tokens.supervised_share` (e.g. 0.31; needs a tokenizer: tests/unit/test_report.py
    checks every section).
    """
    by_text = near_texts(train)
    end_of_turn = template.end_of_turn if template is not None else _end_of_turn(tokenizer)
    with Chunked(workers=default_workers() if workers is None else workers) as pool:
        count = partial(_count_tokens, tokenizer=tokenizer, max_length=max_length, end_of_turn=end_of_turn)
        token_job = pool.add(count, train)
        near_job = pool.add(_signatures, list(by_text))
        if holdout is not None:
            train_prompts_job = pool.add(_signatures, [dialogue_text(c, prompt_only=True) for c in train])
            holdout_prompts_job = pool.add(_signatures, [dialogue_text(c, prompt_only=True) for c in holdout])
        pool.start()
        # This process works on the cheap single-pass findings while the workers tokenize.
        conflicts_found, labels_found, refusals_found = conflicts(train), labels(train), refusals(train)
        counts = pool.collect(token_job, progress("tokenizing", len(train)))
        advance = progress("near duplicates", sum(len(items) for _, items in pool.jobs[1:]))
        sigs = _stack(pool.collect(near_job, advance))
        leaks = None
        if holdout is not None:
            train_sigs = _stack(pool.collect(train_prompts_job, advance))
            holdout_sigs = _stack(pool.collect(holdout_prompts_job, advance))
            leaks = leakage(train, holdout, holdout_file=holdout_file, near_threshold=near_threshold,
                            train_sigs=train_sigs, holdout_sigs=holdout_sigs)
    report = Report(
        file=file, format=format, model=model, examples=len(train), messages=sum(len(c.messages) for c in train),
        skipped_invalid=skipped_invalid, invalid_files=list(invalid_files),
        tokens=token_stats(counts, max_length=max_length),
        duplicates=duplicates(train, by_text=by_text, sigs=sigs, near_threshold=near_threshold),
        conflicts=conflicts_found,
        labels=labels_found,
        refusals=refusals_found,
        leakage=leaks,
        most_common_response=responses.of_conversations(train, holdout=holdout),
        chat_template=template_used(template, train) if template is not None else None,
    )
    report.warnings = findings(report) + tool_call_findings(train, tokenizer=tokenizer, model=model)
    return report


def _end_of_turn(tokenizer: Any) -> str:
    """The end of turn of the template set on `tokenizer` ("" when it has none: plain text only)."""
    template = getattr(tokenizer, "chat_template", None)
    return end_of_turn_of(tokenizer, template) if isinstance(template, str) and template else ""


def template_used(template: ChatTemplate, train: Sequence[Conversation]) -> TemplateUsed:
    """The report's chat_template section: the choice, and how many examples have their system text folded."""
    folded = 0 if template.system_role else sum(
        1 for c in train if not c.plain and any(m.role == "system" for m in c.messages))
    return TemplateUsed(template.name, template.end_of_turn, template.reason, template.system_role,
                        list(template.added_tokens), folded)


def tool_call_findings(train: Sequence[Conversation], *, tokenizer: Any, model: str) -> list[Finding]:
    """A warning when the chat template drops trained-on tool calls (see unrendered_tool_calls)."""
    dropped = unrendered_tool_calls(train, tokenizer=tokenizer)
    if not dropped:
        return []
    return [Finding(
        "tool_calls_not_rendered", dropped,
        f"{dropped} examples have trained-on tool calls that {model}'s chat template does not write out, "
        "so those turns teach an empty reply; pass --chat-template chatml (honed's ChatML writes tools and calls "
        "as Qwen 2.5 does), a .jinja template that writes them, or a model whose template does",
    )]
