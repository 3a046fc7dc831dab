"""honed export through the real CLI on the tiny model: merged, adapter and GGUF artifacts that load with
plain transformers (and llama.cpp when installed), parity printed, and bad input as one line, exit 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from honed.export import gguf as G
from honed.export.tools import converter_dir
from tests.helpers import TINY, cli, copy_run

needs_converter = pytest.mark.skipif(converter_dir() is None, reason="llama.cpp's converter is not installed "
                                     "(make gguf-tools)")


@pytest.fixture(scope="module")
def run(trained_run, tmp_path_factory) -> Path:
    """The module's copy of the shared run: the exports land in its exports/."""
    return copy_run(trained_run, tmp_path_factory.mktemp("runs") / "tiny")


def _logits(model, ids):
    import torch

    with torch.no_grad():
        return model(ids).logits


def test_merged_loads_with_plain_transformers_and_matches_the_run(run: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from honed.model.run import load_run_model
    from honed.runs.rundir import RunDir

    out = tmp_path / "merged"
    result = cli("export", str(run), "--to", "merged", "--out", str(out), "--parity", "3")
    assert result.exit_code == 0, result.output
    assert "parity on 3 holdout examples (transformers): field_f1_micro tuned" in result.stdout
    assert "identical outputs" in result.stdout
    # not a terminal: each step is a plain stderr line (a spinner would show nothing in a log)
    assert "merging the adapter into the base model (float32)..." in result.stderr
    assert "parity: the tuned model and the artifact (transformers) on 3 holdout examples..." in result.stderr
    model = AutoModelForCausalLM.from_pretrained(out)  # plain transformers, no honed
    tokenizer = AutoTokenizer.from_pretrained(out)
    tuned, tuned_tokenizer = load_run_model(RunDir(run))
    ids = tuned_tokenizer("I lost my card yesterday", return_tensors="pt").input_ids
    assert (_logits(model, ids) - _logits(tuned, ids)).abs().max().item() < 1e-5
    assert tokenizer.chat_template == tuned_tokenizer.chat_template
    assert model.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    card = (out / "README.md").read_text()
    assert "base_model:" in card and "sha256" in card and "## Parity" in card and "lr:" in card
    assert (out / "model.safetensors").stat().st_mode & 0o044 == 0o044  # readable by others, like any file
    record = json.loads((out / "export.json").read_text())
    assert record["target"] == "merged" and record["dtype"] == "float32" and record["parity"]["n"] == 3


def test_adapter_names_its_base_portably(run: Path) -> None:
    result = cli("export", str(run), "--to", "adapter", "--no-parity", "--json")
    assert result.exit_code == 0, result.output
    folder = Path(json.loads(result.stdout)["folder"])
    assert folder == run / "exports" / "adapter-best"
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(Path(TINY).resolve())
    assert (folder / "adapter_model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    again = cli("export", str(run), "--to", "adapter", "--no-parity", "--force", "--base-name", "me/tiny-base")
    assert again.exit_code == 0, again.output
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == "me/tiny-base"
    assert "base_model: me/tiny-base" in (folder / "README.md").read_text()


@needs_converter
def test_gguf_round_trips_with_chat_template_and_modelfile(run: Path) -> None:
    from honed.model.loading import load_model, load_tokenizer
    from honed.model.run import load_run_model
    from honed.runs.rundir import RunDir

    result = cli("export", str(run), "--to", "gguf", "--quant", "q8_0", "--ollama", "--parity", "3", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    folder = Path(record["folder"])
    gguf_file = folder / "model-q8_0.gguf"
    assert folder.name == "gguf-best-q8_0" and "Q8_0" in record["tensor_types"]
    assert record["parity"]["backend"] == ("llama.cpp" if G.has_llama_cpp() else "transformers")
    tuned, tuned_tokenizer = load_run_model(RunDir(run))
    metadata = G.gguf_metadata(gguf_file)
    assert metadata["chat_template"] == tuned_tokenizer.chat_template
    loaded = load_model(str(gguf_file))  # transformers' GGUF loader
    ids = tuned_tokenizer("Please reset my password", return_tensors="pt").input_ids
    assert load_tokenizer(str(gguf_file))("Please reset my password").input_ids == ids[0].tolist()
    assert (_logits(loaded, ids) - _logits(tuned, ids)).abs().max().item() < 0.05  # q8_0 rounding only
    modelfile = (folder / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./model-q8_0.gguf") and 'PARAMETER stop "<|im_end|>"' in modelfile
    if G.has_llama_cpp():
        from llama_cpp import Llama

        llm = Llama(model_path=str(gguf_file), n_ctx=256, verbose=False)
        assert llm.tokenize(b"Please reset my password", add_bos=False) == ids[0].tolist()


def test_parity_warns_when_the_artifact_is_significantly_worse(run: Path, tmp_path: Path) -> None:
    evaluated = copy_run(run, tmp_path / "evaluated")
    assert cli("eval", str(evaluated), "--limit", "4", "--baselines", "none").exit_code == 0
    # Make the evaluated tuned model perfect: the real (untrained) artifact is then far worse than it.
    path = evaluated / "eval" / "tuned.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({**r, "output": r["reference"]}) + "\n" for r in rows))
    result = cli("export", str(evaluated), "--to", "merged", "--parity", "4")
    assert result.exit_code == 0, result.output
    assert "field_f1_micro tuned 1.000" in result.stdout
    assert "WARNING: the exported artifact is significantly worse than the tuned model" in result.stdout
    card = (evaluated / "exports" / "merged-best" / "README.md").read_text()
    assert "## Evaluation (`honed eval`, 4 holdout examples" in card and "significantly worse" in card


def test_bad_input_is_one_line_and_exit_2(run: Path, tmp_path: Path) -> None:
    killed = tmp_path / "killed"
    shutil.copytree(run, killed, ignore=shutil.ignore_patterns("exports"))
    record = json.loads((killed / "run.json").read_text())
    (killed / "run.json").write_text(json.dumps({**record, "status": "running"}))
    (tmp_path / "exists").mkdir()
    (tmp_path / "a-file").write_text("x")
    cases = [
        (["export", str(tmp_path / "nope"), "--to", "merged"], "not a honed run directory"),
        (["export", str(killed), "--to", "merged"], "never finished (status: running)"),
        (["export", str(run), "--to", "onnx"], "unknown export target"),
        (["export", str(run), "--to", "gguf", "--quant", "q3_k_s"], "unknown quantisation"),
        (["export", str(run), "--to", "merged", "--quant", "q8_0"], "apply to --to gguf only"),
        (["export", str(run), "--to", "merged", "--out", str(tmp_path / "exists")], "already exists"),
        (["export", str(run), "--to", "merged", "--out", str(tmp_path / "a-file" / "sub")], "cannot be created"),
        (["export", str(run), "--to", "merged", "--checkpoint", "step-999"], "no weights for checkpoint"),
        (["export", str(run), "--to", "merged", "--dtype", "int8"], "--dtype int8"),
    ]
    if not G.has_llama_cpp():
        cases.append((["export", str(run), "--to", "gguf", "--quant", "q4_k_m"], "pip install llama-cpp-python"))
    for args, message in cases:
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert list((tmp_path / "exists").iterdir()) == []  # nothing the user had was touched


def test_export_is_refused_while_another_process_writes_the_run(run: Path, tmp_path: Path) -> None:
    from tests.helpers import lock_held_elsewhere

    with lock_held_elsewhere(run) as holder:
        result = cli("export", str(run), "--to", "adapter", "--no-parity", "--out", str(tmp_path / "a"))
    assert result.exit_code == 2 and f"in use: honed train, pid {holder.pid}" in result.output
    assert not (tmp_path / "a").exists()
