"""Who may write a run directory, and what happens to it when a train fails or is run again.

`owning(run, command="train", dist=dist)` wraps a whole `honed train`:
  - it takes the run's lock (honed.runs.lock: a second writer is refused with the owner's pid) and keeps its
    heartbeat fresh from a thread, so `honed runs list` can tell a live run from a killed one;
  - with `force=True` it first clears a run that failed, stopped, was killed or was left half-made, so the
    same command starts it again in place; a completed run is only cleared with `discard_completed=True`
    too, and a folder that is not a honed run directory (it holds anything else) never is;
  - SIGTERM stops the run like Ctrl-C (status "stopped", checkpoints kept, exit 143);
  - a fresh run that fails before it trained anything (bad LoRA targets, no supervised token, a select_by
    no evaluation reports, ...) leaves no folder and no registry row behind.

Usage (takes the lock and writes the registry: tests/unit/test_ownership.py, and test_train_loop.py's
test_a_second_train_on_a_running_out_is_refused_and_a_failed_start_leaves_no_folder):

    with owning(RunDir("runs/a"), command="train", dist=Dist.current(), force=True):
        ...
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

from honed.errors import ConfigError
from honed.runs.rundir import LOCK_NAME, RunDir
from honed.train.distributed import Dist


def run_entries(run: RunDir) -> frozenset[str]:
    """What `honed train` and the later stages write into a run directory (names from the RunDir contract);
    `--force` clears a folder only when everything in it is one of these or a temp folder (a dot name)."""
    paths = (run.config_yaml, run.data_json, run.run_json, run.template_json, run.metrics_jsonl, run.data_dir, run.checkpoints,
             run.final, run.merged, run.eval_dir, run.exports, run.report_html, run.tensorboard_dir,
             run.requests_log, run.lock_file)
    return frozenset(p.name for p in paths)


@contextlib.contextmanager
def owning(run: RunDir, *, command: str, dist: Dist, force: bool = False,
           discard_completed: bool = False) -> Iterator[None]:
    """Hold the run directory's lock (rank 0) while training; see the module docstring."""
    created = not run.path.exists()
    lock = run.lock(command) if dist.is_main else None
    if lock is not None:
        lock.acquire()
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm) if _main_thread() else None
    try:
        if force and dist.is_main:
            clear_for_rerun(run, discard_completed=discard_completed)
        dist.barrier()  # every rank sees the cleared folder
        with lock.beating() if lock is not None else contextlib.nullcontext():
            yield
    except BaseException:
        if created and dist.is_main and trained_nothing(run):
            remove_unborn(run)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if lock is not None:
            lock.release()


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: the run is marked stopped, its checkpoints kept (the CLI exits 143)."""


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def trained_nothing(run: RunDir) -> bool:
    """True when the run has no metrics line and no checkpoint: it failed before its first evaluation."""
    return not run.metrics_jsonl.exists() and not run.checkpoint_dirs()


def remove_unborn(run: RunDir) -> None:
    """Remove a folder this train created and failed in before training, and its registry row."""
    from honed.runs.registry import forget_run

    shutil.rmtree(run.path, ignore_errors=True)
    with contextlib.suppress(Exception):  # the registry may be the very thing that failed
        forget_run(run.path)


def foreign_entries(run: RunDir) -> list[str]:
    """Names in the folder that a honed run directory never holds (the user's own files)."""
    if not run.path.is_dir():
        return []
    known = run_entries(run)
    return sorted(p.name for p in run.path.iterdir() if p.name not in known and not p.name.startswith("."))


def clear_for_rerun(run: RunDir, *, discard_completed: bool) -> None:
    """`--force`: empty a failed, stopped, killed or half-made run directory (keeping the lock this process
    holds) so the run starts again in place. Refuses anything that is not clearly a honed run."""
    if run.is_empty():
        return
    foreign = foreign_entries(run)
    if foreign or not (run.is_run() or run.run_json.exists()):
        shown = ", ".join(foreign[:5]) or "no config.yaml or run.json"
        raise ConfigError(f"--force: {run.path} is not a honed run directory ({shown}); --force only clears "
                          "a run that `honed train` made: choose another --out or empty the folder yourself")
    status = run.read_run().status if run.run_json.exists() else "unknown"
    if status == "completed" and not discard_completed:
        raise ConfigError(f"--force: {run.path} holds a completed run; add --discard-completed to delete it and "
                          "train again, or choose a new --out to keep it")
    for path in run.path.iterdir():
        if path.name != LOCK_NAME:
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def refuse_existing(run: RunDir) -> ConfigError:
    """The error for an --out that already holds something, saying what it holds and what to pass."""
    where = f"--out {run.path} already exists and"
    if foreign_entries(run) or not (run.is_run() or run.run_json.exists()):
        return ConfigError(f"{where} is not a honed run directory; choose a new --out")
    # This process holds the lock now, so a run.json that still says "running" is a run that was killed.
    status = run.read_run().status if run.run_json.exists() else "unknown"
    latest = run.latest_checkpoint()
    if status == "completed":
        return ConfigError(f"{where} holds a completed run; choose a new --out, or pass --force --discard-completed "
                           "to delete it and train again")
    said = {"failed": "failed", "stopped": "was stopped", "running": "was killed"}.get(status, "was left half-made")
    error = run.read_run().error if run.run_json.exists() else None
    because = f" ({error})" if error else ""
    resume = f"--resume to continue from {_relative(latest, run)}, or " if latest is not None else ""
    return ConfigError(f"{where} holds a run that {said}{because}; pass {resume}--force to start it again from "
                       "scratch in the same folder")


def _relative(path: Path, run: RunDir) -> str:
    return str(path.relative_to(run.path))
