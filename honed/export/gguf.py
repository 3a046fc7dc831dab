"""GGUF export with llama.cpp's own converter and quantiser, and an Ollama Modelfile.

    convert_to_gguf(merged_dir, out / "model-q8_0.gguf", quant="q8_0")

f16 and q8_0 come straight from `convert_hf_to_gguf.py` (pure Python, see honed.export.tools).
q4_k_m needs llama.cpp's k-quant quantiser, which no pure-Python package provides (gguf 0.19's numpy
quants can dequantize Q4_K/Q6_K but not quantize them), so it uses the compiled library of
`llama-cpp-python` (`llama_model_quantize`) on an f32 conversion; without it q4_k_m is refused up front.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from honed.errors import ConfigError, ModelError
from honed.export.tools import INSTALL_HINT, LLAMA_CPP_PYTHON, converter_dir

QUANTS = ("f16", "q8_0", "q4_k_m")
DEFAULT_QUANT = "q8_0"
LLAMA_FTYPE_MOSTLY_Q4_K_M = 15  # llama.h: enum llama_ftype


def has_llama_cpp() -> bool:
    """True when the compiled llama.cpp bindings (`llama_cpp`) are installed."""
    return importlib.util.find_spec("llama_cpp") is not None


def check_quant(quant: str) -> None:
    """Refuse, before any work, a quant type that is unknown or cannot be produced on this machine.

    >>> check_quant("q5_1")
    Traceback (most recent call last):
    honed.errors.ConfigError: --quant q5_1: unknown quantisation; use one of f16, q8_0, q4_k_m
    """
    if quant not in QUANTS:
        raise ConfigError(f"--quant {quant}: unknown quantisation; use one of {', '.join(QUANTS)}")
    if converter_dir() is None:
        raise ConfigError(f"--to gguf needs llama.cpp's converter, which is not installed; {INSTALL_HINT}")
    if quant == "q4_k_m" and not has_llama_cpp():
        raise ConfigError(
            "--quant q4_k_m needs llama.cpp's quantiser, which is not installed (no pure-Python package "
            f"produces k-quants); install it with `pip install {LLAMA_CPP_PYTHON}` (compiles llama.cpp, "
            "several minutes; `make llama-cpp`), or use --quant q8_0 or f16"
        )


def _run_converter(model_dir: Path, outfile: Path, *, outtype: str) -> None:
    folder = converter_dir()
    assert folder is not None, "check_quant runs first"
    command = [sys.executable, "-m", "honed.export._convert", str(folder), str(model_dir), str(outfile), outtype]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not outfile.is_file():
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        last = lines[-1] if lines else f"exit status {result.returncode}"
        raise ModelError(f"llama.cpp's converter could not convert {model_dir} ({_architecture(model_dir)}) to "
                         f"GGUF: {last}{_converter_hint(last)}")


def _architecture(model_dir: Path) -> str:
    """The model_type of a Hugging Face folder, for messages ("architecture gemma2")."""
    try:
        return "architecture " + str(json.loads((model_dir / "config.json").read_text(encoding="utf-8"))["model_type"])
    except (OSError, ValueError, KeyError):
        return "architecture unknown"


def _converter_hint(last: str) -> str:
    """What to do about the converter's known refusals."""
    if "tokenizer.model" in last:
        return ("; llama.cpp converts this architecture's vocabulary only from a SentencePiece tokenizer.model, "
                "which the base model does not have (it has tokenizer.json only): put the base's tokenizer.model "
                "beside it, or export --to merged or --to adapter")
    if "not supported" in last.lower():
        return "; llama.cpp's converter does not support this architecture: export --to merged or --to adapter"
    return ""


def _quantize(source: Path, target: Path, *, ftype: int) -> None:
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype  # llama.h enum llama_ftype
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if status != 0 or not target.is_file():
        raise ModelError(f"llama.cpp's quantiser failed on {source} (status {status})")


def convert_to_gguf(model_dir: Path, outfile: Path, *, quant: str) -> Path:
    """One GGUF file from a merged Hugging Face folder, quantised as asked (check_quant first).

    Usage: `convert_to_gguf(Path("out/merged"), Path("out/model-q8_0.gguf"), quant="q8_0")` (runs llama.cpp's
    converter on a model: tests/e2e/test_export_cli.py's GGUF round trip).
    """
    if quant in ("f16", "q8_0"):
        _run_converter(model_dir, outfile, outtype=quant)
        return outfile
    intermediate = outfile.with_name(outfile.stem + ".f32.gguf")
    try:
        _run_converter(model_dir, intermediate, outtype="f32")
        _quantize(intermediate, outfile, ftype=LLAMA_FTYPE_MOSTLY_Q4_K_M)
    finally:
        intermediate.unlink(missing_ok=True)
    return outfile


def gguf_metadata(path: Path) -> dict[str, Any]:
    """The metadata a server reads from a GGUF: architecture, file type, chat template, eos, tensor types.

    Usage: `gguf_metadata(Path("out/model-q8_0.gguf"))["chat_template"]` (needs a GGUF file:
    tests/e2e/test_export_cli.py and test_families.py read the ones they export).
    """
    from gguf import GGUFReader

    reader = GGUFReader(str(path))

    def value(key: str) -> Any:
        field = reader.fields.get(key)
        return None if field is None else field.contents()

    return {
        "architecture": value("general.architecture"),
        "file_type": value("general.file_type"),
        "chat_template": value("tokenizer.chat_template"),
        "eos_token_id": value("tokenizer.ggml.eos_token_id"),
        "eot_token_id": value("tokenizer.ggml.eot_token_id"),
        "tensor_types": sorted({t.tensor_type.name for t in reader.tensors}),
    }


