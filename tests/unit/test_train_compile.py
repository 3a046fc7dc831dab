"""honed.train.compile: which runs compile, and a compiled model's gradients equal eager's."""

from __future__ import annotations

import copy

import pytest
import torch

from honed.config import TrainConfig
from honed.train.compile import AUTO_MIN_STEPS, compile_layers, compile_plan, compiler_present, decoder_layers
from honed.train.batching import Example, micro_batches
from honed.train.loss import loss_sum


def plan(config: TrainConfig, **changes) -> bool:
    settings = {"total_steps": AUTO_MIN_STEPS, "world_size": 1, "task_metric": False, "device": "cpu", **changes}
    return compile_plan(config, **settings)[0]


@pytest.mark.skipif(not compiler_present("cpu"), reason="no C++ compiler for inductor here")
def test_auto_compiles_only_long_single_process_runs_without_a_decoding_metric() -> None:
    auto = TrainConfig()
    assert plan(auto) and not plan(auto, total_steps=AUTO_MIN_STEPS - 1)
    assert not plan(auto, world_size=2) and not plan(auto, task_metric=True)
    assert plan(TrainConfig(compile="on"), total_steps=3) and not plan(TrainConfig(compile="off"))
    assert not plan(TrainConfig(method="qlora"))


def test_without_a_compiler_the_run_says_so_and_stays_eager(monkeypatch) -> None:
    monkeypatch.setattr("honed.train.compile.shutil.which", lambda name: None)
    compiling, why = compile_plan(TrainConfig(compile="on"), total_steps=500, world_size=1, task_metric=False,
                                  device="cpu")
    assert not compiling and "C++ compiler" in why


@pytest.mark.skipif(not compiler_present("cpu"), reason="no C++ compiler for inductor here")
def test_compiled_layers_give_eager_gradients_and_keep_parameter_names(tiny_model) -> None:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    eager = get_peft_model(copy.deepcopy(tiny_model), LoraConfig(r=4, target_modules="all-linear"))
    for name, p in eager.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)  # B starts at zero: make the adapter count in the gradients
    compiled = copy.deepcopy(eager)
    names = [n for n, _ in compiled.named_parameters()]
    assert compile_layers(compiled) == len(decoder_layers(compiled)) > 0
    assert [n for n, _ in compiled.named_parameters()] == names  # checkpoints keep their keys
    examples = [Example(i, list(range(5 + i, 25 + 3 * i)), [False] * 8 + [True] * (12 + 2 * i)) for i in range(3)]
    for batch in micro_batches(examples, max_tokens=64, packing=True, row_capacity=40):  # two lengths: one graph
        for model in (eager, compiled):
            loss_sum(model, batch).backward()
    from torch._dynamo.utils import counters

    assert counters["stats"]["unique_graphs"] >= 1  # really compiled, not eager after a suppressed error
    grads = {n: p.grad for n, p in eager.named_parameters() if p.requires_grad}
    for name, p in compiled.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, grads[name], rtol=1e-4, atol=1e-5)
