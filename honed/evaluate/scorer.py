"""The task metric during training: a `score_fn(model, tokenizer) -> {"holdout_<metric>": value}` hook.

The training loop calls it at every holdout evaluation; with `select_by: holdout_field_f1_micro` (for example)
the best checkpoint is then chosen by the task metric instead of the loss. It generates answers for a
fixed sample of the holdout (the first `examples` examples, so every evaluation sees the same ones) with
the same batched greedy decoding `honed eval` uses, and scores them with the same metric functions.

Usage: `make_score_fn(holdout, metric="auto", examples=64)(model, tokenizer)` returns e.g.
`{'holdout_field_f1_micro': 0.71}` (it decodes with the model: tests/e2e/test_eval_cli.py's
test_task_metric_during_training_selects_the_checkpoint runs it in training).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from honed.model.prompt import render_prompt
from honed.data.types import Conversation
from honed.errors import ConfigError
from honed.evaluate import metrics as M
from honed.model.decode import default_max_new_tokens, generate

ScoreFn = Callable[[Any, Any], dict[str, float]]


def resolve_metric(metric: str, references: Sequence[str]) -> str:
    """`auto` -> the main metric for these targets; anything else must be a known metric or module:function."""
    if metric == "auto":
        return M.pick_metrics(list(references))[0]
    if metric not in M.KNOWN_METRICS and ":" not in metric:
        raise ConfigError(f"eval_metric: unknown metric {metric!r}; use auto, "
                          f"{', '.join(sorted(M.KNOWN_METRICS))} or module:function")
    return metric


def make_score_fn(
    holdout: Sequence[Conversation], *, metric: str = "auto", examples: int = 64, batch_size: int = 16,
    max_new_tokens: int | None = None,
) -> ScoreFn:
    """A score_fn for the training loop: `metric` on the first `examples` holdout examples.

    The returned key is `holdout_<metric name>`, e.g. `holdout_field_f1_micro`, which `select_by` can name.
    """
    sample = [c for c in holdout if c.last_assistant_index() is not None][:examples]
    if not sample:
        raise ConfigError("eval_metric needs a holdout with assistant answers; give data.holdout or keep the split")
    references = [c.response_text() for c in sample]
    name = resolve_metric(metric, references)
    schema = M.infer_schema(references) if name == "schema_valid" else {}
    corpus = M.CORPUS.get(name)
    per_example = None if corpus is not None else M.resolve_metrics([name], schema=schema)[M.metric_name(name)]
    key = f"holdout_{M.metric_name(name)}"

    def score_fn(model: Any, tokenizer: Any) -> dict[str, float]:
        prompts = [render_prompt(c, tokenizer) for c in sample]
        limit = max_new_tokens or default_max_new_tokens(
            [len(ids) for ids in tokenizer(references, add_special_tokens=False)["input_ids"]]
        )
        outputs = [g.text for g in generate(model, tokenizer, prompts, max_new_tokens=limit, batch_size=batch_size)[0]]
        if corpus is not None:
            return {key: float(corpus(references, outputs))}
        assert per_example is not None
        scores = [M.score_one(name, per_example, r, o, index=i) for i, (r, o) in enumerate(zip(references, outputs))]
        return {key: sum(scores) / len(outputs)}

    return score_fn


def score_fn_from_config(config: Any, holdout: Sequence[Conversation]) -> ScoreFn | None:
    """The training config's task-metric hook (`eval_metric`, `eval_metric_examples`), or None when off.

    >>> from honed.config import load_config
    >>> holdout = [Conversation.from_json({"messages": [{"role": "user", "content": "2+2?"},
    ...                                                 {"role": "assistant", "content": "4"}]})]
    >>> score_fn_from_config(load_config(None), holdout) is None
    True
    >>> score_fn_from_config(load_config(None, overrides=["eval_metric=auto"]), holdout)
    <function make_score_fn.<locals>.score_fn at 0x...>
    """
    metric = getattr(config, "eval_metric", None)
    if not metric:
        return None
    return make_score_fn(holdout, metric=metric, examples=getattr(config, "eval_metric_examples", 64))
