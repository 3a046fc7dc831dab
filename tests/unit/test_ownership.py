"""Run ownership: the lock's heartbeat, staleness on this and on another host, --force's clearing rules,
and the message for an --out that already holds a run."""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from honed.atomic import write_text_atomic
from honed.errors import ConfigError, DiskError
from honed.runs.lock import STALE_AFTER_S, heartbeat_age, owner_alive, read_owner
from honed.runs.rundir import RunDir, RunRecord
from honed.train.ownership import clear_for_rerun, refuse_existing


def make_run(path: Path, *, status: str, checkpoint: bool = False) -> RunDir:
    run = RunDir(path)
    run.write_config("model: tiny\n")
    run.write_run(RunRecord(name=path.name, status=status, error="boom" if status == "failed" else None))
    if checkpoint:
        (run.checkpoint(3)).mkdir(parents=True)
    return run


def test_the_lock_records_owner_and_heartbeat_and_beats_again(tmp_path):
    run = RunDir(tmp_path / "r")
    with run.lock("train") as lock:
        owner = read_owner(run)
        assert owner is not None and owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        first = owner["heartbeat"]
        with lock.beating(every_s=0.05):
            import time

            time.sleep(1.2)
        assert read_owner(run)["heartbeat"] >= first  # type: ignore[index]
        assert heartbeat_age(read_owner(run)) < 5  # type: ignore[arg-type]
        assert owner_alive(run)
    assert not owner_alive(run)  # released: this host's kernel says nobody holds it


def _owned_elsewhere(run: RunDir, *, beat_age_s: float) -> None:
    beat = (datetime.now(timezone.utc) - timedelta(seconds=beat_age_s)).isoformat(timespec="seconds")
    run.lock_file.write_text(json.dumps({"pid": 1, "host": "another-host", "command": "train", "since": beat,
                                         "heartbeat": beat}))


def test_a_run_owned_by_another_host_is_stale_only_when_its_heartbeat_is_old(tmp_path):
    run = make_run(tmp_path / "r", status="running")
    _owned_elsewhere(run, beat_age_s=5)
    assert run.status() == "running"  # the pid means nothing here; the fresh heartbeat does
    _owned_elsewhere(run, beat_age_s=STALE_AFTER_S + 60)
    assert run.status() == "stale"


def test_force_clears_a_failed_run_but_keeps_the_lock_and_refuses_the_rest(tmp_path):
    failed = make_run(tmp_path / "failed", status="failed", checkpoint=True)
    with failed.lock("train"):
        clear_for_rerun(failed, discard_completed=False)
    assert [p.name for p in failed.path.iterdir()] == [".lock"]
    done = make_run(tmp_path / "done", status="completed")
    with pytest.raises(ConfigError, match="--discard-completed"):
        clear_for_rerun(done, discard_completed=False)
    clear_for_rerun(done, discard_completed=True)
    assert not done.is_run()
    mine = make_run(tmp_path / "mine", status="failed")
    (mine.path / "notes.txt").write_text("the user's own file")
    with pytest.raises(ConfigError, match="not a honed run directory.*notes.txt"):
        clear_for_rerun(mine, discard_completed=False)
    assert (mine.path / "notes.txt").is_file() and mine.is_run()


@pytest.mark.parametrize(("status", "checkpoint", "says"), [
    ("failed", True, "failed (boom); pass --resume to continue from checkpoints/step-000003, or --force"),
    ("failed", False, "failed (boom); pass --force"),
    ("running", False, "was killed; pass --force"),
    ("completed", False, "holds a completed run; choose a new --out, or pass --force --discard-completed"),
])
def test_an_existing_out_says_how_to_recover(tmp_path, status, checkpoint, says):
    run = make_run(tmp_path / "r", status=status, checkpoint=checkpoint)
    assert says in refuse_existing(run).message


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_a_refused_write_is_one_disk_error_naming_the_file_and_leaves_no_temp(tmp_path, monkeypatch, code):
    target = tmp_path / "run.json"
    target.write_text("old\n")

    def fsync(fd: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(DiskError, match=str(target)):
        write_text_atomic(target, "new\n")
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_a_user_metric_is_found_in_the_current_folder_without_it_on_sys_path(tmp_path, monkeypatch):
    from honed.evaluate.metrics import load_user_metric

    (tmp_path / "cwd_metric_mod.py").write_text("def score(reference, output):\n    return 0.5\n")
    monkeypatch.chdir(tmp_path)
    # as under the installed `honed` script: neither "" nor the current folder is on sys.path
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert load_user_metric("cwd_metric_mod:score")("a", "b") == 0.5
