"""The default learning rate: Thinking Machines' width rule, LoRA x10, alpha-scaled, capped; a given lr wins."""

from __future__ import annotations

import pytest

from honed.config import load_config
from honed.train.build import resolve_config
from honed.train.hparams import MAX_LR, default_lr

from tests.helpers import TINY


def test_rule_values():
    # SmolLM2-135M: hidden 576, Llama-shaped
    assert default_lr("lora", hidden_size=576, model_type="llama", lora_alpha=32) == pytest.approx(1.322e-3, rel=1e-3)
    assert default_lr("full", hidden_size=576, model_type="llama", lora_alpha=32) == pytest.approx(1.322e-4, rel=1e-3)
    # Llama-3.1-8B (4096): the fit's own range
    assert default_lr("lora", hidden_size=4096, model_type="llama", lora_alpha=32) == pytest.approx(2.85e-4, rel=1e-2)
    # Qwen's width matters far less
    qwen = default_lr("lora", hidden_size=4096, model_type="qwen3", lora_alpha=32)
    assert qwen == pytest.approx(5e-4 * (2000 / 4096) ** 0.0775, rel=1e-9)


def test_alpha_scales_lora_not_full():
    lora_32 = default_lr("lora", hidden_size=2048, model_type="llama", lora_alpha=32)
    assert default_lr("lora", hidden_size=2048, model_type="llama", lora_alpha=64) == pytest.approx(lora_32 / 2)
    assert default_lr("full", hidden_size=2048, model_type="llama", lora_alpha=64) == default_lr(
        "full", hidden_size=2048, model_type="llama", lora_alpha=32
    )


def test_narrow_models_are_capped():
    assert default_lr("lora", hidden_size=32, model_type="llama", lora_alpha=32) == MAX_LR["lora"]
    assert default_lr("full", hidden_size=32, model_type="llama", lora_alpha=32) == MAX_LR["full"]


def test_resolve_config_fills_lr_from_the_model_and_keeps_a_given_one():
    auto = resolve_config(load_config(None, overrides=[f"model={TINY}"]), num_train=50)
    assert auto.lr == MAX_LR["lora"]  # the tiny test model is 32 wide: capped
    given = resolve_config(load_config(None, overrides=[f"model={TINY}", "lr=3e-5"]), num_train=50)
    assert given.lr == 3e-5
