"""The options of `honed monitor` and `honed data from-traffic`: typed objects whose fields build the flags.

>>> MonitorSettings(traffic="runs/demo/requests.jsonl").window
'auto'
>>> FromTrafficSettings(log="runs/demo/requests.jsonl", out="new.jsonl").uncertain is None
True
"""

from __future__ import annotations

from dataclasses import dataclass

from honed.options import REQUIRED, argument, option

DEFAULT_ALPHA = 0.01  # drift test level: a window drifts when p < alpha
DEFAULT_PERMUTATIONS = 200  # permutations of the drift test


@dataclass(kw_only=True)
class MonitorSettings:
    """What `honed monitor` compares: the traffic, its windows, the drift test and the output checks."""

    traffic: str | None = option(None, "request log of `honed serve` (RUN/requests.jsonl) or any data file")
    window: str = option("auto", "auto, all, a duration (30m, 6h, 1d, 1w) or a request count (200)")
    alpha: float = option(DEFAULT_ALPHA, "drift test level: a window drifts when p < alpha", min=1e-6, max=0.5)
    permutations: int = option(DEFAULT_PERMUTATIONS, "permutations of the drift test", min=20)
    max_reference: int = option(1000, "training prompts sampled as the reference", min=10)
    min_window: int = option(20, "fewer prompts than this in a window: no drift test for it", min=2)
    embed_model: str | None = option(None, "model that embeds prompts (default: the run's tuned model)")
    schema: str | None = option(None, "JSON schema file the outputs must match (JSON tasks)")
    checkpoint: str = option("best", "best, final, last or checkpoints/step-N")
    seed: int = option(0, "seed of the reference sample, the permutations and the bootstrap")
    shown: int = option(5, "least-like prompts listed per window", min=0)


@dataclass(kw_only=True)
class FromTrafficSettings:
    """What `honed data from-traffic` turns into drafts."""

    log: str = argument("the request log of `honed serve` (RUN/requests.jsonl)")
    out: str = option(REQUIRED, "drafts file to write (chat JSONL)")
    run: str | None = option(None, "dedupe against this run's training data (default: the run the log names)")
    since: str | None = option(None, "only requests at or after this ISO date/time")
    uncertain: int | None = option(None, "keep the N requests the model was least sure of", min=1)
    draft_with: str | None = option(None, "endpoint:URL[#model]: a teacher model drafts the answers")
    force: bool = option(False, "replace --out if it exists")
