"""Merged weights and portable adapters: the Hugging Face artifacts of a run.

    save_merged(run, checkpoint="best", target=Path("runs/demo/exports/merged-best"))   (honed.model.merge)
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

from honed.errors import ConfigError
from honed.model.loading import cache_dir
from honed.model.merge import name_end_of_turn_as_eos, save_tokenizer
from honed.runs.rundir import RunDir

# The hub id of each built-in model: what an adapter trained on it names as its base.
BUILTIN_HUB_IDS = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct", "gemma3-270m": "google/gemma-3-270m"}
HUB_CACHE_SNAPSHOT = re.compile(r"models--([^/]+)--([^/]+)/snapshots/[^/]+/?$")


def run_base_spec(run: RunDir) -> str:
    """The model spec the run was trained from, as the user gave it (config.yaml's `model`)."""
    return run.base_model()


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
    from honed.model.run import merged_model
    from honed.model.tokenizers import model_tokenizer

    tokenizer, _ = model_tokenizer(str(folder))
    return merged_model(base_spec, folder, tokenizer), tokenizer
