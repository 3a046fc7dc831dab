"""The honed command line: parse, call one function, print. No logic lives here.

Every HonedError becomes one clear message on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from honed.errors import EXIT_USER_ERROR, HonedError

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    help="honed: check your data, fine-tune open models correctly, and prove the tuned model is better.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Check, split and preview training data.", no_args_is_help=True)
runs_app = typer.Typer(help="List and inspect training runs.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(runs_app, name="runs")

err_console = Console(stderr=True, highlight=False)
MAX_DETAILS_SHOWN = 50


def user_errors(func: F) -> F:
    """Turn HonedError into a clear message and exit 2; Ctrl-C into exit 130 without a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except HonedError as exc:
            # escape: messages quote user data, which may look like rich markup ("[/x]")
            err_console.print(f"[bold red]error:[/] {escape(exc.message)}", soft_wrap=True)
            for line in exc.details[:MAX_DETAILS_SHOWN]:
                err_console.print(f"  {line}", soft_wrap=True, markup=False)
            if len(exc.details) > MAX_DETAILS_SHOWN:
                err_console.print(f"  ... and {len(exc.details) - MAX_DETAILS_SHOWN} more")
            sys.exit(EXIT_USER_ERROR)
        except KeyboardInterrupt as exc:
            terminated = type(exc).__name__ == "Terminated"  # SIGTERM during training (honed.train.loop)
            err_console.print("terminated" if terminated else "interrupted")
            sys.exit(143 if terminated else 130)

    return wrapper  # type: ignore[return-value]


# Commands are registered below, one block each, grouped by pipeline stage.


# ---- data: honed data check, split, show ---------------------------------------------------------------


def _column_mapping(
    prompt_col: str | None, response_col: str | None, system: str | None, system_col: str | None = None
) -> Any:
    """A ColumnMapping from --prompt-col/--response-col/--system/--system-col, or None when no column is named."""
    from honed.data.read import ColumnMapping
    from honed.errors import ConfigError

    if prompt_col is None and response_col is None:
        for flag, value in (("--system", system), ("--system-col", system_col)):
            if value is not None:
                raise ConfigError(f"{flag} applies to column data; pass it with --prompt-col and --response-col")
        return None
    if prompt_col is None or response_col is None:
        raise ConfigError("--prompt-col and --response-col go together; pass both column names")
    return ColumnMapping(prompt_col, response_col, system=system, system_col=system_col)


DATA_HELP = "data: a file, a folder of shards, a glob or a save_to_disk folder (formats: README 'Data formats')"
FORMAT_HELP = "auto, chat, sharegpt, prompt-completion, alpaca, text, csv, parquet, arrow"
SYSTEM_COL_HELP = "column holding each row's system prompt (an empty cell falls back to --system)"


@data_app.command("check")
@user_errors
def data_check_command(
    file: str = typer.Argument(..., help=DATA_HELP),
    holdout: str = typer.Option(None, "--holdout", help="holdout file to check for leakage from the training data"),
    model: str = typer.Option("smollm2-135m", "--model", help="model whose tokenizer and chat template count tokens"),
    max_length: int = typer.Option(2048, "--max-length", min=1, help="training sequence length: truncation counts"),
    near_threshold: float = typer.Option(
        0.85, "--near-threshold", help="MinHash Jaccard similarity at which two examples count as near duplicates"
    ),
    fmt: str = typer.Option("auto", "--format", help=FORMAT_HELP),
    prompt_col: str = typer.Option(None, "--prompt-col", help="column holding the prompt (CSV/Parquet/JSON)"),
    response_col: str = typer.Option(None, "--response-col", help="column holding the response"),
    system: str = typer.Option(None, "--system", help="system prompt added to column data"),
    system_col: str = typer.Option(None, "--system-col", help=SYSTEM_COL_HELP),
    skip_invalid: bool = typer.Option(
        False, "--skip-invalid", help="leave invalid rows out (written to FILE.invalid.jsonl) instead of failing"
    ),
    strict: bool = typer.Option(
        False, "--strict", help="exit 1 when the report has any warning (content not trained on included)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the report as one JSON object (docs/data-check.md)"),
) -> None:
    """Report on training data before training: tokens, truncation, duplicates, conflicts, labels, leakage.

    Exit status: 0 report produced, 1 warnings with --strict, 2 invalid data or options.

    Example: honed data check train.jsonl --holdout test.jsonl --model smollm2-135m --max-length 1024
    """
    import json

    from honed.data.check import RichProgress, exit_status, print_report, run_check

    with RichProgress(err_console) as progress:
        report = run_check(
            file, holdout=holdout, model=model, max_length=max_length, near_threshold=near_threshold, fmt=fmt,
            columns=_column_mapping(prompt_col, response_col, system, system_col), skip_invalid=skip_invalid, progress=progress,
        )
    if as_json:
        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        print_report(Console(highlight=False), report)
    raise typer.Exit(exit_status(report, strict=strict))


