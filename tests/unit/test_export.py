"""honed.export pieces that need no trained run: base names, checkpoints, quant checks, the Modelfile, parity."""

from __future__ import annotations

from pathlib import Path

import pytest

from honed.errors import ConfigError
from honed.export import gguf as G
from honed.export.merged import BUILTIN_HUB_IDS, portable_base_name
from honed.model.merge import base_dtype
from honed.export.parity import _compare
from honed.export.run_export import normalize_checkpoint
from honed.evaluate.run_eval import plan_metrics
from honed.model.loading import BUILTIN_MODELS, load_tokenizer

TINY = Path(__file__).resolve().parents[1] / "assets" / "tiny-llama"


def test_portable_base_name_is_what_a_user_elsewhere_would_type(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HONED_CACHE", str(tmp_path / "cache"))
    assert set(BUILTIN_HUB_IDS) == set(BUILTIN_MODELS)  # every built-in model has a hub id to name
    assert portable_base_name("smollm2-135m") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert portable_base_name("org/some-model") == "org/some-model"  # a hub id stays a hub id
    snapshot = "/root/.cache/huggingface/hub/models--Qwen--Qwen2.5-0.5B/snapshots/0123abc"
    assert portable_base_name(snapshot) == "Qwen/Qwen2.5-0.5B"
    assert portable_base_name(str(TINY)) == str(TINY.resolve())  # a local folder: its absolute path
    converted = tmp_path / "cache" / "models" / "smollm2-135m"  # honed's own converted copy: never a cache path
    converted.mkdir(parents=True)
    assert portable_base_name(str(converted)) == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_base_dtype_reads_the_base_config(tmp_path) -> None:
    assert base_dtype(str(TINY)) == "float32"
    folder = tmp_path / "bf16"
    folder.mkdir()
    text = (TINY / "config.json").read_text().replace('"float32"', '"bfloat16"')
    (folder / "config.json").write_text(text)
    assert base_dtype(str(folder)) == "bfloat16"


def test_step_shorthand() -> None:
    assert normalize_checkpoint("step-7") == "checkpoints/step-000007"
    assert normalize_checkpoint("best") == "best"
    assert normalize_checkpoint("checkpoints/step-000010") == "checkpoints/step-000010"


def test_unknown_or_unavailable_quant_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown quantisation"):
        G.check_quant("q3_k_s")
    if not G.has_llama_cpp():
        with pytest.raises(ConfigError, match="pip install llama-cpp-python"):
            G.check_quant("q4_k_m")


def test_modelfile_has_the_template_stop_tokens_and_default_system() -> None:
    tokenizer = load_tokenizer(str(TINY))  # its own: the test changes the template
    text = G.modelfile(tokenizer, gguf_name="model-q8_0.gguf", stop_tokens=["<|im_end|>"])
    assert text.startswith("FROM ./model-q8_0.gguf\n")
    assert '{{ if eq .Role "system" }}<|im_start|>system\n{{ .Content }}<|im_end|>\n' in text
    assert text.rstrip().endswith("PARAMETER top_k 1") and 'PARAMETER stop "<|im_end|>"' in text
    assert "SYSTEM" not in text  # the tiny template adds no default system prompt
    # a template that adds a default system prompt when none is given (as SmolLM2's does)
    tokenizer.chat_template = (
        "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nBe brief.<|im_end|>\n{% endif %}"
        + tokenizer.chat_template
    )
    assert 'SYSTEM """Be brief."""' in G.modelfile(tokenizer, gguf_name="m.gguf", stop_tokens=["<|im_end|>"])


def test_parity_flags_a_significantly_worse_artifact() -> None:
    references = ['{"category": "bug"}', '{"category": "billing"}'] * 10
    plan = plan_metrics(references)
    same = _compare(plan, references, list(references), list(references), seed=0, backend="transformers",
                    source="generated")
    assert same.identical == 1.0 and not same.significantly_worse and "WARNING" not in "\n".join(same.lines())
    broken = _compare(plan, references, list(references), ["nonsense"] * 20, seed=0, backend="transformers",
                      source="generated")
    assert broken.artifact == 0.0 and broken.tuned == 1.0 and broken.identical == 0.0
    assert broken.significantly_worse and broken.lines()[-1].startswith("WARNING: the exported artifact")
