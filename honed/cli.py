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
        except KeyboardInterrupt:
            err_console.print("interrupted")
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


# Commands are registered below, one block each, grouped by pipeline stage.


# ---- data: honed data check, split, show ---------------------------------------------------------------


def _column_mapping(prompt_col: str | None, response_col: str | None, system: str | None) -> Any:
    """A ColumnMapping from --prompt-col/--response-col/--system, or None when no column is named."""
    from honed.data.read import ColumnMapping
    from honed.errors import ConfigError

    if prompt_col is None and response_col is None:
        if system is not None:
            raise ConfigError("--system applies to column data; pass it with --prompt-col and --response-col")
        return None
    if prompt_col is None or response_col is None:
        raise ConfigError("--prompt-col and --response-col go together; pass both column names")
    return ColumnMapping(prompt_col, response_col, system=system)


@data_app.command("check")
@user_errors
def data_check_command(
    file: str = typer.Argument(..., help="data file: JSONL/JSON (chat, prompt-completion, alpaca), CSV, Parquet"),
    holdout: str = typer.Option(None, "--holdout", help="holdout file to check for leakage from the training data"),
    model: str = typer.Option("smollm2-135m", "--model", help="model whose tokenizer and chat template count tokens"),
    max_length: int = typer.Option(2048, "--max-length", min=1, help="training sequence length: truncation counts"),
    near_threshold: float = typer.Option(
        0.85, "--near-threshold", help="MinHash Jaccard similarity at which two examples count as near duplicates"
    ),
    fmt: str = typer.Option("auto", "--format", help="auto, chat, prompt-completion, alpaca, csv, parquet"),
    prompt_col: str = typer.Option(None, "--prompt-col", help="column holding the prompt (CSV/Parquet/JSON)"),
    response_col: str = typer.Option(None, "--response-col", help="column holding the response"),
    system: str = typer.Option(None, "--system", help="system prompt added to column data"),
    skip_invalid: bool = typer.Option(
        False, "--skip-invalid", help="leave invalid rows out (written to FILE.invalid.jsonl) instead of failing"
    ),
    strict: bool = typer.Option(False, "--strict", help="exit 1 when the report has any warning"),
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
            columns=_column_mapping(prompt_col, response_col, system), skip_invalid=skip_invalid, progress=progress,
        )
    if as_json:
        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        print_report(Console(highlight=False), report)
    raise typer.Exit(exit_status(report, strict=strict))


