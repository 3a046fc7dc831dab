"""`honed eval`: the tuned model, the base model and few-shot prompting on the same holdout, side by side.

    evaluate_run("runs/demo", baselines=["base", "few-shot:5"])
      -> RUN_DIR/eval/tuned.jsonl, base.jsonl, few-shot-5.jsonl   (one line per holdout example)
         RUN_DIR/eval/summary.json                                (metrics with 95% CIs, differences, verdict)

Every system answers the same holdout prompts (rendered with the training template by `render_prompt`)
with the same greedy decoding (`generate`). The base systems load `honed.models.load_model(config.model)`;
the tuned system loads the run's best checkpoint through `honed.models.load_run_model` (LoRA merged).
Few-shot prompts put k training examples, chosen deterministically (seeded, one per label first when the
data is classification-like), as alternating user/assistant turns after the system prompt.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from honed.data.labels import looks_like_classification
from honed.data.read import ColumnMapping, read_conversations, sha256_file
from honed.data.render import ensure_chat_template, render_prompt
from honed.data.types import Conversation, Message
from honed.errors import ConfigError, DataError
from honed.evaluate import metrics as M
from honed.evaluate.generate import default_max_new_tokens, generate
from honed.evaluate.stats import (
    DEFAULT_RESAMPLES,
    corpus_difference,
    corpus_interval,
    mean_interval,
    paired_difference,
    resample_indices,
)
from honed.evaluate.verdict import Comparison, verdict
from honed.rundir import EvalSummary, FileEntry, RunDir

TUNED = "tuned"
OnProgress = Callable[[str, int, int], None]  # (system, examples done, total)


# ---- systems ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class System:
    """One thing that answers the holdout: the tuned model, the base model, or base + k-shot prompts."""

    name: str  # "tuned", "base", "few-shot-5": also the file name eval/<name>.jsonl
    model: str  # "tuned" or "base": which weights
    shots: int = 0


def parse_baselines(text: str) -> list[System]:
    """`base,few-shot:5` -> the systems to compare with the tuned model ('' or 'none' for none).

    >>> [s.name for s in parse_baselines("base,few-shot:5")]
    ['base', 'few-shot-5']
    """
    systems: list[System] = []
    for item in (part.strip() for part in text.split(",")):
        if item in ("", "none"):
            continue
        if item in ("base", "zero-shot"):
            systems.append(System("base", "base"))
        elif item.startswith("few-shot"):
            shots = item.partition(":")[2] or "5"
            if not shots.isdigit() or int(shots) < 1:
                raise ConfigError(f"--baselines {item!r}: write few-shot:K with K a whole number >= 1, e.g. few-shot:5")
            systems.append(System(f"few-shot-{int(shots)}", "base", int(shots)))
        else:
            raise ConfigError(f"--baselines: unknown baseline {item!r}; use base, few-shot:K, or none")
    return systems


# ---- data ------------------------------------------------------------------------------------------------


# Tables need a column mapping; JSON/JSONL files describe themselves (and those honed writes are canonical).
TABULAR_SUFFIXES = (".csv", ".tsv", ".parquet")


def read_examples(path: str | Path, *, reading: dict[str, Any] | None = None) -> list[Conversation]:
    """Conversations of a data file; any bad row is a DataError listing every problem (file:line).

    `reading` is the run's `data` config: a CSV/Parquet file is read with its format and column mapping
    (prompt_col, response_col, system), as training read it.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; pass the holdout with --data PATH")
    fmt, columns = "auto", None
    reading = reading or {}
    if path.suffix.lower() in TABULAR_SUFFIXES:
        fmt = str(reading.get("format") or "auto")
        if reading.get("prompt_col") and reading.get("response_col"):
            columns = ColumnMapping(reading["prompt_col"], reading["response_col"], system=reading.get("system"))
    result = read_conversations(path, fmt=fmt, columns=columns)
    if result.problems:
        raise DataError(
            f"{len(result.problems)} problem(s) in {path}; fix them (see `honed data check {path}`)",
            details=[str(p) for p in result.problems],
        )
    usable = [c for c in result.conversations if c.last_assistant_index() is not None]
    if not usable:
        raise DataError(f"{path}: no example has an assistant answer to compare against")
    return usable


