"""`honed eval`: the tuned model against the base model, prompting and other systems on the same holdout.

    evaluate_run("runs/demo", EvalSettings(baselines="base,few-shot:5,few-shot-knn:5"))
      -> RUN_DIR/eval/tuned.jsonl, base.jsonl, few-shot-5.jsonl, majority.jsonl, ...  (one line per example)
         RUN_DIR/eval/summary.json                          (metrics with 95% CIs, differences, verdict)

Every local model answers the same holdout prompts (rendered with its chat template by `render_prompt`;
a base model that ships no chat template is prompted as plain text instead: honed/evaluate/base_prompt.py)
with the same greedy decoding (`generate`). The base systems load `honed.model.loading.load_model(config.model)`;
the tuned system loads the run's best checkpoint through `honed.model.loading.load_run_model` (LoRA merged);
exported models load from their path. Endpoints get the same messages over the chat API. Which systems
there are and how their prompts are built: honed/evaluate/systems.py; scoring and the summary:
honed/evaluate/summary.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from honed.config import DataSettings
from honed.data.read import ColumnMapping, read_conversations, sha256_file
from honed.model.prompt import render_prompt
from honed.data.types import Conversation
from honed.errors import ConfigError, DataError
from honed.evaluate.answer_end import PROMPTED_KINDS, answer_end_rule, end_answer
from honed.evaluate.base_prompt import plain_prompt, plain_stops, ships_chat_template
from honed.evaluate.constrain import ConstraintPlan, plan_constraint
from honed.evaluate.settings import EvalSettings
from honed.model.decode import default_max_new_tokens, generate
from honed.evaluate.summary import (  # noqa: F401  (memorised_share: re-exported for callers of 0.1)
    MetricPlan,
    SystemResult,
    memorised_share,
    plan_metrics,
    score_examples,
    summarize,
)
from honed.evaluate.systems import (  # noqa: F401  (choose_shots, with_shots: re-exported for callers of 0.1)
    MAJORITY,
    TUNED,
    System,
    choose_shots,
    majority_answer,
    parse_baselines,
    prompts_for,
    with_constrained,
    with_shots,
)
from honed.runs.rundir import EvalSummary, FileEntry, RunDir
from honed.threads import apply_threads

OnProgress = Callable[[str, int, int], None]  # (system, examples done, total)


# ---- data ------------------------------------------------------------------------------------------------


# Tables need a column mapping; JSON/JSONL files describe themselves (and those honed writes are canonical).
TABULAR_SUFFIXES = (".csv", ".tsv", ".parquet")


def reading_of(path: Path, reading: DataSettings | None) -> tuple[str, ColumnMapping | None]:
    """The format and column mapping training read `path` with (`reading`: the run's `data` config).

    >>> from honed.config import DataSettings
    >>> reading_of(Path("holdout.csv"), DataSettings(format="csv", prompt_col="text", response_col="label"))
    ('csv', ColumnMapping(prompt_col='text', response_col='label', system=None, system_col=None))
    >>> reading_of(Path("holdout.jsonl"), DataSettings(format="csv", prompt_col="text", response_col="label"))
    ('auto', None)
    """
    tabular = path.suffix.lower() in TABULAR_SUFFIXES
    if reading is None or not (tabular or path.is_dir()):
        return "auto", None
    columns = None
    if reading.prompt_col and reading.response_col:
        columns = ColumnMapping(reading.prompt_col, reading.response_col, system=reading.system,
                                system_col=reading.system_col)
    return (reading.format if tabular else "auto"), columns


def read_examples(path: str | Path, *, reading: DataSettings | None = None) -> list[Conversation]:
    """Conversations of a data file; any bad row is a DataError listing every problem (file:line).

    `reading` is the run's `data` config (`run.config().data`): a CSV/Parquet file is read with its format
    and column mapping (prompt_col, response_col, system), as training read it.
    """
    path = Path(path)  # a file, a folder of shards or a glob: read_conversations explains what it cannot read
    fmt, columns = reading_of(path, reading)
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


# ---- the evaluation --------------------------------------------------------------------------------------


def _load_models(run: RunDir, systems: Sequence[System], *, checkpoint: str, model_spec: str) -> dict[str, Any]:
    """(model, tokenizer) for every set of weights the systems need: tuned, base, and each exported model."""
    from honed.model.loading import load_model
    from honed.model.run import fit_vocabulary, load_run_model
    from honed.model.tokenizers import model_tokenizer, run_tokenizer

    loaded: dict[str, Any] = {}
    for system in systems:
        if not system.model or system.model in loaded:
            continue
        if system.model == TUNED:
            loaded[TUNED] = load_run_model(run, checkpoint=checkpoint)
        elif system.model == "base" and model_spec == run.base_model():
            # The base answers with the run's own template, so base and tuned see the same prompts.
            tokenizer, _ = run_tokenizer(run)
            loaded["base"] = (fit_vocabulary(load_model(model_spec), tokenizer), tokenizer)
        else:
            spec = model_spec if system.model == "base" else system.model
            loaded[system.model] = (load_model(spec), model_tokenizer(spec)[0])
    return loaded


def run_system(
    model: Any, tokenizer: Any, conversations: Sequence[Conversation], *, max_new_tokens: int, batch_size: int,
    progress: Callable[[int], None] | None = None, constraint: Any = None, plain: bool = False,
) -> tuple[list[str], list[bool], Any]:
    """Generate one local model's answers to the conversations (already carrying any few-shot turns);
    decoding is restricted by `constraint` (a honed.evaluate.constrain.Constraint) when given. `plain`:
    prompted as plain text, as a base model without a chat template is (honed.evaluate.base_prompt)."""
    if plain:
        prompts = [render_prompt(c, tokenizer) if c.plain else plain_prompt(c, tokenizer) for c in conversations]
        stops = plain_stops(tokenizer, model)
    else:
        prompts, stops = [render_prompt(c, tokenizer) for c in conversations], None
    generations, stats = generate(
        model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress,
        constraint=constraint, stops=stops,
    )
    return [g.text for g in generations], [g.stopped for g in generations], stats


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


def load_eval_data(run: RunDir, settings: EvalSettings, *, reading: DataSettings | None = None) -> EvalData:
    """Read the holdout (--data or the run's) and the training examples the run recorded; `reading` is
    the run's data config (format and column mapping for CSV/Parquet files)."""
    hold_path = run.holdout_file(settings.data)
    tpath = run.train_file()
    train = read_examples(tpath, reading=reading) if tpath is not None else []
    return EvalData(read_examples(hold_path, reading=reading)[: settings.limit], hold_path, train)


def answer_with(
    system: System, models: dict[str, Any], data: EvalData, *, settings: EvalSettings, max_new_tokens: int,
    progress: Callable[[int], None], constraint: Any = None, plain_base: bool = False,
) -> tuple[list[str], list[bool], int, float]:
    """(outputs, stopped, new tokens, seconds) of one system on the holdout; `plain_base`: the base model
    ships no chat template, so the prompted systems prompt it as plain text."""
    started = time.perf_counter()
    if system.kind == "constant":
        answer = majority_answer(data.train_targets)
        progress(len(data.holdout))
        return [answer] * len(data.holdout), [True] * len(data.holdout), 0, 0.0
    if system.kind == "endpoint":
        from honed.evaluate import endpoint

        outputs, stopped, tokens = endpoint.answer(system, data.holdout, max_tokens=max_new_tokens, progress=progress)
        return outputs, stopped, tokens, time.perf_counter() - started
    model, tokenizer = models[system.model]
    conversations = prompts_for(system, data.holdout, data.train, seed=settings.seed)
    outputs, stopped, stats = run_system(model, tokenizer, conversations, max_new_tokens=max_new_tokens,
                                         batch_size=settings.batch_size, progress=progress, constraint=constraint,
                                         plain=plain_base and system.kind in PROMPTED_KINDS)
    return outputs, stopped, stats.new_tokens, stats.seconds


def _constraint_for(system: System, models: dict[str, Any], plan: ConstraintPlan | None, built: dict[str, Any]) -> Any:
    """The built constraint of a constrained system's model (built once per model), else None."""
    if not system.constrain or plan is None:
        return None
    if system.model not in built:
        built[system.model] = plan.build(*models[system.model])
    return built[system.model]


def run_systems(
    systems: Sequence[System], models: dict[str, Any], data: EvalData, plan: MetricPlan, settings: EvalSettings,
    *, max_new_tokens: int, on_progress: OnProgress | None, constraint: ConstraintPlan | None = None,
    plain_base: bool = False,
) -> list[SystemResult]:
    """Generate and score every system's answers, one system after another (constrained systems decode
    under `constraint`, built once per model; `plain_base`: see `answer_with`)."""
    results: list[SystemResult] = []
    references = data.references
    rule = answer_end_rule(references)  # where a prompted base model's answer ends (honed.evaluate.answer_end)
    built: dict[str, Any] = {}
    for system in systems:
        done = [0]

        def progress(count: int, name: str = system.name) -> None:
            done[0] += count
            if on_progress is not None:
                on_progress(name, done[0], len(references))

        raw, stopped, tokens, seconds = answer_with(system, models, data, settings=settings,
                                                    max_new_tokens=max_new_tokens, progress=progress,
                                                    constraint=_constraint_for(system, models, constraint, built),
                                                    plain_base=plain_base)
        outputs = [end_answer(o, rule) for o in raw] if system.kind in PROMPTED_KINDS else raw
        results.append(SystemResult(system, outputs, stopped, score_examples(plan, references, outputs),
                                    tokens / seconds if seconds > 0 else 0.0, tokens, seconds, raw=raw))
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


def check_systems(systems: list[System], data: EvalData, *, run_dir: Path) -> list[System]:
    """Refuse systems that cannot run before any model loads; drop the constant answer without training
    data; settle each endpoint's model id (checking it answers)."""
    if any(s.shots for s in systems) and not data.train:
        raise ConfigError(f"{run_dir}: few-shot needs the training examples, but the run's train file is gone; "
                          "drop few-shot from --baselines")
    if not data.train:  # the most common *training* answer; the holdout's own would leak the references
        systems = [s for s in systems if s.name != MAJORITY]
    if any(s.kind == "endpoint" for s in systems):
        from honed.evaluate import endpoint

        systems = [endpoint.resolved(s) if s.kind == "endpoint" else s for s in systems]
    return systems


def evaluate_run(run_dir: str | Path, settings: EvalSettings, *, on_progress: OnProgress | None = None) -> EvalSummary:
    """Evaluate a run's tuned model against the baselines; write RUN_DIR/eval/*.jsonl and summary.json.

    Usage: `evaluate_run("runs/demo", EvalSettings(limit=200)).verdict` gives e.g. 'Fine-tuning helped:
    field_f1_micro 0.812 vs 0.204 for the base model (+0.608, 95% CI +0.561 to +0.655); ...' (it loads and
    runs the models: tests/unit/test_monitor_loop.py evaluates trained runs with it).
    """
    apply_threads(settings.threads)  # --threads, else the rule in honed/threads.py
    run = RunDir(run_dir).require_run()
    config = run.config()
    require_finished(run, checkpoint=settings.checkpoint)
    systems = [System(TUNED, TUNED, kind="tuned")] + parse_baselines(settings.baselines)
    data = load_eval_data(run, settings, reading=config.data)
    systems = check_systems(systems, data, run_dir=run.path)
    schema = read_schema(settings.schema) if settings.schema else None
    constraint = plan_constraint(settings.constrain, train_targets=data.train_targets, schema=schema,
                                 schema_path=settings.schema) if settings.constrain else None
    systems = with_constrained(systems, settings.constrain)
    plan = plan_metrics(data.references, train_targets=data.train_targets, requested=settings.metric_names(), schema=schema)
    models = _load_models(run, systems, checkpoint=settings.checkpoint, model_spec=config.model)
    tokenizer = models[TUNED][1]
    max_new = settings.max_new_tokens or max(default_max_new_tokens(
        [len(ids) for ids in tokenizer(data.references, add_special_tokens=False)["input_ids"]]
    ), constraint.min_new_tokens(tokenizer) if constraint else 0)
    plain_base = any(s.kind in PROMPTED_KINDS for s in systems) and not ships_chat_template(config.model)
    results = run_systems(systems, models, data, plan, settings, max_new_tokens=max_new, on_progress=on_progress,
                          constraint=constraint, plain_base=plain_base)
    summary = summarize(plan, data.references, results, train_targets=data.train_targets,
                        seed=settings.seed, resamples=settings.resamples)
    summary = summary.model_copy(update={
        "run": str(run.path.resolve()),
        "checkpoint": settings.checkpoint,
        "holdout": FileEntry(path=str(data.holdout_path.resolve()), sha256=sha256_file(data.holdout_path),
                             count=len(data.holdout)),
        "decoding": {"greedy": True, "max_new_tokens": max_new, "batch_size": settings.batch_size,
                     "constrain": settings.constrain, "baseline_answer_end": answer_end_rule(data.references),
                     "baseline_prompt": "plain text" if plain_base else "chat template"},
        "few_shot_seed": settings.seed,
        "schema_": plan.schema or None,
    })
    write_results(run, data.holdout, data.references, results, summary)
    return summary


def write_results(
    run: RunDir, holdout: Sequence[Conversation], references: Sequence[str], results: Sequence[SystemResult],
    summary: EvalSummary,
) -> None:
    """eval/<system>.jsonl (one line per example) and eval/summary.json, each written atomically."""
    for r in results:
        raw = r.raw if r.raw is not None else r.outputs
        rows = [
            {"id": i, "source": str(conv.source) if conv.source else None, "prompt": conv.user_text(),
             "reference": ref, "output": out, "stopped": stopped, "scores": scores,
             **({"raw_output": whole} if whole != out else {})}
            for i, (conv, ref, out, stopped, scores, whole)
            in enumerate(zip(holdout, references, r.outputs, r.stopped, r.scores, raw))
        ]
        run.write_eval_rows(r.system.name, rows)
    run.write_summary(summary)
