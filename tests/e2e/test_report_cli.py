"""honed train -> eval -> report through the real CLI on the tiny model: the report a person opens holds
the verdict, every metric of every system, every example and the data check's numbers."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import lxml.html
import pytest
from _report_run import DATA, TINY, cli, train_and_eval

from honed.runs.rundir import RunDir
from tests.helpers import copy_run


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> tuple[RunDir, str, str]:
    out = tmp_path_factory.mktemp("report") / "run"
    with pytest.MonkeyPatch.context() as patch:  # the function-scoped HONED_HOME is not set yet here
        patch.setenv("HONED_HOME", str(tmp_path_factory.mktemp("home")))
        trained, evaluated = train_and_eval(out, "--set", "tracking=tensorboard")
    return RunDir(out), trained, evaluated


def _printed_report(output: str) -> Path:
    found = re.findall(r"^report: (.+)$", output, flags=re.MULTILINE)
    assert found, output
    return Path(found[-1])


def test_train_and_eval_print_the_report_they_refresh(evaluated) -> None:
    run, trained, evaluated_output = evaluated
    assert _printed_report(trained) == run.report_html
    assert _printed_report(evaluated_output) == run.report_html
    assert "tracked: tensorboard:" in trained and "tracked: tensorboard:" in evaluated_output


def test_the_tiny_runs_report_holds_verdict_metrics_examples_and_data_check(evaluated) -> None:
    from honed.data.check import run_check

    run, _, _ = evaluated
    tree = lxml.html.fromstring(run.report_html.read_text(encoding="utf-8"))
    summary = run.read_summary()
    assert tree.xpath("string(//p[@data-verdict])") == summary.verdict
    assert set(summary.systems) == {"tuned", "base", "few-shot-1", "majority"}
    for metric in summary.metrics:
        cells = tree.xpath(f'//table[contains(@class, "metrics")]//tr[@data-metric="{metric}"]/td')[1:]
        assert [c.text_content().split()[0] for c in cells] == [
            f"{s.metrics[metric].value:.3f}" for s in summary.systems.values()]
    rows = tree.xpath('//table[@id="run-1-examples-table"]/tbody/tr')
    assert len(rows) == summary.n == 10
    for system in summary.systems:
        for row, expected in zip(rows, run.read_eval_rows(system), strict=True):
            assert row.xpath("string(td[@class='prompt'])") == expected["prompt"]
            assert row.xpath("string(td[@class='reference'])") == expected["reference"]
            answer = row.xpath(f"string(td[@data-system='{system}'])")
            assert (expected["output"] or "(empty)") in answer
    data = tree.xpath("//section[@class='data']")[0]
    checked = run_check(str(run.train_file()), holdout=str(run.holdout_file()), model=TINY, max_length=256)
    shown = {r.get("data-finding"): r.xpath("string(td[2])") for r in data.xpath(".//tr[@data-finding]")}
    assert shown["duplicates"] == str(checked.duplicates.exact)
    assert shown["near_duplicates"] == str(checked.duplicates.near_clusters)
    assert shown["conflicts"] == str(checked.conflicts.prompts)
    assert shown["truncated"] == str(checked.tokens.truncated)
    assert shown["leakage"] == str(checked.leakage.exact)
    plots = {svg.get("data-plot") for svg in tree.xpath("//svg")}
    assert {"loss", "lr", "tokens_per_s", "metrics", "fields"} <= plots
    assert run.report_html.stat().st_size < 3_000_000


def test_report_command_compares_runs_and_prints_json(evaluated, tmp_path) -> None:
    run, _, _ = evaluated
    other = tmp_path / "other"
    train_and_eval(other, "--lr", "1e-3", "--no-report", eval_extra=("--no-report",))
    assert not (other / "report.html").exists()
    out = tmp_path / "compare.html"
    result = cli("report", str(run.path), str(other), "--out", str(out), "--no-data-check", "--json")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["report"] == str(out) and printed["bytes"] == out.stat().st_size
    tree = lxml.html.fromstring(out.read_text(encoding="utf-8"))
    assert tree.xpath("//section[@id='compare']") and len(tree.xpath("//article[@class='run']")) == 2


def test_bad_input_is_one_message_and_exit_2(evaluated, tmp_path) -> None:
    run, _, _ = evaluated
    (tmp_path / "file").write_text("x")
    cases = [
        (["report", str(tmp_path / "nope")], "not a honed run directory"),
        (["report", str(run.path), "--out", str(tmp_path)], "is a folder"),
        (["report", str(run.path), "--out", str(tmp_path / "file" / "r.html")], "is a file, not a folder"),
        (["report", str(run.path), str(run.path)], "named twice"),
        (["report", str(run.path), "--track", "neptune"], "--track: unknown tracker neptune"),
        (["report", str(run.path), "--track", ","], "--track: name at least one tracker"),
        (["train", "--data", DATA, "--model", TINY, "--out", str(tmp_path / "t"), "--set", "tracking=neptune"],
         "tracking.0: Input should be 'mlflow', 'tensorboard' or 'wandb'"),
    ]
    for args, message in cases:
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "t").exists()


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_eval_of_a_run_tracked_with_a_missing_tracker_fails_before_evaluating(evaluated, tmp_path) -> None:
    run, _, _ = evaluated
    copy = RunDir(copy_run(run.path, tmp_path / "copy"))
    copy.write_config(copy.config_yaml.read_text().replace("tracking:\n- tensorboard", "tracking:\n- wandb"))
    before = copy.summary_json.read_text()
    result = cli("eval", str(copy.path), "--limit", "2", "--baselines", "none")
    assert result.exit_code == 2 and "wandb is not installed; run `pip install wandb`" in result.output
    assert copy.summary_json.read_text() == before  # nothing was evaluated or overwritten