# ---- few-shot --------------------------------------------------------------------------------------------


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


# ---- scoring ---------------------------------------------------------------------------------------------


@dataclass
class MetricPlan:
    """Which metrics to compute and which one the verdict is about."""

    main: str
    names: list[str]
    per_example: dict[str, M.Metric]
    corpus: dict[str, M.CorpusMetric]
    schema: dict[str, Any] = field(default_factory=dict)


def plan_metrics(
    references: Sequence[str], *, train_targets: Sequence[str] = (), requested: Sequence[str] | None = None,
    schema: dict[str, Any] | None = None,
) -> MetricPlan:
    """Metrics picked from the targets (or `requested`), the schema given or inferred from the targets."""
    targets = list(references) + list(train_targets)
    main, names = M.pick_metrics(list(references))
    if requested:
        names = list(dict.fromkeys(requested))
        main = M.metric_name(names[0])
    for name in names:
        if name not in M.KNOWN_METRICS and ":" not in name:
            raise ConfigError(f"--metrics: unknown metric {name!r}; use {', '.join(sorted(M.KNOWN_METRICS))} "
                              "or a Python function as module:function")
    schema = schema if schema is not None else M.infer_schema(targets) if "schema_valid" in names else {}
    per_example = M.resolve_metrics(names, schema=schema)
    corpus = {n: M.CORPUS[n] for n in names if n in M.CORPUS}
    return MetricPlan(main=main, names=[M.metric_name(n) for n in names], per_example=per_example,
                      corpus=corpus, schema=schema)


def score_examples(plan: MetricPlan, references: Sequence[str], outputs: Sequence[str]) -> list[dict[str, float]]:
    """Per-example scores: one {metric: value} per example (corpus metrics are not per example)."""
    return [
        {name: float(metric(ref, out)) for name, metric in plan.per_example.items()}
        for ref, out in zip(references, outputs)
    ]


def memorised_share(outputs: Sequence[str], references: Sequence[str], train_targets: Sequence[str]) -> float:
    """Share of outputs that copy a training response verbatim where the reference says something else.

    >>> memorised_share(["a", "b", "c"], ["x", "b", "c"], ["a", "b"])
    0.3333333333333333
    """
    seen = {M.normalize_text(t) for t in train_targets}
    copies = sum(
        1 for out, ref in zip(outputs, references)
        if M.normalize_text(out) in seen and M.normalize_text(out) != M.normalize_text(ref)
    )
    return copies / len(outputs) if outputs else 0.0


# ---- the evaluation --------------------------------------------------------------------------------------


@dataclass
class SystemResult:
    system: System
    outputs: list[str]
    stopped: list[bool]
    scores: list[dict[str, float]]
    tokens_per_s: float
    new_tokens: int
    seconds: float


def _load_models(run: RunDir, systems: Sequence[System], *, checkpoint: str, model_spec: str) -> dict[str, Any]:
    from honed.models import load_model, load_run_model, load_tokenizer

    loaded: dict[str, Any] = {}
    if any(s.model == TUNED for s in systems):
        loaded[TUNED] = load_run_model(run, checkpoint=checkpoint)
    if any(s.model == "base" for s in systems):
        loaded["base"] = (load_model(model_spec), ensure_chat_template(load_tokenizer(model_spec)))
    return loaded


def run_system(
    system: System, model: Any, tokenizer: Any, holdout: Sequence[Conversation], *, shots: Sequence[Conversation],
    max_new_tokens: int, batch_size: int, progress: Callable[[int], None] | None = None,
) -> tuple[list[str], list[bool], Any]:
    """Generate one system's answers to the holdout (k-shot prompts when the system has shots)."""
    convs = [with_shots(c, shots) for c in holdout] if shots else list(holdout)
    prompts = [render_prompt(c, tokenizer) for c in convs]
    generations, stats = generate(
        model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress
    )
    return [g.text for g in generations], [g.stopped for g in generations], stats


@dataclass
class EvalSettings:
    """Options of `honed eval` (see its --help)."""

    data: str | None = None
    limit: int | None = None
    baselines: str = "base,few-shot:5"
    metrics: list[str] | None = None
    schema: str | None = None
    checkpoint: str = "best"
    batch_size: int = 16
    max_new_tokens: int | None = None
    seed: int = 0
    resamples: int = DEFAULT_RESAMPLES
    threads: int | None = None  # torch CPU threads; 1 is much faster on a machine shared with other jobs


