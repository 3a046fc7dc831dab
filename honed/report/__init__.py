"""The run report: one self-contained HTML page per run (or per comparison), and tracker export.

    collect.py     read a run directory (through honed.rundir.RunDir) into a RunView
    analysis.py    what the page shows that summary.json does not hold: per-label F1, confusions,
                   per-field precision/recall, the examples table with differences marked
    plots.py       matplotlib figures as inline SVG (no JavaScript needed to see them)
    render.py      Jinja2 templates (templates/*.html.j2) -> report.html, written atomically
    trackers.py    replay a finished run into MLflow, TensorBoard or Weights & Biases

>>> from honed.report.render import render_report
>>> render_report(["runs/demo"])  # doctest: +SKIP
PosixPath('runs/demo/report.html')
"""
