"""`honed curve`: how much data do I need? Train on nested subsets, evaluate each on one holdout.

    learning_curve(config, out="runs/curve", fractions=[0.25, 0.5, 1.0])
      -> runs/curve/data/holdout.jsonl, train-025.jsonl, train-050.jsonl, train-100.jsonl
         runs/curve/f025/ f050/ f100/        ordinary run directories, each trained and evaluated
         runs/curve/curve.json               main metric with 95% CI per size, and the doubling estimate

The subsets are nested (the 25% subset is inside the 50% one: one seeded shuffle, then prefixes), so the
curve measures data size and not which examples were drawn; every point is evaluated on the same holdout
with the same decoding. "What doubling the data would add" is the least-squares slope of the main metric
against log2(examples) over all points, next to the step between the last two points.

Usage: `learning_curve(load_config(None, flags={"data.train": "train.jsonl"}), out="runs/curve").doubling`
(a float, e.g. 0.071: trains and evaluates every point, so minutes; tests/unit/test_curve.py runs it).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError

from honed.atomic import write_json_atomic
from honed.config import TrainConfig
from honed.data.read import load_or_fail, write_jsonl
from honed.data.split import split_conversations
from honed.errors import ConfigError
from honed.runs.rundir import Interval

CURVE_FILE = "curve.json"


class CurvePoint(BaseModel):
    fraction: float
    examples: int
    run: str
    metric: Interval
    holdout_loss: float | None = None


class Curve(BaseModel):
    """curve.json: the points, the main metric, and the doubling estimate."""

    schema_version: int = 1
    main_metric: str
    holdout: str
    points: list[CurvePoint]
    doubling: float | None  # slope of the main metric per doubling of the data (all points)
    last_doubling: float | None  # the step between the last two points, per doubling

    def point_of(self, run_dir: str | Path) -> CurvePoint | None:
        """The point trained in `run_dir` (matched by folder name, so a curve made from another working
        directory still matches), or None."""
        return next((p for p in self.points if Path(p.run).name == Path(run_dir).name), None)

    def sentence(self) -> str:
        """The plain estimate printed under the table."""
        if self.doubling is None:
            return "one point only: pass two or more fractions to estimate what more data would add"
        last = f" (between the last two points: {self.last_doubling:+.3f})" if self.last_doubling is not None else ""
        return (f"doubling the training data would add about {self.doubling:+.3f} {self.main_metric}{last}, "
                "if the trend of these points holds")


def noise_note(curve: Curve) -> str | None:
    """Whether the doubling estimate is larger than the uncertainty of one point (the largest one's 95%
    interval half-width): plain words for the report, None with a single point.

    >>> point = CurvePoint(fraction=1, examples=200, run="f100", metric=Interval(value=0.6, low=0.5, high=0.7))
    >>> curve = Curve(main_metric="exact_match", holdout="h", points=[point], doubling=0.02, last_doubling=0.02)
    >>> noise_note(curve)[:66]
    'That gain is smaller than the uncertainty of one point (about ±0.1'
    """
    if curve.doubling is None:
        return None
    last = curve.points[-1].metric
    margin = (last.high - last.low) / 2
    if curve.doubling <= 0:
        return "The metric did not rise with more data: more examples of this kind are unlikely to help."
    if curve.doubling < margin:
        return (f"That gain is smaller than the uncertainty of one point (about ±{margin:.3f}), so more data of "
                "this kind may not give a gain you can measure on this holdout.")
    return f"That gain is larger than the uncertainty of one point (about ±{margin:.3f}): more data is likely worth it."


def read_curve(folder: str | Path) -> Curve | None:
    """FOLDER/curve.json, or None when there is none; a damaged file is a ConfigError naming it.

    >>> read_curve("runs/no-curve-here") is None
    True
    """
    path = Path(folder) / CURVE_FILE
    if not path.is_file():
        return None
    try:
        return Curve.model_validate_json(path.read_text(encoding="utf-8"))
    except (ValidationError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a learning curve honed can read ({str(exc).splitlines()[0]}); "
                          f"run `honed curve --out {path.parent} --resume ...` again to rewrite it") from exc


def curve_of_run(run_dir: str | Path) -> Curve | None:
    """The learning curve a run is part of: curve.json in the run directory itself, or in its parent folder
    when one of that curve's points is this run (`honed curve --out OUT` writes OUT/curve.json, OUT/f050/, ...).

    >>> import tempfile
    >>> metric = Interval(value=0.6, low=0.5, high=0.7)
    >>> point = CurvePoint(fraction=1, examples=360, run="out/f100", metric=metric)
    >>> curve = Curve(main_metric="exact_match", holdout="h", points=[point], doubling=None,
    ...               last_doubling=None)
    >>> with tempfile.TemporaryDirectory() as out:
    ...     write_json_atomic(Path(out) / CURVE_FILE, curve.model_dump())
    ...     (Path(out) / "f100").mkdir()
    ...     curve_of_run(Path(out) / "f100").point_of("f100").examples, curve_of_run(out) == curve
    (360, True)
    """
    run_dir = Path(run_dir)
    own = read_curve(run_dir)
    if own is not None:
        return own
    parent = read_curve(run_dir.resolve().parent)
    return parent if parent is not None and parent.point_of(run_dir.resolve()) is not None else None


def parse_fractions(text: str) -> list[float]:
    """`0.25,0.5,1` -> [0.25, 0.5, 1.0]: increasing, each in (0, 1].

    >>> parse_fractions("0.25, 0.5,1")
    [0.25, 0.5, 1.0]
    """
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise ConfigError(f"--fractions {text!r}: write numbers in (0, 1] separated by commas, e.g. 0.25,0.5,1") from exc
    if not values or any(not 0 < v <= 1 for v in values) or values != sorted(set(values)):
        raise ConfigError(f"--fractions {text!r}: write increasing numbers in (0, 1], e.g. 0.25,0.5,1")
    return values


def nested_subsets(items: Sequence[Any], fractions: Sequence[float], *, seed: int) -> list[list[Any]]:
    """Prefixes of one seeded shuffle: each subset contains the smaller ones.

    >>> [len(s) for s in nested_subsets(list(range(10)), [0.25, 0.5, 1.0], seed=0)]
    [3, 5, 10]
    """
    order = list(items)
    random.Random(seed).shuffle(order)
    return [order[: max(1, math.ceil(f * len(order)))] for f in fractions]


def doubling_slope(examples: Sequence[int], values: Sequence[float]) -> float | None:
    """Least-squares slope of `values` against log2(`examples`): the change per doubling.

    >>> round(doubling_slope([100, 200, 400], [0.5, 0.6, 0.7]), 3)
    0.1
    """
    if len(examples) < 2 or len(set(examples)) < 2:
        return None
    slope, _ = np.polyfit(np.log2(np.asarray(examples, dtype=float)), np.asarray(values, dtype=float), 1)
    return float(slope)


def learning_curve(
    config: TrainConfig, *, out: str | Path, fractions: Sequence[float], baselines: str = "none",
    limit: int | None = None, resume: bool = False, console: Any = None,
    on_point: Callable[[CurvePoint], None] | None = None,
) -> Curve:
    """Train and evaluate one run per fraction (see the module docstring); curve.json is rewritten after
    every point, and `resume=True` reuses the points already trained and evaluated."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not resume:
        raise ConfigError(f"--out {out} already exists and is not empty; pass --resume to continue it or choose a new --out")
    train_examples, holdout_path = _split_once(config, out / "data")
    subsets = nested_subsets(train_examples, fractions, seed=config.seed)
    points: list[CurvePoint] = []
    curve = None
    for fraction, subset in zip(fractions, subsets):
        points.append(_point(config, out, fraction, subset, holdout_path, baselines=baselines, limit=limit,
                             console=console))
        curve = _curve(points, holdout=holdout_path, main=_main_metric(points[-1].run))
        write_json_atomic(out / CURVE_FILE, curve.model_dump(mode="json"))
        if on_point is not None:
            on_point(points[-1])
    assert curve is not None
    return curve


