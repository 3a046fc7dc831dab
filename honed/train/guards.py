"""Guards against silent training failure.

Before training: refuse data without a single supervised token, report truncation, show which tokens of
the first example are trained on. During training: stop on a NaN/inf loss, warn when gradients stay zero
or the loss does not move.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Sequence

from honed.data.render import Rendered
from honed.errors import DataError, HonedError

ZERO_GRAD_STEPS = 3
FLAT_LOSS_STEPS = 20
FLAT_LOSS_TOLERANCE = 1e-6
HOLDOUT_STILL_TOLERANCE = 1e-5


@dataclass(frozen=True)
class DataSummary:
    """What rendering did to the training set, reported before training."""

    examples: int
    truncated: int
    emptied_by_truncation: int
    without_targets: int
    supervised_tokens: int
    tokens: int

    def lines(self, *, max_length: int) -> list[str]:
        out = [
            f"{self.examples} examples, {self.tokens} tokens, {self.supervised_tokens} supervised "
            f"({100 * self.supervised_tokens / max(1, self.tokens):.1f}%)"
        ]
        if self.truncated:
            out.append(f"{self.truncated} example(s) longer than max_length {max_length} were truncated")
        if self.emptied_by_truncation:
            out.append(
                f"{self.emptied_by_truncation} of them lost every supervised token and are skipped; "
                "raise --max-length to keep them"
            )
        if self.without_targets - self.emptied_by_truncation > 0:
            out.append(f"{self.without_targets - self.emptied_by_truncation} example(s) have no trained turn and are skipped")
        return out


def summarise(rendered: Sequence[Rendered]) -> DataSummary:
    without = [r for r in rendered if sum(r.loss_mask[1:]) == 0]
    return DataSummary(
        examples=len(rendered),
        truncated=sum(r.truncated for r in rendered),
        emptied_by_truncation=sum(r.truncated for r in without),
        without_targets=len(without),
        supervised_tokens=sum(sum(r.loss_mask[1:]) for r in rendered),
        tokens=sum(len(r.input_ids) for r in rendered),
    )


def require_targets(summary: DataSummary, *, path: str, max_length: int) -> None:
    """Refuse to train when no example has a single supervised token."""
    if summary.supervised_tokens > 0:
        return
    hint = (
        f"all {summary.truncated} truncated examples lost their answers: raise --max-length (now {max_length})"
        if summary.emptied_by_truncation
        else "every example needs an assistant turn with weight != 0"
    )
    raise DataError(f"{path}: no example has a supervised token, so there is nothing to train on; {hint}")


STOP_SAMPLE = 64  # trained examples whose decoded supervised text is searched for the end of turn


def require_end_of_turn(rendered: Sequence[Rendered], ends: Sequence[str], tokenizer: Any, *, path: str) -> None:
    """Refuse to train when each example's end (`ends`: the template's end of turn, the eos for plain text)
    is in none of the first trained examples' supervised tokens: the model could never learn to stop
    (`honed data check` counts this over every example)."""
    from honed.data.render import trains_end_of_turn

    sample = [(r, end) for r, end in zip(rendered, ends) if sum(r.loss_mask[1:]) > 0 and not r.truncated and end]
    sample = sample[:STOP_SAMPLE]
    if not sample or any(trains_end_of_turn(r, tokenizer, end) for r, end in sample):
        return
    raise DataError(f"{path}: the end of turn {sample[0][1]!r} is in none of the first {len(sample)} examples' trained "
                    "tokens, so the model could never learn to stop; pass --chat-template with a template that "
                    "writes it inside the assistant turn (`honed data check` shows the mask)")


def mask_preview(rendered: Rendered, tokenizer: Any, *, max_chars: int = 1200) -> str:
    """Rich markup of one example: trained-on text in green between «», the rest dimmed.

    Usage: `console.print(mask_preview(rendered, tokenizer))` (decodes with the tokenizer:
    tests/unit/test_train_guards.py's test_mask_preview_marks_exactly_the_trained_text).
    """
    from rich.markup import escape

    pieces: list[str] = []
    shown = 0
    start = 0
    ids, mask = rendered.input_ids, rendered.loss_mask
    for t in range(1, len(ids) + 1):
        if t < len(ids) and mask[t] == mask[start]:
            continue
        text = tokenizer.decode(ids[start:t])[: max_chars - shown]
        shown += len(text)
        pieces.append(f"[bold green]«{escape(text)}»[/]" if mask[start] else f"[dim]{escape(text)}[/]")
        start = t
        if shown >= max_chars:
            pieces.append(" ...")
            break
    return "".join(pieces)


@dataclass
class Watchdog:
    """Watches each step's loss and gradient norm; returns warnings, raises on NaN/inf."""

    lr: float
    zero_grad_streak: int = 0
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=FLAT_LOSS_STEPS))
    warned_flat: bool = False
    warned_still_holdout: bool = False

    def check(self, *, step: int, loss: float, grad_norm: float) -> list[str]:
        if not math.isfinite(loss) or not math.isfinite(grad_norm):
            what = "loss" if not math.isfinite(loss) else "gradient norm"
            raise HonedError(
                f"{what} became {loss if what == 'loss' else grad_norm} at step {step}; training stopped. "
                f"Lower the learning rate (now {self.lr:g}) with --lr, keep grad_clip on, use precision fp32, "
                "and check the data for empty or garbled targets"
            )
        warnings: list[str] = []
        self.zero_grad_streak = self.zero_grad_streak + 1 if grad_norm == 0.0 else 0
        if self.zero_grad_streak == ZERO_GRAD_STEPS:
            warnings.append(
                f"gradients have been zero for {ZERO_GRAD_STEPS} steps (step {step}): nothing is learning; "
                "check that the trainable parameters are connected (LoRA target_modules) and the lr is not 0"
            )
        self.recent.append(loss)
        if len(self.recent) == FLAT_LOSS_STEPS and not self.warned_flat:
            if max(self.recent) - min(self.recent) <= FLAT_LOSS_TOLERANCE * max(1.0, abs(loss)):
                self.warned_flat = True
                warnings.append(
                    f"the loss has not moved for {FLAT_LOSS_STEPS} steps (stuck at {loss:.6f}, step {step}): "
                    "check the learning rate and that the model's weights are trainable"
                )
        return warnings

    def check_eval(self, *, step: int, before: float | None, now: float | None) -> list[str]:
        """Warn once when the holdout loss is where it was before training (a fixed set, so a clean signal)."""
        if before is None or now is None or self.warned_still_holdout:
            return []
        if abs(now - before) > HOLDOUT_STILL_TOLERANCE * max(1.0, abs(before)):
            return []
        self.warned_still_holdout = True
        return [
            f"the holdout loss has not moved since training started ({before:.6f} -> {now:.6f} at step {step}): "
            f"the learning rate ({self.lr:g}) may be far too low, or the trained weights are not used"
        ]