@data_app.command("split")
@user_errors
def data_split_command(
    file: str = typer.Argument(..., help=DATA_HELP),
    out: str = typer.Option(..., "--out", help="folder to create with train.jsonl, holdout.jsonl, manifest.json"),
    holdout_fraction: float = typer.Option(0.1, "--holdout-fraction", help="share of examples held out, in (0, 1)"),
    seed: int = typer.Option(0, "--seed", help="same file and seed give byte-identical outputs"),
    near_threshold: float = typer.Option(
        0.85, "--near-threshold", help="MinHash Jaccard similarity at which two examples count as near duplicates"
    ),
    fmt: str = typer.Option("auto", "--format", help=FORMAT_HELP),
    prompt_col: str = typer.Option(None, "--prompt-col", help="column holding the prompt (CSV/Parquet/JSON)"),
    response_col: str = typer.Option(None, "--response-col", help="column holding the response"),
    system: str = typer.Option(None, "--system", help="system prompt added to column data"),
    system_col: str = typer.Option(None, "--system-col", help=SYSTEM_COL_HELP),
    force: bool = typer.Option(False, "--force", help="replace --out if it exists and is not empty"),
    skip_invalid: bool = typer.Option(
        False, "--skip-invalid", help="leave invalid rows out (written to FILE.invalid.jsonl) instead of failing"
    ),
    strict: bool = typer.Option(False, "--strict", help="refuse data holding content not trained on (images, <image>)"),
    as_json: bool = typer.Option(False, "--json", help="print the manifest as JSON"),
) -> None:
    """Split a data file into train and holdout, deterministically and without leaks.

    Near and exact duplicates stay on one side; classification-like data is stratified by label.

    Example: honed data split examples/support_triage.jsonl --holdout-fraction 0.2 --seed 0 --out data/split
    """
    import json

    from honed.data.split import split_file

    columns = _column_mapping(prompt_col, response_col, system, system_col)
    with err_console.status("splitting (clustering near duplicates)...", spinner="dots"):
        manifest = split_file(
            file, out=out, holdout_fraction=holdout_fraction, seed=seed, near_threshold=near_threshold,
            fmt=fmt, columns=columns, force=force, skip_invalid=skip_invalid, strict=strict,
        )
    if as_json:
        print(json.dumps(manifest, indent=2, ensure_ascii=False))
        return
    counts = manifest["counts"]
    grouped = counts["input"] - manifest["clusters"]
    console = Console(highlight=False, markup=False)  # paths and column names are shown as they are
    console.print(f"{counts['input']} examples ({manifest['format']}) -> {counts['train']} train, "
                  f"{counts['holdout']} holdout ({counts['holdout'] / counts['input']:.1%})", soft_wrap=True)
    console.print(f"{manifest['clusters']} clusters: {grouped} examples joined a near or exact duplicate "
                  "and stayed on its side", soft_wrap=True)
    strata = f"stratified by {manifest['labels']} labels" if manifest["stratified"] else "not stratified (no labels)"
    console.print(strata)
    console.print(f"wrote {out}/train.jsonl, {out}/holdout.jsonl, {out}/manifest.json", soft_wrap=True)
    for notice in manifest["notices"]:
        err_console.print(f"warning: {notice}", soft_wrap=True, markup=False)
    if manifest["skipped_invalid"]:
        from honed.data.read import invalid_path_for

        console.print(f"skipped {manifest['skipped_invalid']} invalid rows (written to {invalid_path_for(file)})",
                      soft_wrap=True, markup=False)


@data_app.command("show")
@user_errors
def data_show_command(
    file: str = typer.Argument(..., help=DATA_HELP),
    model: str = typer.Option("smollm2-135m", "--model", help="model whose tokenizer and chat template to use"),
    n: int = typer.Option(3, "-n", "--num", min=1, help="how many examples to show (from the top)"),
    max_length: int = typer.Option(None, "--max-length", min=1, help="truncate as training would"),
    fmt: str = typer.Option("auto", "--format", help=FORMAT_HELP),
    prompt_col: str = typer.Option(None, "--prompt-col", help="column holding the prompt (CSV/Parquet/JSON)"),
    response_col: str = typer.Option(None, "--response-col", help="column holding the response"),
    system: str = typer.Option(None, "--system", help="system prompt added to column data"),
    system_col: str = typer.Option(None, "--system-col", help=SYSTEM_COL_HELP),
    skip_invalid: bool = typer.Option(
        False, "--skip-invalid", help="leave invalid rows out (written to FILE.invalid.jsonl) instead of failing"
    ),
    strict: bool = typer.Option(False, "--strict", help="refuse data holding content not trained on (images, <image>)"),
    as_json: bool = typer.Option(False, "--json", help="print every token (text, id, supervised) as JSON"),
) -> None:
    """Show examples through the model's chat template, marking the tokens training learns from.

    Supervised tokens (the loss is computed on them) are bold green, masked tokens dim.

    Example: honed data show examples/support_triage.jsonl --model smollm2-135m -n 3
    """
    import json

    from honed.data.read import load_or_fail
    from honed.data.show import has_chat_template, preview, print_preview
    from honed.models import load_tokenizer

    columns = _column_mapping(prompt_col, response_col, system, system_col)
    conversations = load_or_fail(file, fmt=fmt, columns=columns, skip_invalid=skip_invalid, strict=strict)
    for notice in conversations.notices:
        err_console.print(f"warning: {notice}", soft_wrap=True, markup=False)
    tokenizer = load_tokenizer(model)
    default_template = not has_chat_template(tokenizer)
    views = preview(conversations.conversations, tokenizer, n=n, max_length=max_length)
    if as_json:
        payload = {"model": model, "default_chat_template": default_template, "examples": [v.to_json() for v in views]}
        print(json.dumps(payload, ensure_ascii=False))
        return
    print_preview(Console(highlight=False), views, model=model, default_template=default_template)


# ---- train: honed train, honed runs list, honed runs show -------------------------------------------------


