"""The default learning rate, chosen from the method and the model's width (when `lr` is not set).

The rule is Thinking Machines' fit of the best supervised fine-tuning learning rate across Llama and Qwen
models ("LoRA Without Regret", 2025; tinker-cookbook `hyperparam_utils.get_lr`):

    lr_full = 5e-5 * (2000 / hidden_size) ** P      P = 0.781 for Llama-shaped models, 0.0775 for Qwen
    lr_lora = 10 * lr_full * (32 / lora_alpha)

LoRA's best rate is about 10x full fine-tuning's and, with the alpha / r scaling peft uses, about the same
for every rank; the fit used alpha 32, and LoRA's update grows with alpha, hence the last factor. Narrow
models want larger rates: for SmolLM2-135M (hidden size 576) the rule gives 1.3e-3 for LoRA, where the
old fixed default 2e-4 underfit (the demo data after one epoch: field F1 0.40 at 2e-4, 0.71 at 1e-3;
BENCHMARKS.md). The fit covered models of 1B parameters and up; below, the rule is capped at MAX_LR.
Epochs come from `honed.config.auto_epochs` (OpenAI's documented rule).

>>> round(default_lr("lora", hidden_size=576, model_type="llama", lora_alpha=32), 5)
0.00132
>>> round(default_lr("full", hidden_size=4096, model_type="llama", lora_alpha=32), 7)
2.86e-05
"""

from __future__ import annotations

REFERENCE_LR = 5e-5
REFERENCE_HIDDEN = 2000
LORA_MULTIPLIER = 10.0
REFERENCE_ALPHA = 32.0
EXPONENT_LLAMA = 0.781
EXPONENT_BY_FAMILY = {"qwen2": 0.0775, "qwen2_moe": 0.0775, "qwen3": 0.0775, "qwen3_moe": 0.0775}
MAX_LR = {"lora": 2e-3, "qlora": 2e-3, "full": 2e-4}


def default_lr(method: str, *, hidden_size: int, model_type: str, lora_alpha: float) -> float:
    """The learning rate `honed train` uses when none is given (see the module docstring)."""
    exponent = EXPONENT_BY_FAMILY.get(model_type, EXPONENT_LLAMA)
    lr = REFERENCE_LR * (REFERENCE_HIDDEN / hidden_size) ** exponent
    if method != "full":
        lr *= LORA_MULTIPLIER * REFERENCE_ALPHA / lora_alpha
    return min(lr, MAX_LR[method])
