"""LoRA's scale-and-add folded into addmm gives peft's numbers: outputs and every adapter gradient."""

from __future__ import annotations

import pytest
import torch

from honed.config import load_config
from honed.train.build import build_model
from honed.train.lora_fold import fold_lora_scale

from tests.helpers import TINY


def lora_layers(model):
    from peft.tuners.lora import Linear as LoraLinear

    return [m for m in model.modules() if type(m) is LoraLinear]


def outputs_and_grads(model, ids):
    model.zero_grad(set_to_none=True)
    logits = model(input_ids=ids).logits
    logits.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return logits.detach(), grads


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_folded_forward_matches_peft(dropout):
    config = load_config(None, overrides=[f"model={TINY}", "lora.r=4", "lora.alpha=8", f"lora.dropout={dropout}"])
    torch.manual_seed(0)
    model = build_model(config, device="cpu")  # build_model folds every plain LoRA layer
    layers = lora_layers(model)
    assert layers and all("forward" in layer.__dict__ for layer in layers)
    for layer in layers:  # B starts at zero; give it values so the LoRA path counts
        torch.nn.init.normal_(layer.lora_B["default"].weight, std=0.5)
    ids = torch.randint(3, 400, (2, 12))
    torch.manual_seed(1)  # the same dropout masks in both passes
    folded = outputs_and_grads(model, ids)
    for layer in layers:
        del layer.forward  # back to peft's own forward
    torch.manual_seed(1)
    plain = outputs_and_grads(model, ids)
    torch.testing.assert_close(folded[0], plain[0], rtol=1e-5, atol=1e-6)
    assert folded[1].keys() == plain[1].keys() and folded[1]
    for name in plain[1]:
        torch.testing.assert_close(folded[1][name], plain[1][name], rtol=1e-5, atol=1e-6, msg=name)


def test_unusual_layers_keep_peft_forward():
    """A disabled or merged adapter runs peft's own path (the folded one would add LoRA twice or wrongly)."""
    config = load_config(None, overrides=[f"model={TINY}", "lora.r=4", "lora.dropout=0"])
    model = build_model(config, device="cpu")
    model.eval()
    for layer in lora_layers(model):
        torch.nn.init.normal_(layer.lora_B["default"].weight, std=0.5)
    ids = torch.randint(3, 400, (1, 10))
    with torch.no_grad():
        with_lora = model(input_ids=ids).logits
        with model.disable_adapter():
            base = model(input_ids=ids).logits
        model.merge_adapter()
        merged = model(input_ids=ids).logits
        model.unmerge_adapter()
    assert not torch.allclose(with_lora, base)
    torch.testing.assert_close(merged, with_lora, rtol=1e-4, atol=1e-4)


def test_fold_counts_the_layers_it_folds():
    config = load_config(None, overrides=[f"model={TINY}", "lora.r=4"])
    model = build_model(config, device="cpu")
    assert fold_lora_scale(model) == len(lora_layers(model)) > 0
