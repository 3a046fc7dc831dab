"""Hostile inputs through the real CLI on the tiny model: each case exits 2 with one `error:` line that names
the path or field, never a traceback, and leaves no half-made folder (a fresh train's --out does not exist
afterwards; an eval or export writes nothing).

Cases run in this process (Typer's CliRunner); only what needs a process of its own runs as one: a FIFO
(a regression would hang, so it gets a timeout), SIGKILL, two trains at once.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.helpers import DATA, ROOT, TINY, lock_held_elsewhere
from tests.helpers import FAST as TWO_STEPS
from tests.helpers import cli as run_cli

FAST = [*TWO_STEPS, "--no-report"]


def cli(*args: str) -> Any:
    result = run_cli(*args, env={"COLUMNS": "200"})
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def assert_refused(result: Any, *names: str) -> str:
    """Exit 2, no traceback, exactly one `error:` line, naming each of `names`."""
    output = result.stdout + result.stderr
    assert result.exit_code == 2, output
    assert "Traceback" not in output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for name in names:
        assert name in result.stderr, (name, result.stderr)
    return errors[0]


def train_args(out: Path, *extra: str, data: str = DATA, model: str = TINY) -> list[str]:
    return ["train", "--data", data, "--model", model, "--out", str(out), *FAST, *extra]


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    # a hub id fails at once here instead of after connection retries (the constant is read at import time)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)


# ---- a fresh train refused before (or cleaned up after) creating --out -----------------------------------


def _no_supervised(tmp: Path) -> list[str]:
    rows = [{"messages": [{"role": "user", "content": f"question {i} " + "x y z " * 300},
                          {"role": "assistant", "content": "yes"}]} for i in range(20)]
    data = tmp / "long.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return ["train", "--data", str(data), "--model", TINY, "--out", str(tmp / "out"), "--set", "num_threads=1",
            "--max-length", "16", "--set", "micro_batch_tokens=64", "--max-steps", "1", "--no-report"]


def _file(tmp: Path, name: str, content: bytes = b"x") -> str:
    (tmp / name).write_bytes(content)
    return str(tmp / name)


FRESH: dict[str, tuple[Callable[[Path], list[str]], list[str]]] = {
    # case: (args for tmp_path, what the message must name); --out is tmp_path/out unless the case says so
    "config is not UTF-8": (lambda t: train_args(t / "out", "--config", _file(t, "c.yaml", b"lr: \xff\n")), ["c.yaml", "UTF-8"]),
    "config is a folder": (lambda t: train_args(t / "out", "--config", str(t)), ["--config", "folder"]),
    "config repeats a key": (lambda t: train_args(t / "out", "--config", _file(t, "d.yaml", b"lr: 0.1\nepochs: 1\nlr: 0.2\n")), ["d.yaml:3", "duplicate key 'lr'"]),
    "config is a list": (lambda t: train_args(t / "out", "--config", _file(t, "l.yaml", b"- a\n- b\n")), ["l.yaml", "mapping"]),
    "seed too large": (lambda t: train_args(t / "out", "--seed", str(2**32)), ["seed"]),
    "seed negative": (lambda t: train_args(t / "out", "--seed", "-1"), ["seed"]),
    "model is a data file": (lambda t: train_args(t / "out", model=_file(t, "notes.txt")), ["notes.txt", "not a model"]),
    "model path missing": (lambda t: train_args(t / "out", model=str(t / "nope")), ["nope", "does not exist"]),
    "hub model offline": (lambda t: train_args(t / "out", model="no-such-org/no-such-model"), ["no-such-org/no-such-model"]),
    "lora target unknown": (lambda t: train_args(t / "out", "--set", "lora.target_modules=[nope_proj]"), ["lora.target_modules", "nope_proj", "q_proj"]),
    "select_by unknown": (lambda t: train_args(t / "out", "--set", "select_by=holdout_nothing"), ["select_by", "holdout_nothing"]),
    "eval_metric unknown": (lambda t: train_args(t / "out", "--set", "eval_metric=nonsense"), ["eval_metric", "nonsense"]),
    "max_length over context": (lambda t: train_args(t / "out", "--set", "max_length=4096", "--set", "micro_batch_tokens=4096"), ["max_length", "512"]),
    "no supervised token": (_no_supervised, ["long.jsonl", "supervised"]),
    "data is /dev/zero": (lambda t: train_args(t / "out", data="/dev/zero"), ["/dev/zero"]),
    "data is a folder of nothing": (lambda t: train_args(t / "out", data=str((t / "empty").mkdir() or t / "empty")), ["empty"]),
    "out is a file": (lambda t: train_args(Path(_file(t, "out"))), ["out"]),
    "out under a file": (lambda t: train_args(Path(_file(t, "f")) / "out"), ["f/out"]),
    "force with resume": (lambda t: train_args(t / "out", "--force", "--resume"), ["--force", "--resume"]),
}


@pytest.mark.parametrize("case", list(FRESH))
def test_a_bad_train_exits_2_in_one_line_and_leaves_no_folder(case: str, tmp_path: Path) -> None:
    make_args, names = FRESH[case]
    args = make_args(tmp_path)
    out = Path(args[args.index("--out") + 1])
    existed = out.exists()
    assert_refused(cli(*args), *names)
    assert out.exists() == existed  # nothing half-made
    if (tmp_path / "home" / "runs.db").exists():
        assert "out" not in cli("runs", "list", "--json").stdout  # and no registry row for it


@pytest.mark.parametrize("where", ["--out", "HONED_HOME"])
def test_a_read_only_folder_is_refused(where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    if os.geteuid() == 0:  # root writes into a 0555 folder anyway: make the file system say read-only instead
        real_mkdir = os.mkdir

        def mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
            if str(path).startswith(str(tmp_path / "ro")):
                raise OSError(errno.EROFS, "Read-only file system", str(path))
            real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(os, "mkdir", mkdir)
    if where == "HONED_HOME":
        monkeypatch.setenv("HONED_HOME", str(tmp_path / "ro" / "home"))
    out = tmp_path / "ro" / "run" if where == "--out" else tmp_path / "run"
    assert_refused(cli(*train_args(out)), "ro/run" if where == "--out" else "HONED_HOME")
    assert not out.exists()


@pytest.mark.parametrize("kind", ["garbage runs.db", "HONED_HOME is a file"])
def test_an_unusable_registry_is_one_message(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if kind == "garbage runs.db":
        (tmp_path / "home").mkdir()
        (tmp_path / "home" / "runs.db").write_bytes(os.urandom(4096))
    else:
        (tmp_path / "home").write_text("not a folder")
    assert_refused(cli("runs", "list"), str(tmp_path / "home"), "HONED_HOME")
    assert_refused(cli(*train_args(tmp_path / "out")), "runs.db")
    assert not (tmp_path / "out").exists()


def _fail_fsync_under(folder: str) -> Callable[[int], None]:
    """os.fsync that reports a full disk for files under `folder` (where a real full disk shows up)."""
    real = os.fsync

    def fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").startswith(folder):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    return fsync


def test_disk_full_before_training_says_so_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "fsync", _fail_fsync_under(str(tmp_path / "out")))
    assert_refused(cli(*train_args(tmp_path / "out")), "disk full", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_disk_full_while_saving_a_checkpoint_marks_the_run_failed_and_force_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    monkeypatch.setattr(os, "fsync", _fail_fsync_under(str(out / "checkpoints")))
    assert_refused(cli(*train_args(out)), "disk full", "checkpoints")
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "failed" and "disk full" in record["error"]
    assert not [p for p in (out / "checkpoints").iterdir()]  # no half-written checkpoint, not even a temp one
    again = cli(*train_args(out))
    assert "--force" in assert_refused(again, str(out), "failed")
    monkeypatch.undo()
    monkeypatch.setenv("HONED_HOME", str(tmp_path / "home"))
    assert cli(*train_args(out, "--force")).exit_code == 0
    assert json.loads((out / "run.json").read_text())["status"] == "completed"


# ---- a damaged run directory: eval, resume and export refuse it in one line --------------------------------


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _every_checkpoint(run: Path, name: str, damage: Callable[[Path], None]) -> None:
    for folder in [*run.glob("checkpoints/step-*"), run / "final"]:
        if (folder / name).exists():
            damage(folder / name)


def _garbage(path: Path) -> None:
    path.write_bytes(b"not safetensors at all")


DAMAGED: dict[str, tuple[Callable[[Path], None], Callable[[Path], list[str]], list[str]]] = {
    # case: (damage the copy, the command, what the message names)
    "eval: corrupt safetensors": (lambda r: _every_checkpoint(r, "adapter_model.safetensors", _garbage),
                                  lambda r: ["eval", str(r), "--limit", "2", "--baselines", "none"], ["step-000002", "damaged"]),
    "resume: corrupt safetensors": (lambda r: _every_checkpoint(r, "adapter_model.safetensors", _garbage),
                                    lambda r: ["train", "--out", str(r), "--resume"], ["adapter_model.safetensors", "--force"]),
    "export: corrupt safetensors": (lambda r: _every_checkpoint(r, "adapter_model.safetensors", _garbage),
                                    lambda r: ["export", str(r), "--to", "merged", "--out", str(r.parent / "exported")], ["step-000002"]),
    "eval: broken config.yaml": (lambda r: (r / "config.yaml").write_text("model: [unclosed\n"),
                                 lambda r: ["eval", str(r), "--limit", "2"], ["config.yaml"]),
    "resume: list config.yaml": (lambda r: (r / "config.yaml").write_text("- a\n- b\n"),
                                 lambda r: ["train", "--out", str(r), "--resume"], ["config.yaml", "mapping"]),
    "eval: truncated run.json": (lambda r: _truncate(r / "run.json"), lambda r: ["eval", str(r), "--limit", "2"], ["run.json"]),
    "resume: truncated run.json": (lambda r: _truncate(r / "run.json"), lambda r: ["train", "--out", str(r), "--resume"], ["run.json"]),
    "resume: missing data.json": (lambda r: (r / "data.json").unlink(), lambda r: ["train", "--out", str(r), "--resume"], ["data.json", "--force"]),
    "resume: truncated optimizer.pt": (lambda r: _every_checkpoint(r, "optimizer.pt", _truncate),
                                       lambda r: ["train", "--out", str(r), "--resume"], ["optimizer.pt", "damaged"]),
    "resume: truncated trainer_state.json": (lambda r: _every_checkpoint(r, "trainer_state.json", _truncate),
                                             lambda r: ["train", "--out", str(r), "--resume"], ["trainer_state.json", "damaged"]),
    "eval: checkpoint outside the run": (lambda r: None, lambda r: ["eval", str(r), "--checkpoint", "../../x"], ["--checkpoint ../../x", "inside"]),
    "eval: data is an empty folder": (lambda r: (r.parent / "holdouts").mkdir(),
                                               lambda r: ["eval", str(r), "--data", str(r.parent / "holdouts")], ["holdouts"]),
    "eval: user metric raises": (lambda r: (r.parent / "raising.py").write_text("def score(reference, output):\n    raise ValueError('nope')\n"),
                                 lambda r: ["eval", str(r), "--limit", "2", "--baselines", "none", "--metrics", "raising:score"],
                                 ["metric score", "holdout example 0", "ValueError"]),
}


@pytest.mark.parametrize("case", list(DAMAGED))
def test_a_damaged_run_is_refused_in_one_line_and_nothing_is_written(
    case: str, run_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    damage, make_args, names = DAMAGED[case]
    run = run_copy  # the shared two-step run, this case's own copy to damage
    damage(run)
    monkeypatch.chdir(tmp_path)  # a user metric module lies beside the run
    monkeypatch.syspath_prepend(str(tmp_path))
    assert_refused(cli(*make_args(run)), *names)
    assert not (run / "eval").exists() and not (tmp_path / "exported").exists()
    assert not [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]  # no temp left


# ---- what needs a process of its own ---------------------------------------------------------------------


def honed(*args: str, cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "honed", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200"})


def test_a_fifo_as_data_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    result = honed("data", "check", str(fifo), "--model", TINY)  # its own process: a regression would hang
    assert result.returncode == 2 and "named pipe" in result.stderr and "Traceback" not in result.stderr
    # train in this process; should it ever open the pipe, a writer that opens and closes it ends the read
    unblock = threading.Timer(30, lambda: os.close(os.open(fifo, os.O_WRONLY)))
    unblock.start()
    try:
        assert_refused(cli(*train_args(tmp_path / "out", data=str(fifo))), "pipe.jsonl", "named pipe")
    finally:
        unblock.cancel()
    assert not (tmp_path / "out").exists()


def test_sigkill_leaves_a_stale_run_whose_message_names_force(tmp_path: Path) -> None:
    out = tmp_path / "killed"
    long_run = ["train", "--data", DATA, "--model", TINY, "--out", str(out), "--set", "num_threads=1",
                "--set", "batch_size=8", "--set", "max_length=256", "--max-steps", "400", "--set", "eval_every=1000"]
    worker = subprocess.Popen([sys.executable, "-m", "honed", *long_run], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out / "metrics.jsonl").exists():
        time.sleep(0.2)
    assert cli("runs", "show", str(out), "--json").exit_code == 0
    assert json.loads(cli("runs", "list", "--json").stdout)[0]["status"] == "running"
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    assert json.loads(cli("runs", "list", "--json").stdout)[0]["status"] == "stale"
    assert "stale (the process is gone)" in cli("runs", "list").stdout
    assert f"pid {worker.pid} on host" in cli("runs", "show", str(out)).stdout  # who it was, and its last heartbeat
    refused = assert_refused(cli(*train_args(out)), "was killed", "--force")
    assert "--resume" not in refused or "checkpoints/" in refused  # --resume offered only with a checkpoint


def test_two_trains_on_one_out_one_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "shared"
    with lock_held_elsewhere(out) as holder:  # a train in progress, as far as the lock says
        refused = assert_refused(cli(*train_args(out)), "in use", f"pid {holder.pid}")
        assert "wait" in refused
        assert_refused(cli(*train_args(out, "--force")), "in use")  # --force never clears a locked run
    assert [p.name for p in out.iterdir()] == [".lock"]  # the refused trains wrote nothing
