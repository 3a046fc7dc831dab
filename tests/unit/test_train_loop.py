"""The fit loop on the tiny model: determinism, batching-independence, guards, checkpoints, selection."""

from __future__ import annotations

import io
import re
import json
import shutil
from pathlib import Path

import pytest
import torch
from rich.console import Console

from honed.config import load_config
from honed.errors import ConfigError, DataError, HonedError
from honed.train import build, loop
from honed.train.loop import train

from tests.helpers import TINY, lock_held_elsewhere


def write_data(path: Path, n: int = 24, *, weight: int | None = None, long_every: int = 0) -> Path:
    rows = []
    for i in range(n):
        answer = {"role": "assistant", "content": f"{(i * 7) % 50} {'x' * (i % 5)}"}
        if weight is not None:
            answer["weight"] = weight
        question = f"add {i} and {i % 7}" + (" and more words" * 30 if long_every and i % long_every == 0 else "")
        rows.append({"messages": [{"role": "user", "content": question}, answer]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run(tmp_path: Path, name: str, *overrides: str, data: Path | None = None, **kwargs):
    data = data or write_data(tmp_path / "train.jsonl")
    base = [f"model={TINY}", f"data.train={data}", "batch_size=4", "max_length=64", "epochs=1", "seed=3", "num_threads=1"]
    out = io.StringIO()
    config = load_config(None, overrides=base + list(overrides))
    result = train(config, out=tmp_path / name, console=Console(file=out, width=200), **kwargs)
    return result, out.getvalue()


def losses(run_dir: Path) -> dict[int, float]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in lines if "loss" in r}


def test_same_seed_same_data_same_curve(tmp_path):
    a, _ = run(tmp_path, "a", "lora.dropout=0.1")
    b, _ = run(tmp_path, "b", "lora.dropout=0.1")
    assert losses(a.run_dir) == losses(b.run_dir) and len(losses(a.run_dir)) == 6


def test_micro_batching_and_packing_do_not_change_the_curve(tmp_path):
    one, _ = run(tmp_path, "one", "lora.dropout=0", "micro_batch_tokens=4096", "packing=true")
    many, _ = run(tmp_path, "many", "lora.dropout=0", "micro_batch_tokens=64", "packing=false")
    a, b = losses(one.run_dir), losses(many.run_dir)
    assert a.keys() == b.keys()
    for step in a:
        assert b[step] == pytest.approx(a[step], abs=1e-5)


def test_run_directory_follows_the_contract(tmp_path):
    result, output = run(tmp_path, "r")
    root = result.run_dir
    for name in ("config.yaml", "data.json", "metrics.jsonl", "run.json", "final/adapter_model.safetensors",
                 "data/train.jsonl", "data/holdout.jsonl"):
        assert (root / name).exists(), name
    run_json = json.loads((root / "run.json").read_text())
    assert run_json["status"] == "completed" and run_json["method"] == "lora"
    machine = run_json["machine"]  # what the run's speed depends on, recorded at the start
    assert machine["cores"] >= 1 and machine["gpu"] is None and machine["torch"] == torch.__version__
    assert machine["cpu"] and all(f.startswith(("avx2", "avx512", "amx")) for f in machine["cpu_flags"])
    assert (root / run_json["best_checkpoint"] / "adapter_model.safetensors").is_file()
    timings = run_json["timings"]  # where the time went, phase by phase (honed.train.timings)
    assert set(timings) == {"start", "data", "render", "model", "steps", "evaluations", "checkpoints", "total"}
    assert all(v >= 0 for v in timings.values()) and timings["total"] >= sum(v for k, v in timings.items() if k != "total")
    assert "time " in output and "steps " in output
    data = json.loads((root / "data.json").read_text())
    assert data["split"]["holdout_fraction"] == 0.1 and data["holdout"]["count"] >= 1
    first = json.loads((root / "metrics.jsonl").read_text().splitlines()[0])
    assert first["step"] == 0 and "holdout_loss" in first and "holdout_token_accuracy" in first
    assert "no --holdout given" in output
    assert result.first_eval["holdout_loss"] > 0


def test_full_fine_tuning_saves_whole_weights(tmp_path):
    result, _ = run(tmp_path, "full", "method=full", "lr=1e-3")
    assert (result.run_dir / "final" / "model.safetensors").is_file()
    assert (result.run_dir / "final" / "config.json").is_file()


def test_refuses_data_without_supervised_tokens(tmp_path):
    # The reader already rejects rows whose assistant turns all have weight 0; truncation can still
    # remove every answer, and that must stop training before it starts.
    data = write_data(tmp_path / "long.jsonl", long_every=1)
    with pytest.raises(DataError, match="no example has a supervised token.*raise --max-length"):
        run(tmp_path, "none", data=data)
    assert not (tmp_path / "none" / "checkpoints").exists()


def test_reports_truncation_and_shows_the_mask_preview(tmp_path):
    data = write_data(tmp_path / "long.jsonl", long_every=4)
    _, output = run(tmp_path, "trunc", data=data, )
    assert "were truncated" in output and "lost every supervised token" in output
    assert "first example" in output and "«" in output


def test_nan_loss_stops_with_a_clear_message(tmp_path, monkeypatch):
    real = loop.loss_sum
    monkeypatch.setattr(loop, "loss_sum", lambda *a, **k: real(*a, **k) * float("nan"))
    with pytest.raises(HonedError, match="loss became nan at step 1"):
        run(tmp_path, "nan")
    assert json.loads((tmp_path / "nan" / "run.json").read_text())["status"] == "failed"


def test_zero_gradients_and_a_flat_loss_are_warned_about(tmp_path, monkeypatch):
    real = loop.loss_sum
    monkeypatch.setattr(loop, "loss_sum", lambda *a, **k: real(*a, **k) * 0.0)
    _, output = run(tmp_path, "zero", "epochs=4", "max_steps=21")
    assert "gradients have been zero for 3 steps" in output
    assert "the loss has not moved for 20 steps" in output


def test_a_holdout_loss_that_does_not_move_is_warned_about(tmp_path):
    _, output = run(tmp_path, "still", "lr=1e-12", "eval_every=3")
    assert "the holdout loss has not moved since training started" in output
    _, output = run(tmp_path, "moving", "lr=1e-2", "eval_every=3")
    assert "has not moved" not in output


def test_task_metric_selects_the_checkpoint_and_early_stopping(tmp_path):
    scores = iter([0.1, 0.5, 0.4, 0.3, 0.2, 0.9])

    def score_fn(model, tokenizer):
        assert not model.training
        return {"holdout_exact_match": next(scores)}

    result, output = run(
        tmp_path, "sel", "eval_every=1", "early_stopping_patience=2", "select_by=holdout_exact_match",
        "epochs=3", score_fn=score_fn,
    )
    assert result.steps == 3 and "early stop at step 3" in output
    assert result.best["step"] == 1 and result.best["holdout_exact_match"] == 0.5
    assert result.best_checkpoint == "checkpoints/step-000001"
    assert (result.run_dir / "checkpoints" / "step-000001").is_dir()
    final = (result.run_dir / "final" / "adapter_model.safetensors").read_bytes()
    assert final == (result.run_dir / "checkpoints" / "step-000001" / "adapter_model.safetensors").read_bytes()


def test_resume_after_an_early_stop_does_not_train_on(tmp_path):
    # A kill after the early-stop checkpoint was saved (e.g. while exporting final/) must not make
    # --resume train past the step where the run had already stopped.
    def score_fn(model, tokenizer):
        return {"holdout_exact_match": 0.5}  # never improves after the first eval

    args = ("eval_every=1", "early_stopping_patience=1", "select_by=holdout_exact_match", "epochs=3", "keep_last=5")
    result, output = run(tmp_path, "es", *args, score_fn=score_fn)
    assert result.steps == 2 and "early stop at step 2" in output
    shutil.rmtree(result.run_dir / "final")
    resumed = train(load_config(None), out=result.run_dir, resume=True, console=Console(file=io.StringIO()),
                    score_fn=score_fn)
    assert resumed.steps == 2 and resumed.best["step"] == 1
    assert max(losses(result.run_dir)) == 2
    assert (result.run_dir / "final" / "adapter_model.safetensors").is_file()


def test_unknown_select_by_is_refused_before_training(tmp_path):
    with pytest.raises(ConfigError, match="select_by"):
        run(tmp_path, "bad", "select_by=holdout_bleu")


def test_resume_ignores_a_half_written_checkpoint_and_continues_the_curve(tmp_path):
    full, _ = run(tmp_path, "full", "epochs=2", "save_every=2", "keep_last=20", "lora.dropout=0.1")
    expected = losses(full.run_dir)
    # Simulate a kill at step 5 during the save of step 6: checkpoints past 4 gone, a temp folder left.
    partial = tmp_path / "partial"
    shutil.copytree(full.run_dir, partial)
    shutil.rmtree(partial / "final")
    for ckpt in (partial / "checkpoints").iterdir():
        if int(ckpt.name.split("-")[1]) > 4:
            shutil.rmtree(ckpt)
    temp = partial / "checkpoints" / ".tmp-step-000006-x"
    temp.mkdir()
    (temp / "adapter_model.safetensors").write_bytes(b"half")
    lines = (partial / "metrics.jsonl").read_text().splitlines()
    (partial / "metrics.jsonl").write_text("\n".join(lines[:6]) + '\n{"step": 6, "lo')  # torn last line
    config = load_config(None)
    result = train(config, out=partial, resume=True, console=Console(file=io.StringIO()))
    assert not temp.exists()
    got = losses(partial)
    assert got.keys() == expected.keys()
    for step in expected:
        assert got[step] == pytest.approx(expected[step], abs=1e-6)
    assert result.status == "completed"


def test_out_must_be_new_unless_resuming(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("mine")
    with pytest.raises(ConfigError, match="already exists"):
        run(tmp_path, "taken")


def test_gpu_only_options_fail_clearly_on_cpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from honed.train.build import cpu_has_fast_bf16

    options = [("method=qlora", "qlora needs a CUDA GPU")]
    if not cpu_has_fast_bf16():  # a CPU with AMX / AVX-512 BF16 runs bf16 autocast (test below)
        options.append(("precision=bf16", "bf16 needs a CUDA GPU"))
    for option, words in options:
        with pytest.raises(ConfigError, match=words):
            run(tmp_path, option.split("=")[1], option)
        assert not (tmp_path / option.split("=")[1]).exists()  # refused before anything was written


def test_bf16_autocast_trains_on_a_cpu_with_amx(tmp_path):
    from honed.train.build import cpu_has_fast_bf16

    if torch.cuda.is_available() or not cpu_has_fast_bf16():
        pytest.skip("needs a CPU with AMX / AVX-512 BF16 and no GPU")
    result, _ = run(tmp_path, "bf16", "precision=bf16")
    fp32, _ = run(tmp_path, "fp32", "precision=fp32")
    assert result.status == "completed"
    # bf16 matmuls round differently, but it is the same training: holdout losses stay close
    assert abs(result.last_eval["holdout_loss"] - fp32.last_eval["holdout_loss"]) < 0.05


def test_no_holdout_trains_and_keeps_the_last_weights(tmp_path):
    result, output = run(tmp_path, "noholdout", "data.holdout_fraction=0")
    assert result.first_eval == {} and result.best == {} and result.best_checkpoint is None
    assert json.loads((result.run_dir / "run.json").read_text())["selected_by"] == "last"
    assert (result.run_dir / "final" / "adapter_model.safetensors").read_bytes() == (
        result.run_dir / "checkpoints" / "step-000006" / "adapter_model.safetensors").read_bytes()


def test_lr_schedule_warms_up_then_decays_without_reaching_zero():
    import doctest

    finder = doctest.DocTestFinder()
    [test] = [t for t in finder.find(build) if t.name.endswith(".lr_factor")]
    assert doctest.DocTestRunner(verbose=False).run(test).failed == 0  # the docstring's numbers are real
    factors = [build.lr_factor(i, total_steps=10, warmup_steps=3, schedule="cosine") for i in range(10)]
    assert factors[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert all(a > b for a, b in zip(factors[2:], factors[3:])) and factors[-1] > 0
    assert build.lr_factor(5, total_steps=10, warmup_steps=3, schedule="constant") == 1.0


def test_lora_target_modules_the_model_lacks_are_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"lora.target_modules: .*foo_proj.*q_proj"):
        run(tmp_path, "tm", "lora.target_modules=[foo_proj]")


def test_resume_with_a_data_file_gone_is_a_data_error(tmp_path):
    holdout = write_data(tmp_path / "holdout.jsonl", n=6)
    result, _ = run(tmp_path, "gone", f"data.holdout={holdout}", "max_steps=1")
    holdout.unlink()
    with pytest.raises(DataError, match="holdout file is gone"):
        train(load_config(None), out=result.run_dir, resume=True, console=Console(file=io.StringIO()))


def test_a_run_without_holdout_can_be_resumed(tmp_path):
    result, _ = run(tmp_path, "nohold", "data.holdout_fraction=0", "max_steps=2", "save_every=1", "keep_last=5")
    shutil.rmtree(result.run_dir / "checkpoints" / "step-000002")
    shutil.rmtree(result.run_dir / "final")
    resumed = train(load_config(None), out=result.run_dir, resume=True, console=Console(file=io.StringIO()))
    assert resumed.status == "completed" and resumed.steps == 2
    assert sorted(losses(result.run_dir)) == [1, 2]


def test_output_is_honeds_own_progress_not_transformers_bars(tmp_path, capfd):
    result, output = run(tmp_path, "quiet")
    captured = capfd.readouterr()
    assert "Loading weights" not in captured.err + captured.out  # transformers' own tqdm bar
    assert "FutureWarning" not in captured.err
    # the console is a StringIO (not a terminal): plain progress lines, first and last step at least
    assert re.search(r"^step 1/6  loss \d+\.\d{4}  \d+ tok/s  elapsed 0:00:\d\d  eta ", output, re.M)
    assert re.search(r"^step 6/6  .* eta 0:00:00$", output, re.M)


def test_eval_metric_without_a_scoring_function_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match="eval_metric: auto is set but no scoring function"):
        run(tmp_path, "noscorer", "eval_metric=auto")
    assert not (tmp_path / "noscorer").exists()


def test_make_score_fn_gets_the_resolved_config_and_the_holdout(tmp_path):
    seen = {}

    def make_score_fn(config, holdout):
        seen.update(epochs=config.epochs, holdout=len(holdout))
        return lambda model, tokenizer: {"holdout_exact_match": 0.25}

    result, _ = run(tmp_path, "made", "epochs=auto", "eval_metric=auto", "select_by=holdout_exact_match",
                    make_score_fn=make_score_fn)
    holdout = json.loads((result.run_dir / "data.json").read_text())["holdout"]["count"]
    assert seen["holdout"] == holdout > 0
    assert isinstance(seen["epochs"], int)  # `auto` already resolved, as config.yaml records it
    assert result.best["holdout_exact_match"] == 0.25


def evals(run_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if "holdout_loss" in r]


def test_intermediate_evaluations_use_a_fixed_sample_and_the_end_the_full_holdout(tmp_path):
    holdout = write_data(tmp_path / "holdout.jsonl", n=12)
    common = (f"data.holdout={holdout}", "eval_every=2", "early_stopping_patience=null", "lora.dropout=0.1")
    full, _ = run(tmp_path, "full", *common, "eval_subsample=null")
    sampled, output = run(tmp_path, "sampled", *common, "eval_subsample=4")
    assert "fixed sample of 4 holdout examples" in output
    assert losses(sampled.run_dir) == losses(full.run_dir)  # evaluating never changes training
    full_evals = {r["step"]: r for r in evals(full.run_dir)}
    lines = evals(sampled.run_dir)
    assert lines[0]["step"] == 0 and "holdout_examples" not in lines[0]  # step 0: the full holdout
    assert lines[0]["holdout_loss"] == pytest.approx(full_evals[0]["holdout_loss"], abs=1e-6)
    assert [r["holdout_examples"] for r in lines[1:]] == [4, 4, 4]
    assert all(r["holdout_loss"] != pytest.approx(full_evals[r["step"]]["holdout_loss"], abs=1e-9) for r in lines[1:])
    # selection ran on the sample; the best checkpoint and the last weights were then scored on all 12
    best_step = min(lines[1:], key=lambda r: r["holdout_loss"])["step"]
    assert sampled.best["step"] == best_step
    assert sampled.best["holdout_loss"] == pytest.approx(full_evals[best_step]["holdout_loss"], abs=1e-6)
    assert sampled.last_eval["holdout_loss"] == pytest.approx(full_evals[6]["holdout_loss"], abs=1e-6)
    assert sampled.first_eval == pytest.approx(full.first_eval)


def test_early_stopping_and_the_best_checkpoint_work_on_the_sample(tmp_path):
    holdout = write_data(tmp_path / "holdout.jsonl", n=12)
    result, output = run(tmp_path, "es", f"data.holdout={holdout}", "eval_subsample=4", "eval_every=1",
                         "early_stopping_patience=1", "lr=0.05", "epochs=3", "keep_last=1")
    lines = evals(result.run_dir)[1:]
    # replay the rule on the sampled numbers metrics.jsonl recorded: best = lowest, stop at the first worse
    best, stop = lines[0], None
    for line in lines[1:]:
        if line["holdout_loss"] < best["holdout_loss"]:
            best = line
        else:
            stop = line["step"]
            break
    assert stop is not None and best["step"] < stop  # lr 0.05 overshoots: this seed stops at step 2
    assert result.best["step"] == best["step"]
    assert result.steps == stop
    assert (f"early stop at step {stop}" in output) == (stop is not None)
    best_dir = result.run_dir / "checkpoints" / f"step-{best['step']:06d}"
    assert result.best_checkpoint == f"checkpoints/{best_dir.name}"
    assert (result.run_dir / "final" / "adapter_model.safetensors").read_bytes() == (
        best_dir / "adapter_model.safetensors").read_bytes()


def test_a_second_train_on_a_running_out_is_refused_and_a_failed_start_leaves_no_folder(tmp_path, monkeypatch):

    from honed.errors import ConfigError as _ConfigError
    from honed.runs.rundir import RunDir

    monkeypatch.setenv("HONED_HOME", str(tmp_path / "home"))
    out = tmp_path / "busy"
    with lock_held_elsewhere(out) as holder:
        config = load_config(None, overrides=[f"model={TINY}", "data.train=/nonexistent.jsonl"])
        with pytest.raises(_ConfigError, match=f"in use: honed train, pid {holder.pid}"):
            train(config, out=out, console=Console(file=io.StringIO()))
    missing = tmp_path / "fresh"
    config = load_config(None, overrides=[f"model={TINY}", f"data.train={tmp_path / 'nope.jsonl'}"])
    with pytest.raises(Exception):
        train(config, out=missing, console=Console(file=io.StringIO()))
    assert not missing.exists()  # nothing half-made: a plain re-run works
    assert RunDir(out).is_empty()  # only the old lock file is there, and it is free


def test_merge_writes_what_export_merged_writes(tmp_path):
    # train --merge goes through honed.model.merge.save_merged (as export --to merged does): the merged folder loads with plain
    # transformers, gives the run's logits, and stops at the chat template's end of turn like the export.
    from transformers import AutoModelForCausalLM

    from honed.model.run import load_run_model
    from honed.runs.rundir import RunDir

    result, output = run(tmp_path, "m", "merge=true", "lora.dropout=0")
    merged_dir = result.run_dir / "merged"
    assert f"merged weights in {merged_dir}" in output
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    model, tokenizer = load_run_model(RunDir(result.run_dir), checkpoint="final")
    ids = tokenizer("add 3 and 4", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, model(ids).logits, atol=1e-5, rtol=1e-5)
    assert (merged_dir / "generation_config.json").is_file() and (merged_dir / "tokenizer_config.json").is_file()


def test_a_short_run_evaluates_only_as_often_as_it_can_afford():
    """eval_subsample auto: ~5 evaluations when the holdout is cheap next to training, fewer when even the
    smallest evaluation would cost more than ~10% of it; eval_every and eval_subsample=None are obeyed as set."""
    from honed.config import TrainConfig
    from honed.train.evaluator import eval_interval, subsample_size

    assert eval_interval(TrainConfig(), total_steps=1000, holdout=5000) == 200  # 5 evaluations, 960-example samples
    assert subsample_size("auto", holdout=5000, total_steps=1000, batch_size=16, eval_every=200) == 960
    assert eval_interval(TrainConfig(batch_size=8), total_steps=25, holdout=100) == 25  # step 0 and the end only
    assert eval_interval(TrainConfig(batch_size=8), total_steps=250, holdout=200) == 84  # budget 600: 3 evaluations
    assert eval_interval(TrainConfig(eval_every=5), total_steps=25, holdout=100) == 5
    assert eval_interval(TrainConfig(batch_size=8, eval_subsample=None), total_steps=25, holdout=100) == 5
