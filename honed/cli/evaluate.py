"""`honed eval` and `honed compare`."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console

from honed.cli.app import app, err_console, user_errors


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
    threads: int = typer.Option(None, "--threads", min=1, help="CPU threads for torch (default: the usable cores, see docs/train.md)"),
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

    A run trained by `honed curve` (OUT/f050, ...) also shows the learning curve below the table (and under
    `learning_curve` with --json).
    """
    import json

    from honed.cli.progress import PassProgress
    from honed.cli.report import export_to_trackers, refresh_report, tracking_of
    from honed.evaluate.run_eval import EvalSettings, evaluate_run
    from honed.evaluate.tables import curve_table, differences_table, eval_table

    tracking_of(run_dir)  # a tracker the run names but this machine lacks fails now, not after the evaluation
    settings = EvalSettings(
        data=data, limit=limit, baselines=baselines, schema=schema, checkpoint=checkpoint, batch_size=batch_size,
        metrics=[m.strip() for m in metrics.split(",") if m.strip()] if metrics else None,
        max_new_tokens=max_new_tokens, seed=seed, threads=threads, constrain=constrain,
    )
    with PassProgress(err_console, prefix="generating: ") as on_progress:
        summary = evaluate_run(run_dir, settings, on_progress=on_progress)
    console = err_console if as_json else Console(highlight=False)  # --json: stdout holds only the summary
    curve = _learning_curve(run_dir, console=console)
    if as_json:
        extra = {"learning_curve": curve.model_dump(mode="json")} if curve is not None else {}
        print(json.dumps(summary.to_json() | extra, indent=2, ensure_ascii=False))
    else:
        console.print(eval_table(summary))
        if summary.differences:
            console.print(differences_table(summary))
        console.print(summary.verdict, soft_wrap=True)
        if curve is not None:
            console.print(curve_table(curve, this_run=run_dir))
            console.print(curve.sentence(), markup=False, soft_wrap=True)
        console.print(f"per-example outputs: {run_dir}/eval/<system>.jsonl", soft_wrap=True)
    report = None if no_report else refresh_report(run_dir, console=console)
    export_to_trackers(run_dir, stage="eval", report=report, console=console)


def _learning_curve(run_dir: str, *, console: Console) -> Any:
    """The learning curve (`honed curve`) the run is part of, if any; a damaged curve.json is a note, since
    the evaluation itself is done and saved."""
    from honed.curve import curve_of_run
    from honed.errors import HonedError

    try:
        return curve_of_run(run_dir)
    except HonedError as exc:
        console.print(f"note: learning curve not shown: {exc.message}", soft_wrap=True, markup=False)
        return None


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
