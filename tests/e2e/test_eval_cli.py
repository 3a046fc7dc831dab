"""train -> eval -> compare through the real CLI on the tiny model; user errors exit 2 in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.helpers import DATA, FAST, TINY, cli, copy_run


@pytest.fixture(scope="module")
def two_runs(trained_run, tmp_path_factory) -> tuple[Path, Path]:
    """a: a copy of the shared run (honed's default lr); b: the same but for --lr 1e-3, for `compare`."""
    root = tmp_path_factory.mktemp("runs")
    result = cli("train", "--data", DATA, "--model", TINY, "--out", str(root / "b"), "--lr", "1e-3", *FAST,
                 "--json")
    assert result.exit_code == 0, result.output
    return copy_run(trained_run, root / "a"), root / "b"


def test_eval_writes_every_system_and_a_summary(two_runs) -> None:
    run_a, _ = two_runs
    result = cli("eval", str(run_a), "--limit", "12", "--baselines", "base,few-shot:2", "--batch-size", "4", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["n"] == 12 and summary["main_metric"] == "field_f1_micro"  # JSON targets picked JSON metrics
    assert set(summary["systems"]) == {"tuned", "base", "few-shot-2", "majority"}  # the constant answer, always
    assert {"json_valid", "schema_valid", "field_f1_micro", "field_f1_mean", "exact_match"} <= set(summary["metrics"])
    assert set(summary["differences"]) == {"tuned - base", "tuned - few-shot-2", "tuned - majority"}
    interval = summary["systems"]["tuned"]["metrics"]["field_f1_micro"]
    assert interval["low"] <= interval["value"] <= interval["high"]
    # not a terminal (a log file, CI): plain progress lines on stderr, stdout stays one JSON document
    for system in ("tuned", "base", "few-shot-2"):
        assert f"generating: {system} 12/12  elapsed" in result.stderr
    assert summary["verdict"].startswith("Too small to tell: 12 holdout examples")
    assert len(summary["holdout"]["sha256"]) == 64
    for system in ("tuned", "base", "few-shot-2", "majority"):
        rows = [json.loads(line) for line in (run_a / "eval" / f"{system}.jsonl").read_text().splitlines()]
        assert [r["id"] for r in rows] == list(range(12))
        assert {"prompt", "reference", "output", "scores"} <= set(rows[0])
    assert json.loads((run_a / "eval" / "summary.json").read_text())["verdict"] == summary["verdict"]


def test_eval_tables_and_metric_override(two_runs) -> None:
    _, run_b = two_runs
    result = cli("eval", str(run_b), "--limit", "6", "--baselines", "none", "--metrics", "exact_match,chrf")
    assert result.exit_code == 0, result.output
    assert "exact_match" in result.stdout and "chrf" in result.stdout and "Too small to tell" in result.stdout
    summary = json.loads((run_b / "eval" / "summary.json").read_text())
    assert summary["metrics"] == ["exact_match", "chrf"] and summary["main_metric"] == "exact_match"


def test_compare_two_evaluated_runs(two_runs) -> None:
    run_a, run_b = two_runs
    for run in two_runs:  # the same holdout sample for both, so examples can be compared
        assert cli("eval", str(run), "--limit", "6", "--baselines", "none").exit_code == 0
    result = cli("compare", str(run_a), str(run_b), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["names"] == ["a", "b"]
    default_lr = yaml.safe_load((run_a / "config.yaml").read_text())["lr"]  # the shared run's resolved lr
    assert report["config_differences"]["lr"] == [default_lr, 0.001]
    assert report["runs"][0]["data"]["train"]["sha256"] == report["runs"][1]["data"]["train"]["sha256"]
    assert report["disagreements"]["same_holdout"] and report["disagreements"]["of"] == 6
    assert set(report["metrics"]["field_f1_micro"]) == {"a", "b"}
    table = cli("compare", str(run_a), str(run_b))
    assert table.exit_code == 0 and "config differences" in table.stdout


def test_user_errors_exit_2_without_traceback(tmp_path, two_runs) -> None:
    run_a, _ = two_runs
    cases = [
        (["eval", str(tmp_path / "nope")], "not a honed run directory"),
        (["eval", str(run_a), "--baselines", "zero"], "unknown baseline"),
        (["eval", str(run_a), "--metrics", "bleu"], "unknown metric"),
        (["eval", str(run_a), "--data", str(tmp_path / "missing.jsonl")], "no such file"),
        (["compare", str(run_a)], "at least two"),
        (["compare", str(run_a), str(tmp_path)], "not a honed run directory"),
    ]
    for args, message in cases:
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output


def test_eval_of_a_run_that_never_finished_says_so(tmp_path, two_runs) -> None:
    killed = copy_run(two_runs[0], tmp_path / "killed")
    run = json.loads((killed / "run.json").read_text())
    for key in ("best_checkpoint", "best", "finished_at"):
        run.pop(key, None)
    (killed / "run.json").write_text(json.dumps({**run, "status": "running"}))
    shutil.rmtree(killed / "final")
    result = cli("eval", str(killed), "--limit", "2", "--baselines", "none")
    assert result.exit_code == 2, result.output
    assert "never finished (status: running)" in result.output and "Traceback" not in result.output
    result = cli("eval", str(killed), "--limit", "2", "--baselines", "none", "--checkpoint", "last", "--json")
    assert result.exit_code == 0, result.output


def test_a_bad_schema_file_is_a_user_error(tmp_path, two_runs) -> None:
    (tmp_path / "bad.json").write_text("{bad")
    (tmp_path / "wrong.json").write_text('{"type": 5}')
    cases = [("missing.json", "no such file"), ("bad.json", "bad.json:1: not valid JSON"),
             ("wrong.json", "not a valid JSON schema")]
    for name, message in cases:
        result = cli("eval", str(two_runs[0]), "--limit", "2", "--baselines", "none", "--schema", str(tmp_path / name))
        assert result.exit_code == 2, (name, result.output)
        assert message in result.output and "Traceback" not in result.output


def test_eval_of_a_run_without_holdout_asks_for_one(tmp_path) -> None:
    out = tmp_path / "nohold"
    result = cli("train", "--data", DATA, "--model", TINY, "--out", str(out), *FAST, "--set", "data.holdout_fraction=0")
    assert result.exit_code == 0, result.output
    result = cli("eval", str(out), "--limit", "2", "--baselines", "none")
    assert result.exit_code == 2 and "trained without a holdout; pass one with --data" in result.output
    result = cli("eval", str(out), "--limit", "2", "--baselines", "none", "--data", DATA, "--json")
    assert result.exit_code == 0, result.output


def test_task_metric_during_training_selects_the_checkpoint(tmp_path) -> None:
    out = tmp_path / "by-metric"
    result = cli("train", "--data", DATA, "--model", TINY, "--out", str(out), *FAST,
                 "--set", "eval_metric=auto", "--set", "eval_metric_examples=4", "--set", "select_by=holdout_field_f1_micro",
                 "--set", "eval_every=1", "--json")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    scored = [line for line in lines if "holdout_field_f1_micro" in line]
    assert len(scored) >= 2 and all(0.0 <= line["holdout_field_f1_micro"] <= 1.0 for line in scored)
    run = json.loads((out / "run.json").read_text())
    assert run["selected_by"] == "holdout_field_f1_micro" and "holdout_field_f1_micro" in run["best"]


def test_eval_reads_csv_holdouts_with_the_runs_column_mapping(label_run) -> None:
    """A run trained on CSV (--prompt-col/--response-col) is evaluated on CSV files read the same way."""
    result = cli("eval", str(label_run), "--limit", "6", "--baselines", "base", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["n"] == 6 and summary["main_metric"] == "label_accuracy"
    first = json.loads((label_run / "eval" / "base.jsonl").read_text().splitlines()[0])
    assert first["reference"] == "card"


TRIAGE_SCHEMA = {
    "type": "object",
    "properties": {
        "category": {"enum": ["billing", "account", "bug", "feature_request", "how_to", "cancellation"]},
        "priority": {"enum": ["low", "medium", "high"]},
        "sentiment": {"enum": ["negative", "neutral", "positive"]},
    },
    "required": ["category", "priority", "sentiment"],
    "additionalProperties": False,
}


def _rows(run: Path, system: str) -> list[dict]:
    return [json.loads(line) for line in (run / "eval" / f"{system}.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def label_run(tmp_path_factory) -> Path:
    """Its own run: trained on CSV with a column mapping and one-word labels (the shared run answers JSON)."""
    root = tmp_path_factory.mktemp("labels")
    rows = [("I lost my card", "card"), ("Reset my password", "password"), ("Refund please", "refund_request")] * 8
    for name in ("train.csv", "holdout.csv"):
        (root / name).write_text("text,label\n" + "".join(f"{p} {i},{label}\n" for i, (p, label) in enumerate(rows)))
    out = root / "run"
    mapping = ["--set", "data.prompt_col=text", "--set", "data.response_col=label", "--set", "data.system=Label it."]
    result = cli("train", "--data", str(root / "train.csv"), "--holdout", str(root / "holdout.csv"),
                 "--model", TINY, "--out", str(out), *mapping, *FAST, "--json")
    assert result.exit_code == 0, result.output
    return out


def test_constrain_labels_adds_systems_that_answer_only_training_labels(label_run) -> None:
    args = ["eval", str(label_run), "--limit", "8", "--baselines", "base,few-shot:2", "--batch-size", "4", "--json"]
    plain = cli(*args)
    assert plain.exit_code == 0, plain.output
    before = {system: _rows(label_run, system) for system in ("tuned", "base", "few-shot-2")}
    result = cli(*args, "--constrain", "labels")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert list(summary["systems"]) == ["tuned", "tuned+labels", "base", "base+labels", "few-shot-2", "few-shot-2+labels",
                                       "majority"]  # the constant answer decodes nothing: no twin
    assert summary["decoding"]["constrain"] == "labels"
    assert "tuned - base+labels" in summary["differences"]
    for system, rows in before.items():  # the unconstrained systems answer exactly as without --constrain
        assert [r["output"] for r in _rows(label_run, system)] == [r["output"] for r in rows]
        constrained = _rows(label_run, f"{system}+labels")
        assert all(r["output"] in {"card", "password", "refund_request"} and r["stopped"] for r in constrained)
    assert summary["verdict"] == json.loads(plain.stdout)["verdict"]  # the verdict stays about the plain systems
    table = cli("eval", str(label_run), "--limit", "4", "--baselines", "base", "--constrain", "labels")
    assert table.exit_code == 0 and "base+labels" in table.stdout


def test_constrain_json_with_a_schema_gives_valid_json(tmp_path, two_runs) -> None:
    import jsonschema

    run_a, _ = two_runs
    (tmp_path / "triage.json").write_text(json.dumps(TRIAGE_SCHEMA))
    result = cli("eval", str(run_a), "--limit", "6", "--baselines", "base", "--constrain", "json",
                 "--schema", str(tmp_path / "triage.json"), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert list(summary["systems"]) == ["tuned", "tuned+json", "base", "base+json", "majority"]
    for system in ("tuned+json", "base+json"):
        for row in _rows(run_a, system):
            jsonschema.validate(json.loads(row["output"]), TRIAGE_SCHEMA)
        assert summary["systems"][system]["metrics"]["schema_valid"]["value"] == 1.0
    result = cli("eval", str(run_a), "--limit", "4", "--baselines", "none", "--constrain", "json", "--json")
    assert result.exit_code == 0, result.output
    for row in _rows(run_a, "tuned+json"):  # any object: every answer that ended parses (a cut one cannot)
        assert row["output"].startswith("{") and (not row["stopped"] or isinstance(json.loads(row["output"]), dict))


def test_constrain_bad_input_is_one_clear_error(tmp_path, two_runs, label_run) -> None:
    run_a, _ = two_runs
    (tmp_path / "ref.json").write_text('{"type": "object", "properties": {"a": {"$ref": "#/definitions/nope"}}}')
    cases = [
        (["eval", str(run_a), "--constrain", "foo"], "--constrain foo: unknown constraint; use labels"),
        (["eval", str(label_run), "--constrain", "json"], "--constrain json: the run's training answers are not JSON"),
        (["eval", str(run_a), "--constrain", "json", "--schema", str(tmp_path / "ref.json")],
         "ref.json: xgrammar cannot constrain decoding to this schema"),
    ]
    for args, message in cases:
        result = cli(*args, "--limit", "2", "--baselines", "none")
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output, result.output
