"""Merged weights and portable adapters: the Hugging Face artifacts of a run.

    save_merged(run, checkpoint="best", target=Path("runs/demo/exports/merged-best"))
      -> config.json (dtype of the base), model.safetensors, tokenizer + chat template, generation_config.json
    write_adapter(run, checkpoint="best", folder=..., base_name="HuggingFaceTB/SmolLM2-135M-Instruct")
      -> adapter_config.json (base_model_name_or_path = base_name), adapter_model.safetensors, tokenizer

A merged folder loads with plain `transformers.AutoModelForCausalLM.from_pretrained(folder)` and stops
at the chat template's end-of-turn token, because the tokenizer's eos, config.json's and generation_config.json
name it (and llama.cpp's converter copies the tokenizer's eos into a GGUF).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from honed.atomic import atomic_folder
from honed.errors import ConfigError
from honed.model.loading import cache_dir, local_path, quiet_transformers
from honed.model.run import load_run_model
from honed.runs.rundir import RunDir

# The hub id of each built-in model: what an adapter trained on it names as its base.
BUILTIN_HUB_IDS = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct", "gemma3-270m": "google/gemma-3-270m"}
DTYPES = ("float32", "bfloat16", "float16")
HUB_CACHE_SNAPSHOT = re.compile(r"models--([^/]+)--([^/]+)/snapshots/[^/]+/?$")


def run_base_spec(run: RunDir) -> str:
    """The model spec the run was trained from, as the user gave it (config.yaml's `model`)."""
    return run.base_model()


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


def portable_base_name(spec: str) -> str:
    """How a user elsewhere names the base: the hub id for a built-in or a hub model (also when it sits in
    the Hugging Face cache), else the local path as given, made absolute; never honed's cache.

    >>> portable_base_name("smollm2-135m")
    'HuggingFaceTB/SmolLM2-135M-Instruct'
    >>> portable_base_name("/home/me/.cache/huggingface/hub/models--org--name/snapshots/abc123")
    'org/name'
    """
    if spec in BUILTIN_HUB_IDS:
        return BUILTIN_HUB_IDS[spec]
    match = HUB_CACHE_SNAPSHOT.search(spec)
    if match:
        return f"{match.group(1)}/{match.group(2)}"
    path = Path(spec).expanduser()
    if path.exists():
        absolute = path.resolve()
        for alias, hub_id in BUILTIN_HUB_IDS.items():  # a user who passed honed's converted copy
            if absolute == (cache_dir() / "models" / alias).resolve():
                return hub_id
        return str(absolute)
    return spec  # a hub id


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


def require_adapter(run: RunDir, *, checkpoint: str) -> Path:
    """The checkpoint folder holding a LoRA adapter, or a ConfigError for a full fine-tune."""
    folder = run.resolve_checkpoint(checkpoint)
    if not (folder / "adapter_config.json").is_file():
        raise ConfigError(f"{folder}: the run fine-tuned all weights (no LoRA adapter to export); "
                          "use --to merged or --to gguf")
    return folder


def write_adapter(run: RunDir, *, checkpoint: str, folder: Path, base_name: str) -> None:
    """The LoRA adapter, with `base_model_name_or_path` set to `base_name`, and the tokenizer, written into
    the existing `folder`.

    Usage: `write_adapter(RunDir("runs/demo"), checkpoint="best", folder=Path("out/adapter"),
    base_name="HuggingFaceTB/SmolLM2-135M-Instruct")` (needs a trained run: tests/e2e/test_export_cli.py's
    test_adapter_names_its_base_portably).
    """
    from honed.model.tokenizers import run_tokenizer

    source = require_adapter(run, checkpoint=checkpoint)
    config = json.loads((source / "adapter_config.json").read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base_name
    tokenizer, _ = run_tokenizer(run, source)
    name_end_of_turn_as_eos(tokenizer)
    shutil.copy2(source / "adapter_model.safetensors", folder / "adapter_model.safetensors")
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    save_tokenizer(run, tokenizer, folder)


def load_adapter_model(folder: Path, *, base_spec: str) -> tuple[Any, Any]:
    """An exported adapter on its base (loaded from `base_spec`, this machine's copy), merged, ready to
    generate: what a user of the adapter gets."""
    from honed.model.loading import load_model
    from honed.model.run import fit_vocabulary, load_adapter
    from honed.model.tokenizers import model_tokenizer

    tokenizer, _ = model_tokenizer(str(folder))
    model = load_adapter(fit_vocabulary(load_model(base_spec), tokenizer), folder).merge_and_unload()
    model.eval()
    return model, tokenizer
