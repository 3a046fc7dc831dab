"""Exports carry the family's end of turn to every runtime: tiny Gemma 3 and Llama 3 style models whose
base eos (`<eos>`, `<|end_of_text|>`) is not what ends an answer. Built in-process (no download): the
committed tiny tokenizer with the family's special tokens added and no chat template, random weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from honed.export import gguf as G
from honed.export.tools import converter_dir
from tests.helpers import TINY, cli

FAST = ["--set", "num_threads=1", "--set", "batch_size=8", "--max-steps", "2"]
needs_converter = pytest.mark.skipif(converter_dir() is None, reason="llama.cpp's converter is not installed")

FAMILIES = {
    # family: (special tokens, bos, eos, pad, end of turn)
    "gemma": (["<start_of_turn>", "<end_of_turn>"], "<bos>", "<eos>", "<pad>", "<end_of_turn>"),
    "llama3": (["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], "<|begin_of_text|>", "<|end_of_text|>",
               "<|finetune_right_pad_id|>", "<|eot_id|>"),
}


def build(family: str, folder: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

    extra, bos, eos, pad, _ = FAMILIES[family]
    tokenizer = AutoTokenizer.from_pretrained(TINY)
    tokenizer.chat_template = None
    tokenizer.add_special_tokens({"bos_token": bos, "eos_token": eos, "pad_token": pad,
                                  "additional_special_tokens": extra}, replace_extra_special_tokens=True)
    ids = {"vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
           "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    shape = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
             "num_key_value_heads": 1, "max_position_embeddings": 512}
    torch.manual_seed(0)
    if family == "gemma":
        model = Gemma3ForCausalLM(Gemma3TextConfig(**ids, **shape, head_dim=16, sliding_window=64))
    else:
        model = LlamaForCausalLM(LlamaConfig(**ids, **shape, tie_word_embeddings=True))
    tokenizer.save_pretrained(folder)
    model.save_pretrained(folder)
    return folder


def data(path: Path) -> Path:
    rows = [{"messages": [{"role": "system", "content": "Answer yes."}, {"role": "user", "content": f"q {i}"},
                          {"role": "assistant", "content": "yes"}]} for i in range(24)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    family = request.param
    root = tmp_path_factory.mktemp(family)
    model = build(family, root / "model")
    out = root / "run"
    result = cli("train", "--data", str(data(root / "d.jsonl")), "--model", str(model), "--out", str(out), *FAST)
    assert result.exit_code == 0, result.output
    return family, out


def test_the_run_stores_the_family_template(run: tuple[str, Path]) -> None:
    family, out = run
    stored = json.loads((out / "template.json").read_text())
    assert stored["name"] == family and stored["end_of_turn"] == FAMILIES[family][4]


def test_merged_export_names_the_end_of_turn_as_eos(run: tuple[str, Path], tmp_path: Path) -> None:
    from transformers import AutoTokenizer, GenerationConfig

    family, out = run
    result = cli("export", str(out), "--to", "merged", "--out", str(tmp_path / "m"), "--parity", "2")
    assert result.exit_code == 0, result.output
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "m")
    end = tokenizer.convert_tokens_to_ids(FAMILIES[family][4])
    assert tokenizer.eos_token == FAMILIES[family][4]
    assert json.loads((tmp_path / "m" / "config.json").read_text())["eos_token_id"] == end
    eos = GenerationConfig.from_pretrained(tmp_path / "m").eos_token_id
    assert end == (eos[0] if isinstance(eos, list) else eos)


@needs_converter
def test_gguf_eos_is_the_end_of_turn_and_the_modelfile_has_the_family_template(run: tuple[str, Path],
                                                                               tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    family, out = run
    result = cli("export", str(out), "--to", "gguf", "--ollama", "--out", str(tmp_path / "g"), "--parity", "2")
    assert result.exit_code == 0, result.output
    metadata = G.gguf_metadata(tmp_path / "g" / "model-q8_0.gguf")
    end = AutoTokenizer.from_pretrained(out / "final").convert_tokens_to_ids(FAMILIES[family][4])
    assert metadata["eos_token_id"] == end
    modelfile = (tmp_path / "g" / "Modelfile").read_text()
    assert f'PARAMETER stop "{FAMILIES[family][4]}"' in modelfile and "TEMPLATE" in modelfile


def test_an_export_whose_eos_misses_the_end_of_turn_fails_loudly(run: tuple[str, Path], tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from honed.export import merged

    _, out = run
    monkeypatch.setattr(merged, "name_end_of_turn_as_eos", lambda tokenizer: None)
    monkeypatch.setattr(merged, "_set_generation_config", lambda model, tokenizer: None)
    result = cli("export", str(out), "--to", "merged", "--out", str(tmp_path / "bad"), "--parity", "2")
    assert result.exit_code == 2 and "not the end of turn" in result.stderr, result.output
    assert not (tmp_path / "bad").exists()
