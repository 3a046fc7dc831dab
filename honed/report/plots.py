"""The report's plots: matplotlib figures rendered to inline SVG.

Why matplotlib and SVG (not Vega-Lite): the plots are drawn once, here, so the page needs no JavaScript
to show them: they survive mail clients and viewers that block scripts, print, and keep the file small
(tens of kB a plot, against ~800 kB of inlined Vega JavaScript). Text stays text (`svg.fonttype: none`),
so the SVG is searchable and scales on a phone.

Every plotted series carries an id `series-<name>` (matplotlib's gid), so a test, or a reader of the
HTML, can count the series a plot holds. Element ids are prefixed per plot to stay unique in the page.

>>> plot = loss_plot([{"step": 0, "holdout_loss": 2.0}, {"step": 1, "loss": 1.5, "holdout_loss": 1.2}])
>>> str(plot).count('id="loss-series-')
2
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from typing import Any

from markupsafe import Markup

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"]
STYLE = {
    "svg.fonttype": "none",  # text as <text>, not glyph paths: smaller, selectable, scales
    "svg.hashsalt": "honed",  # the same run gives byte-identical SVG
    "font.size": 9,
    "font.family": "sans-serif",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.frameon": False,
}


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name)


def figure(width: float = 6.4, height: float = 3.0) -> Any:
    """A matplotlib Figure without pyplot (no global state, no GUI backend)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def to_svg(fig: Any, *, name: str, title: str) -> Markup:
    """The figure as an inline <svg> element: no XML prolog, ids prefixed with `name`, width from CSS."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context(STYLE):
        fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, count=1, flags=re.DOTALL)  # RDF boilerplate
    prefix = _slug(name)
    text = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}-\1"', text)
    text = re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}-\1)", text)
    text = re.sub(r'xlink:href="#([^"]+)"', rf'xlink:href="#{prefix}-\1"', text)
    text = re.sub(r'<svg([^>]*?) width="[^"]+" height="[^"]+"',
                  rf'<svg\1 class="plot" data-plot="{prefix}" role="img" aria-label="{title}"', text, count=1)
    return Markup(text)


def _series(metrics: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(m["step"], m[key]) for m in metrics if isinstance(m.get(key), (int, float)) and "step" in m]
    return [p[0] for p in points], [float(p[1]) for p in points]


def loss_plot(metrics: Sequence[Mapping[str, Any]], *, best_step: int | None = None,
              stopped_early: bool = False) -> Markup | None:
    """Train loss and holdout loss by step; the holdout before training, the best step and an early stop marked."""
    import matplotlib

    train_steps, train_loss = _series(metrics, "loss")
    hold_steps, hold_loss = _series(metrics, "holdout_loss")
    if not train_steps and not hold_steps:
        return None
    with matplotlib.rc_context(STYLE):
        fig = figure()
        ax = fig.add_subplot()
        if train_steps:
            (line,) = ax.plot(train_steps, train_loss, color=color(0), linewidth=1.2, label="train loss")
            line.set_gid("series-train_loss")
        if hold_steps:
            (line,) = ax.plot(hold_steps, hold_loss, color=color(1), marker="o", markersize=4, label="holdout loss")
            line.set_gid("series-holdout_loss")
            if hold_steps[0] == 0:
                ax.annotate("before training", (0, hold_loss[0]), textcoords="offset points", xytext=(6, 6),
                            fontsize=8, color=color(1))
        if best_step is not None:
            ax.axvline(best_step, color="#555", linestyle="--", linewidth=1, label=f"best checkpoint (step {best_step})")
        if stopped_early:
            last = max(train_steps + hold_steps)
            ax.axvline(last, color=color(4), linestyle=":", linewidth=1.5, label=f"early stop (step {last})")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss (mean over supervised tokens)")
        ax.legend(loc="best")
    return to_svg(fig, name="loss", title="train and holdout loss by step")


def step_plot(metrics: Sequence[Mapping[str, Any]], *, key: str, label: str, name: str) -> Markup | None:
    """One per-step number (learning rate, tokens/s) as a small line plot, or None when it was not logged."""
    import matplotlib

    steps, values = _series(metrics, key)
    if not steps:
        return None
    with matplotlib.rc_context(STYLE):
        fig = figure(height=2.2)
        ax = fig.add_subplot()
        (line,) = ax.plot(steps, values, color=color(2), linewidth=1.2)
        line.set_gid(f"series-{_slug(key)}")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(label)
        if key == "lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    return to_svg(fig, name=name, title=f"{label} by step")


def interval_plot(values: Mapping[str, Mapping[str, Any]], *, metrics: Sequence[str], name: str,
                  title: str) -> Markup | None:
    """Dot-and-whisker: one row per metric, one colour per series (system or run), 95% intervals as whiskers.

    `values[series][metric]` is an Interval (value, low, high) or a mapping with those keys, or missing.
    """
    import matplotlib

    series = list(values)
    if not series or not metrics:
        return None
    with matplotlib.rc_context(STYLE):
        fig = figure(height=1.0 + len(metrics) * (0.22 + 0.1 * len(series)))
        ax = fig.add_subplot()
        offsets = _offsets(len(series))
        for i, label in enumerate(series):
            ys, xs, lows, highs = [], [], [], []
            for row, metric in enumerate(metrics):
                point = _interval(values[label].get(metric))
                if point is not None:
                    ys.append(row + offsets[i])
                    xs.append(point[0])
                    lows.append(point[0] - point[1])
                    highs.append(point[2] - point[0])
            if not xs:
                continue
            drawn = ax.errorbar(xs, ys, xerr=[lows, highs], fmt="o", color=color(i), markersize=5, capsize=3,
                                elinewidth=1.2, label=label)
            drawn.lines[0].set_gid(f"series-{_slug(label)}")
        ax.set_yticks(range(len(metrics)), list(metrics))
        ax.set_ylim(len(metrics) - 0.5, -0.5)
        low, high = ax.get_xlim()
        ax.set_xlim(min(low, -0.02), max(high, 1.02))  # honed's metrics are in [0, 1]: show the whole scale
        ax.set_xlabel("score (dot) with its 95% bootstrap interval (whiskers)")
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=min(len(series), 4))
    return to_svg(fig, name=name, title=title)


def _offsets(n: int) -> list[float]:
    spread = min(0.6, 0.15 * (n - 1))
    return [(-spread / 2 + spread * i / (n - 1)) if n > 1 else 0.0 for i in range(n)]


def _interval(value: Any) -> tuple[float, float, float] | None:
    if value is None:
        return None
    get = value.get if isinstance(value, Mapping) else lambda key: getattr(value, key, None)
    numbers = [get("value"), get("low"), get("high")]
    if not all(isinstance(n, (int, float)) for n in numbers):
        return None
    return float(numbers[0]), float(numbers[1]), float(numbers[2])


def confusion_plot(rows: Sequence[str], columns: Sequence[str], counts: Sequence[Sequence[int]]) -> Markup | None:
    """A heatmap of reference label (rows) against answered label (columns), counts written in the cells."""
    import matplotlib

    if not rows:
        return None
    with matplotlib.rc_context({**STYLE, "axes.grid": False}):
        fig = figure(width=2.2 + 0.55 * len(columns), height=1.4 + 0.42 * len(rows))
        ax = fig.add_subplot()
        image = ax.imshow(counts, cmap="Blues", aspect="auto")
        image.set_gid("series-confusion")
        peak = max((max(r) for r in counts), default=0)
        for i, row in enumerate(counts):
            for j, count in enumerate(row):
                if count:
                    ax.text(j, i, str(count), ha="center", va="center", fontsize=8,
                            color="white" if count > peak / 2 else "black")
        ax.set_xticks(range(len(columns)), [_short(c) for c in columns], rotation=40, ha="right")
        ax.set_yticks(range(len(rows)), [_short(r) for r in rows])
        ax.set_xlabel("answered")
        ax.set_ylabel("reference")
    return to_svg(fig, name="confusion", title="confusion matrix of the most confused labels")


def _short(text: str, limit: int = 24) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def bars_plot(labels: Sequence[str], series: Mapping[str, Sequence[float]], *, name: str, title: str,
              xlabel: str) -> Markup | None:
    """Horizontal grouped bars in [0, 1]: one group per label, one colour per series (precision, recall, F1)."""
    import matplotlib
    from matplotlib.collections import PolyCollection

    if not labels or not series:
        return None
    with matplotlib.rc_context(STYLE):
        fig = figure(height=0.9 + 0.22 * len(labels) * len(series))
        ax = fig.add_subplot()
        height = 0.8 / len(series)
        for i, (label, values) in enumerate(series.items()):
            # One PolyCollection per series (not barh's one patch per bar), so the series is one SVG group.
            tops = [row - 0.4 + height * i for row in range(len(labels))]
            boxes = [[(0, t), (v, t), (v, t + height), (0, t + height)] for t, v in zip(tops, values)]
            bars = PolyCollection(boxes, facecolors=color(i), edgecolors="none", label=label)
            bars.set_gid(f"series-{_slug(label)}")
            ax.add_collection(bars)
        ax.set_yticks(range(len(labels)), [_short(str(label)) for label in labels])
        ax.set_ylim(len(labels) - 0.5, -0.5)
        ax.set_xlim(0, 1.0)
        ax.set_xlabel(xlabel)
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=len(series))
    return to_svg(fig, name=name, title=title)


def overlay_plot(curves: Mapping[str, Sequence[Mapping[str, Any]]], *, key: str, ylabel: str,
                 name: str) -> Markup | None:
    """The same per-step number of several runs on one plot (one colour per run)."""
    import matplotlib

    drawn = 0
    with matplotlib.rc_context(STYLE):
        fig = figure()
        ax = fig.add_subplot()
        for i, (run, metrics) in enumerate(curves.items()):
            steps, values = _series(metrics, key)
            if steps:
                marker = "o" if len(steps) < 30 else None
                (line,) = ax.plot(steps, values, color=color(i), marker=marker, markersize=3, linewidth=1.2, label=run)
                line.set_gid(f"series-{_slug(run)}")
                drawn += 1
        if not drawn:
            return None
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
        ax.legend(loc="upper right")
    return to_svg(fig, name=name, title=f"{ylabel} by step, every run")


def curve_plot(curve: Any, *, this_run: Any = None) -> Markup | None:
    """A learning curve (honed.curve.Curve): the main metric with its 95% interval against the number of
    training examples (log2 axis, so each doubling is one step and the doubling estimate is the slope);
    the evaluated run's point ringed."""
    import matplotlib

    points = list(curve.points)
    if not points:
        return None
    with matplotlib.rc_context(STYLE):
        fig = figure()
        ax = fig.add_subplot()
        xs, ys = [p.examples for p in points], [p.metric.value for p in points]
        below = [p.metric.value - p.metric.low for p in points]
        above = [p.metric.high - p.metric.value for p in points]
        drawn = ax.errorbar(xs, ys, yerr=[below, above], fmt="-o", color=color(0), markersize=5, capsize=3,
                            elinewidth=1.2, label=f"{curve.main_metric}, 95% interval")
        drawn.lines[0].set_gid("series-metric")
        mine = curve.point_of(this_run) if this_run is not None else None
        if mine is not None:
            ax.plot([mine.examples], [mine.metric.value], "o", markersize=11, markerfacecolor="none",
                    markeredgecolor=color(1), label="this run")
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.minorticks_off()
        ax.set_xlabel("training examples (log scale: each step right is a doubling)")
        ax.set_ylabel(curve.main_metric)
        ax.legend(loc="best")
    return to_svg(fig, name="curve", title=f"learning curve: {curve.main_metric} by training examples")
