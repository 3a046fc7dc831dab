"""Train the real built-in model (SmolLM2-135M) for a few steps through the CLI (slow: minutes on 2 cores)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from honed.cli import app

pytestmark = pytest.mark.slow
EXAMPLES = Path(__file__).parents[2] / "examples" / "support_triage.jsonl"


def test_a_few_steps_lower_the_holdout_loss_and_the_run_loads(tmp_path):
    if not EXAMPLES.is_file():
        pytest.skip(f"{EXAMPLES} is missing")
    lines = EXAMPLES.read_text().splitlines()
    train, holdout = tmp_path / "train.jsonl", tmp_path / "holdout.jsonl"
    train.write_text("\n".join(lines[:48]) + "\n")
    holdout.write_text("\n".join(lines[-16:]) + "\n")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "train", "--data", str(train), "--holdout", str(holdout), "--model", "smollm2-135m", "--out", str(out),
        "--max-length", "256", "--set", "batch_size=8", "--set", "max_steps=4", "--set", "eval_every=4",
        "--merge", "--json",
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["best"]["holdout_loss"] < summary["first_eval"]["holdout_loss"]
    assert (out / "final" / "adapter_model.safetensors").is_file()
    assert (out / "merged" / "model.safetensors").is_file()

    from honed.model.prompt import render_prompt
    from honed.data.types import Conversation
    from honed.model.loading import load_model
    from honed.model.run import load_run_model
    from honed.runs.rundir import RunDir

    model, tokenizer = load_run_model(RunDir(out))
    merged = load_model(str(out / "merged"))
    conversation = Conversation.from_json(json.loads(lines[-1]))
    ids = torch.tensor([render_prompt(conversation, tokenizer)])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, merged(ids).logits, atol=1e-4, rtol=1e-4)
        answer = model.generate(ids, max_new_tokens=30, do_sample=False)[0, ids.shape[1]:]
    assert tokenizer.decode(answer, skip_special_tokens=True).strip()  # says something
