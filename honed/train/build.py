"""Build the pieces of a run from its config: the resolved config, device and precision, the model
(LoRA through peft, full, or QLoRA on a GPU), AdamW and the warmup + decay learning-rate schedule.

Each piece has its own function, so the loop (honed.train.loop) reads as "build, then run":

    device, autocast = resolve_device(config, dist=Dist.current())
    model = build_model(config, device=device, tokenizer=tokenizer, added_tokens=template.added_tokens)
    optimizer, scheduler = build_optimizer(model, config, total_steps=total_steps(config, num_examples=320))

(a model is built: tests/unit/test_train_loop.py trains tiny ones with LoRA and full fine-tuning).
"""

from __future__ import annotations

import math
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import torch

from honed.config import TrainConfig, auto_epochs
from honed.errors import ConfigError
from honed.machine import cpu_has_fast_bf16  # noqa: F401  (re-exported: tests and benchmarks ask it here)
from honed.model.loading import quiet_transformers  # noqa: F401  (re-exported: the loop uses it)
from honed.train.batching import attention_break_even, steps_in_epoch
from honed.train.compile import decoder_layers
from honed.train.distributed import Dist
from honed.train.hparams import default_lr
from honed.train.lora_fold import fold_lora_scale


def resolve_config(config: TrainConfig, *, num_train: int) -> TrainConfig:
    """Fill in what `auto`/None stood for, so config.yaml says exactly what ran."""
    from honed.model.loading import resolve

    source = resolve(config.model)
    model = config.model if (source.builtin or source.is_hub) else str(Path(config.model).resolve())
    data = config.data.model_copy(
        update={
            "train": str(Path(config.data.train).resolve()) if config.data.train else None,
            "holdout": str(Path(config.data.holdout).resolve()) if config.data.holdout else None,
        }
    )
    epochs = auto_epochs(num_train) if config.epochs == "auto" else config.epochs
    return config.model_copy(update={"model": model, "data": data, "epochs": epochs, "lr": auto_lr(config)})


def auto_lr(config: TrainConfig) -> float:
    """The config's lr, or the rule of honed.train.hparams for this method and model width."""
    if config.lr is not None:
        return config.lr
    from honed.model.loading import model_width

    hidden_size, model_type = model_width(config.model)
    return default_lr(config.method, hidden_size=hidden_size, model_type=model_type, lora_alpha=config.lora.alpha)


def total_steps(config: TrainConfig, *, num_examples: int) -> int:
    """Optimizer steps of the run: `epochs` passes of `batch_size` examples, capped by `max_steps`.

    >>> total_steps(TrainConfig(epochs=2, batch_size=4), num_examples=36)
    18
    """
    steps = int(config.epochs) * steps_in_epoch(num_examples, batch_size=config.batch_size)
    return steps if config.max_steps is None else min(steps, config.max_steps)


def resolve_device(config: TrainConfig, *, dist: Dist) -> tuple[str, torch.dtype | None]:
    """(device, autocast dtype or None). bf16 and QLoRA need a CUDA GPU; the error says so on CPU."""
    device = dist.device(config.device)
    use_cuda = device.startswith("cuda")
    if config.method == "qlora" and not use_cuda:
        raise ConfigError(
            "method: qlora needs a CUDA GPU (bitsandbytes 4-bit kernels); on this machine use method: lora"
        )
    if config.precision == "bf16" and not use_cuda and not cpu_has_fast_bf16():
        raise ConfigError(
            "precision: bf16 needs a CUDA GPU or a CPU with AMX / AVX-512 BF16; this CPU has neither "
            "(fp32 is faster here): use precision: auto or fp32"
        )
    if use_cuda:
        bf16 = config.precision in ("auto", "bf16") and torch.cuda.is_bf16_supported()
    else:
        # On CPU, auto stays fp32 (exact, reproducible across machines); bf16 autocast is opt-in. Measured
        # on a 2-core AMX Xeon (bf16 matmuls 6.5x fp32's): whole LoRA steps of smollm2-135m at batch 8 no
        # faster than fp32, holdout loss 1.705 vs 1.679 (BENCHMARKS.md, train_speed_notes).
        bf16 = config.precision == "bf16"
    return device, (torch.bfloat16 if bf16 else None)


