"""Training: read the data, build the pieces from the config, run one explicit loop (`train_step ->
maybe_evaluate -> maybe_save`), and leave a self-describing run directory. Module map: docs/architecture.md.

Usage: `train(load_config("run.yaml"), out="runs/first")` returns a `RunResult` (`load_config` is
honed.config's).
"""

from honed.train.loop import RunResult, train

__all__ = ["RunResult", "train"]
