"""The honed command line: parse, call one function, print. No logic lives here.

Every HonedError becomes one clear message on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable, TypeVar

import typer
from rich.console import Console

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
            err_console.print(f"[bold red]error:[/] {exc.message}", soft_wrap=True)
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
        max_new_tokens=max_new_tokens, seed=seed,
    )
    with Progress(console=err_console, transient=True, disable=as_json) as progress:
        tasks: dict[str, Any] = {}

        def on_progress(system: str, done: int, total: int) -> None:
            if system not in tasks:
                tasks[system] = progress.add_task(f"generating: {system}", total=total)
            progress.update(tasks[system], completed=done)

        summary = evaluate_run(run_dir, settings, on_progress=on_progress)
    if as_json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
        return
    console = Console(highlight=False)
    console.print(eval_table(summary))
    if summary["differences"]:
        console.print(differences_table(summary))
    console.print(summary["verdict"], soft_wrap=True)
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
