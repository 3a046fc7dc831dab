"""Every input shape through the real CLI: `data check` names the detected format; every bad input is one
message naming the path and the fix, exit 2, no traceback (also for a FIFO, which used to hang)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORMATS = Path("tests") / "assets" / "formats"
MODEL = "tests/assets/tiny-llama"


def invoke(*args: str) -> Any:
    """Run the real Typer app in this process; no traceback may reach the user."""
    from typer.testing import CliRunner

    from honed.cli import app

    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.stdout + result.stderr
    return result


@pytest.fixture(autouse=True)
def _at_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("HONED_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HONED_WORKERS", "1")


@pytest.mark.parametrize(
    "name,extra,fmt",
    [
        ("sharegpt_llamafactory.json", [], "sharegpt (json)"),
        ("sharegpt_axolotl.jsonl", [], "sharegpt (jsonl)"),
        ("openai_content_parts.jsonl", [], "openai-chat (jsonl)"),
        ("trl_conversational_pc.jsonl", [], "prompt-completion (jsonl)"),
        ("text.jsonl", [], "text (jsonl): plain text, no chat template, every token trained"),
        ("alpaca_history.json", [], "alpaca (json)"),
        (
            "columns_system_col.csv",
            ["--prompt-col", "question", "--response-col", "answer", "--system-col", "persona"],
            "csv (prompt=question, response=answer, system=persona)",
        ),
        ("shards", [], "openai-chat (jsonl), 2 files"),
    ],
)
def test_data_check_names_the_format(name: str, extra: list[str], fmt: str) -> None:
    result = invoke("data", "check", str(FORMATS / name), "--model", MODEL, "--json", *extra)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["format"] == fmt and report["examples"] >= 1
    assert report["tokens"]["supervised"] > 0


def test_plain_text_trains_every_token_in_check_and_show() -> None:
    report = json.loads(
        invoke("data", "check", str(FORMATS / "text.jsonl"), "--model", MODEL, "--json").stdout
    )
    # every token but the BOS the text starts from is supervised
    assert report["tokens"]["total"] - report["tokens"]["supervised"] == report["examples"]
    shown = json.loads(invoke("data", "show", str(FORMATS / "text.jsonl"), "--model", MODEL, "--json").stdout)
    tokens = shown["examples"][0]["tokens"]
    assert not tokens[0]["supervised"] and all(t["supervised"] for t in tokens[1:])


def test_content_fields_warn_in_check_and_fail_show_under_strict() -> None:
    path = str(FORMATS / "multimodal_llamafactory.json")
    result = invoke("data", "check", path, "--model", MODEL, "--json")
    codes = {w["code"]: w["count"] for w in json.loads(result.stdout)["warnings"]}
    assert codes["content_field"] == 2 and codes["placeholder"] == 2
    assert invoke("data", "check", path, "--model", MODEL, "--strict").exit_code == 1
    result = invoke("data", "show", path, "--model", MODEL, "--strict")
    assert result.exit_code == 2 and "holds content honed does not train on (--strict)" in result.stderr
    assert "2 rows carry a field honed does not train on ('images')" in result.stderr
    result = invoke("data", "show", path, "--model", MODEL)
    assert result.exit_code == 0 and "warning: 2 rows contain a '<image>' placeholder" in result.stderr


def _bad_inputs(tmp: Path) -> list[tuple[str, str]]:
    """(path, what the one error line must say) for every input that is not data."""
    fifo = tmp / "pipe.jsonl"
    os.mkfifo(fifo)
    (tmp / "empty_dir").mkdir()
    (tmp / "lfs.jsonl").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n")
    (tmp / "bin.jsonl").write_bytes(b"\x00\x01\x02binary\x00")
    (tmp / "dup.csv").write_text("prompt,prompt,completion\na,b,c\n")
    (tmp / "odd.jsonl").write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    return [
        (str(fifo), "is a named pipe (FIFO), not a data file"),
        ("/dev/zero", "/dev/zero: is a device, not a data file"),
        (str(tmp / "empty_dir"), "a folder with no data files"),
        (str(tmp / "lfs.jsonl"), "this is a Git LFS pointer, not the data; run `git lfs pull`"),
        (str(tmp / "bin.jsonl"), "looks like a binary file"),
        (str(tmp / "dup.csv"), "names column 'prompt' more than once"),
        (str(tmp / "odd.jsonl"), "read it with --prompt-col question --response-col answer"),
        (str(tmp / "*.parquet"), "the pattern matches no data file"),
    ]


def test_every_bad_input_is_one_message_and_exit_2(tmp_path: Path) -> None:
    for path, expect in _bad_inputs(tmp_path):
        for command in (["data", "check", path, "--model", MODEL], ["data", "show", path, "--model", MODEL]):
            result = invoke(*command)
            assert result.exit_code == 2, (command, result.stdout, result.stderr)
            assert expect in " ".join(result.stderr.split()), (command, result.stderr)


def test_a_fifo_does_not_hang_the_real_process(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    result = subprocess.run(
        [sys.executable, "-m", "honed", "data", "check", str(fifo), "--model", MODEL],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert (
        result.returncode == 2 and "named pipe (FIFO)" in result.stderr and "Traceback" not in result.stderr
    )


def test_split_of_a_shard_folder_refuses_out_equal_to_the_input(tmp_path: Path) -> None:
    folder = tmp_path / "shards"
    folder.mkdir()
    for part in (FORMATS / "shards").iterdir():
        (folder / part.name).write_text(part.read_text())
    result = invoke(
        "data", "split", str(folder), "--out", str(folder), "--force", "--holdout-fraction", "0.34"
    )
    assert result.exit_code == 2 and "holds the input" in result.stderr
    assert len(list(folder.iterdir())) == 2
    result = invoke(
        "data", "split", str(folder), "--out", str(tmp_path / "split"), "--holdout-fraction", "0.34"
    )
    assert result.exit_code == 0, result.stderr
    assert "openai-chat (jsonl), 2 files" in result.stdout


def test_train_on_a_folder_of_plain_text_shards(tmp_path: Path) -> None:
    folder = tmp_path / "texts"
    folder.mkdir()
    for shard in range(2):
        rows = [{"text": f"Plain text example {shard}-{i} for language-model tuning."} for i in range(6)]
        (folder / f"train-{shard:05d}-of-00002.jsonl").write_text(
            "\n".join(json.dumps(r) for r in rows) + "\n"
        )
    out = tmp_path / "run"
    args = ["train", "--data", str(folder), "--model", MODEL, "--out", str(out), "--max-steps", "1"]
    result = invoke(*args, "--set", "data.holdout_fraction=0.25")
    assert result.exit_code == 0, result.stdout + result.stderr
    from honed.runs.rundir import RunDir

    record = RunDir(out).read_data()
    assert record.split is not None and record.split.source.count == 12
    assert record.split.source.path == str(folder.resolve())
    first = json.loads((out / "data" / "train.jsonl").read_text().splitlines()[0])
    assert set(first) == {"text"}  # written back as plain text, so a resume reads the same format
