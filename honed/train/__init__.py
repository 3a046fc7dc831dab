"""Training: batching and packing, supervised-only chunked loss, the fit loop, checkpoints, guards.

>>> from honed.train import train  # doctest: +SKIP
>>> result = train(config, out="runs/first")  # doctest: +SKIP
"""

from honed.train.loop import RunResult, train

__all__ = ["RunResult", "train"]
