"""The HTML report on hand-made run directories: what a person reads is checked by parsing the page.

The runs are written through RunDir (as train and eval write them), with systems and metrics that
today's `honed eval` does not produce (a `majority` system, a `label_f1_weighted` metric), so the
report is shown to render whatever summary.json holds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import lxml.html
import pytest

from honed.atomic import write_text_atomic
from honed.errors import ConfigError
from honed.report.render import render_report
from honed.runs.rundir import DataRecord, EvalSummary, FileEntry, RunDir, RunRecord

ASSETS = Path(__file__).parents[1] / "assets"
LABELS = ["card", "card", "refund", "password", "refund", "card"]
OUTPUTS = {
    "tuned": ["card", "refund", "refund", "password", "card", "card"],
    "base": ["I can help with that", "card", "refund", "<b>pw</b>", "refund", "card"],
    "majority": ["card"] * 6,
}
METRICS = ["label_accuracy", "macro_f1", "label_f1_weighted"]


def make_run(path: Path, *, lr: float = 2e-4, evaluated: bool = True) -> RunDir:
    run = RunDir(path)
    run.write_config(f"model: tiny\nmethod: lora\nlr: {lr}\nepochs: 2\nseed: 0\nlora:\n  r: 8\n")
    entry = FileEntry(path=str(path / "data" / "train.jsonl"), sha256="ab" * 32, count=40)
    run.write_data(DataRecord(train=entry, holdout=FileEntry(path="holdout.jsonl", sha256="cd" * 32, count=6)))
    run.write_run(RunRecord(name=path.name, status="completed", model="tiny", method="lora",
                            started_at="2026-12-01T10:00:00+00:00", finished_at="2026-12-01T10:03:05+00:00",
                            steps=6, stopped_early=True, best_checkpoint="checkpoints/step-000004",
                            best={"step": 4, "holdout_loss": 1.1}, selected_by="holdout_loss",
                            first_eval={"holdout_loss": 2.5},
                            machine={"cpu": "Intel Xeon 8480", "cores": 2, "cpu_flags": ["amx_bf16", "avx2"],
                                     "gpu": None, "torch": "2.13.0"}))
    lines = [{"step": 0, "epoch": 0.0, "holdout_loss": 2.5}]
    for step in range(1, 7):
        record = {"step": step, "loss": 3.0 - step * 0.3, "lr": lr * (1 - step / 7), "tokens_per_s": 100.0 + step}
        if step % 2 == 0:
            record["holdout_loss"] = 2.5 - step * 0.2
        lines.append(record)
    write_text_atomic(run.metrics_jsonl, "".join(json.dumps(line) + "\n" for line in lines))
    if evaluated:
        write_eval(run)
    return run


def write_eval(run: RunDir) -> None:
    prompts = [f"prompt {i} <script>alert({i})</script>" for i in range(len(LABELS))]
    systems = {}
    for k, (system, outputs) in enumerate(OUTPUTS.items()):
        rows = [{"id": i, "source": f"holdout.jsonl:{i + 1}", "prompt": prompts[i], "reference": ref, "output": out,
                 "stopped": True, "scores": {"label_accuracy": float(ref == out), "exact_match": float(ref == out)}}
                for i, (ref, out) in enumerate(zip(LABELS, outputs))]
        run.write_eval_rows(system, rows)
        systems[system] = {"metrics": {m: {"value": 0.1 * (k + j + 1), "low": 0.05 * (k + j), "high": 0.2 + 0.1 * (k + j)}
                                       for j, m in enumerate(METRICS)},
                           "generation": {"tokens_per_s": 50.0}}
    summary = EvalSummary.model_validate({
        "n": len(LABELS), "main_metric": "label_accuracy", "metrics": METRICS, "systems": systems,
        "differences": {"tuned - base": {m: {"value": 0.3, "low": 0.1, "high": 0.5} for m in METRICS}},
        "verdict": "Too small to tell: 6 holdout examples (need at least 30); label_accuracy 0.667.",
        "resamples": 2000, "checkpoint": "best",
    })
    run.write_summary(summary)


def page(path: Path):
    return lxml.html.fromstring(path.read_text(encoding="utf-8"))


def series(tree, plot: str) -> int:
    return len(tree.xpath(f'//svg[@data-plot="{plot}"]//*[starts-with(@id, "{plot}-series-")]'))


def test_one_run_shows_verdict_every_metric_of_every_system_and_every_example(tmp_path) -> None:
    run = make_run(tmp_path / "labels")
    out = render_report([run.path], data_check=False)
    assert out == run.report_html
    tree = page(out)
    assert tree.xpath("string(//p[@data-verdict])") == run.read_summary().verdict
    table = tree.xpath('//table[contains(@class, "metrics")]')[0]
    assert [th.text_content() for th in table.xpath(".//th[@data-system]")] == ["tuned", "base", "majority"]
    for metric in METRICS:
        cells = table.xpath(f'.//tr[@data-metric="{metric}"]/td')[1:]
        for cell, (system, data) in zip(cells, run.read_summary().systems.items(), strict=True):
            iv = data.metrics[metric]
            assert cell.text_content().split() == [f"{iv.value:.3f}", f"[{iv.low:.3f},", f"{iv.high:.3f}]"], system
    rows = tree.xpath('//table[@id="run-1-examples-table"]/tbody/tr')
    assert len(rows) == len(LABELS)
    for row, label in zip(rows, LABELS):
        i = int(row.get("data-id"))
        assert row.xpath("string(td[@class='prompt'])") == f"prompt {i} <script>alert({i})</script>"
        assert row.xpath("string(td[@class='reference'])") == label
        for system, outputs in OUTPUTS.items():
            answer = row.xpath(f"td[@data-system='{system}']")[0]
            assert answer.xpath("string(text()|mark)") + "".join(answer.xpath("mark/text()")) or True
            assert outputs[i] in answer.text_content()
            assert ("right" in answer.text_content()) == (outputs[i] == label)
    # user text is escaped: the prompts' <script> and the base model's <b> are text, not elements
    assert len(tree.xpath("//script")) == 1 and not tree.xpath("//td/b")


def test_filters_know_which_rows_are_wrong_and_which_disagree(tmp_path) -> None:
    tree = page(render_report([make_run(tmp_path / "r").path], data_check=False))
    rows = tree.xpath('//table[@id="run-1-examples-table"]/tbody/tr')
    wrong = [int(r.get("data-id")) for r in rows if r.get("data-wrong") == "1"]
    assert wrong == [i for i, (ref, out) in enumerate(zip(LABELS, OUTPUTS["tuned"])) if ref != out]
    agree = [int(r.get("data-id")) for r in rows if r.get("data-disagree") == "0"]
    assert agree == [5]  # every system answered "card"


def test_label_task_sections_and_plot_series(tmp_path) -> None:
    tree = page(render_report([make_run(tmp_path / "r").path], data_check=False))
    assert series(tree, "loss") == 2 and series(tree, "lr") == 1 and series(tree, "tokens_per_s") == 1
    assert series(tree, "metrics") == 3  # one per system, majority included
    assert series(tree, "confusion") == 1
    assert "early stop (step 6)" in tree.xpath("string(//svg[@data-plot='loss'])")
    assert "best checkpoint (step 4)" in tree.xpath("string(//svg[@data-plot='loss'])")
    labels = tree.xpath('//table[contains(@class, "labels")]/tbody/tr')
    assert [r.xpath("string(td[1])") for r in labels] == ["card", "refund", "password"]
    # tuned: card 2/3 right, 2 answers "card" that are right out of 3 card answers -> F1 = 2*2/(3+3)
    assert labels[0].xpath("string(td[3])") == f"{2 * 2 / (3 + 3):.3f}"
    # ids stay unique across the page's SVGs
    ids = tree.xpath("//@id")
    assert len(ids) == len(set(ids))


def test_header_shows_data_duration_and_config_changes(tmp_path) -> None:
    tree = page(render_report([make_run(tmp_path / "r", lr=1e-3).path], data_check=False))
    header = tree.xpath("string(//header)")
    assert "3 min 5 s" in header and ("ab" * 6) in header and "40 examples" in header
    assert "Intel Xeon 8480, 2 cores, amx_bf16 avx2, torch 2.13.0" in header  # run.json's machine
    changed = [r.xpath("string(td[1])") for r in tree.xpath('//table[contains(@class, "config")]/tbody/tr')]
    assert "lr" in changed and "lora.r" in changed and "seed" not in changed


def test_a_run_not_evaluated_yet_says_so(tmp_path) -> None:
    run = make_run(tmp_path / "fresh", evaluated=False)
    tree = page(render_report([run.path], data_check=False))
    assert tree.xpath("string(//p[@data-verdict])").startswith("Not evaluated yet: run `honed eval")
    assert series(tree, "loss") == 2 and not tree.xpath('//table[contains(@class, "examples")]')


def test_several_runs_are_compared_with_overlaid_curves(tmp_path) -> None:
    a, b = make_run(tmp_path / "a"), make_run(tmp_path / "b", lr=1e-3)
    out = render_report([a.path, b.path], out=tmp_path / "compare.html", data_check=False)
    tree = page(out)
    assert series(tree, "compare-holdout") == 2 and series(tree, "compare-train") == 2
    assert series(tree, "compare-metrics") == 2
    assert tree.xpath('string(//table[contains(@class, "config-differences")]//td[1])') == "lr"
    assert len(tree.xpath("//article[@class='run']")) == 2


def test_an_old_run_whose_data_is_gone_still_renders(tmp_path) -> None:
    shutil.copytree(ASSETS / "run-v1", tmp_path / "old")
    old = RunDir(tmp_path / "old")
    gone = FileEntry(path=str(tmp_path / "gone.jsonl"), sha256="0" * 64, count=6)
    old.write_data(old.read_data().model_copy(update={"train": gone}))
    tree = page(render_report([tmp_path / "old"], out=tmp_path / "old.html"))
    assert "Too small to tell: 2 holdout examples" in tree.xpath("string(//p[@data-verdict])")
    assert "training file recorded in data.json is gone" in tree.xpath("string(//section[@class='data'])")


def test_bad_inputs_are_config_errors(tmp_path) -> None:
    run = make_run(tmp_path / "r")
    with pytest.raises(ConfigError, match="not a honed run directory"):
        render_report([tmp_path / "nope"])
    with pytest.raises(ConfigError, match="is a folder"):
        render_report([run.path], out=tmp_path)
    with pytest.raises(ConfigError, match="named twice"):
        render_report([run.path, tmp_path / "r"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        render_report([run.path], out=tmp_path / "file" / "report.html")


def write_curve(folder: Path, runs: list[RunDir]) -> None:
    """OUT/curve.json as `honed curve` writes it, over hand-made runs OUT/f050, OUT/f100."""
    from honed.atomic import write_json_atomic
    from honed.curve import CURVE_FILE, Curve, CurvePoint
    from honed.runs.rundir import Interval

    points = [CurvePoint(fraction=f, examples=n, run=str(r.path), metric=Interval(value=v, low=v - 0.05, high=v + 0.05),
                         holdout_loss=1.5 - v)
              for f, n, r, v in zip([0.5, 1.0], [100, 200], runs, [0.4, 0.7])]
    curve = Curve(main_metric="label_accuracy", holdout=str(folder / "data" / "holdout.jsonl"), points=points,
                  doubling=0.3, last_doubling=0.3)
    write_json_atomic(folder / CURVE_FILE, curve.model_dump(mode="json"))


def test_a_run_of_a_learning_curve_shows_the_curve_and_the_doubling_estimate(tmp_path) -> None:
    runs = [make_run(tmp_path / "curve" / name) for name in ("f050", "f100")]
    write_curve(tmp_path / "curve", runs)
    tree = page(render_report([runs[1].path], data_check=False))
    section = tree.xpath("//section[@class='curve']")[0]
    words = section.xpath("string(.//p[@data-doubling])")
    assert words.startswith("Doubling the training data would add about +0.300 label_accuracy")
    assert "larger than the uncertainty of one point (about ±0.050)" in words
    assert len(section.xpath(".//table[@class='curve']/tbody/tr")) == 2
    assert section.xpath("string(.//tr[@class='this-run']/td[2])") == "200"  # the page's own run is marked
    assert series(tree, "curve") == 1 and "this run is the 100% point (200 examples)" in section.text_content()
    lonely = make_run(tmp_path / "lonely")  # a run that is no point of a curve has no curve section
    assert not page(render_report([lonely.path], data_check=False)).xpath("//section[@class='curve']")


def test_a_damaged_curve_json_is_shown_not_fatal(tmp_path) -> None:
    run = make_run(tmp_path / "curve" / "f100")
    (tmp_path / "curve" / "curve.json").write_text("{not json")
    tree = page(render_report([run.path], data_check=False))
    assert "not a learning curve honed can read" in tree.xpath("string(//section[@class='curve'])")