@app.command("train")
@user_errors
def train_command(
    data: str = typer.Option(None, "--data", help="training data (JSONL/JSON chat, prompt-completion, alpaca, CSV, Parquet)"),
    out: str = typer.Option(..., "--out", help="run directory to create (or to continue with --resume)"),
    holdout: str = typer.Option(None, "--holdout", help="holdout data; without it a holdout is split off --data"),
    model: str = typer.Option(None, "--model", help="built-in alias (smollm2-135m), HF folder, .gguf file or hub id"),
    config_file: str = typer.Option(None, "--config", help="YAML file with any config field (see README)"),
    overrides: list[str] = typer.Option(None, "--set", help="override one field, e.g. --set lora.r=8 (repeatable)"),
    method: str = typer.Option(None, "--method", help="lora (default), full, or qlora (GPU only)"),
    epochs: str = typer.Option(None, "--epochs", help="number of epochs or 'auto' (default, depends on data size)"),
    lr: float = typer.Option(None, "--lr", help="learning rate (default 2e-4 for LoRA, 1e-5 for full)"),
    max_length: int = typer.Option(None, "--max-length", help="tokens per example; longer ones are truncated"),
    max_steps: int = typer.Option(None, "--max-steps", help="stop after this many optimizer steps"),
    seed: int = typer.Option(None, "--seed", help="seed of data order and initialisation"),
    merge: bool = typer.Option(False, "--merge", help="also save LoRA merged into the base weights in merged/"),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="set invalid rows aside instead of stopping"),
    resume: bool = typer.Option(False, "--resume", help="continue --out from its newest complete checkpoint"),
    as_json: bool = typer.Option(False, "--json", help="log to stderr and print the result as JSON"),
    nproc: int = typer.Option(1, "--nproc", min=1, help="training processes on this machine (torchrun; gloo on CPU, nccl on GPUs)"),
    from_run: str = typer.Option(None, "--from-run", help="continue from this run's best weights and settings (new data in --data)"),
    mix_old: float = typer.Option(0.0, "--mix-old", min=0.0, max=10.0, help="with --from-run: also train on this share (x new examples) of the parent's data"),
    no_report: bool = typer.Option(False, "--no-report", help="do not write RUN/report.html when training ends"),
) -> None:
    """Fine-tune a model on your examples; writes a self-describing run directory.

    With --resume, the run's saved config.yaml is used and the other options are ignored.
    With --nproc N, the same command runs as N torchrun processes that split every step's examples
    (the loss curve matches one process); add --set sharding=fsdp to shard full fine-tuning (FSDP2).

    Example: honed train --data examples/support_triage.jsonl --model smollm2-135m --out runs/first --epochs 2

    Example: honed train --data train.jsonl --out runs/two --nproc 2

    Example: honed train --from-run runs/first --data reviewed.jsonl --mix-old 0.5 --out runs/first-v2
    """
    from honed.config import load_config
    from honed.evaluate.scorer import score_fn_from_config
    from honed.train import distributed, train

    console = err_console if as_json else Console(highlight=False)
    flags = {
        "data.train": data,
        "data.holdout": holdout,
        "model": model,
        "method": method,
        "epochs": int(epochs) if epochs is not None and epochs.isdigit() else epochs,
        "lr": lr,
        "max_length": max_length,
        "max_steps": max_steps,
        "seed": seed,
        "merge": True if merge else None,
        "data.skip_invalid": True if skip_invalid else None,
    }
    if resume and (config_file or overrides or any(v is not None for v in flags.values())):
        console.print("note: --resume continues with the run's saved config.yaml; the other options are ignored")
    config = load_config(config_file, overrides=overrides or [], flags=flags, base=_parent_base(from_run, mix_old))
    if config.tracking:  # a missing tracker package fails now, not after the training
        from honed.report.trackers import require_installed

        require_installed(config.tracking)
    if nproc > 1 and not distributed.launched_by_torchrun():
        # The config was checked above, once; the same command now runs as `nproc` torchrun workers.
        raise typer.Exit(distributed.relaunch(sys.argv[1:], nproc=nproc))
    dist = distributed.Dist.from_env()
    with distributed.process_group(dist, device_setting=config.device):
        # eval_metric: the scorer (generation + task metrics) lives in honed.evaluate; train gets it injected.
        result = train(config, out=out, resume=resume, console=console, make_score_fn=score_fn_from_config)
    if not dist.is_main:
        return
    _print_train_result(result, console=console, as_json=as_json, no_report=no_report)


def _parent_base(from_run: str | None, mix_old: float) -> dict[str, Any] | None:
    """--from-run: the parent's settings and weights as the base config (honed.train.from_run)."""
    from honed.errors import ConfigError
    from honed.rundir import RunDir
    from honed.train.from_run import parent_config

    if from_run is None:
        if mix_old:
            raise ConfigError("--mix-old mixes in a parent run's data; use it with --from-run RUN")
        return None
    return parent_config(RunDir(from_run), mix_ratio=mix_old)


def _print_train_result(result: Any, *, console: Console, as_json: bool, no_report: bool) -> None:
    """The run's outcome: JSON for scripts, or the before/after holdout loss and where the run is."""
    import json

    summary = {
        "run_dir": str(result.run_dir),
        "status": result.status,
        "steps": result.steps,
        "best_checkpoint": result.best_checkpoint,
        "best": result.best,
        "first_eval": result.first_eval,
        "last_eval": result.last_eval,
    }
    report = None if no_report else _refresh_report(result.run_dir, console=err_console if as_json else console)
    _export_to_trackers(result.run_dir, stage="train", report=report, console=err_console if as_json else console)
    if as_json:
        print(json.dumps({**summary, "report": str(report) if report else None}, indent=2))
        return
    before = result.first_eval.get("holdout_loss")
    after = result.best.get("holdout_loss")
    if before is not None and after is not None:
        console.print(f"holdout loss {before:.4f} before training -> {after:.4f} at the best step ({result.best['step']})")
    console.print(f"run directory: {result.run_dir}  (next: honed eval {result.run_dir})", soft_wrap=True)


@runs_app.command("list")
@user_errors
def runs_list_command(
    as_json: bool = typer.Option(False, "--json", help="print the runs as a JSON list"),
) -> None:
    """List every training run in the registry ($HONED_HOME/runs.db), newest first.

    Example: honed runs list --json
    """
    import json

    from rich.table import Table

    from honed.registry import list_runs

    runs = list_runs()
    if as_json:
        print(json.dumps(runs, indent=2, default=str))
        return
    table = Table()
    for column in ("name", "status", "model", "method", "best holdout_loss", "started", "parent", "run_dir"):
        # the status is never cut; long paths wrap instead
        table.add_column(column, overflow="fold", no_wrap=column == "status", min_width=9 if column == "status" else None)
    names = {run["run_dir"]: run["name"] for run in runs}
    for run in runs:
        loss = run["best"].get("holdout_loss")
        status = {"stale": "stale (the process is gone)", "missing": "missing (folder deleted)"}.get(run["status"], run["status"])
        parent = names.get(run["parent"], run["parent"]) if run.get("parent") else "-"
        table.add_row(
            run["name"], status, str(run["model"]), str(run["method"]),
            f"{loss:.4f}" if isinstance(loss, (int, float)) else "-", str(run["started_at"] or "-"), parent,
            run["run_dir"],
        )
    Console(highlight=False).print(table)


