"""`honed eval` and `honed compare`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.console import Console

from honed.cli.app import app, err_console
from honed.cli.options import command
from honed.evaluate.settings import EvalSettings
from honed.options import argument, option


# ---- evaluate: honed eval, honed compare ------------------------------------------------------------------


@dataclass(kw_only=True)
class EvalOptions(EvalSettings):
    """`honed eval`: the evaluation's settings, the run, and how to print."""

    run_dir: str = argument("a run directory written by `honed train`")
    as_json: bool = option(False, "print summary.json instead of tables", flag="--json")
    no_report: bool = option(False, "do not refresh RUN/report.html")


@command(app, "eval", EvalOptions)
def eval_command(options: EvalOptions) -> None:
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
    from honed.evaluate.run_eval import evaluate_run
    from honed.evaluate.tables import curve_table, differences_table, eval_table

    run_dir, as_json = options.run_dir, options.as_json
    tracking_of(run_dir)  # a tracker the run names but this machine lacks fails now, not after the evaluation
    with PassProgress(err_console, prefix="generating: ") as on_progress:
        summary = evaluate_run(run_dir, options, on_progress=on_progress)
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
    report = None if options.no_report else refresh_report(run_dir, console=console)
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


@dataclass(kw_only=True)
class CompareOptions:
    """`honed compare`."""

    run_dirs: list[str] = argument("two or more evaluated run directories")
    limit: int = option(10, "disagreeing examples to show", min=0)
    as_json: bool = option(False, "print the comparison as JSON", flag="--json")


@command(app, "compare", CompareOptions)
def compare_command(options: CompareOptions) -> None:
    """Compare runs side by side: data hashes, config differences, metrics with CIs, disagreeing examples.

    Example: honed compare runs/lr-2e-4 runs/lr-1e-4
    """
    import json

    from honed.evaluate.compare import compare_runs
    from honed.evaluate.tables import compare_tables

    report = compare_runs(options.run_dirs, limit=options.limit)
    if options.as_json:
        print(json.dumps(report, indent=2, ensure_ascii=False, default=str))
        return
    console = Console(highlight=False)
    for table in compare_tables(report):
        console.print(table)
