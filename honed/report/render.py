"""`honed report`: render one self-contained HTML page for one run, or a comparison of several.

The page holds everything inline (CSS, a few lines of JavaScript for the example filters, plots as SVG):
no CDN, no network, so it opens offline and travels as an e-mail attachment. Templates are Jinja2
(honed/report/templates/*.html.j2, autoescaped); plots come from honed.report.plots.

Usage: `render_report(["runs/demo"])` writes and returns `runs/demo/report.html`; `render_report(["runs/a",
"runs/b"], out="compare.html")` a comparison (needs evaluated runs: tests/unit/test_report_render.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from markupsafe import Markup

from honed.atomic import write_text_atomic
from honed.curve import noise_note
from honed.errors import ConfigError, HonedError
from honed.report import analysis, plots
from honed.report.collect import RunView, read_run_view
from honed.runs.rundir import RunDir

MAX_EXAMPLES = 2000  # examples listed per run: keeps the page a few MB at most
LABEL_METRICS = {"label_accuracy", "macro_f1"}
JSON_METRICS = {"json_valid", "schema_valid"}


@dataclass
class RunPage:
    """One run's sections, ready for the template."""

    view: RunView
    plots: dict[str, Markup] = field(default_factory=dict)
    labels: dict[str, list[analysis.LabelScore]] = field(default_factory=dict)  # system -> per-label scores
    fields: dict[str, list[analysis.FieldScore]] = field(default_factory=dict)  # system -> per-field scores
    examples: list[analysis.ExampleRow] = field(default_factory=list)

    @property
    def label_names(self) -> list[str]:
        first = next(iter(self.labels.values()), [])
        return [score.label for score in first]

    @property
    def field_names(self) -> list[str]:
        first = next(iter(self.fields.values()), [])
        return [score.field for score in first]


def is_label_task(metrics: Sequence[str]) -> bool:
    return bool(LABEL_METRICS & set(metrics))


def is_json_task(metrics: Sequence[str]) -> bool:
    return bool(JSON_METRICS & set(metrics)) or any(m.startswith("field_") for m in metrics)


def build_page(view: RunView, *, example_limit: int = MAX_EXAMPLES) -> RunPage:
    """Plots, per-label / per-field scores and the examples table of one run."""
    page = RunPage(view)
    record = view.record
    best_step = record.best.get("step") if isinstance(record.best.get("step"), int) else None
    found = {
        "loss": plots.loss_plot(view.metrics, best_step=best_step, stopped_early=bool(record.stopped_early)),
        "lr": plots.step_plot(view.metrics, key="lr", label="learning rate", name="lr"),
        "tokens_per_s": plots.step_plot(view.metrics, key="tokens_per_s", label="tokens / s", name="tokens_per_s"),
    }
    if view.summary is not None:
        summary = view.summary
        found["metrics"] = plots.interval_plot({name: s.metrics for name, s in summary.systems.items()},
                                               metrics=summary.metrics, name="metrics",
                                               title="every metric of every system with its 95% interval")
        _task_analysis(page, summary.metrics)
        page.examples = analysis.example_rows(view.rows, main_metric=summary.main_metric, limit=example_limit)
    if view.curve is not None:
        found["curve"] = plots.curve_plot(view.curve, this_run=view.run.path)
    page.plots = {name: plot for name, plot in found.items() if plot is not None} | page.plots
    return page


def _task_analysis(page: RunPage, metrics: Sequence[str]) -> None:
    """Per-label F1 and confusions (label tasks), per-field precision/recall (JSON tasks), every system."""
    rows = page.view.rows
    if not rows:
        return
    if is_label_task(metrics):
        for system, system_rows in rows.items():
            page.labels[system] = analysis.per_label([r["reference"] for r in system_rows],
                                                     [r["output"] for r in system_rows])
        first_rows = next(iter(rows.values()))
        matrix = analysis.confusion([r["reference"] for r in first_rows], [r["output"] for r in first_rows])
        confusion_svg = plots.confusion_plot(matrix.rows, matrix.columns, matrix.counts)
        if confusion_svg is not None:
            page.plots["confusion"] = confusion_svg
    if is_json_task(metrics):
        for system, system_rows in rows.items():
            page.fields[system] = analysis.per_field([r["reference"] for r in system_rows],
                                                     [r["output"] for r in system_rows])
        first = next(iter(page.fields.values()))
        fields_svg = plots.bars_plot([f.field for f in first],
                                     {"precision": [f.precision for f in first], "recall": [f.recall for f in first]},
                                     name="fields", title="per-field precision and recall",
                                     xlabel=f"{next(iter(page.fields))}: share of fields right")
        if fields_svg is not None:
            page.plots["fields"] = fields_svg