@runs_app.command("show")
@user_errors
def runs_show_command(
    run: str = typer.Argument(..., help="run name or run directory"),
    as_json: bool = typer.Option(False, "--json", help="print the run record as JSON"),
) -> None:
    """Show one run: status, model, data hashes, best metrics and the full config.

    Example: honed runs show runs/first
    """
    import json

    from honed.registry import get_run

    record = get_run(run)
    if as_json:
        print(json.dumps(record, indent=2, default=str))
        return
    console = Console(highlight=False)
    for key in ("name", "status", "model", "method", "run_dir", "started_at", "finished_at", "parent"):
        console.print(f"[bold]{key}:[/] {record[key]}", soft_wrap=True)
    console.print("[bold]best:[/] " + json.dumps(record["best"]), soft_wrap=True)
    for part in ("train", "holdout"):
        entry = record["data"].get(part) or {}
        if entry:
            console.print(f"[bold]{part}:[/] {entry.get('path')} ({entry.get('count')} examples, sha256 {str(entry.get('sha256'))[:12]})", soft_wrap=True)
    console.print("[bold]config:[/]")
    console.print(json.dumps(record["config"], indent=2), markup=False)


# ---- evaluate: honed eval, honed compare ------------------------------------------------------------------


@app.command("eval")
@user_errors
def eval_command(
    run_dir: str = typer.Argument(..., help="a run directory written by `honed train`"),
    data: str = typer.Option(None, "--data", help="holdout file (default: the run's holdout)"),
    limit: int = typer.Option(None, "--limit", min=1, help="evaluate only the first N holdout examples"),
    baselines: str = typer.Option(
        "base,few-shot:5", "--baselines",
        help="comma-separated: base, few-shot:K, few-shot-knn:K, endpoint:NAME=URL or NAME=URL#MODEL, export:PATH "
             "(or model:PATH), none; the constant majority answer is always added"),
    metrics: str = typer.Option(None, "--metrics", help="comma-separated metrics or module:function (default: picked from the data; the first is the main one)"),
    schema: str = typer.Option(None, "--schema", help="JSON schema file for schema_valid (default: inferred from the targets)"),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best, final, last or checkpoints/step-N"),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="prompts decoded together"),
    max_new_tokens: int = typer.Option(None, "--max-new-tokens", min=1, help="default: from the longest target"),
    seed: int = typer.Option(0, "--seed", help="seed of the few-shot choice and the bootstrap"),
    threads: int = typer.Option(None, "--threads", min=1, help="CPU threads for torch (default: torch's choice)"),
    constrain: str = typer.Option(
        None, "--constrain", help="also decode every system constrained: labels (one of the training labels) or "
        "json (a JSON object; with --schema, one matching it); adds tuned+labels, base+labels, ... to the table"),
    as_json: bool = typer.Option(False, "--json", help="print summary.json instead of tables"),
    no_report: bool = typer.Option(False, "--no-report", help="do not refresh RUN/report.html"),
) -> None:
    """Evaluate the tuned model against the base model, prompting and other systems on the same holdout.

    Example: honed eval runs/demo --limit 200 --baselines base,few-shot:5,few-shot-knn:5

    An endpoint's key comes from $HONED_ENDPOINT_API_KEY (else $OPENAI_API_KEY); its timeout in seconds from
    $HONED_ENDPOINT_TIMEOUT (default 120).

    Example: honed eval runs/intents --constrain labels   # tuned+labels, base+labels, few-shot-5+labels too
    """
    import json

    from rich.progress import Progress

    from honed.evaluate.run_eval import EvalSettings, evaluate_run
    from honed.evaluate.tables import differences_table, eval_table

    _tracking(run_dir)  # a tracker the run names but this machine lacks fails now, not after the evaluation
    settings = EvalSettings(
        data=data, limit=limit, baselines=baselines, schema=schema, checkpoint=checkpoint, batch_size=batch_size,
        metrics=[m.strip() for m in metrics.split(",") if m.strip()] if metrics else None,
        max_new_tokens=max_new_tokens, seed=seed, threads=threads, constrain=constrain,
    )
    with Progress(console=err_console, transient=True, disable=as_json) as progress:
        tasks: dict[str, Any] = {}

        def on_progress(system: str, done: int, total: int) -> None:
            if system not in tasks:
                tasks[system] = progress.add_task(f"generating: {system}", total=total)
            progress.update(tasks[system], completed=done)

        summary = evaluate_run(run_dir, settings, on_progress=on_progress)
    console = err_console if as_json else Console(highlight=False)  # --json: stdout holds only the summary
    if as_json:
        print(json.dumps(summary.to_json(), indent=2, ensure_ascii=False))
    else:
        console.print(eval_table(summary))
        if summary.differences:
            console.print(differences_table(summary))
        console.print(summary.verdict, soft_wrap=True)
        console.print(f"per-example outputs: {run_dir}/eval/<system>.jsonl", soft_wrap=True)
    report = None if no_report else _refresh_report(run_dir, console=console)
    _export_to_trackers(run_dir, stage="eval", report=report, console=console)


@app.command("compare")
@user_errors
def compare_command(
    run_dirs: list[str] = typer.Argument(..., help="two or more evaluated run directories"),
    limit: int = typer.Option(10, "--limit", min=0, help="disagreeing examples to show"),
    as_json: bool = typer.Option(False, "--json", help="print the comparison as JSON"),
) -> None:
    """Compare runs side by side: data hashes, config differences, metrics with CIs, disagreeing examples.

    Example: honed compare runs/lr-2e-4 runs/lr-1e-4
    """
    import json

    from honed.evaluate.compare import compare_runs
    from honed.evaluate.tables import compare_tables

    report = compare_runs(run_dirs, limit=limit)
    if as_json:
        print(json.dumps(report, indent=2, ensure_ascii=False, default=str))
        return
    console = Console(highlight=False)
    for table in compare_tables(report):
        console.print(table)


