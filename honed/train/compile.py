"""torch.compile of each decoder layer (regional compilation): faster training steps once compiled.

A LoRA step on CPU spends most of its time in matrix products, but about a sixth in elementwise work
between them (RMSNorm, rotary embeddings, SiLU * up, the residual adds, their backward), each a pass over
memory. Inductor fuses those passes into generated C++ (Triton on CUDA). Compiling each decoder layer
rather than the whole model is PyTorch's recommended "regional compilation": every layer has the same
code, so one compiled graph serves them all and compiling costs seconds, not minutes, and the loss head,
packing masks and peft wrappers stay eager. Measured on smollm2-135m (LoRA r=16 on every linear layer,
16 packed banking77 chats, fp32, 2 cores, AVX-512, quiet, alternating with eager in one process):
forward + backward 1.057x faster (6 of 6 rounds), gradients equal to eager within 6e-5 (float
reassociation); compiling took 16-60 s before the first step (BENCHMARKS.md, step_profile).

Layers are compiled in place (`nn.Module.compile`), so parameter names, state dicts and checkpoints do
not change. `dynamic=True`: packed micro-batches differ in length, and one graph serves them all (plus
one for the holdout evaluations under no_grad).

`compile: auto` (the default) compiles a run long enough to win the compile time back: one process, at
least AUTO_MIN_STEPS optimizer steps, LoRA or full fine-tuning, no generation-based task metric during
training (its decoding would recompile for every cache length), and a compiler present (a C++ compiler
on CPU, Triton on CUDA). `on` compiles whenever it can; `off` never. A compile that fails falls back to
eager execution (torch._dynamo's `suppress_errors`), so it can cost time, never the run.

Usage: `compile_plan(config, total_steps=564, world_size=1, task_metric=False, device="cpu")` is
`(True, "...")` on a machine with g++; `compile_layers(model)` then returns how many layers it compiled
(tests/unit/test_train_compile.py checks a compiled tiny model's gradients against eager).
"""

from __future__ import annotations

import importlib.util
import shutil
from typing import Any

from honed.config import TrainConfig

AUTO_MIN_STEPS = 200  # at ~5-8 s a step and ~6% saved, 200 steps win back about a minute of compiling


def compiler_present(device: str) -> bool:
    """Whether inductor can generate code here: Triton on CUDA, a C++ compiler on CPU."""
    if device.startswith("cuda"):
        return importlib.util.find_spec("triton") is not None
    return any(shutil.which(name) for name in ("g++", "c++", "clang++"))


def compile_plan(config: TrainConfig, *, total_steps: int, world_size: int, task_metric: bool,
                 device: str) -> tuple[bool, str]:
    """(compile?, why): what `compile: auto|on|off` means for this run.

    >>> compile_plan(TrainConfig(compile="off"), total_steps=999, world_size=1, task_metric=False, device="cpu")
    (False, 'compile: off')
    >>> compile_plan(TrainConfig(), total_steps=25, world_size=1, task_metric=False, device="cpu")[1]
    'compile: auto and 25 steps (fewer than 200 do not win the compile time back)'
    """
    if config.compile == "off":
        return False, "compile: off"
    if world_size > 1:
        return False, f"compile: {config.compile}, but {world_size} processes train together (not compiled there yet)"
    if config.method == "qlora":
        return False, f"compile: {config.compile}, but qlora's 4-bit layers are not compiled"
    if task_metric:
        return False, f"compile: {config.compile}, but eval_metric decodes during training (every length would recompile)"
    if not compiler_present(device):
        needs = "Triton" if device.startswith("cuda") else "a C++ compiler (g++)"
        return False, f"compile: {config.compile}, but torch.compile needs {needs}, which is not installed"
    if config.compile == "auto" and total_steps < AUTO_MIN_STEPS:
        return False, f"compile: auto and {total_steps} steps (fewer than {AUTO_MIN_STEPS} do not win the compile time back)"
    return True, f"compile: {config.compile}: each decoder layer compiled (torch.compile); the first step waits for it"


def decoder_layers(model: Any) -> list[Any]:
    """The repeated decoder layers of a transformers causal LM, under peft or not."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    return list(layers) if layers is not None else []


def compile_layers(model: Any) -> int:
    """Compile each decoder layer of `model` in place (regional compilation); returns how many."""
    import warnings

    import torch._dynamo

    torch._dynamo.config.suppress_errors = True  # a layer inductor cannot compile runs eagerly instead
    # tracing reads transformers' deprecated `is_gradient_checkpointing`: its FutureWarning would reach the log
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    layers = decoder_layers(model)
    for layer in layers:
        layer.compile(dynamic=True)
    return len(layers)
