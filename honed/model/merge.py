"""Merging a run's LoRA adapter into its base: the merged Hugging Face folder `honed export --to merged` ships
and `honed train --merge` writes (one implementation, in the model layer, so train need not import export).

    save_merged(run, checkpoint="best", target=Path("runs/demo/exports/merged-best"), dtype=base_dtype(spec))
      -> config.json (dtype of the base), model.safetensors, tokenizer + chat template, generation_config.json

A merged folder loads with plain `transformers.AutoModelForCausalLM.from_pretrained(folder)` and stops at the
chat template's end-of-turn token, because the tokenizer's eos, config.json's and generation_config.json name it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from honed.atomic import atomic_folder
from honed.model.loading import local_path, quiet_transformers
from honed.model.run import load_run_model
from honed.runs.rundir import RunDir

DTYPES = ("float32", "bfloat16", "float16")


def base_dtype(spec: str) -> str:
    """The dtype the base model's weights are stored in (its config), float32 for a GGUF or when unknown.

    >>> base_dtype("tests/assets/tiny-llama")
    'float32'
    """
    from transformers import AutoConfig

    path, gguf_file = local_path(spec)
    if gguf_file is not None:
        return "float32"  # transformers dequantizes a GGUF to float32
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError):
        return "float32"
    dtype = str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float32")
    dtype = dtype.removeprefix("torch.")
    return dtype if dtype in DTYPES else "float32"


def _set_generation_config(model: Any, tokenizer: Any) -> None:
    """Name the chat template's end-of-turn token as eos, so plain `generate` stops where honed's does."""
    from honed.model.decode import pad_token_id, stops_for

    stops = stops_for(tokenizer, model)
    ids = stops.id_list
    model.generation_config.eos_token_id = ids if len(ids) > 1 else ids[0]
    model.generation_config.pad_token_id = pad_token_id(tokenizer, stops)
    model.config.eos_token_id = ids[0]


def write_merged(run: RunDir, *, checkpoint: str, folder: Path, dtype: str) -> None:
    """Base + adapter merged (or a full fine-tune's weights) in `dtype`, with tokenizer, chat template and
    generation config, written into the existing `folder`."""
    import torch

    model, tokenizer = load_run_model(run, checkpoint=checkpoint)
    model = model.to(getattr(torch, dtype))
    name_end_of_turn_as_eos(tokenizer)
    _set_generation_config(model, tokenizer)
    with quiet_transformers():  # no "Writing model shards" bar in honed's output
        model.save_pretrained(folder, safe_serialization=True)
    save_tokenizer(run, tokenizer, folder)


def name_end_of_turn_as_eos(tokenizer: Any) -> None:
    """Make the tokenizer's eos the end of turn (when it is one token), so every runtime that reads an
    export's eos (llama.cpp's converter writes it into the GGUF, Ollama, plain transformers) stops where the
    model was trained to: a Llama-3 or Gemma base's eos (`<|end_of_text|>`, `<eos>`) never comes after an
    answer. A multi-token end of turn cannot be an eos; the Modelfile and honed's engines stop on its text."""
    from honed.model.decode import stops_for

    stops = stops_for(tokenizer)
    if stops.end_of_turn_id is not None and stops.end_of_turn_id != tokenizer.eos_token_id:
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(stops.end_of_turn_id)


# Tokenizer files transformers 5 does not write back after loading, which llama.cpp's converter needs for
# sentencepiece families (Gemma, Phi-3, Mistral): copied from the base model's folder when it has them.
BASE_TOKENIZER_FILES = ("tokenizer.model", "tokenizer.model.v3", "tekken.json")


def save_tokenizer(run: RunDir, tokenizer: Any, folder: Path) -> None:
    """The tokenizer with the run's template, plus the base's sentencepiece files and the added-token types
    (tokenizer_config's `added_tokens_decoder`) that llama.cpp's converter reads."""
    from honed.model.builtins import record_added_tokens

    tokenizer.save_pretrained(folder)
    base_dir = Path(local_path(run.base_model())[0])
    for name in BASE_TOKENIZER_FILES:
        if (base_dir / name).is_file() and not (folder / name).exists():
            shutil.copy2(base_dir / name, folder / name)
    if (folder / "tokenizer.json").is_file():
        record_added_tokens(folder)


def save_merged(run: RunDir, *, checkpoint: str, target: Path, dtype: str) -> Path:
    """`write_merged` to `target`, written whole or not at all (what train's --merge needs too).

    Usage: `save_merged(RunDir("runs/demo"), checkpoint="best", target=Path("out/merged"), dtype="float32")`
    (needs a trained run: tests/e2e/test_export_cli.py loads the merged folder with plain transformers).
    """
    with atomic_folder(target) as tmp:
        write_merged(run, checkpoint=checkpoint, folder=tmp, dtype=dtype)
    return target