# ---- monitor: honed monitor ----------------------------------------------------------------------------


@app.command("monitor")
@user_errors
def monitor_command(
    run_dir: str = typer.Argument(..., help="the run directory of the served model"),
    traffic: str = typer.Option(None, "--traffic", help="request log of `honed serve` (RUN/requests.jsonl) or any data file"),
    window: str = typer.Option("auto", "--window", help="auto, all, a duration (30m, 6h, 1d, 1w) or a request count (200)"),
    alpha: float = typer.Option(0.01, "--alpha", min=1e-6, max=0.5, help="drift test level: a window drifts when p < alpha"),
    permutations: int = typer.Option(200, "--permutations", min=20, help="permutations of the drift test"),
    max_reference: int = typer.Option(1000, "--max-reference", min=10, help="training prompts sampled as the reference"),
    embed_model: str = typer.Option(None, "--embed-model", help="model that embeds prompts (default: the run's tuned model)"),
    schema: str = typer.Option(None, "--schema", help="JSON schema the outputs must match (JSON tasks)"),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best, final, last or checkpoints/step-N"),
    canary: bool = typer.Option(False, "--canary", help="replay the evaluation's first examples against --endpoint"),
    endpoint: str = typer.Option("http://127.0.0.1:8000/v1", "--endpoint", help="OpenAI-compatible base URL (canary)"),
    endpoint_model: str = typer.Option(None, "--endpoint-model", help="model name to ask the endpoint for (default: the run's name)"),
    canary_size: int = typer.Option(32, "--canary-size", min=2, help="examples the canary replays"),
    seed: int = typer.Option(0, "--seed", help="seed of the reference sample, the permutations and the bootstrap"),
    strict: bool = typer.Option(False, "--strict", help="exit 1 when any window drifts or is degraded"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Compare production traffic with the training data (input drift, simple shifts, output health),
    or replay canary examples against the served model.

    Example: honed monitor runs/demo --traffic runs/demo/requests.jsonl --window 1d --strict
    Example: honed monitor runs/demo --canary --endpoint http://127.0.0.1:8000/v1
    """
    from honed.errors import ConfigError
    from honed.monitor.watch import MonitorSettings, parse_window

    if canary:
        alarm = _monitor_canary(run_dir, endpoint=endpoint, model=endpoint_model, size=canary_size, seed=seed,
                                as_json=as_json)
    else:
        if traffic is None:
            raise ConfigError("pass --traffic LOG (the request log or a data file), or --canary to replay examples")
        parse_window(window)  # a bad --window fails before any model loads
        settings = MonitorSettings(
            traffic=traffic, window=window, alpha=alpha, permutations=permutations, max_reference=max_reference,
            embed_model=embed_model, checkpoint=checkpoint, seed=seed,
            schema=_read_schema_option(schema) if schema else None,
        )
        alarm = _monitor_traffic(run_dir, settings, as_json=as_json)
    if strict and alarm:
        raise typer.Exit(1)


def _progress_callback(progress: Any) -> Callable[[str, int, int], None]:
    tasks: dict[str, Any] = {}

    def on_progress(label: str, done: int, total: int) -> None:
        if label not in tasks:
            tasks[label] = progress.add_task(label, total=total)
        progress.update(tasks[label], completed=done)

    return on_progress


def _monitor_traffic(run_dir: str, settings: Any, *, as_json: bool) -> bool:
    import json

    from rich.progress import Progress

    from honed.monitor.watch import monitor_run

    with Progress(console=err_console, transient=True, disable=as_json) as progress:
        report = monitor_run(run_dir, settings, on_progress=_progress_callback(progress))
    if as_json:
        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        _print_monitor(report)
    return report.alarm


def _monitor_canary(run_dir: str, *, endpoint: str, model: str | None, size: int, seed: int, as_json: bool) -> bool:
    import json

    from rich.progress import Progress

    from honed.monitor.canary import run_canary

    with Progress(console=err_console, transient=True, disable=as_json) as progress:
        task = progress.add_task("canary", total=size)
        result = run_canary(run_dir, endpoint=endpoint, model=model, size=size, seed=seed,
                            progress=lambda n: progress.advance(task, n))
    if as_json:
        print(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
        return result.status != "ok"
    d = result.difference
    Console(highlight=False).print(
        f"canary: {result.status.upper()}  {result.metric} {result.served:.3f} served by {result.endpoint} "
        f"({result.model}) vs {result.evaluated:.3f} at eval on the same {result.size} examples: "
        f"{d['value']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]; identical outputs {result.identical:.0%}",
        markup=False, soft_wrap=True)
    return result.status != "ok"
def _read_schema_option(path: str) -> dict[str, Any]:
    from honed.evaluate.run_eval import read_schema

    return read_schema(path)


def _print_monitor(report: Any) -> None:
    console = Console(highlight=False)
    console.print(f"reference: {report.reference} training prompts; embeddings: {report.embedder}", markup=False)
    for w in report.windows:
        drift = f"MMD p {w.drift['p_value']:.4f}" if w.drift else "no drift test"
        shifts = w.shifts or {}
        console.print(f"{w.name}: {w.status.upper()}  {w.count} requests, {drift}, unseen words "
                      f"{shifts.get('oov_share', 0):.1%} (training {shifts.get('train_oov_share', 0):.1%}), "
                      f"median length {shifts.get('length_median')} words (training {shifts.get('train_length_median')})",
                      markup=False, soft_wrap=True)
        for reason in w.reasons:
            console.print(f"  - {reason}", markup=False, soft_wrap=True)
        if w.status == "drift":
            for ex in w.least_like[:3]:
                console.print(f"  least like training: {ex['where']} (similarity {ex['similarity']:.2f}): "
                              f"{ex['prompt'][:100]}", markup=False, soft_wrap=True)


@data_app.command("from-traffic")
@user_errors
def data_from_traffic_command(
    log: str = typer.Argument(..., help="the request log of `honed serve` (RUN/requests.jsonl)"),
    out: str = typer.Option(..., "--out", help="drafts file to write (chat JSONL)"),
    run: str = typer.Option(None, "--run", help="dedupe against this run's training data (default: the run the log names)"),
    since: str = typer.Option(None, "--since", help="only requests at or after this ISO date/time"),
    uncertain: int = typer.Option(None, "--uncertain", min=1, help="keep the N requests the model was least sure of"),
    draft_with: str = typer.Option(None, "--draft-with", help="endpoint:URL[#model]: a teacher model drafts the answers"),
    force: bool = typer.Option(False, "--force", help="replace --out if it exists"),
) -> None:
    """Turn logged requests into draft training examples for review (deduplicated against training data).

    Example: honed data from-traffic runs/demo/requests.jsonl --out new.jsonl --uncertain 50
    """
    from honed.monitor.from_traffic import FromTrafficSettings, traffic_to_data

    result = traffic_to_data(FromTrafficSettings(log=log, out=out, run=run, since=since, uncertain=uncertain,
                                                 draft_with=draft_with, force=force))
    Console(highlight=False).print(
        f"{result.read} requests read; {result.duplicates} repeated a prompt, {result.in_training} already in the "
        f"run's training or holdout data; {result.written} drafts ({result.drafted_by}) written to {result.out}\n"
        f"next: honed data review {result.out}", markup=False, soft_wrap=True)


@data_app.command("review")
@user_errors
def data_review_command(
    drafts: str = typer.Argument(..., help="drafts file written by `honed data from-traffic`"),
    out: str = typer.Option(None, "--out", help="reviewed examples (default: <drafts>.reviewed.jsonl)"),
) -> None:
    """Accept, edit ($EDITOR) or reject each draft; every decision is saved at once.

    Example: honed data review new.jsonl --out reviewed.jsonl
    """
    from honed.monitor.review import review_file, terminal_decider

    console = Console(highlight=False)
    result = review_file(drafts, out=out, decide=terminal_decider(console))
    console.print(f"{result.accepted} accepted, {result.edited} edited, {result.rejected} rejected, "
                  f"{result.left} left to review; training data in {result.out}", markup=False, soft_wrap=True)
# ---- curve: honed curve --------------------------------------------------------------------------------


@app.command("curve")
@user_errors
def curve_command(
    data: str = typer.Option(..., "--data", help="training data; nested subsets of it are trained"),
    out: str = typer.Option(..., "--out", help="folder for the runs, the subsets and curve.json"),
    fractions: str = typer.Option("0.25,0.5,1.0", "--fractions", help="increasing shares of the data, e.g. 0.25,0.5,1"),
    holdout: str = typer.Option(None, "--holdout", help="holdout data; without it one holdout is split off --data"),
    model: str = typer.Option(None, "--model", help="built-in alias (smollm2-135m), HF folder, .gguf file or hub id"),
    config_file: str = typer.Option(None, "--config", help="YAML file with any config field"),
    overrides: list[str] = typer.Option(None, "--set", help="override one field, e.g. --set lr=1e-3 (repeatable)"),
    baselines: str = typer.Option("none", "--baselines", help="baselines to evaluate at every point (default none)"),
    limit: int = typer.Option(None, "--limit", min=1, help="evaluate only the first N holdout examples"),
    resume: bool = typer.Option(False, "--resume", help="continue --out, reusing finished points"),
    as_json: bool = typer.Option(False, "--json", help="print curve.json"),
) -> None:
    """How much data do I need? Train on nested subsets and evaluate each on the same holdout.

    Example: honed curve --data examples/support_triage.jsonl --model smollm2-135m --out runs/curve --fractions 0.25,0.5,1
    """
    import json

    from honed.config import load_config
    from honed.curve import learning_curve, parse_fractions

    shares = parse_fractions(fractions)
    config = load_config(config_file, overrides=overrides or [], flags={"data.train": data, "data.holdout": holdout,
                                                                         "model": model})
    console = err_console if as_json else Console(highlight=False)

    def on_point(point: Any) -> None:
        m = point.metric
        console.print(f"{point.fraction:.0%} of the data ({point.examples} examples): {m.value:.3f} "
                      f"[{m.low:.3f}, {m.high:.3f}]", markup=False)

    curve = learning_curve(config, out=out, fractions=shares, baselines=baselines, limit=limit, resume=resume,
                           console=console, on_point=on_point)
    if as_json:
        print(json.dumps(curve.model_dump(mode="json"), indent=2))
        return
    from rich.table import Table

    table = Table(title=f"learning curve: {curve.main_metric} on {curve.points[0].run.rsplit('/', 2)[0]}/data/holdout.jsonl, value [95% CI]")
    for column in ("share", "examples", curve.main_metric, "holdout loss", "run"):
        table.add_column(column)
    for p in curve.points:
        loss = f"{p.holdout_loss:.4f}" if p.holdout_loss is not None else "-"
        table.add_row(f"{p.fraction:.0%}", str(p.examples), f"{p.metric.value:.3f} [{p.metric.low:.3f}, {p.metric.high:.3f}]",
                      loss, p.run)
    Console(highlight=False).print(table)
    Console(highlight=False).print(curve.sentence(), markup=False, soft_wrap=True)
# ---- serve: honed serve, honed chat, honed --version ------------------------------------------------------


def _version_callback(value: bool) -> None:
    if value:
        from honed import __version__

        print(f"honed {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                 help="print honed's version and exit"),
) -> None:
    """honed: check your data, fine-tune open models correctly, and prove the tuned model is better."""


def _serve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


@app.command("serve")
@user_errors
def serve_command(
    targets: list[str] = typer.Argument(..., help="run directories or exported model folders ([NAME=]PATH)"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (loopback only unless you say so)"),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="TCP port"),
    api_key: str = typer.Option(None, "--api-key", envvar="HONED_API_KEY",
                                help="require `Authorization: Bearer KEY` on /v1/* (or set HONED_API_KEY)"),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best, final, last or checkpoints/step-N of each run"),
    engine: str = typer.Option("torch", "--engine", help="torch (built in: CPU or one GPU) or vllm (GPU, vLLM installed)"),
    no_log: bool = typer.Option(False, "--no-log", help="write no request log"),
    request_log: str = typer.Option(None, "--request-log", help="one log file for every model (default: RUN/requests.jsonl)"),
    max_tokens_limit: int = typer.Option(1024, "--max-tokens-limit", min=1, help="largest max_tokens a request may ask for (also the default)"),
    max_prompt_tokens: int = typer.Option(4096, "--max-prompt-tokens", min=1, help="longest prompt accepted, in tokens"),
    max_body_bytes: int = typer.Option(1 << 20, "--max-body-bytes", min=1024, help="largest request body (413 above)"),
    max_batch: int = typer.Option(32, "--max-batch", min=1, help="requests decoded together"),
    max_queue: int = typer.Option(256, "--max-queue", min=0, help="requests allowed to wait; more get 429"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (torch engine)"),
    threads: int = typer.Option(None, "--threads", min=1, help="CPU threads for torch"),
    drain_timeout: float = typer.Option(30.0, "--drain-timeout", min=0, help="seconds SIGTERM waits for in-flight requests"),
    vllm_args: list[str] = typer.Option(None, "--vllm-arg", help="extra argument for vLLM, e.g. --vllm-arg=--tensor-parallel-size=2"),
) -> None:
    """Serve runs and exported models over an OpenAI-compatible HTTP API (one base model, one adapter per run).

    Clients pick a run by its name in the request's `model` field. Every request is appended to
    RUN/requests.jsonl (docs/request-log.md) unless --no-log. SIGTERM or Ctrl-C drains in-flight requests.

    Example: honed serve runs/support runs/billing --port 8000 --api-key secret

    Example: honed serve runs/support --engine vllm --vllm-arg=--tensor-parallel-size=2
    """
    from honed.errors import ConfigError
    from honed.serve.app import Settings
    from honed.serve.requestlog import RequestLog
    from honed.serve.schemas import Limits

    if engine not in ("torch", "vllm"):
        raise ConfigError(f"--engine {engine}: use torch or vllm")
    if no_log and request_log:
        raise ConfigError("--no-log and --request-log contradict each other; pass one")
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        err_console.print(f"warning: listening on {host} without --api-key: anyone who reaches this port can use the models")
    settings = Settings(
        api_key=api_key, limits=Limits(max_body_bytes=max_body_bytes, max_tokens=max_tokens_limit,
                                       max_prompt_tokens=max_prompt_tokens),
        request_log=RequestLog(single=request_log, enabled=not no_log),
    )
    if engine == "vllm":
        from honed.serve.vllm import serve_vllm

        serve_vllm(targets, host=host, port=port, settings=settings, checkpoint=checkpoint,
                   extra_args=vllm_args or [], max_queue=max_queue, drain_s=drain_timeout)
        return
    import torch

    from honed.serve.loading import load_targets
    from honed.serve.server import serve

    if threads:
        torch.set_num_threads(threads)
    with err_console.status("loading models...", spinner="dots"):
        served = load_targets(targets, checkpoint=checkpoint, device=_serve_device(device))
    for model in served:
        where = model.run or model.checkpoint
        err_console.print(f"serving {model.name} ({where}, {model.checkpoint})", markup=False, soft_wrap=True)
    err_console.print(f"OpenAI-compatible API on http://{host}:{port}/v1 (Ctrl-C or SIGTERM to stop)", markup=False)
    serve(served, host=host, port=port, settings=settings, max_batch=max_batch, max_queue=max_queue,
          drain_s=drain_timeout)


@app.command("chat")
@user_errors
def chat_command(
    target: str = typer.Argument(..., help="a run directory or an exported model folder"),
    system: str = typer.Option(None, "--system", help="system prompt for the conversation"),
    prompt: str = typer.Option(None, "--prompt", help="ask once, print the answer and exit (for scripts)"),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best, final, last or checkpoints/step-N"),
    max_tokens: int = typer.Option(512, "--max-tokens", min=1, help="longest answer, in tokens"),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0, max=2.0, help="0 = greedy (as eval decodes)"),
    seed: int = typer.Option(None, "--seed", help="seed for sampling (temperature > 0)"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda"),
) -> None:
    """Chat with a tuned model in the terminal (history, /reset, /quit, streamed tokens), or ask once.

    Example: honed chat runs/support --system "Triage the ticket as JSON."

    Example: honed chat runs/support --prompt "App crashes on login"
    """
    from honed.chat import ChatSession, repl
    from honed.serve.engine import Engine
    from honed.serve.loading import load_targets

    with err_console.status("loading model...", spinner="dots"):
        served = load_targets([target], checkpoint=checkpoint, device=_serve_device(device))[0]
    engine = Engine(max_batch=1)
    engine.start()
    try:
        session = ChatSession(served, engine, system=system, max_tokens=max_tokens, temperature=temperature, seed=seed)
        if prompt is not None:
            session.reply(prompt, on_delta=lambda text: (sys.stdout.write(text), sys.stdout.flush()))
            sys.stdout.write("\n")
            return
        repl(session, out=sys.stdout)
    finally:
        engine.stop()
# ---- report: honed report (and the report/tracker refresh after train and eval) ----------------------------


def _refresh_report(run_dir: Any, *, console: Console) -> Any:
    """Re-render RUN/report.html and print its path; a report that cannot be made is a note, not a failure."""
    from honed.report.render import refresh_report

    with err_console.status("writing the report (data check, plots)...", spinner="dots"):
        path, problem = refresh_report(run_dir)
    if path is None:
        console.print(f"note: no report written: {problem}", soft_wrap=True, markup=False)
    else:
        console.print(f"report: {path}", soft_wrap=True, markup=False)
    return path


def _tracking(run_dir: Any) -> list[str]:
    """The trackers a run's config.yaml names (`--set tracking=mlflow,...`); each must be installed."""
    from honed.report.trackers import require_installed
    from honed.rundir import RunDir

    raw = RunDir(run_dir).read_config().get("tracking") or []
    names = [n.strip() for n in raw.split(",") if n.strip()] if isinstance(raw, str) else [str(n) for n in raw]
    require_installed(names)
    return names


def _export_to_trackers(run_dir: Any, *, stage: str, report: Any, console: Console) -> None:
    """Replay the run into the trackers its config names, if any."""
    from honed.report.trackers import export_run

    names = _tracking(run_dir)
    if names:
        with err_console.status(f"exporting to {', '.join(names)}...", spinner="dots"):
            places = export_run(run_dir, names, stage=stage, report=report)  # type: ignore[arg-type]
        console.print("tracked: " + "; ".join(places), soft_wrap=True, markup=False)


@app.command("report")
@user_errors
def report_command(
    run_dirs: list[str] = typer.Argument(..., help="a run directory, or several to compare side by side"),
    out: str = typer.Option(
        None, "--out", help="HTML file to write (default: RUN/report.html; ./report.html for several runs)"
    ),
    open_report: bool = typer.Option(False, "--open", help="open the report in the default web browser"),
    data_check: bool = typer.Option(
        True, "--data-check/--no-data-check", help="run `honed data check` on the runs' files for the Data section"
    ),
    track: str = typer.Option(
        None, "--track", help="also export the runs to trackers: mlflow, tensorboard, wandb (comma-separated)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print {report, bytes, runs} as JSON"),
) -> None:
    """Write one self-contained HTML report: verdict, curves, metrics with intervals, examples, data findings.

    No network needed to view it: plots are inline SVG, styles and scripts inline.

    Example: honed report runs/demo --open

    Example: honed report runs/lr-2e-4 runs/lr-1e-3 --out compare.html
    """
    import json
    import webbrowser

    from honed.errors import ConfigError
    from honed.report.render import render_report
    from honed.report.trackers import export_run, require_installed

    names = [n.strip() for n in track.split(",") if n.strip()] if track is not None else []
    if track is not None and not names:
        raise ConfigError("--track: name at least one tracker: mlflow, tensorboard or wandb")
    require_installed(names, option="--track")
    with err_console.status("writing the report (data check, plots)...", spinner="dots"):
        path = render_report(run_dirs, out=out, data_check=data_check)
    places = [place for run_dir in run_dirs for place in export_run(run_dir, names, report=path)]
    if as_json:
        print(json.dumps({"report": str(path), "bytes": path.stat().st_size, "runs": run_dirs, "tracked": places}))
    else:
        console = Console(highlight=False, markup=False)
        console.print(f"report: {path} ({path.stat().st_size / 1e6:.2f} MB)", soft_wrap=True)
        for place in places:
            console.print(f"tracked: {place}", soft_wrap=True)
    if open_report and not webbrowser.open(path.resolve().as_uri()):
        err_console.print(f"note: no web browser found here; open {path} yourself", soft_wrap=True, markup=False)
# ---- export: honed export -------------------------------------------------------------------------------


@app.command("export")
@user_errors
def export_command(
    run_dir: str = typer.Argument(..., help="a finished run directory written by `honed train`"),
    to: str = typer.Option(..., "--to", help="merged (HF folder), adapter (portable LoRA) or gguf (one file)"),
    quant: str = typer.Option(None, "--quant", help="gguf only: f16, q8_0 (default) or q4_k_m"),
    out: str = typer.Option(None, "--out", help="folder to create (default RUN/exports/<target>-<checkpoint>[-<quant>])"),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best, final, last, step-N or checkpoints/step-N"),
    ollama: bool = typer.Option(False, "--ollama", help="gguf only: also write an Ollama Modelfile"),
    parity: int = typer.Option(64, "--parity", min=1, help="holdout examples the parity check answers"),
    no_parity: bool = typer.Option(False, "--no-parity", help="skip the parity check"),
    dtype: str = typer.Option(None, "--dtype", help="merged only: float32, bfloat16 or float16 (default: the base's)"),
    base_name: str = typer.Option(None, "--base-name", help="adapter only: base_model_name_or_path to record"),
    force: bool = typer.Option(False, "--force", help="replace --out if it exists"),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="prompts decoded together in the parity check"),
    as_json: bool = typer.Option(False, "--json", help="print the export record as JSON"),
) -> None:
    """Export a run's tuned model (merged weights, a portable adapter, or GGUF) with a model card,
    then check parity: the artifact answers the holdout like the tuned model, or a warning says it does not.

    Example: honed export runs/demo --to gguf --quant q8_0 --ollama

    Example: honed export runs/demo --to merged --out shipped/support-v1
    """
    import json

    from honed.export.run_export import ExportSettings, export_run

    settings = ExportSettings(
        to=to, quant=quant, out=out, checkpoint=checkpoint, ollama=ollama, parity=0 if no_parity else parity,
        dtype=dtype, base_name=base_name, force=force, batch_size=batch_size,
    )
    with err_console.status("exporting...", spinner="dots") as status:
        result = export_run(run_dir, settings, on_step=lambda message: status.update(message + "..."))
    if as_json:
        print(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
    else:
        console = Console(highlight=False, markup=False)
        console.print(f"exported {result.target} ({result.checkpoint}) to {result.folder}", soft_wrap=True)
        console.print("files: " + ", ".join(result.files), soft_wrap=True)
        for line in result.parity.lines() if result.parity else ["parity not checked (--no-parity)"]:
            console.print(line, soft_wrap=True)
    if as_json and result.parity is not None and result.parity.significantly_worse:
        err_console.print(f"[bold red]warning:[/] {escape(result.parity.lines()[-1])}", soft_wrap=True)
