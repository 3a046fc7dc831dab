"""Training: read the data, build the pieces from the config, run one explicit loop (`train_step ->
maybe_evaluate -> maybe_save`), and leave a self-describing run directory. Module map: docs/architecture.md.

>>> from honed.train import train  # doctest: +SKIP
>>> result = train(config, out="runs/first")  # doctest: +SKIP
"""

from honed.train.loop import RunResult, train

__all__ = ["RunResult", "train"]