def comparison(pages: Sequence[RunPage]) -> dict[str, Any]:
    """The `honed compare` numbers when every run is evaluated, and the overlaid curves either way."""
    from honed.evaluate.compare import compare_runs, config_differences

    names = [page.view.name for page in pages]
    if len(set(names)) < len(names):
        names = [f"{page.view.name} ({page.view.run.path})" for page in pages]
    out: dict[str, Any] = {"names": names, "compare": None,
                           "config_differences": config_differences([p.view.config for p in pages])}
    if all(page.view.summary is not None for page in pages):
        compared = out["compare"] = compare_runs([page.view.run.path for page in pages], limit=50)
        out["names"] = compared["names"]
        # compare_runs gives metric -> run -> interval; the plot wants run -> metric -> interval
        tuned = {name: {m: by_run.get(name) for m, by_run in compared["metrics"].items()} for name in out["names"]}
        out["metrics_plot"] = plots.interval_plot(tuned, metrics=list(compared["metrics"]), name="compare-metrics",
                                                  title="the tuned model of every run, 95% intervals")
    curves = {name: page.view.metrics for name, page in zip(out["names"], pages)}
    out["holdout_plot"] = plots.overlay_plot(curves, key="holdout_loss", ylabel="holdout loss",
                                             name="compare-holdout")
    out["train_plot"] = plots.overlay_plot(curves, key="loss", ylabel="train loss", name="compare-train")
    return out


def default_out(run_dirs: Sequence[str | Path]) -> Path:
    """RUN/report.html for one run; ./report.html for a comparison."""
    return RunDir(run_dirs[0]).report_html if len(run_dirs) == 1 else Path("report.html")


def _check_out(out: Path) -> None:
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a folder; name the HTML file to write, e.g. --out {out / 'report.html'}")
    if out.parent.exists() and not out.parent.is_dir():
        raise ConfigError(f"--out {out}: {out.parent} is a file, not a folder; choose another --out")


def render_html(pages: Sequence[RunPage]) -> str:
    """The whole page as one string (templates/report.html.j2)."""
    import jinja2

    import honed

    env = jinja2.Environment(loader=jinja2.PackageLoader("honed.report", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = _num
    env.globals["noise_note"] = noise_note
    title = pages[0].view.name if len(pages) == 1 else " vs ".join(p.view.name for p in pages)
    return env.get_template("report.html.j2").render(
        pages=pages, compare=comparison(pages) if len(pages) > 1 else None, title=title,
        version=getattr(honed, "__version__", "?"), max_examples=MAX_EXAMPLES,
        generated=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def _num(value: Any, digits: int = 3) -> str:
    """A number for a table cell: fixed digits for floats, as is otherwise, '-' for nothing."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) >= 10 ** -digits or value == 0 else f"{value:.2e}"
    return str(value)


def render_report(run_dirs: Sequence[str | Path], *, out: str | Path | None = None, data_check: bool = True,
                  example_limit: int = MAX_EXAMPLES) -> Path:
    """Write the report of one run (or a comparison of several) and return its path.

    `data_check` runs `honed data check` on each run's files for the Data section (seconds for
    thousands of examples); without it the section says it was skipped.
    """
    if not run_dirs:
        raise ConfigError("report needs a run directory, e.g. honed report runs/demo")
    resolved = [Path(d).resolve() for d in run_dirs]
    if len(set(resolved)) < len(resolved):
        raise ConfigError("the same run directory is named twice; name each run once")
    target = Path(out) if out is not None else default_out(run_dirs)
    _check_out(target)
    pages = [build_page(read_run_view(d, data_check=data_check), example_limit=example_limit) for d in run_dirs]
    html = render_html(pages)
    try:
        write_text_atomic(target, html)
    except OSError as exc:
        raise ConfigError(f"--out {target}: cannot write the report ({exc.strerror}); choose another path") from exc
    return target


def refresh_report(run_dir: str | Path) -> tuple[Path | None, str | None]:
    """Re-render RUN/report.html after `honed train` or `honed eval`: (path, None), or (None, why not).

    A report that cannot be made never fails the command that trained or evaluated the run.
    """
    try:
        return render_report([run_dir]), None
    except HonedError as exc:
        return None, exc.message
