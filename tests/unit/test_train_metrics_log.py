"""Progress of the optimizer steps: plain lines when the console is not a terminal; metrics.jsonl."""

from __future__ import annotations

import io
import json
import re
import time

from rich.console import Console

from honed.train.metrics_log import MetricsLog, TrainProgress


class Clock:
    """A clock the test advances by hand (seconds)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_log_file_gets_plain_lines_at_least_every_interval():
    out, clock = io.StringIO(), Clock()
    console = Console(file=out, width=200)  # a file, not a terminal: no bar, no escape codes
    assert not console.is_terminal
    with TrainProgress(console, total=10, start_step=0, interval_s=5, clock=clock) as progress:
        for step in range(1, 11):
            clock.now += 2  # 2 s a step: a line at step 1, then every 3rd step (6 s >= 5 s), and the last
            progress.update(step, loss=1.0 / step, tokens_per_s=500.0)
    lines = out.getvalue().splitlines()
    assert [int(re.match(r"step (\d+)/10 ", line).group(1)) for line in lines] == [1, 4, 7, 10]
    assert lines[1] == "step 4/10  loss 0.2500  500 tok/s  elapsed 0:00:08  eta 0:00:12"
    assert lines[-1].endswith("elapsed 0:00:20  eta 0:00:00")
    assert "\x1b[" not in out.getvalue() and "━" not in out.getvalue()


def test_a_resumed_run_counts_the_eta_from_where_it_started():
    out, clock = io.StringIO(), Clock()
    with TrainProgress(Console(file=out), total=10, start_step=6, interval_s=30, clock=clock) as progress:
        clock.now += 4
        progress.update(7, loss=0.5, tokens_per_s=10.0)
    assert out.getvalue().strip() == "step 7/10  loss 0.5000  10 tok/s  elapsed 0:00:04  eta 0:00:12"


def test_other_ranks_print_nothing():
    out = io.StringIO()
    with TrainProgress(Console(file=out), total=3, start_step=0, enabled=False, interval_s=0) as progress:
        for step in (1, 2, 3):
            progress.update(step, loss=1.0, tokens_per_s=1.0)
    assert out.getvalue() == ""


def test_a_terminal_gets_the_rich_bar_instead():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    with TrainProgress(console, total=2, start_step=0, interval_s=0) as progress:
        progress.update(1, loss=1.0, tokens_per_s=1.0)
        progress.update(2, loss=0.5, tokens_per_s=1.0)
    assert "step 2/2" in out.getvalue() and "elapsed" not in out.getvalue()


def test_truncate_after_drops_later_and_torn_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0}\n{"step": 1, "loss": 2}\n{"step": 2, "loss": 1}\n{"step": 3, "lo')
    log = MetricsLog(path, enabled=True)
    log.truncate_after(1)
    log.write({"step": 2, "loss": 0.5})
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {"step": 0}, {"step": 1, "loss": 2}, {"step": 2, "loss": 0.5}
    ]


def test_a_long_step_or_evaluation_gets_heartbeat_lines_saying_what_runs():
    out, clock = io.StringIO(), Clock()
    with TrainProgress(Console(file=out, width=200), total=4, start_step=0, interval_s=30, clock=clock,
                       heartbeat_s=None) as progress:
        clock.now += 40
        progress.update(1, loss=1.0, tokens_per_s=1.0)  # the first step's line
        clock.now += 31
        progress.beat()  # step 2 has been running for 31 s: a heartbeat
        clock.now += 10
        progress.beat()  # 10 s after the heartbeat: nothing
        with progress.phase("evaluating the holdout"):
            clock.now += 30
            progress.beat()
    lines = out.getvalue().splitlines()
    assert lines[1:] == ["... still training step 2/4 (elapsed 0:01:11)",
                         "... still evaluating the holdout (elapsed 0:01:51)"]


def test_the_heartbeat_thread_speaks_when_the_loop_is_quiet():
    out = io.StringIO()
    with TrainProgress(Console(file=out), total=3, start_step=0, interval_s=0.05, heartbeat_s=0.01) as progress:
        with progress.phase("saving the checkpoint of step 1"):
            time.sleep(0.3)
    assert "... still saving the checkpoint of step 1" in out.getvalue()
