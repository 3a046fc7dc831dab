"""honed curve: nested subsets, one holdout, the doubling estimate (tiny model)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tests.helpers import TINY
from honed.cli import app
from honed.curve import doubling_slope, nested_subsets, parse_fractions
from honed.errors import ConfigError
from honed.runs.rundir import RunDir




def test_subsets_are_nested_and_seeded():
    small, large = nested_subsets(list(range(40)), [0.25, 1.0], seed=3)
    assert set(small) <= set(large) and len(small) == 10 and sorted(large) == list(range(40))
    assert nested_subsets(list(range(40)), [0.25], seed=3)[0] == small


def test_doubling_slope_is_the_change_per_doubling():
    assert doubling_slope([50, 100, 200], [0.2, 0.3, 0.4]) == pytest.approx(0.1)
    assert doubling_slope([100], [0.5]) is None


@pytest.mark.parametrize("text", ["", "0.5,0.25", "0,1", "1.5", "half"])
def test_bad_fractions_are_config_errors(text):
    with pytest.raises(ConfigError, match="--fractions"):
        parse_fractions(text)


def test_curve_trains_and_evaluates_every_point_on_one_holdout(tmp_path, monkeypatch):
    monkeypatch.setenv("HONED_HOME", str(tmp_path / "home"))
    rows = [{"messages": [{"role": "user", "content": f"item {i}"}, {"role": "assistant", "content": "ab"[i % 2]}]}
            for i in range(40)]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["curve", "--data", str(data), "--model", TINY, "--out", str(tmp_path / "curve"), "--fractions", "0.5,1",
            "--set", "batch_size=8", "--set", "max_steps=2", "--set", "num_threads=1", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    curve = json.loads(result.stdout)
    assert [p["examples"] for p in curve["points"]] == [18, 36]  # 40 - 4 held out, then halves
    assert curve["main_metric"] == "label_accuracy" and curve["doubling"] is not None
    hashes = {RunDir(p["run"]).read_summary().holdout.sha256 for p in curve["points"]}
    assert len(hashes) == 1  # every point on the same holdout
    again = CliRunner().invoke(app, args[:-1] + ["--resume"])  # both points done: reused, not retrained
    assert again.exit_code == 0 and "doubling the training data" in again.output
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and "already exists" in refused.output
    point = str(tmp_path / "curve" / "f050")
    shown = CliRunner().invoke(app, ["eval", point, "--baselines", "none", "--no-report"], env={"COLUMNS": "400"})
    assert shown.exit_code == 0, shown.output
    assert "learning curve: label_accuracy" in shown.output and "doubling the training data" in shown.output
    assert f"{point}  <- this run" in shown.output  # the evaluated run's row is marked
    as_json = CliRunner().invoke(app, ["eval", point, "--baselines", "none", "--no-report", "--json"])
    summary = json.loads(as_json.stdout)
    assert summary["learning_curve"]["doubling"] == curve["doubling"] and summary["main_metric"] == "label_accuracy"
    assert "learning_curve" not in RunDir(point).summary_json.read_text()  # summary.json itself is unchanged
