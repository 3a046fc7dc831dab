"""LoRA's scale-and-add folded into one matrix multiply (a training speed-up, same numbers).

peft computes a LoRA layer as `base(x) + lora_B(lora_A(dropout(x))) * scaling`: after the two small
matmuls come two elementwise passes over the whole [tokens x out_features] output (the multiply by
`scaling`, then the add), and two more in the backward pass. `torch.addmm(base_out, h, B.T, alpha=scaling)`
does the same sum inside the second matmul (BLAS's C = beta*C + alpha*A@B), so those passes disappear;
its backward scales only the small [tokens x r] gradient. On smollm2-135m (LoRA r=16 on every linear layer,
CPU fp32, AVX2) a step's forward and backward got ~3% faster, with bit-identical gradients (BENCHMARKS.md).

Only plain LoRA takes the folded path: one active adapter, not merged, no DoRA or other variant, no
LoRA bias, no per-request adapter names. Anything else runs peft's own forward, unchanged.

Usage: `fold_lora_scale(model)` on a peft model returns how many layers it folded, e.g. 210 on smollm2-135m
with every linear layer targeted (tests/unit/test_lora_fold.py checks the folded forward against peft's).
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F


def fold_lora_scale(model: torch.nn.Module) -> int:
    """Give every peft LoRA Linear layer of `model` the folded forward; returns how many layers got it."""
    from peft.tuners.lora import Linear as LoraLinear

    count = 0
    for module in model.modules():
        if type(module) is LoraLinear:  # subclasses (quantised layers) keep their own forward
            module.forward = types.MethodType(_folded_forward, module)
            count += 1
    return count


def _plain_lora(layer: Any, kwargs: dict[str, Any]) -> str | None:
    """The active adapter's name when `layer` is plain, unmerged, single-adapter LoRA; else None."""
    if layer.disable_adapters or layer.merged or kwargs or len(layer.active_adapters) != 1:
        return None
    name = layer.active_adapters[0]
    if name not in layer.lora_A or name in layer.lora_variant or layer.lora_B[name].bias is not None:
        return None
    return name


def _folded_forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    name = _plain_lora(self, kwargs)
    if name is None or args:
        return type(self).forward(self, x, *args, **kwargs)
    result = self.base_layer(x)
    lora_a, lora_b = self.lora_A[name], self.lora_B[name]
    hidden = F.linear(self.lora_dropout[name](self._cast_input_dtype(x, lora_a.weight.dtype)), lora_a.weight)
    rows = result.reshape(-1, result.shape[-1])
    folded = torch.addmm(rows, hidden.reshape(-1, hidden.shape[-1]).to(rows.dtype), lora_b.weight.t().to(rows.dtype),
                         alpha=self.scaling[name])
    return folded.view(result.shape)