@data_app.command("split")
@user_errors
def data_split_command(
    file: str = typer.Argument(..., help="data file: JSONL/JSON (chat, prompt-completion, alpaca), CSV, Parquet"),
    out: str = typer.Option(..., "--out", help="folder to create with train.jsonl, holdout.jsonl, manifest.json"),
    holdout_fraction: float = typer.Option(0.1, "--holdout-fraction", help="share of examples held out, in (0, 1)"),
    seed: int = typer.Option(0, "--seed", help="same file and seed give byte-identical outputs"),
    near_threshold: float = typer.Option(
        0.85, "--near-threshold", help="MinHash Jaccard similarity at which two examples count as near duplicates"
    ),
    fmt: str = typer.Option("auto", "--format", help="auto, chat, prompt-completion, alpaca, csv, parquet"),
    prompt_col: str = typer.Option(None, "--prompt-col", help="column holding the prompt (CSV/Parquet/JSON)"),
    response_col: str = typer.Option(None, "--response-col", help="column holding the response"),
    system: str = typer.Option(None, "--system", help="system prompt added to column data"),
    force: bool = typer.Option(False, "--force", help="replace --out if it exists and is not empty"),
    skip_invalid: bool = typer.Option(
        False, "--skip-invalid", help="leave invalid rows out (written to FILE.invalid.jsonl) instead of failing"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the manifest as JSON"),
) -> None:
    """Split a data file into train and holdout, deterministically and without leaks.

    Near and exact duplicates stay on one side; classification-like data is stratified by label.

    Example: honed data split examples/support_triage.jsonl --holdout-fraction 0.2 --seed 0 --out data/split
    """
    import json

    from honed.data.split import split_file

    columns = _column_mapping(prompt_col, response_col, system)
    with err_console.status("splitting (clustering near duplicates)...", spinner="dots"):
        manifest = split_file(
            file, out=out, holdout_fraction=holdout_fraction, seed=seed, near_threshold=near_threshold,
            fmt=fmt, columns=columns, force=force, skip_invalid=skip_invalid,
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
    if manifest["skipped_invalid"]:
        from honed.data.read import invalid_path_for

        console.print(f"skipped {manifest['skipped_invalid']} invalid rows (written to {invalid_path_for(file)})",
                      soft_wrap=True, markup=False)


@data_app.command("show")
@user_errors
def data_show_command(
    file: str = typer.Argument(..., help="data file to preview"),
    model: str = typer.Option("smollm2-135m", "--model", help="model whose tokenizer and chat template to use"),
    n: int = typer.Option(3, "-n", "--num", min=1, help="how many examples to show (from the top)"),
    max_length: int = typer.Option(None, "--max-length", min=1, help="truncate as training would"),
    fmt: str = typer.Option("auto", "--format", help="auto, chat, prompt-completion, alpaca, csv, parquet"),
    prompt_col: str = typer.Option(None, "--prompt-col", help="column holding the prompt (CSV/Parquet/JSON)"),
    response_col: str = typer.Option(None, "--response-col", help="column holding the response"),
    system: str = typer.Option(None, "--system", help="system prompt added to column data"),
    skip_invalid: bool = typer.Option(
        False, "--skip-invalid", help="leave invalid rows out (written to FILE.invalid.jsonl) instead of failing"
    ),
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

    columns = _column_mapping(prompt_col, response_col, system)
    conversations = load_or_fail(file, fmt=fmt, columns=columns, skip_invalid=skip_invalid)
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
) -> None:
    """Fine-tune a model on your examples; writes a self-describing run directory.

    With --resume, the run's saved config.yaml is used and the other options are ignored.
    With --nproc N, the same command runs as N torchrun processes that split every step's examples
    (the loss curve matches one process); add --set sharding=fsdp to shard full fine-tuning (FSDP2).

    Example: honed train --data examples/support_triage.jsonl --model smollm2-135m --out runs/first --epochs 2

    Example: honed train --data train.jsonl --out runs/two --nproc 2
    """
    import json

    from honed.config import load_config
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
    config = load_config(config_file, overrides=overrides or [], flags=flags)
    if nproc > 1 and not distributed.launched_by_torchrun():
        # The config was checked above, once; the same command now runs as `nproc` torchrun workers.
        raise typer.Exit(distributed.relaunch(sys.argv[1:], nproc=nproc))
    with distributed.process_group(device_setting=config.device):
        result = train(config, out=out, resume=resume, console=console)
    if not distributed.is_main_process():
        return
    summary = {
        "run_dir": str(result.run_dir),
        "status": result.status,
        "steps": result.steps,
        "best_checkpoint": result.best_checkpoint,
        "best": result.best,
        "first_eval": result.first_eval,
        "last_eval": result.last_eval,
    }
    if as_json:
        print(json.dumps(summary, indent=2))
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
    table = Table("name", "status", "model", "method", "best holdout_loss", "started", "run_dir")
    for run in runs:
        loss = run["best"].get("holdout_loss")
        table.add_row(
            run["name"], run["status"], str(run["model"]), str(run["method"]),
            f"{loss:.4f}" if isinstance(loss, (int, float)) else "-", str(run["started_at"] or "-"), run["run_dir"],
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
    for key in ("name", "status", "model", "method", "run_dir", "started_at", "finished_at"):
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
    baselines: str = typer.Option("base,few-shot:5", "--baselines", help="base, few-shot:K, comma-separated; none"),
    metrics: str = typer.Option(None, "--metrics", help="comma-separated metrics or module:function (default: picked from the data; the first is the main one)"),
    schema: str = typer.Option(None, "--schema", help="JSON schema file for schema_valid (default: inferred from the targets)"),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best, final, last or checkpoints/step-N"),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="prompts decoded together"),
    max_new_tokens: int = typer.Option(None, "--max-new-tokens", min=1, help="default: from the longest target"),
    seed: int = typer.Option(0, "--seed", help="seed of the few-shot choice and the bootstrap"),
    threads: int = typer.Option(None, "--threads", min=1, help="CPU threads for torch (default: torch's choice)"),
    as_json: bool = typer.Option(False, "--json", help="print summary.json instead of tables"),
) -> None:
    """Evaluate the tuned model against the base model and few-shot prompting on the same holdout.

    Example: honed eval runs/demo --limit 200 --baselines base,few-shot:5
    """
    import json

    from rich.progress import Progress

    from honed.evaluate.run_eval import EvalSettings, evaluate_run
    from honed.evaluate.tables import differences_table, eval_table

    settings = EvalSettings(
        data=data, limit=limit, baselines=baselines, schema=schema, checkpoint=checkpoint, batch_size=batch_size,
        metrics=[m.strip() for m in metrics.split(",") if m.strip()] if metrics else None,
        max_new_tokens=max_new_tokens, seed=seed, threads=threads,
    )
    with Progress(console=err_console, transient=True, disable=as_json) as progress:
        tasks: dict[str, Any] = {}

        def on_progress(system: str, done: int, total: int) -> None:
            if system not in tasks:
                tasks[system] = progress.add_task(f"generating: {system}", total=total)
            progress.update(tasks[system], completed=done)

        summary = evaluate_run(run_dir, settings, on_progress=on_progress)
    if as_json:
        print(json.dumps(summary.to_json(), indent=2, ensure_ascii=False))
        return
    console = Console(highlight=False)
    console.print(eval_table(summary))
    if summary.differences:
        console.print(differences_table(summary))
    console.print(summary.verdict, soft_wrap=True)
    console.print(f"per-example outputs: {run_dir}/eval/<system>.jsonl", soft_wrap=True)


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