@dataclass
class EvalData:
    """The holdout (after --limit), the run's training examples, and where the holdout came from."""

    holdout: list[Conversation]
    holdout_path: Path
    train: list[Conversation]

    @property
    def references(self) -> list[str]:
        return [c.response_text() for c in self.holdout]

    @property
    def train_targets(self) -> list[str]:
        return [c.response_text() for c in self.train]


def load_eval_data(run: RunDir, settings: EvalSettings, *, reading: dict[str, Any] | None = None) -> EvalData:
    """Read the holdout (--data or the run's) and the training examples the run recorded; `reading` is
    the run's data config (format and column mapping for CSV/Parquet files)."""
    hold_path = run.holdout_file(settings.data)
    tpath = run.train_file()
    train = read_examples(tpath, reading=reading) if tpath is not None else []
    return EvalData(read_examples(hold_path, reading=reading)[: settings.limit], hold_path, train)


def run_systems(
    systems: Sequence[System], models: dict[str, Any], data: EvalData, plan: MetricPlan, settings: EvalSettings,
    *, max_new_tokens: int, on_progress: OnProgress | None,
) -> list[SystemResult]:
    """Generate and score every system's answers, one system after another."""
    results: list[SystemResult] = []
    references = data.references
    for system in systems:
        model, tokenizer = models[system.model]
        shots = choose_shots(data.train, k=system.shots, seed=settings.seed) if system.shots else []
        done = [0]

        def progress(count: int, name: str = system.name) -> None:
            done[0] += count
            if on_progress is not None:
                on_progress(name, done[0], len(references))

        outputs, stopped, stats = run_system(
            system, model, tokenizer, data.holdout, shots=shots, max_new_tokens=max_new_tokens,
            batch_size=settings.batch_size, progress=progress,
        )
        results.append(SystemResult(system, outputs, stopped, score_examples(plan, references, outputs),
                                    stats.tokens_per_s, stats.new_tokens, stats.seconds))
    return results


def read_schema(path: str | Path) -> dict[str, Any]:
    """The --schema file: a JSON schema; a missing file, bad JSON or an invalid schema is a ConfigError."""
    import jsonschema

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--schema {path}: no such file; pass a JSON schema file")
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); --schema needs a JSON schema") from exc
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ConfigError(f"{path}: not a valid JSON schema ({exc.message})") from exc
    return schema


def require_finished(run: RunDir, *, checkpoint: str) -> None:
    """Refuse `--checkpoint best` on a run that never completed: its best checkpoint was never chosen, and
    silently evaluating whatever checkpoint a killed run left would pass it off as the best."""
    status = run.read_run().status
    if checkpoint == "best" and status != "completed":
        raise ConfigError(
            f"{run.path}: the run never finished (status: {status}), so it has no best checkpoint; "
            f"finish it with `honed train --out {run.path} --resume`, or evaluate a checkpoint it saved "
            "with --checkpoint last or --checkpoint checkpoints/step-N"
        )


