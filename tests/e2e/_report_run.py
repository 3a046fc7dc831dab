"""A real evaluated run of the tiny model, made through the CLI, for the report's tests.

Its own run, not the shared `trained_run`: 4 steps with a holdout evaluation every 2, so the report's
curves have several points.
"""

from __future__ import annotations

from pathlib import Path

from tests.helpers import DATA, ROOT, TINY, cli

FAST = ["--set", "num_threads=1", "--set", "batch_size=8", "--set", "max_length=256", "--max-steps", "4",
        "--set", "eval_every=2"]


def train_and_eval(out: Path, *extra: str, limit: int = 10, eval_extra: tuple[str, ...] = ()) -> tuple[str, str]:
    """Train 4 steps and evaluate `limit` examples with base and 1-shot; returns both commands' output."""
    trained = cli("train", "--data", DATA, "--model", TINY, "--out", str(out), *FAST, *extra)
    assert trained.exit_code == 0, trained.output
    evaluated = cli("eval", str(out), "--limit", str(limit), "--baselines", "base,few-shot:1", "--batch-size", "5",
                    "--threads", "1", *eval_extra)
    assert evaluated.exit_code == 0, evaluated.output
    return trained.output, evaluated.output
