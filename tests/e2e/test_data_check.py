"""`honed data check` end to end, through the real CLI (`python -m honed ...`), as a user runs it.

On the real datasets in ../shared/data, the report must find exactly the quirks their README lists
(counted there with plain string comparison):
- banking77: 6 test texts equal a train text after lower-casing and trimming, 0 exactly;
- restaurant8k train: 239 repeated user texts, 183 repeated (user, target) pairs, 37 user texts with
  conflicting targets; 140 test user texts also appear in train.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.helpers import TINY as MODEL

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
SCHEMA = json.loads((ROOT / "honed" / "data" / "report.schema.json").read_text())


def honed(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "honed", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def check_json(*args: str) -> dict[str, Any]:
    done = honed("data", "check", *args, "--model", MODEL, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    jsonschema.validate(report, SCHEMA)
    return report


def needs(folder: str) -> Path:
    path = DATA / folder
    if not path.is_dir():
        pytest.skip(f"{path} is missing (the shared datasets sit beside the checkout)")
    return path


def write_jsonl(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for user, answer in rows:
            f.write(json.dumps({"messages": [{"role": "user", "content": user},
                                             {"role": "assistant", "content": answer}]}) + "\n")
    return path


def test_banking77_leakage_after_normalizing_and_labels() -> None:
    data = needs("banking77")
    report = check_json(str(data / "train.csv"), "--prompt-col", "text", "--response-col", "category",
                        "--holdout", str(data / "test.csv"))
    leak = report["leakage"]
    assert (leak["holdout_examples"], leak["exact"], leak["normalized"]) == (3080, 0, 6)
    assert report["examples"] == 10003
    assert report["labels"]["distinct"] == 77
    assert report["labels"]["top"][0] == {"label": "card_payment_fee_charged", "count": 187}
    assert report["labels"]["smallest"][0] == {"label": "contactless_not_working", "count": 35}
    assert report["duplicates"]["repeated_prompts"] == 0
    codes = {w["code"]: w["count"] for w in report["warnings"]}
    assert codes["holdout_leakage_normalized"] == 6 and "holdout_leakage" not in codes


def test_restaurant8k_repeats_conflicts_and_leakage() -> None:
    data = needs("restaurant8k")
    report = check_json(str(data / "train.jsonl"), "--holdout", str(data / "test.jsonl"))
    d, c, leak = report["duplicates"], report["conflicts"], report["leakage"]
    assert report["examples"] == 8198
    assert d["repeated_prompts"] == 239  # rows whose user text (same system prompt) appeared earlier
    assert d["repeated_pairs"] == 183  # rows whose (user, target) pair appeared earlier
    assert d["exact"] == 183  # whole conversations: system, user and target
    assert c["prompts"] == 37
    assert leak["exact"] == 140
    assert report["labels"] is None  # JSON targets, not labels
    codes = {w["code"]: w["count"] for w in report["warnings"]}
    assert codes["conflicting_responses"] == 37 and codes["holdout_leakage"] == 140
    # the evidence points at real lines
    source = c["examples"][0][0]["source"]
    assert source.startswith(str(data / "train.jsonl") + ":")


def test_terminal_report_and_exit_codes(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", [("where is my card", "card_arrival"),
                                                  ("where is my card", "card_lost"),
                                                  ("how do I top up", "top_up")])
    plain = honed("data", "check", str(path), "--model", MODEL)
    assert plain.returncode == 0, plain.stderr
    assert "tokens, total" in plain.stdout
    assert "conflicting_responses" in plain.stdout
    assert f"{path}:1" in plain.stdout and f"{path}:2" in plain.stdout  # the conflicting rows, located
    strict = honed("data", "check", str(path), "--model", MODEL, "--strict", "--json")
    assert strict.returncode == 1
    assert json.loads(strict.stdout)["conflicts"]["prompts"] == 1


def test_clean_file_passes_strict(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", [("first question here", "first answer"),
                                                  ("a second question", "another answer")])
    done = honed("data", "check", str(path), "--model", MODEL, "--strict")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no warnings" in done.stdout


def test_invalid_rows_fail_with_exit_2_or_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    write_jsonl(path, [("good question", "good answer"), ("another", "fine")])
    with path.open("a", encoding="utf-8") as f:
        f.write('{"messages": [{"role": "bot", "content": "hi"}]}\n')
    failed = honed("data", "check", str(path), "--model", MODEL)
    assert failed.returncode == 2
    assert f"{path}:3" in failed.stderr and "Traceback" not in failed.stderr
    skipped = honed("data", "check", str(path), "--model", MODEL, "--skip-invalid", "--json")
    assert skipped.returncode == 0, skipped.stderr
    report = json.loads(skipped.stdout)
    assert (report["examples"], report["skipped_invalid"]) == (2, 1)
    assert "skipped_invalid" in {w["code"] for w in report["warnings"]}
    assert Path(report["invalid_files"][0]).is_file()


def test_bad_option_is_a_user_error(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", [("q", "a")])
    done = honed("data", "check", str(path), "--model", MODEL, "--near-threshold", "1.5")
    assert done.returncode == 2
    assert "--near-threshold" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_restaurant8k_tokens_with_the_real_model() -> None:
    data = needs("restaurant8k")
    done = honed("data", "check", str(data / "train.jsonl"), "--json", "--max-length", "128")
    assert done.returncode == 0, done.stderr
    t = json.loads(done.stdout)["tokens"]
    assert t["total"] > 8198 * 50 and 0 < t["supervised_share"] < 0.5
    assert t["truncated"] > 0 and t["per_epoch"] <= 8198 * 128


def test_text_that_looks_like_rich_markup_prints_as_it_is(tmp_path: Path) -> None:
    # Llama-2 style data carries "[INST] ... [/INST]"; labels may be "[positive]". Rich must not parse them.
    path = write_jsonl(tmp_path / "train[1].jsonl", [("<s>[INST] hi [/INST]", "[positive]"),
                                                     ("<s>[INST] hi [/INST]", "[negative]"),
                                                     ("yo", "[positive]"), ("yo2", "[negative]")])
    done = honed("data", "check", str(path), "--model", MODEL)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "[INST] hi [/INST]" in done.stdout and "[positive]" in done.stdout
    assert "train[1].jsonl" in done.stdout


def test_the_chat_template_is_said_and_reported(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", [("first question here", "first answer")])
    plain = honed("data", "check", str(path), "--model", MODEL)
    assert plain.returncode == 0, plain.stderr
    assert "chat template: model (end of turn '<|im_end|>'): the model's own chat template" in plain.stdout
    report = check_json(str(path))
    assert report["chat_template"]["name"] == "model" and report["chat_template"]["end_of_turn"] == "<|im_end|>"
    assert report["tokens"]["end_of_turn_untrained"] == 0
    forced = check_json(str(path), "--chat-template", "phi3")  # its turn tokens are added to the vocabulary
    assert forced["chat_template"]["name"] == "phi3" and forced["chat_template"]["added_tokens"]


def test_a_system_turn_folded_by_the_template_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "system", "content": "Be brief."},
                                             {"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "hello"}]}) + "\n")
    done = honed("data", "check", str(path), "--model", MODEL, "--chat-template", "mistral")
    assert done.returncode == 0, done.stderr
    assert "notice: 1 examples have a system turn; the mistral template has no system role" in done.stdout
    assert check_json(str(path), "--chat-template", "mistral")["chat_template"]["system_folded"] == 1


def test_an_empty_assistant_mask_is_refused(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", [("first question here", "first answer")])
    template = tmp_path / "users-only.jinja"  # a template that never writes an answer: nothing to learn
    template.write_text("{% for m in messages %}{% if m['role'] == 'user' %}<|im_start|>user\n{{ m['content'] }}"
                        "<|im_end|>\n{% endif %}{% endfor %}")
    done = honed("data", "check", str(path), "--model", MODEL, "--chat-template", str(template))
    assert done.returncode == 2, done.stdout
    assert f"{path}: no example has a supervised token: the assistant mask is empty" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_template_that_leaves_the_end_of_turn_out_of_the_answer_is_refused(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", [("first question here", "first answer")])
    # The end marker is written with the next turn's header, after the assistant turn has ended, so an
    # answer ends with nothing but the eos, which no trained token holds: such a model never learns to stop.
    template = tmp_path / "late-end.jinja"
    template.write_text("{% for m in messages %}{% if not loop.first %}<|im_end|>{% endif %}<|im_start|>{{ m['role'] }}\n"
                        "{{ m['content'] }}{% endfor %}"
                        "{% if add_generation_prompt %}<|im_end|><|im_start|>assistant\n{% endif %}")
    done = honed("data", "check", str(path), "--model", MODEL, "--chat-template", str(template))
    assert done.returncode == 2, done.stdout
    assert "is in no example's trained tokens, so the model could never learn to stop" in done.stderr
    assert "Traceback" not in done.stderr