def build_model(config: TrainConfig, *, device: str, tokenizer: Any = None, added_tokens: Sequence[str] = ()) -> Any:
    """Base model plus, for LoRA/QLoRA, a peft adapter on `lora.target_modules`; weights in fp32.

    `added_tokens`: special tokens honed added to `tokenizer` for the chat template (ChatML on a base model
    without turn tokens). The embeddings grow to the tokenizer, and those rows are trained: under full
    fine-tuning with everything else, under LoRA through peft's `trainable_token_indices` (only those rows,
    saved in the adapter; the approach of TRL's `clone_chat_template`)."""
    from honed.model.loading import load_model
    from honed.model.run import fit_vocabulary

    full_start = config.init_from if config.method == "full" and config.init_from else config.model
    with quiet_transformers():
        model = _load_4bit(config.model, device=device) if config.method == "qlora" else load_model(full_start, device=device)
        if tokenizer is not None:
            fit_vocabulary(model, tokenizer)
        if config.method == "full":
            model.requires_grad_(True)
            return model
        token_ids = [int(tokenizer.convert_tokens_to_ids(t)) for t in added_tokens] if tokenizer is not None else []
        model = _add_lora(model, config, token_ids=token_ids)
        fold_lora_scale(model)  # the same numbers as peft's forward, a few % faster steps (honed.train.lora_fold)
    if config.init_from:
        _load_adapter(model, Path(config.init_from))
    return model


def attention_length(model: Any) -> int:
    """The packed-row length at which `model`'s attention costs as much as its linear layers
    (`attention_break_even`, from its first decoder layer's parameters and its attention width); 0 when the
    model has no decoder layers to count (packing then keeps its length rule without this)."""
    layers = decoder_layers(model)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    text = base.config.get_text_config()
    heads = getattr(text, "num_attention_heads", 0)
    if not layers or not heads:
        return 0
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return attention_break_even(sum(p.numel() for p in layers[0].parameters()), heads * head_dim)


def _load_adapter(model: Any, folder: Path) -> None:
    """Start LoRA from a parent run's adapter (train --from-run); its rank and target layers must match."""
    from honed.train.checkpoint import load_weights

    if not (folder / "adapter_model.safetensors").is_file():
        raise ConfigError(f"init_from {folder}: no LoRA adapter there (adapter_model.safetensors); continue a LoRA "
                          "run from a LoRA run, or use --method full with a full fine-tuning run")
    try:
        load_weights(model, folder)
    except (AssertionError, RuntimeError) as exc:  # shapes or names differ: another rank or other targets
        raise ConfigError(f"init_from {folder}: the adapter does not fit this run's LoRA settings ({exc}); keep the "
                          "parent's lora.r and lora.target_modules") from None


def _add_lora(model: Any, config: TrainConfig, *, token_ids: Sequence[int] = ()) -> Any:
    """peft's LoRA on the config's target layers; `token_ids`: embedding rows trained as well (new tokens)."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=config.lora.target_modules,
        task_type="CAUSAL_LM",
        trainable_token_indices=list(token_ids) or None,
    )
    try:
        return get_peft_model(model, lora)
    except ValueError as exc:  # peft: "Target modules {...} not found in the base model"
        linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ConfigError(
            f"lora.target_modules: {str(exc).rstrip('.')}; this model's linear layers are {', '.join(linear)} "
            "(or use all-linear)"
        ) from exc


def _load_4bit(spec: str, *, device: str) -> Any:
    """QLoRA base: 4-bit NF4 weights with bf16 compute (bitsandbytes, GPU only)."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise ConfigError("method: qlora needs the bitsandbytes package: pip install bitsandbytes") from exc
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from honed.model.loading import hub_kwargs, local_path, resolve

    path, gguf_file = local_path(spec)
    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch.bfloat16,
        bnb_4bit_use_double_quant=True,
    )
    extra: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {"use_safetensors": True}
    extra.update(hub_kwargs(resolve(spec)))
    model = AutoModelForCausalLM.from_pretrained(
        path, quantization_config=quant, dtype=torch.bfloat16, device_map={"": device}, **extra
    )
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def lr_factor(step_index: int, *, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the base lr for the `step_index`-th optimizer step (0-based): linear warmup, then
    cosine/linear decay towards 0 (never exactly 0 on the last step) or constant.

    >>> [round(lr_factor(i, total_steps=4, warmup_steps=1, schedule="cosine"), 3) for i in range(4)]
    [1.0, 0.854, 0.5, 0.146]
    """
    if step_index < warmup_steps:
        return (step_index + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step_index - warmup_steps + 1) / max(1, total_steps - warmup_steps + 1)
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(model: Any, config: TrainConfig, *, total_steps: int) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW over the trainable parameters and a LambdaLR following `lr_factor`."""
    params = [p for p in model.parameters() if p.requires_grad]
    # fused: one kernel for all parameters instead of a dozen ops per tensor (LoRA has ~400 small ones);
    # measured on 2 shared CPU cores, the per-op thread sync of the unfused step cost up to seconds a step.
    optimizer = torch.optim.AdamW(
        params, lr=config.resolved_lr(), betas=tuple(config.adam_betas), weight_decay=config.weight_decay, fused=True
    )
    warmup = max(1, math.ceil(config.warmup_ratio * total_steps)) if config.warmup_ratio > 0 else 0

    def factor(step_index: int) -> float:
        return lr_factor(step_index, total_steps=total_steps, warmup_steps=warmup, schedule=config.schedule)

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
