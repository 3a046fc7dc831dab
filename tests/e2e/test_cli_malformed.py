"""`honed data check` on every malformed file: exit 2, the fault's file:line on stderr, never a traceback.

Every file goes through the real Typer app in this process; one file of each kind also runs as its own
`python -m honed data check ...` process, exactly as a user runs it. Valid oddities must exit 0.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import TINY as MODEL

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path("tests") / "assets" / "malformed"  # relative: messages show the path as it was given
MANIFEST = json.loads((ROOT / CORPUS / "manifest.json").read_text())


def honed(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "honed", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def invoke(*args: str) -> Any:
    """Run the real Typer app in this process (the tokenizer's imports are paid once, not per run)."""
    from typer.testing import CliRunner

    from honed.cli import app

    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.stdout + result.stderr
    return result


def check_args(path: Path | str, spec: dict[str, Any]) -> list[str]:
    args = ["data", "check", str(path), "--model", MODEL]
    if spec.get("columns"):
        args += ["--prompt-col", spec["columns"][0], "--response-col", spec["columns"][1]]
    return args


def where(path: Path | str, spec: dict[str, Any]) -> str:
    if spec["line"] is None:
        return f"{path}:"
    return f"{path}: row {spec['line']}:" if spec.get("unit") == "row" else f"{path}:{spec['line']}:"


def _load_generator() -> Any:
    spec = importlib.util.spec_from_file_location("malformed_generate", ROOT / CORPUS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, dict[str, Any]]]:
    """name -> (path as passed on the command line, manifest entry), committed and generated faults."""
    generated_dir = tmp_path_factory.mktemp("malformed")
    found = {name: (str(CORPUS / name), spec) for name, spec in MANIFEST["faults"].items()}
    for name, spec in _load_generator().generate(generated_dir)["faults"].items():
        found[f"generated/{name}"] = (str(generated_dir / name), spec)
    return found


GENERATED = [
    "binary.jsonl",
    "nul_byte.jsonl",
    "undecodable.jsonl",
    "utf16.jsonl",
    "data.jsonl.gz",
    "huge_garbage_line.jsonl",
    "parquet_empty_cell.parquet",
    "parquet_missing_column.parquet",
    "parquet_no_mapping.parquet",
    "parquet_named_jsonl.jsonl",
]
ALL_FAULTS = list(MANIFEST["faults"]) + [f"generated/{n}" for n in GENERATED]
# One of each path through the code, run as separate processes exactly as a user would run them.
IN_SUBPROCESS = [
    "invalid_json.jsonl",
    "invalid_utf8.jsonl",
    "unknown_role.jsonl",
    "unknown_format.jsonl",
    "csv_missing_column.csv",
    "generated/binary.jsonl",
    "generated/huge_garbage_line.jsonl",
    "generated/parquet_empty_cell.parquet",
]


def assert_reported(path: str, spec: dict[str, Any], code: int, stdout: str, stderr: str) -> None:
    output = stdout + stderr
    assert code == 2, output
    assert where(path, spec) in stderr, stderr
    assert spec["expect"] in stderr
    assert "Traceback" not in output
    assert len(output) < 20_000  # a 10 MB line is never echoed


def test_every_generated_fault_is_covered(cases: dict[str, Any]) -> None:
    assert {n for n in cases if n.startswith("generated/")} == {f"generated/{n}" for n in GENERATED}


@pytest.mark.parametrize("name", ALL_FAULTS)
def test_data_check_reports_the_fault(
    name: str, cases: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every file through the real Typer app, in this process (a fresh Python per file costs ~1 s each)."""
    monkeypatch.chdir(ROOT)
    path, spec = cases[name]
    result = invoke(*check_args(path, spec))
    assert_reported(path, spec, result.exit_code, result.stdout, result.stderr)


@pytest.fixture(scope="module")
def subprocess_runs(cases: dict[str, Any]) -> dict[str, subprocess.CompletedProcess[str]]:
    with ThreadPoolExecutor(max_workers=4) as pool:  # several at once: most of each run is Python starting
        futures = {name: pool.submit(honed, *check_args(*cases[name])) for name in IN_SUBPROCESS}
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("name", IN_SUBPROCESS)
def test_data_check_process_reports_the_fault(
    name: str, cases: dict[str, Any], subprocess_runs: dict[str, Any]
) -> None:
    path, spec = cases[name]
    run = subprocess_runs[name]
    assert_reported(path, spec, run.returncode, run.stdout, run.stderr)


def test_markup_like_text_in_a_message_is_printed_as_is(tmp_path: Path) -> None:
    path = tmp_path / "keys.jsonl"
    path.write_text('{"[/x]": "a", "[bold]": "b"}\n')
    result = invoke(*check_args(path, {}))
    assert result.exit_code == 2 and "[/x]" in result.stderr


def test_valid_oddities_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """BOM, CRLF, blank lines inside and at the end: accepted silently (exit 0, nothing reported)."""
    monkeypatch.chdir(ROOT)
    lines = [
        json.dumps(
            {"messages": [{"role": "user", "content": f"Q{i}?"}, {"role": "assistant", "content": f"A{i}."}]}
        )
        for i in range(3)
    ]
    odd = tmp_path / "odd.jsonl"
    odd.write_bytes(b"\xef\xbb\xbf\r\n" + "\r\n\r\n".join(lines).encode() + b"\r\n  \r\n\r\n")
    for path, fmt in (
        (odd, "openai-chat (jsonl)"),
        (CORPUS / "valid" / "bom_crlf.csv", "prompt-completion (csv)"),
    ):
        result = invoke("data", "check", str(path), "--model", MODEL, "--json")
        assert result.exit_code == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["format"] == fmt and report["examples"] == 3 and report["skipped_invalid"] == 0


def test_skip_invalid_leaves_bad_rows_in_a_side_file(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes((ROOT / CORPUS / "unknown_role.jsonl").read_bytes())
    result = invoke("data", "check", str(path), "--model", MODEL, "--skip-invalid", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["skipped_invalid"] == 1
    (row,) = [json.loads(line) for line in (tmp_path / "data.jsonl.invalid.jsonl").read_text().splitlines()]
    assert row["source"] == f"{path}:7" and "unknown role 'bot'" in row["problems"][0]