def _split_once(config: TrainConfig, folder: Path) -> tuple[list[Any], Path]:
    """The training examples and the one holdout file every point is evaluated on."""
    from honed.data.read import ColumnMapping

    if not config.data.train:
        raise ConfigError("data.train: no training data given; pass --data TRAIN.jsonl")
    settings = config.data
    columns = ColumnMapping(settings.prompt_col, settings.response_col, system=settings.system) \
        if settings.prompt_col and settings.response_col else None
    read = lambda path: load_or_fail(path, fmt=settings.format, columns=columns).conversations  # noqa: E731
    train = read(settings.train)
    if settings.holdout:
        holdout = read(settings.holdout)
    else:  # deterministic for the seed, so a resumed curve splits the same way
        split = split_conversations(train, holdout_fraction=settings.holdout_fraction or 0.1, seed=settings.split_seed)
        train, holdout = split.train, split.holdout
    holdout_path = folder / "holdout.jsonl"
    if not holdout_path.is_file():
        write_jsonl(holdout_path, holdout)
    return train, holdout_path


def _point(config: TrainConfig, out: Path, fraction: float, subset: list[Any], holdout_path: Path, *,
           baselines: str, limit: int | None, console: Any) -> CurvePoint:
    from honed.evaluate.run_eval import EvalSettings, evaluate_run
    from honed.evaluate.scorer import score_fn_from_config
    from honed.runs.rundir import RunDir
    from honed.train import train

    name = f"f{round(fraction * 100):03d}"
    run = RunDir(out / name)
    if not (run.has_summary() and run.read_run().status == "completed"):
        subset_path = out / "data" / f"train-{name[1:]}.jsonl"
        write_jsonl(subset_path, subset)
        data = config.data.model_copy(update={"train": str(subset_path), "holdout": str(holdout_path), "format": "auto",
                                              "prompt_col": None, "response_col": None, "system": None})
        train(config.model_copy(update={"data": data}), out=run.path, resume=run.is_run(), console=console,
              make_score_fn=score_fn_from_config)
        evaluate_run(run.path, EvalSettings(baselines=baselines, limit=limit))
    summary = run.read_summary()
    return CurvePoint(fraction=fraction, examples=len(subset), run=str(run.path),
                      metric=summary.systems["tuned"].metrics[summary.main_metric],
                      holdout_loss=run.read_run().best.get("holdout_loss"))


def _main_metric(run_dir: str) -> str:
    from honed.runs.rundir import RunDir

    return RunDir(run_dir).read_summary().main_metric


def _curve(points: list[CurvePoint], *, holdout: Path, main: str) -> Curve:
    sizes, values = [p.examples for p in points], [p.metric.value for p in points]
    return Curve(main_metric=main, holdout=str(holdout.resolve()), points=points,
                 doubling=doubling_slope(sizes, values),
                 last_doubling=doubling_slope(sizes[-2:], values[-2:]) if len(points) >= 2 else None)
