"""Run llama.cpp's convert_hf_to_gguf.py in this (child) process, with one fallback.

    python -m honed.export._convert CONVERTER_DIR MODEL_DIR OUTFILE OUTTYPE

A separate process because the converter puts its own `gguf-py` first on sys.path, which must not
replace the `gguf` package transformers already imported in the parent.

The fallback: the converter names a BPE tokenizer's pre-tokenizer by hashing how it splits a test string,
and refuses a tokenizer whose hash it has not seen (every newly trained vocabulary, such as the test
model's). When that tokenizer's pre-tokenizer is plain GPT-2 byte-level splitting, llama.cpp's `gpt-2`
pre-tokenizer is the same rule, so we name it; anything else is still refused.
"""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path
from typing import Any


def _is_plain_byte_level(tokenizer_json: Path) -> bool:
    if not tokenizer_json.is_file():
        return False
    pre = json.loads(tokenizer_json.read_text(encoding="utf-8")).get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    return len(steps) == 1 and steps[0].get("type") == "ByteLevel" and steps[0].get("use_regex", True)


def _patch_pre_tokenizer(model_dir: Path) -> None:
    from conversion.base import TextModel  # the converter's own package, on sys.path now

    original = TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self: Any, tokenizer: Any) -> str:
        try:
            return original(self, tokenizer)
        except NotImplementedError:
            if not _is_plain_byte_level(model_dir / "tokenizer.json"):
                raise
            print("honed: unknown BPE vocabulary with a plain byte-level pre-tokenizer: using llama.cpp's 'gpt-2'",
                  file=sys.stderr)
            return "gpt-2"

    TextModel.get_vocab_base_pre = get_vocab_base_pre  # type: ignore[method-assign]


def main(converter_dir: str, model_dir: str, outfile: str, outtype: str) -> None:
    root = Path(converter_dir)
    sys.path[:0] = [str(root / "gguf-py"), str(root)]
    _patch_pre_tokenizer(Path(model_dir))
    script = root / "convert_hf_to_gguf.py"
    sys.argv = [str(script), model_dir, "--outfile", outfile, "--outtype", outtype]
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main(*sys.argv[1:5])