# ---- Ollama ------------------------------------------------------------------------------------------------


def _render(tokenizer: Any, messages: list[dict[str, str]], *, generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def _turn_parts(tokenizer: Any) -> tuple[dict[str, tuple[str, str]], str, str | None]:
    """Per role, the text the template writes before and after a message's content; the generation prompt;
    the default system prompt the template adds when there is none. Found by rendering marker messages."""
    marker, system = "HONEDMARK", {"role": "system", "content": "S"}
    parts: dict[str, tuple[str, str]] = {}
    history = [system]
    for role in ("user", "assistant"):
        before = _render(tokenizer, history)
        turn = _render(tokenizer, history + [{"role": role, "content": marker}])[len(before):]
        parts[role] = tuple(turn.split(marker, 1))  # type: ignore[assignment]
        history = history + [{"role": role, "content": "x"}]
    system_turn = _render(tokenizer, [{"role": "system", "content": marker}])
    parts["system"] = tuple(system_turn.split(marker, 1))  # type: ignore[assignment]
    only_user = [{"role": "user", "content": "x"}]
    generation = _render(tokenizer, only_user, generation_prompt=True)[len(_render(tokenizer, only_user)):]
    default = _render(tokenizer, only_user)[: -len(parts["user"][0] + "x" + parts["user"][1])]
    sys_before, sys_after = parts["system"]
    has_default = default.startswith(sys_before) and default.endswith(sys_after) and default != ""
    return parts, generation, default[len(sys_before): len(default) - len(sys_after)] if has_default else None


def _go_escape(text: str) -> str:
    return text.replace('"""', '\\"\\"\\"')


# Each family's chat format as an Ollama (Go) template, written from the family's Jinja template in
# honed.model.template. Ollama adds bos itself (from the GGUF's add_bos_token), so no template writes it;
# families without a system role fold the system text into the first user turn, as training did.
GO_TEMPLATES: dict[str, str] = {
    "chatml": "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n",
    "llama3": ("{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>"
               "{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n"),
    "phi3": "{{- range .Messages }}<|{{ .Role }}|>\n{{ .Content }}<|end|>\n{{ end }}<|assistant|>\n",
    "gemma": ('{{- $system := "" }}{{- range .Messages }}{{ if eq .Role "system" }}{{ $system = .Content }}'
              '{{ else if eq .Role "assistant" }}<start_of_turn>model\n{{ .Content }}<end_of_turn>\n'
              '{{ else }}<start_of_turn>{{ .Role }}\n{{ if $system }}{{ $system }}\n\n{{ $system = "" }}{{ end }}'
              '{{ .Content }}<end_of_turn>\n{{ end }}{{ end }}<start_of_turn>model\n'),
    "mistral": ('{{- $system := "" }}{{- range .Messages }}{{ if eq .Role "system" }}{{ $system = .Content }}'
                '{{ else if eq .Role "user" }}[INST] {{ if $system }}{{ $system }}\n\n{{ $system = "" }}{{ end }}'
                '{{ .Content }} [/INST]{{ else }}{{ .Content }}</s>{{ end }}{{ end }}'),
}


def _probed_template(tokenizer: Any) -> tuple[str, str | None] | None:
    """A Go template (and default system prompt) read off a model's own Jinja template by rendering marker
    messages; None when the template does not render turns independently (it folds or rewrites them)."""
    from jinja2.exceptions import TemplateError

    try:
        parts, generation, default_system = _turn_parts(tokenizer)
    except (ValueError, TemplateError):
        return None
    branches = "".join(
        f'{{{{ {"if" if i == 0 else "else if"} eq .Role "{role}" }}}}{parts[role][0]}{{{{ .Content }}}}{parts[role][1]}'
        for i, role in enumerate(("system", "user", "assistant"))
    )
    return f"{{{{- range .Messages }}}}{branches}{{{{ end }}}}{{{{ end }}}}{generation}", default_system


def modelfile(tokenizer: Any, *, gguf_name: str, stop_tokens: list[str], family: str | None = None) -> str:
    """An Ollama Modelfile for the GGUF: the chat template as a Go template (the family's, else read off the
    model's own template), the stops (the end of turn first), greedy decoding, and the template's default
    system prompt (as SYSTEM, which Ollama uses when a request has none).

    >>> # a family's template is written as is (no tokenizer is read)
    >>> text = modelfile(None, gguf_name="m.gguf", stop_tokens=["<end_of_turn>"], family="gemma")
    >>> [line for line in text.splitlines() if line.startswith(("FROM", "PARAMETER"))]
    ['FROM ./m.gguf', 'PARAMETER stop "<end_of_turn>"', 'PARAMETER temperature 0', 'PARAMETER top_k 1']
    """
    lines = [f"FROM ./{gguf_name}"]
    probed = None if family in GO_TEMPLATES else _probed_template(tokenizer)
    if family in GO_TEMPLATES:
        lines.append(f'TEMPLATE """{_go_escape(GO_TEMPLATES[family])}"""')
    elif probed is not None:
        lines.append(f'TEMPLATE """{_go_escape(probed[0])}"""')
        if probed[1]:
            lines.append(f'SYSTEM """{_go_escape(probed[1])}"""')
    else:
        lines.append("# no TEMPLATE: this chat template folds or rewrites turns, which a Go template cannot say "
                     "turn by turn; Ollama reads the GGUF's own chat template")
    lines += [f'PARAMETER stop "{token}"' for token in stop_tokens]
    lines += ["PARAMETER temperature 0", "PARAMETER top_k 1"]  # greedy, as honed evaluated it
    return "\n".join(lines) + "\n"
