"""A training run's model, ready to generate: its base, its checkpoint's weights, its stored template.

Usage: `model, tokenizer = load_run_model(RunDir("runs/demo"), checkpoint="best")`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from honed.model.loading import damaged_weights, load_model, quiet_transformers
from honed.model.tokenizers import run_tokenizer
from honed.runs.rundir import RunDir


def fit_vocabulary(model: Any, tokenizer: Any) -> Any:
    """Grow the model's embeddings to the tokenizer when honed added special tokens to it (ChatML on a base
    model without those tokens); the new rows start at the mean of the others, as transformers' own
    `mean_resizing` does. A model whose vocabulary already covers the tokenizer is left alone."""
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        with quiet_transformers():
            model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    return model


def load_adapter(base: Any, folder: Path, *, adapter_name: str = "default") -> Any:
    """peft's PeftModel for a LoRA folder on `base` (safetensors only), peft's deprecation warning silenced."""
    from peft import PeftModel

    with quiet_transformers():  # also peft's FutureWarning about a deprecated transformers attribute
        return PeftModel.from_pretrained(base, str(folder), adapter_name=adapter_name)


def merged_model(base_spec: str, folder: Path, tokenizer: Any, *, device: str = "cpu", dtype: str = "float32") -> Any:
    """`base_spec`'s model with the LoRA adapter in `folder` merged into its weights (the embeddings grown to
    `tokenizer` first), in eval mode: how a run is evaluated, served alone on its base, and how an exported
    adapter is checked."""
    base = fit_vocabulary(load_model(base_spec, device=device, dtype=dtype), tokenizer)
    return load_adapter(base, folder).merge_and_unload().eval()


def load_run_model(run: RunDir, *, checkpoint: str = "best", device: str = "cpu") -> tuple[Any, Any]:
    """The model and tokenizer of a training run, ready for generation (LoRA merged in).

    LoRA folders are loaded onto the run's base model through peft and merged for fast inference;
    full fine-tuning folders are complete models. Weights come from safetensors only.

    Usage: `model, tokenizer = load_run_model(RunDir("runs/demo"), checkpoint="best")` (needs a trained run:
    tests/unit/test_runs.py and test_monitor.py load tiny ones).
    """
    folder = run.resolve_checkpoint(checkpoint)
    tokenizer, _ = run_tokenizer(run, folder)
    with damaged_weights(folder):
        if (folder / "adapter_config.json").is_file():
            model = merged_model(run.base_model(), folder, tokenizer, device=device)
        else:
            model = load_model(str(folder), device=device).eval()
    return model, tokenizer