def evaluate_run(run_dir: str | Path, settings: EvalSettings, *, on_progress: OnProgress | None = None) -> EvalSummary:
    """Evaluate a run's tuned model against the baselines; write RUN_DIR/eval/*.jsonl and summary.json.

    >>> summary = evaluate_run("runs/demo", EvalSettings(limit=200))  # doctest: +SKIP
    >>> summary.verdict  # doctest: +SKIP
    'Fine-tuning helped: field_f1 0.812 vs 0.204 for the base model (+0.608, 95% CI +0.561 to +0.655); ...'
    """
    import torch

    if settings.threads:
        torch.set_num_threads(settings.threads)
    run = RunDir(run_dir).require_run()
    config = run.read_config()
    require_finished(run, checkpoint=settings.checkpoint)
    data = load_eval_data(run, settings, reading=config.get("data"))
    systems = [System(TUNED, TUNED)] + parse_baselines(settings.baselines)
    if any(s.shots for s in systems) and not data.train:
        raise ConfigError(f"{run_dir}: few-shot needs the training examples, but the run's train file is gone; "
                          "drop few-shot from --baselines")
    schema = read_schema(settings.schema) if settings.schema else None
    plan = plan_metrics(data.references, train_targets=data.train_targets, requested=settings.metrics, schema=schema)
    models = _load_models(run, systems, checkpoint=settings.checkpoint, model_spec=str(config.get("model")))
    tokenizer = models[TUNED][1]
    max_new = settings.max_new_tokens or default_max_new_tokens(
        [len(ids) for ids in tokenizer(data.references, add_special_tokens=False)["input_ids"]]
    )
    results = run_systems(systems, models, data, plan, settings, max_new_tokens=max_new, on_progress=on_progress)
    summary = summarize(plan, data.holdout, data.references, results, train_targets=data.train_targets,
                        seed=settings.seed, resamples=settings.resamples)
    summary = summary.model_copy(update={
        "run": str(run.path.resolve()),
        "checkpoint": settings.checkpoint,
        "holdout": FileEntry(path=str(data.holdout_path.resolve()), sha256=sha256_file(data.holdout_path),
                             count=len(data.holdout)),
        "decoding": {"greedy": True, "max_new_tokens": max_new, "batch_size": settings.batch_size},
        "few_shot_seed": settings.seed,
        "schema_": plan.schema or None,
    })
    write_results(run, data.holdout, data.references, results, summary)
    return summary


def summarize(
    plan: MetricPlan, holdout: Sequence[Conversation], references: Sequence[str], results: Sequence[SystemResult],
    *, train_targets: Sequence[str], seed: int, resamples: int,
) -> EvalSummary:
    """Metrics with intervals per system, paired differences against the tuned model, and the verdict."""
    indices = resample_indices(len(references), resamples=resamples, seed=seed)
    systems: dict[str, Any] = {}
    for r in results:
        values = {name: mean_interval([s[name] for s in r.scores], indices=indices).to_json()
                  for name in plan.per_example}
        values.update({name: corpus_interval(fn, references, r.outputs, indices=indices).to_json()
                       for name, fn in plan.corpus.items()})
        systems[r.system.name] = {
            "metrics": {name: values[name] for name in plan.names},
            "memorised": memorised_share(r.outputs, references, train_targets),
            "unfinished": sum(not s for s in r.stopped),
            "generation": {"new_tokens": r.new_tokens, "seconds": round(r.seconds, 3),
                           "tokens_per_s": round(r.tokens_per_s, 2)},
        }
    tuned = next(r for r in results if r.system.name == TUNED)
    differences: dict[str, Any] = {}
    comparisons: list[Comparison] = []
    for other in (r for r in results if r.system.name != TUNED):
        diffs = {name: paired_difference([s[name] for s in tuned.scores], [s[name] for s in other.scores],
                                         indices=indices) for name in plan.per_example}
        diffs.update({name: corpus_difference(fn, references, tuned.outputs, other.outputs, indices=indices)
                      for name, fn in plan.corpus.items()})
        differences[f"{TUNED} - {other.system.name}"] = {name: diffs[name].to_json() for name in plan.names}
        comparisons.append(Comparison(other.system.name, systems[other.system.name]["metrics"][plan.main]["value"],
                                      diffs[plan.main]))
    line = verdict(metric=plan.main, n=len(references), tuned=systems[TUNED]["metrics"][plan.main]["value"],
                   comparisons=comparisons)
    return EvalSummary.model_validate({
        "n": len(references), "main_metric": plan.main, "metrics": plan.names, "systems": systems,
        "differences": differences, "verdict": line, "resamples": resamples,
    })


def write_results(
    run: RunDir, holdout: Sequence[Conversation], references: Sequence[str], results: Sequence[SystemResult],
    summary: EvalSummary,
) -> None:
    """eval/<system>.jsonl (one line per example) and eval/summary.json, each written atomically."""
    for r in results:
        rows = [
            {"id": i, "source": str(conv.source) if conv.source else None, "prompt": conv.user_text(),
             "reference": ref, "output": out, "stopped": stopped, "scores": scores}
            for i, (conv, ref, out, stopped, scores) in enumerate(zip(holdout, references, r.outputs, r.stopped, r.scores))
        ]
        run.write_eval_rows(r.system.name, rows)
    run.write_summary(summary)
