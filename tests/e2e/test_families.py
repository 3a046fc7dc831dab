"""The support matrix, run: every family honed supports goes data check -> train -> eval -> export merged ->
export GGUF -> serve, on a tiny random-weight model of its real architecture class built in-process
(tests/assets/families.py: <= 2 layers, hidden 32, no chat template, the family's special tokens; no
download). Each stage must use the family's own template and stop at its end of turn.

One run per family is trained for the module (a few seconds each); each test reads it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from honed.export import gguf as G
from honed.export.tools import converter_dir
from tests.assets.families import FAMILIES, FamilySpec, build
from tests.helpers import cli

# Long enough that the tiny model learns the answer and its end of turn (an added token's row starts at
# the mean of the others and needs the most steps), short enough to take seconds.
TRAIN = ["--set", "num_threads=1", "--set", "batch_size=8", "--set", "epochs=60", "--max-steps", "200",
         "--lr", "1e-2"]
ANSWER = "yes"


@dataclass(frozen=True)
class Trained:
    spec: FamilySpec
    model: Path  # the tiny base model folder
    data: Path
    run: Path


def write_data(path: Path) -> Path:
    """24 chats, every other one with a system turn (folded into the user turn where a family has no system
    role), all answered ANSWER."""
    rows = []
    for i in range(24):
        system = [{"role": "system", "content": "Answer yes."}] if i % 2 else []
        rows.append({"messages": [*system, {"role": "user", "content": f"question {i}"},
                                  {"role": "assistant", "content": ANSWER}]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    # its own runs, not the shared trained_run: one per family model, long enough to learn its end of turn
    spec = FAMILIES[request.param]
    root = tmp_path_factory.mktemp(spec.name)
    model, data = build(spec.name, root / "model"), write_data(root / "chats.jsonl")
    result = cli("train", "--data", str(data), "--model", str(model), "--out", str(root / "run"), *TRAIN)
    assert result.exit_code == 0, result.output
    assert f"chat template: {spec.template} (end of turn {spec.end_of_turn!r})" in " ".join(result.output.split())
    return Trained(spec, model, data, root / "run")


def test_data_check_chooses_the_family_template_and_trains_its_end_of_turn(trained: Trained) -> None:
    result = cli("data", "check", str(trained.data), "--model", str(trained.model), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    used = report["chat_template"]
    assert (used["name"], used["end_of_turn"]) == (trained.spec.template, trained.spec.end_of_turn)
    assert used["added_tokens"] == list(trained.spec.added)
    assert used["system_folded"] == (0 if used["system_role"] else 12)
    assert report["tokens"]["no_supervised"] == 0 and report["tokens"]["end_of_turn_untrained"] == 0


def test_the_run_stores_the_template_every_later_stage_reads(trained: Trained) -> None:
    stored = json.loads((trained.run / "template.json").read_text(encoding="utf-8"))
    assert (stored["name"], stored["end_of_turn"]) == (trained.spec.template, trained.spec.end_of_turn)


def test_every_eval_answer_stops_at_the_end_of_turn(trained: Trained) -> None:
    result = cli("eval", str(trained.run), "--baselines", "none", "--max-new-tokens", "12", "--threads", "1")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (trained.run / "eval" / "tuned.jsonl").read_text().splitlines()]
    assert rows and all(r["stopped"] for r in rows), rows
    assert all(trained.spec.end_of_turn not in r["output"] for r in rows), rows
    assert [r["output"] for r in rows] == [ANSWER] * len(rows)


def test_prompted_baselines_prompt_a_base_without_a_template_as_plain_text(trained: Trained) -> None:
    # the base model never saw the turn markers honed chose for it (honed.evaluate.base_prompt)
    result = cli("eval", str(trained.run), "--baselines", "few-shot:2", "--limit", "4", "--max-new-tokens", "4",
                 "--threads", "1", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["decoding"]["baseline_prompt"] == "plain text"


def test_merged_export_loads_in_plain_transformers_with_the_same_logits(trained: Trained, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from honed.model.run import load_run_model
    from honed.runs.rundir import RunDir

    out = tmp_path / "merged"
    result = cli("export", str(trained.run), "--to", "merged", "--out", str(out), "--parity", "2")
    assert result.exit_code == 0, result.output
    tokenizer = AutoTokenizer.from_pretrained(out)
    end = tokenizer.convert_tokens_to_ids(trained.spec.end_of_turn)
    assert tokenizer.eos_token == trained.spec.end_of_turn
    assert json.loads((out / "config.json").read_text())["eos_token_id"] in (end, [end])
    eos = GenerationConfig.from_pretrained(out).eos_token_id
    assert end in (eos if isinstance(eos, list) else [eos])
    exported = AutoModelForCausalLM.from_pretrained(out).eval()
    model, _ = load_run_model(RunDir(trained.run))
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "question 3"}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(exported(prompt).logits, model(prompt).logits, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(converter_dir() is None, reason="llama.cpp's converter is not installed (make install does it)")
def test_gguf_export_names_the_end_of_turn_or_refuses_the_architecture(trained: Trained, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    out = tmp_path / "gguf"
    result = cli("export", str(trained.run), "--to", "gguf", "--ollama", "--out", str(out), "--parity", "2")
    if result.exit_code == 2:  # llama.cpp's converter lacks the architecture: said, and nothing left behind
        assert trained.spec.model_type in result.stderr and "Traceback" not in result.output, result.output
        assert not out.exists()
        return
    assert result.exit_code == 0, result.output
    [path] = out.glob("*.gguf")
    end = AutoTokenizer.from_pretrained(trained.run / "final").convert_tokens_to_ids(trained.spec.end_of_turn)
    assert G.gguf_metadata(path)["eos_token_id"] == end
    assert f'PARAMETER stop "{trained.spec.end_of_turn}"' in (out / "Modelfile").read_text()


def test_serve_answers_stop_with_finish_reason_stop(trained: Trained) -> None:
    from openai import OpenAI

    from honed.serve.app import Settings
    from honed.serve.engine import Engine
    from honed.serve.loading import load_targets
    from honed.serve.requestlog import RequestLog
    from honed.serve.server import ServerThread

    served = load_targets([str(trained.run)])
    with ServerThread(served, Engine(max_batch=2), settings=Settings(request_log=RequestLog(enabled=False))) as url:
        client = OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60)
        reply = client.chat.completions.create(model=served[0].name, temperature=0, max_tokens=12,
                                               messages=[{"role": "user", "content": "question 5"}])
    choice = reply.choices[0]
    assert choice.finish_reason == "stop" and choice.message.content == ANSWER, choice


def test_an_export_whose_eos_misses_the_end_of_turn_fails_loudly(trained: Trained, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from honed.model import merge

    if trained.spec.end_of_turn == trained.spec.eos:
        pytest.skip("the family's end of turn is its eos: nothing to miss")
    monkeypatch.setattr(merge, "name_end_of_turn_as_eos", lambda tokenizer: None)
    monkeypatch.setattr(merge, "_set_generation_config", lambda model, tokenizer: None)
    result = cli("export", str(trained.run), "--to", "merged", "--out", str(tmp_path / "bad"), "--parity", "2")
    assert result.exit_code == 2 and "not the end of turn" in result.stderr, result.output
    assert not (tmp_path / "bad").exists()
