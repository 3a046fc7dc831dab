"""Where a prompted base model's answer ends: the stop a prompting user would set, from the targets' shape.

A fine-tuned model learns to end its answer with the template's end of turn, and is scored exactly as it
is served: an answer that runs on is an answer that runs on. A base model prompted with few-shot examples
(`base`, `few-shot:K`, `few-shot-knn:K`) has never been taught that marker (a base model's turn tokens
may even be untrained, as Gemma's are), so it writes its answer and keeps going; whoever prompts such a
model sets a stop sequence. Comparing the tuned model with a baseline that is given none would make
prompting look worse than it is. So the baselines' answers end where the task's answers do:

- JSON targets (every reference a JSON object or array): after the first complete JSON value;
- one-line targets (no reference holds a line break): at the first line break;
- anything else: the whole output (no rule fits free text).

The cut is recorded (eval/<system>.jsonl keeps the raw output beside it) and `stopped` still says whether
the model stopped by itself, so the table's "unfinished" row shows how often it did not.

>>> rule = answer_end_rule(['{"a": 1}'])
>>> rule, end_answer('{"a": 2} and more text', rule)
('json', '{"a": 2}')
>>> end_answer('billing\\nUser: next', answer_end_rule(["billing", "account"]))
'billing'
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from honed.evaluate.metrics import is_json_task

PROMPTED_KINDS = ("base", "prompting", "retrieval")  # the base model, with or without few-shot examples


def answer_end_rule(references: Sequence[str]) -> str | None:
    """"json", "line", or None (free text: no rule)."""
    if is_json_task(references):
        return "json"
    if references and all("\n" not in r.strip() for r in references):
        return "line"
    return None


def end_answer(output: str, rule: str | None) -> str:
    """`output` cut where `rule` says the answer ends (unchanged when it already ends there)."""
    if rule == "json":
        text = output.lstrip()
        try:
            _, end = json.JSONDecoder().raw_decode(text)
        except ValueError:
            return output
        return text[:end]
    if rule == "line":
        stripped = output.strip()
        return stripped.split("\n", 1)[0].strip() if stripped else output
    return output
