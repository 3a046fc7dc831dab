"""`honed report`, and the report/tracker refresh after `train` and `eval`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.console import Console

from honed.cli.app import app, err_console
from honed.cli.options import command
from honed.options import argument, option


# ---- report: honed report (and the report/tracker refresh after train and eval) ----------------------------


def refresh_report(run_dir: Any, *, console: Console) -> Any:
    """Re-render RUN/report.html and print its path; a report that cannot be made is a note, not a failure."""
    from honed.report.render import refresh_report

    with err_console.status("writing the report (data check, plots)...", spinner="dots"):
        path, problem = refresh_report(run_dir)
    if path is None:
        console.print(f"note: no report written: {problem}", soft_wrap=True, markup=False)
    else:
        console.print(f"report: {path}", soft_wrap=True, markup=False)
    return path


def tracking_of(run_dir: Any) -> list[str]:
    """The trackers a run's config.yaml names (`--set tracking=mlflow,...`); each must be installed."""
    from honed.report.trackers import require_installed
    from honed.runs.rundir import RunDir

    names = RunDir(run_dir).config().tracking  # a list: the config splits "mlflow,wandb" when it validates
    require_installed(names)
    return names


def export_to_trackers(run_dir: Any, *, stage: str, report: Any, console: Console) -> None:
    """Replay the run into the trackers its config names, if any."""
    from honed.report.trackers import export_run

    names = tracking_of(run_dir)
    if names:
        with err_console.status(f"exporting to {', '.join(names)}...", spinner="dots"):
            places = export_run(run_dir, names, stage=stage, report=report)  # type: ignore[arg-type]
        console.print("tracked: " + "; ".join(places), soft_wrap=True, markup=False)


@dataclass(kw_only=True)
class ReportOptions:
    """`honed report`."""

    run_dirs: list[str] = argument("a run directory, or several to compare side by side")
    out: str | None = option(None, "HTML file to write (default: RUN/report.html; ./report.html for several runs)")
    open_report: bool = option(False, "open the report in the default web browser", flag="--open")
    data_check: bool = option(True, "run `honed data check` on the runs' files for the Data section",
                              flag="--data-check/--no-data-check")
    track: str | None = option(None, "also export the runs to trackers: mlflow, tensorboard, wandb (comma-separated)")
    as_json: bool = option(False, "print {report, bytes, runs} as JSON", flag="--json")


@command(app, "report", ReportOptions)
def report_command(options: ReportOptions) -> None:
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

    o = options
    track, run_dirs = o.track, o.run_dirs
    names = [n.strip() for n in track.split(",") if n.strip()] if track is not None else []
    if track is not None and not names:
        raise ConfigError("--track: name at least one tracker: mlflow, tensorboard or wandb")
    require_installed(names, option="--track")
    with err_console.status("writing the report (data check, plots)...", spinner="dots"):
        path = render_report(run_dirs, out=o.out, data_check=o.data_check)
    places = [place for run_dir in run_dirs for place in export_run(run_dir, names, report=path)]
    if o.as_json:
        print(json.dumps({"report": str(path), "bytes": path.stat().st_size, "runs": run_dirs, "tracked": places}))
    else:
        console = Console(highlight=False, markup=False)
        console.print(f"report: {path} ({path.stat().st_size / 1e6:.2f} MB)", soft_wrap=True)
        for place in places:
            console.print(f"tracked: {place}", soft_wrap=True)
    if o.open_report and not webbrowser.open(path.resolve().as_uri()):
        err_console.print(f"note: no web browser found here; open {path} yourself", soft_wrap=True, markup=False)
