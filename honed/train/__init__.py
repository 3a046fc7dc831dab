"""Training: read data, build the pieces from the config, run one explicit loop.

    data.py         read the train/holdout files, split a holdout off, render examples
    build.py        resolved config, device and precision, model (LoRA/full/QLoRA), optimizer + schedule
    batching.py     step order from (seed, epoch), micro-batches, packing
    loss.py         supervised-only, chunked loss (the full logits tensor is never built)
    guards.py       data guards before training, NaN/zero-gradient/flat-loss watchdog during it
    evaluator.py    holdout loss/accuracy + task-metric hook; when to evaluate, best step, early stop
    checkpoint.py   atomic checkpoints, exact resume; the Checkpointer (when to save, pruning, final/)
    metrics_log.py  metrics.jsonl and console progress (rich bar, or plain lines in a log)
    distributed.py  Dist (rank/device), torchrun launch, gradient sum, FSDP2
    loop.py         the run's life cycle and the loop: train_step -> maybe_evaluate -> maybe_save

>>> from honed.train import train  # doctest: +SKIP
>>> result = train(config, out="runs/first")  # doctest: +SKIP
"""

from honed.train.loop import RunResult, train

__all__ = ["RunResult", "train"]
