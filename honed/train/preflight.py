"""Checks a fresh `honed train` makes before it creates the run directory.

Everything that can be known without training is checked here, so a mistake costs seconds and leaves no
half-made folder: the model spec (and that its config loads, hub included), the device options, the run
registry, LoRA target modules against the model's real module names (an empty "meta" model: no weights
are read), `max_length` against the model's context length, `select_by` against the metrics the
evaluations will report, and a task metric without a scorer. (Seeds are range-checked by the config.)
What needs the data rendered (no supervised token) fails right after, and `honed.train.ownership`
removes the folder then.

Usage: `check_before_writing(load_config("run.yaml"), dist=Dist.current(), has_scorer=True)` (reads the
model's config: tests/unit/test_train_loop.py's refusals before anything is written).
"""

from __future__ import annotations

import re
from typing import Any

from honed.config import TrainConfig
from honed.errors import ConfigError
from honed.train.build import quiet_transformers, resolve_device
from honed.train.distributed import Dist

EVAL_METRICS = ("holdout_loss", "holdout_token_accuracy")  # what every holdout evaluation reports


def check_before_writing(config: TrainConfig, *, dist: Dist, has_scorer: bool, score_fn_given: bool = False) -> None:
    """Refuse, before anything is written, every mistake the config alone shows (see the module docstring).
    `score_fn_given`: the caller passed a ready score_fn, which may report any holdout_<name>."""
    from honed.model.loading import resolve
    from honed.runs.registry import check_registry

    resolve(config.model)
    resolve_device(config, dist=dist)
    require_scorer(config, has_scorer=has_scorer)
    check_select_by(config, score_fn_given=score_fn_given)
    check_registry()
    model = empty_model(config.model)
    if model is not None:
        check_context(config, model.config)
        if config.method in ("lora", "qlora") and not config.init_from:
            check_lora_targets(config.lora.target_modules, module_names(model))


def require_scorer(config: TrainConfig, *, has_scorer: bool) -> None:
    """`eval_metric` needs a scoring function from the caller (train does not import the evaluate stage)."""
    if config.eval_metric and not has_scorer:
        raise ConfigError(
            f"eval_metric: {config.eval_metric} is set but no scoring function was given to train(); pass "
            "make_score_fn=score_fn_from_config from the evaluate stage's scorer module (the CLI does), or unset eval_metric"
        )


def check_select_by(config: TrainConfig, *, score_fn_given: bool = False) -> None:
    """`select_by` must name a metric the evaluations report: holdout_loss, holdout_token_accuracy, or, with
    `eval_metric` set, a holdout_<metric> (which one the scorer reports is checked at the first evaluation)."""
    select_by = config.select_by
    if select_by in EVAL_METRICS:
        return
    metric = config.eval_metric
    if (metric or score_fn_given) and select_by.startswith("holdout_"):
        return  # the scorer names its own key (auto picks the metric from the data); checked at step 0
    hint = f" or holdout_<metric> with eval_metric set (now: {metric})" if metric else "; set eval_metric to select by a task metric"
    raise ConfigError(f"select_by: '{select_by}' is not a metric the evaluations report; use "
                      f"{' or '.join(EVAL_METRICS)}{hint}")


def empty_model(spec: str) -> Any | None:
    """The model built from its config on the "meta" device (module names and config, no weights); None
    for a GGUF file, whose config only a full load reads (those are checked when the model loads)."""
    import torch
    from transformers import AutoModelForCausalLM

    from honed.model.loading import local_path, model_config

    if local_path(spec)[1] is not None:
        return None
    config = model_config(spec)
    with torch.device("meta"), quiet_transformers():
        return AutoModelForCausalLM.from_config(config)


def check_context(config: TrainConfig, model_config: Any) -> None:
    """A `max_length` set longer than the model's positions would train on positions it has never seen."""
    context = getattr(model_config, "max_position_embeddings", None)
    # Only a max_length the user chose: the default (1024) is a truncation limit that short data never reaches
    # (and a --from-run child inherits its parent's resolved config, so "was it set" cannot be asked).
    chosen = config.max_length != TrainConfig.model_fields["max_length"].default
    if isinstance(context, int) and config.max_length > context and chosen:
        raise ConfigError(f"max_length: {config.max_length} is longer than {config.model}'s context length "
                          f"({context} tokens); use --max-length {context} or less")


def module_names(model: Any) -> list[str]:
    """Dotted names of the model's linear layers (what LoRA can adapt)."""
    import torch

    return [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]


def check_lora_targets(targets: str | list[str], names: list[str]) -> None:
    """Every `lora.target_modules` entry must match a linear layer, as peft matches them: a list entry by
    the name's last parts, a string (other than all-linear) as a regular expression on the full name."""
    if targets == "all-linear":
        return
    if isinstance(targets, str):
        missing = [] if any(re.fullmatch(targets, n) for n in names) else [targets]
    else:
        missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        layers = sorted({n.rsplit(".", 1)[-1] for n in names})
        raise ConfigError(f"lora.target_modules: {', '.join(missing)} not found in the model; its linear layers "
                          f"are {', '.join(layers)} (or use all-linear)")
