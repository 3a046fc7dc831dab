"""compare: a summary of honed 0.1 (per-example field F1 named field_f1) lines up with today's field_f1_mean."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from honed.evaluate.compare import compare_runs

V1 = Path(__file__).parents[1] / "assets" / "run-v1"


def _rename(summary_path: Path, old: str, new: str, value: float) -> None:
    summary = json.loads(summary_path.read_text())
    summary["metrics"] = [new if m == old else m for m in summary["metrics"]]
    for system in summary["systems"].values():
        system["metrics"][new] = {"value": value, "low": value, "high": value}
        system["metrics"].pop(old, None)
    summary_path.write_text(json.dumps(summary))


def test_an_old_field_f1_compares_as_field_f1_mean(tmp_path) -> None:
    for name in ("old", "new"):
        shutil.copytree(V1, tmp_path / name)
    _rename(tmp_path / "old" / "eval" / "summary.json", "label_accuracy", "field_f1", 0.8)
    _rename(tmp_path / "new" / "eval" / "summary.json", "label_accuracy", "field_f1_mean", 0.6)
    report = compare_runs([tmp_path / "old", tmp_path / "new"])
    assert "field_f1" not in report["metrics"]
    by_run = report["metrics"]["field_f1_mean"]
    assert by_run[report["names"][0]]["value"] == 0.8 and by_run[report["names"][1]]["value"] == 0.6
