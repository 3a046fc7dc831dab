"""The options of `honed eval`: one typed object whose fields build the command's flags (honed.options).

>>> EvalSettings(limit=200).metric_names()
[]
>>> EvalSettings(metrics="field_f1, json_valid").metric_names()
['field_f1', 'json_valid']
"""

from __future__ import annotations

from dataclasses import dataclass

from honed.options import option

DEFAULT_RESAMPLES = 2000  # bootstrap resamples of each confidence interval (honed.evaluate.stats)


@dataclass(kw_only=True)
class EvalSettings:
    """What `honed eval` evaluates and how (defaults are the command's)."""

    data: str | None = option(None, "holdout file (default: the run's holdout)")
    limit: int | None = option(None, "evaluate only the first N holdout examples", min=1)
    baselines: str = option(
        "base,few-shot:5",
        "comma-separated: base, few-shot:K, few-shot-knn:K, endpoint:NAME=URL or NAME=URL#MODEL, export:PATH "
        "(or model:PATH), none; the constant majority answer is always added")
    metrics: str | None = option(
        None, "comma-separated metrics or module:function (default: picked from the data; the first is the main one)")
    schema: str | None = option(None, "JSON schema file for schema_valid (default: inferred from the targets)")
    checkpoint: str = option("best", "best, final, last or checkpoints/step-N")
    batch_size: int = option(16, "prompts decoded together", min=1)
    max_new_tokens: int | None = option(None, "default: from the longest target", min=1)
    seed: int = option(0, "seed of the few-shot choice and the bootstrap")
    resamples: int = option(DEFAULT_RESAMPLES, "bootstrap resamples of each confidence interval", min=100)
    threads: int | None = option(None, "CPU threads for torch (default: the usable cores, see docs/train.md)", min=1)
    constrain: str | None = option(
        None, "also decode every system constrained: labels (one of the training labels) or json (a JSON object; "
        "with --schema, one matching it); adds tuned+labels, base+labels, ... to the table")

    def metric_names(self) -> list[str]:
        """--metrics as a list (empty: pick from the data)."""
        return [m.strip() for m in (self.metrics or "").split(",") if m.strip()]
