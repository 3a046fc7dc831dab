"""Benchmark: `honed train` against TRL's SFTTrainer on the same LoRA job, in one run of this script.

Usage:
    .venv/bin/python benchmarks/train_vs_trl.py                 # full run (~10-15 min on 2 cores), writes BENCHMARKS.md
    .venv/bin/python benchmarks/train_vs_trl.py --train 40 --holdout 20 --no-write   # quick smoke run

The job: smollm2-135m, LoRA r=16 (alpha 32, no dropout) on every linear layer of the transformer blocks, AdamW,
constant learning rate, 1 epoch over the same banking77 examples rendered as chat (system prompt, user text,
assistant label), the same global batch. Systems, each in its own subprocess, one after another (so their
peak memory and threads do not mix):

- honed:        `honed.train` with its defaults for the loss (assistant tokens only), batching and precision
                (fp32 on CPU);
- honed-bf16:   the same with `precision: bf16` (bf16 autocast; needs AMX / AVX-512 BF16 on a CPU);
- trl:          SFTTrainer with its defaults (no packing, bf16 autocast, gradient checkpointing) given a
                conversational prompt-completion dataset, so it applies the chat template and trains on the
                completion (the assistant turn) only, like honed;
- trl-packing:  the same with `packing=True` (best-fit-decreasing packing, padding-free);
- trl-fp32:     TRL's defaults with `bf16=False`: what a user sets on a CPU without fast bf16 (AVX2 only),
                where bf16 autocast has no fast kernels (measured 2026-12-02: not done after 30 min for 25 steps; fp32 3.5 min);
- trl-evals:    TRL's defaults evaluating the same holdout as often as honed does (`eval_on_start` and every
                `eval_steps` = honed's evaluation interval for this job), so both tools do the same work;
- trl-fp32-evals: the same in fp32 (`bf16=False`): the like-for-like peer where bf16 is slow.

`--isa avx2` caps the instructions every system (and the matmul peak) may use to AVX2, through the switches
torch and its libraries read (ATEN_CPU_CAPABILITY for torch's own kernels, ONEDNN_MAX_CPU_ISA for oneDNN,
MKL_ENABLE_INSTRUCTIONS for MKL): a stand-in for an AVX2-only CPU on an AVX-512 one. It is not that CPU (its
caches, clock and memory stay this machine's), so the section says so. `--rounds N` runs the systems N times,
interleaved (A B A B ...), and reports each system's median run with every round's figure beside it: on a
shared VM one run of each is not a margin to trust.

`--model gemma3-270m` (or any model honed loads) runs the same job on another model: both tools get honed's
chat template for it (the family's, chosen by honed.model.template), and its section sits beside the built-in
model's. For each system the output head's share of a training step is measured too (`head_share`): the
head's forward and backward alone, on as many positions as the system computes logits for in a step (honed:
the supervised ones; TRL: every position), against the system's mean step time.

For every system: the whole process (wall and CPU seconds from the command's start, measured by this script
before it launches the system's process, to the trained model saved on disk: Python start, imports, model
load, tokenisation, honed's data checks and its holdout evaluations on their default cadence; TRL evaluates
nothing by default), real (non-padding) tokens per second of training alone (honed: `Trainer.fit` less its
holdout evaluations and checkpoint saves; TRL: `trainer.train()`), the peak resident memory of its process
(ru_maxrss), and the holdout loss after training computed by ONE function (`holdout_loss` here: mean
cross-entropy over the supervised tokens of the same holdout conversations, rendered by honed's renderer).
The fp32 matmul FLOP/s of this machine is measured in the same run, and honed's model FLOP/s is reported as
a fraction of it (see `lora_flops_per_token` for the formula).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks_md import cpu_flags, write_section  # noqa: E402  (scripts run as python benchmarks/NAME.py)

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "banking77"
MODEL = "smollm2-135m"
SYSTEM_PROMPT = (
    "You classify messages sent to a bank's customer support into one of 77 intents. "
    "Reply with the intent label only."
)
SECTION_START = "<!-- train_vs_trl:start -->"
SECTION_END = "<!-- train_vs_trl:end -->"
SYSTEMS = ("honed", "honed-bf16", "trl", "trl-packing", "trl-fp32", "trl-evals", "trl-fp32-evals")
# The default systems. Where bf16 is fast (AMX / AVX-512 BF16), TRL's defaults are bf16 autocast. Where it is
# slow (neither, or capped by --isa), TRL's bf16 defaults take over 30 min: the peers are TRL in fp32,
# evaluating nothing (its default) and evaluating as honed does.
FAST_BF16_SYSTEMS = "honed,honed-bf16,trl,trl-packing,trl-fp32,trl-evals"
SLOW_BF16_SYSTEMS = "honed,trl-fp32,trl-fp32-evals"
# --isa: the environment that caps torch, oneDNN and MKL to an instruction set.
ISA_CAPS = {"avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}}
RESULTS_NAME = "runs/bench-train-vs-trl/results.jsonl"


def variant(model: str, isa: str | None) -> str:
    """The name a run's results and section carry beside the built-in model's at full ISA ('' for that one).

    >>> variant(MODEL, None), variant(MODEL, "avx2"), variant("gemma3-270m", None), variant("gemma3-270m", "avx2")
    ('', 'avx2', 'gemma3-270m', 'gemma3-270m:avx2')
    """
    return ":".join(part for part in ("" if model == MODEL else model, isa or "") if part)


def results_path(model: str, isa: str | None = None) -> Path:
    """Where the systems' results are saved as they come: one file per model and ISA cap."""
    name = variant(model, isa).replace(":", "-")
    return ROOT / (RESULTS_NAME.replace(".jsonl", f"-{name}.jsonl") if name else RESULTS_NAME)


def section_markers(model: str, isa: str | None = None) -> tuple[str, str]:
    """The built-in model's section keeps its markers; another model's (or an ISA cap's) sits beside it."""
    name = variant(model, isa)
    return (f"<!-- train_vs_trl:{name}:start -->", f"<!-- train_vs_trl:{name}:end -->") if name else (
        SECTION_START, SECTION_END)


# ---------------------------------------------------------------------------------------------- data


def read_banking77(path: Path, *, count: int, seed: int) -> list[dict[str, Any]]:
    """`count` rows of a banking77 CSV (text, category), a seeded random sample, as chat message lists."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    sample = random.Random(seed).sample(rows, count)
    return [
        {
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": row["text"]},
                {"role": "assistant", "content": row["category"]},
            ]
        }
        for row in sample
    ]


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def conversations(records: list[dict[str, Any]]) -> list[Any]:
    from honed.data.types import Conversation

    return [Conversation.from_json(r) for r in records]


# ---------------------------------------------------------------------------------------------- shared measures


def holdout_loss(model: Any, tokenizer: Any, records: list[dict[str, Any]], *, max_length: int) -> dict[str, float]:
    """Mean cross-entropy over the supervised (assistant) tokens of `records`, one number for every system.

    Rendered by honed's renderer (the same chat template every system trains with), run one example at a time
    (no padding, so no system's attention-mask handling can change the figure), logits only where a target is.
    """
    import torch

    from honed.data.render import render_batch

    rendered = render_batch(conversations(records), tokenizer, max_length=max_length)
    decoder = model.get_decoder()
    head = model.get_output_embeddings()
    total, count, correct = 0.0, 0, 0
    model.eval()
    with torch.inference_mode():
        for r in rendered:
            ids = torch.tensor([r.input_ids])
            hidden = decoder(input_ids=ids).last_hidden_state[0]
            targets = torch.tensor(r.loss_mask[1:])  # position t predicts token t+1
            logits = head(hidden[:-1][targets]).float()
            labels = ids[0, 1:][targets]
            total += torch.nn.functional.cross_entropy(logits, labels, reduction="sum").item()
            correct += int((logits.argmax(-1) == labels).sum())
            count += int(targets.sum())
    return {"holdout_loss": total / count, "holdout_token_accuracy": correct / count, "holdout_tokens": count}


def process_cpu_seconds() -> float:
    """CPU seconds of this process so far (every thread, from its start) and of its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def trained(result: dict[str, Any], launched_at: float) -> None:
    """Stamp the whole process's figures: the trained model is on disk now."""
    result["whole_seconds"] = time.time() - launched_at
    result["whole_cpu_seconds"] = process_cpu_seconds()


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def param_counts(model: Any) -> dict[str, int]:
    """For the FLOP count: matmul weights of the blocks, the output head, the LoRA adapters (the input
    embedding is a lookup, not a matmul; with tied weights it is the head's tensor)."""
    head = model.get_output_embeddings().weight.numel()
    tied = model.get_input_embeddings().weight is model.get_output_embeddings().weight
    return {
        "body_params": sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n) - head * (1 if tied else 2),
        "head_params": head,
        "lora_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


def lora_flops_per_token(*, body_params: int, head_params: int, lora_params: int, supervised_share: float) -> float:
    """Model FLOPs one training token needs for LoRA on frozen base weights (the formula the report states).

    forward:  2*body + 2*lora                  (every token goes through every frozen matmul and adapter)
    backward: 2*body + 2*lora (activation grads) + 2*lora (adapter weight grads); no frozen weight grads
    lm head:  (2 forward + 2 backward) * head, only on the supervised share of positions (logits are only
              needed where a target is)
    Attention score FLOPs (~4*layers*seq*hidden per token) are left out: under 2% at these lengths.
    """
    return 4 * body_params + 6 * lora_params + 4 * head_params * supervised_share


def head_seconds(model: Any, *, positions: int, bf16: bool, repeats: int = 5) -> float:
    """Wall seconds of the output head's forward and backward (cross-entropy on `positions` hidden states),
    the best of `repeats`, under bf16 autocast when the system trains under it."""
    import torch

    head = model.get_output_embeddings()
    width = head.weight.shape[1]
    labels = torch.randint(0, head.weight.shape[0], (positions,))
    best = float("inf")
    for _ in range(repeats):
        hidden = torch.randn(positions, width, requires_grad=True)
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(head(hidden).float(), labels)
        loss.backward()
        best = min(best, time.perf_counter() - start)
    return best


def head_share(result: dict[str, Any], model: Any, *, positions_per_step: float, bf16: bool) -> None:
    """Add the head's seconds per step and its share of the system's mean step time to `result`."""
    seconds = head_seconds(model, positions=max(1, round(positions_per_step)), bf16=bf16)
    step = result["train_seconds"] / max(1, result["optimizer_steps"])
    result.update(head_seconds_per_step=seconds, head_share=seconds / step, head_positions_per_step=positions_per_step)


# ---------------------------------------------------------------------------------------------- systems


def chats_dataset(records: list[dict[str, Any]]) -> Any:
    """Conversational prompt-completion: TRL applies the chat template and (its default for this format)
    computes the loss on the completion, i.e. the assistant turn with its end-of-turn token, as honed does."""
    from datasets import Dataset

    return Dataset.from_list([{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in records])


def trl_evaluations(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """SFTConfig fields that make TRL evaluate the holdout when honed does for this job: before training
    (`eval_on_start`) and every honed evaluation interval (honed.train.evaluator.eval_interval)."""
    from honed.config import load_config
    from honed.train.build import total_steps
    from honed.train.evaluator import eval_interval

    config = load_config(None, overrides=honed_overrides(work, args, bf16=False))
    steps = total_steps(config, num_examples=args.train)
    return {"eval_strategy": "steps", "eval_steps": eval_interval(config, total_steps=steps, holdout=args.holdout),
            "eval_on_start": True, "per_device_eval_batch_size": args.batch}


def run_trl(work: Path, args: argparse.Namespace, *, name: str) -> dict[str, Any]:
    """Train with TRL's SFTTrainer (its defaults; `name` says which variant: packing, bf16 off, evaluating
    the holdout as honed does); return the figures."""
    import torch
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from honed.model.loading import load_model
    from honed.model.tokenizers import model_tokenizer

    phases = {"start": time.time() - args.launched_at}  # Python start and imports (torch, transformers, trl)
    loading = time.perf_counter()
    tokenizer, _ = model_tokenizer(args.model)  # honed's template for the model: both tools render alike
    model = load_model(args.model)
    phases["model"] = time.perf_counter() - loading
    dataset = chats_dataset(read_jsonl(work / "train.jsonl"))
    packing = name == "trl-packing"
    fp32, evaluating = name in ("trl-fp32", "trl-fp32-evals"), name in ("trl-evals", "trl-fp32-evals")
    precision = {"bf16": False} if fp32 else {}  # else TRL's default
    evaluations = trl_evaluations(work, args) if evaluating else {}
    config = SFTConfig(
        output_dir=str(work / name),
        per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        num_train_epochs=args.epochs,
        max_length=args.max_length,
        packing=packing,
        seed=args.seed,
        logging_steps=5,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        # Without a GPU TRL's default bf16=True stops with "You need to assign use_cpu if you want to train the
        # model on CPU"; doing what the message says keeps its other defaults (bf16 autocast, checkpointing).
        use_cpu=True,
        **precision,
        **evaluations,
    )
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    holdout = chats_dataset(read_jsonl(work / "holdout.jsonl")) if evaluating else None
    captured: dict[str, Any] = {"side_seconds": 0.0, "side_cpu_seconds": 0.0}
    time_aside(SFTTrainer, ("evaluate",), captured)
    start = time.perf_counter()
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, eval_dataset=holdout,
                         processing_class=tokenizer, peft_config=lora)
    prepared = time.perf_counter()
    cpu_start = time.process_time()
    trainer.train()
    end = time.perf_counter()
    cpu_seconds = time.process_time() - cpu_start - captured["side_cpu_seconds"]
    trainer.save_model(str(work / f"{name}-final"))  # honed writes final/ too
    # SFTTrainer's constructor tokenises the dataset (and wraps the model in peft): the "render" phase.
    phases.update(render=prepared - start, steps=end - prepared - captured["side_seconds"],
                  evaluations=captured["side_seconds"], checkpoints=time.perf_counter() - end)
    whole: dict[str, Any] = {}
    trained(whole, args.launched_at)
    peak = peak_rss_mib()
    real_tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"]) * args.epochs
    supervised = sum(sum(1 for x in labels if x != -100) for labels in trainer.train_dataset["labels"]) * args.epochs
    logged = [h for h in trainer.state.log_history if "num_tokens" in h]
    result = {
        "system": name,
        "train_seconds": end - prepared - captured["side_seconds"],
        "eval_and_checkpoint_seconds": captured["side_seconds"],
        "evaluations": sum(1 for h in trainer.state.log_history if "eval_loss" in h),
        "cpu_seconds": cpu_seconds,
        "setup_seconds": prepared - start,
        "real_tokens": real_tokens,
        "supervised_tokens": supervised,
        "trl_logged_num_tokens": logged[-1]["num_tokens"] if logged else None,
        "sequences": len(trainer.train_dataset),
        "optimizer_steps": trainer.state.global_step,
        "peak_rss_mib": peak,
        "final_train_loss": next((h["loss"] for h in reversed(trainer.state.log_history) if "loss" in h), None),
        "bf16": config.bf16,
        "gradient_checkpointing": config.gradient_checkpointing,
        "threads": torch.get_num_threads(),
        "phases": phases,
        **whole,
    }
    result.update(holdout_loss(trainer.model, tokenizer, read_jsonl(work / "holdout.jsonl"), max_length=args.max_length))
    # TRL (transformers' causal-LM loss) computes logits at every position (its padding too, not counted here)
    head_share(result, trainer.model, positions_per_step=real_tokens / max(1, trainer.state.global_step), bf16=bool(config.bf16))
    return result


def honed_overrides(work: Path, args: argparse.Namespace, *, bf16: bool) -> list[str]:
    """honed's settings for the job (the same LoRA, optimizer, batch and data as TRL gets)."""
    return [
        f"model={args.model}", "method=lora", "lora.r=16", "lora.alpha=32", "lora.dropout=0",
        "lora.target_modules=all-linear", f"lr={args.lr}", "schedule=constant", "warmup_ratio=0",
        "weight_decay=0", f"epochs={args.epochs}", f"batch_size={args.batch}", f"max_length={args.max_length}",
        f"seed={args.seed}", f"num_threads={args.threads}", f"data.holdout={work / 'holdout.jsonl'}",
        f"data.train={work / 'train.jsonl'}", f"precision={'bf16' if bf16 else 'fp32'}", *args.honed_set,
    ]


def run_honed(work: Path, args: argparse.Namespace, *, bf16: bool) -> dict[str, Any]:
    """Train with honed's loop (`honed.train.train`, what `honed train` calls); return the figures.

    As a user runs it: the holdout file is given (`honed train --holdout`), so the whole-process time includes
    honed's data checks and its holdout evaluations and checkpoints on their default cadence. The training
    clock covers `Trainer.fit` less the time inside those evaluations and checkpoint saves (timed by
    wrapping them), like TRL's `trainer.train()`; rendering the data and building the model come before it.
    """
    import torch
    from rich.console import Console

    from honed.config import load_config
    from honed.train import loop
    from honed.train.checkpoint import Checkpointer
    from honed.train.evaluator import HoldoutEvaluator

    config = load_config(None, overrides=honed_overrides(work, args, bf16=bf16))
    captured: dict[str, Any] = {"side_seconds": 0.0, "side_cpu_seconds": 0.0}
    original_fit = loop.Trainer.fit

    def timed_fit(trainer: Any) -> None:
        start, cpu_start = time.perf_counter(), time.process_time()
        original_fit(trainer)
        captured.update(seconds=time.perf_counter() - start, cpu_seconds=time.process_time() - cpu_start)
        captured.update(model=trainer.model, tokenizer=trainer.tokenizer, trainer=trainer)

    loop.Trainer.fit = timed_fit  # type: ignore[method-assign]
    time_aside(HoldoutEvaluator, ("evaluate_before_training", "maybe_evaluate"), captured)
    time_aside(Checkpointer, ("maybe_save",), captured)
    os.environ.setdefault("HONED_HOME", str(work / "honed-home"))
    run_dir = work / ("honed-bf16-run" if bf16 else "honed-run")
    shutil.rmtree(run_dir, ignore_errors=True)  # an earlier round's run (--rounds): this round trains afresh
    loop.train(config, out=run_dir, console=Console(quiet=True))
    whole: dict[str, Any] = {}
    trained(whole, args.launched_at)
    peak = peak_rss_mib()
    examples = captured["trainer"].examples
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if "loss" in m]
    result = {
        "system": "honed-bf16" if bf16 else "honed",
        "train_seconds": captured["seconds"] - captured["side_seconds"],
        "cpu_seconds": captured["cpu_seconds"] - captured["side_cpu_seconds"],
        "eval_and_checkpoint_seconds": captured["side_seconds"],
        **whole,
        **param_counts(captured["model"]),
        "real_tokens": sum(len(e) for e in examples) * args.epochs,
        "supervised_tokens": sum(e.num_targets for e in examples) * args.epochs,
        "sequences": len(examples),
        "optimizer_steps": len(steps),
        "computed_tokens": computed_positions(captured["trainer"], steps=len(steps)),
        "peak_rss_mib": peak,
        "final_train_loss": steps[-1]["loss"] if steps else None,
        "packing": config.packing,
        "settings": args.honed_set,
        "phases": honed_phases(run_dir, launched_at=args.launched_at),
        "threads": torch.get_num_threads(),
    }
    result.update(holdout_loss(captured["model"], captured["tokenizer"], read_jsonl(work / "holdout.jsonl"), max_length=args.max_length))
    result["evaluations"] = sum(1 for m in metrics if "holdout_loss" in m)
    # honed's loss computes logits only where a target is (honed/train/loss.py)
    head_share(result, captured["model"], positions_per_step=result["supervised_tokens"] / max(1, len(steps)), bf16=bf16)
    return result


def computed_positions(trainer: Any, *, steps: int) -> int:
    """Positions honed's model computed over the run's steps (its micro-batches replanned: the shared prefix
    counted once per row, no padding), for the FLOP accounting; fewer than the real tokens."""
    from honed.train.batching import step_examples

    total = 0
    for step in range(1, steps + 1):
        _, indices = step_examples(len(trainer.examples), seed=trainer.config.seed, step=step,
                                   batch_size=trainer.config.batch_size)
        total += sum(b.num_positions for b in trainer.micro_batches([trainer.examples[i] for i in indices]))
    return total


def honed_phases(run_dir: Path, *, launched_at: float) -> dict[str, float]:
    """honed's own per-phase wall seconds (run.json `timings`, honed/train/timings.py), its `start` counted
    from this script's launch of the process like TRL's; `data` (reading, the data checks) joins `render`."""
    from honed.train.timings import process_started_at

    timings = json.loads((run_dir / "run.json").read_text())["timings"]
    phases = {name: timings.get(name, 0.0) for name in ("model", "steps", "evaluations", "checkpoints")}
    phases["render"] = timings.get("data", 0.0) + timings.get("render", 0.0)
    phases["start"] = timings.get("start", 0.0) + max(0.0, process_started_at() - launched_at)
    return phases


def time_aside(cls: Any, names: tuple[str, ...], captured: dict[str, Any]) -> None:
    """Wrap `cls`'s methods `names` so the wall and CPU seconds spent in them add up in `captured`."""
    for name in names:
        original = getattr(cls, name)

        def timed(self: Any, *a: Any, _original: Any = original, **kw: Any) -> Any:
            start, cpu_start = time.perf_counter(), time.process_time()
            try:
                return _original(self, *a, **kw)
            finally:
                captured["side_seconds"] += time.perf_counter() - start
                captured["side_cpu_seconds"] += time.process_time() - cpu_start

        setattr(cls, name, timed)


def child(system: str, work: Path, args: argparse.Namespace) -> None:
    """Run one system in this (fresh) process and print its figures as one JSON line."""
    if system.startswith("honed"):
        import honed  # noqa: F401  (first: its OpenMP wait policy, honed/threads.py, is part of honed)
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if system.startswith("honed"):
        result = run_honed(work, args, bf16=system == "honed-bf16")
    else:
        result = run_trl(work, args, name=system)
    result["tokens_per_s"] = result["real_tokens"] / result["train_seconds"]
    result["tokens_per_cpu_s"] = result["real_tokens"] / result["cpu_seconds"]
    result["done_at"] = time.time()  # the parent counts from here to the process's end as the `exit` phase
    print("RESULT " + json.dumps(result), flush=True)


def run_child(system: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", system, "--work", str(work)] + child_flags(args)
    print(f"== {system}: {' '.join(command[1:])}", flush=True)
    # The whole-process clock starts here, before the system's Python starts (--launched-at).
    command.append(f"--launched-at={time.time()!r}")
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=child_environment())
    ended = time.time()
    (work / f"{system}.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{system} failed (exit {proc.returncode}); log: {work / f'{system}.log'}\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT ") :])
    if "phases" in result:
        result["phases"]["exit"] = ended - result.pop("done_at")  # interpreter teardown (threads, atexit)
    print(json.dumps(result, indent=1), flush=True)
    return result


def child_environment() -> dict[str, str]:
    """This environment less OpenMP wait settings: each system starts from its own defaults."""
    return {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}


def child_flags(args: argparse.Namespace) -> list[str]:
    return [
        f"--train={args.train}", f"--holdout={args.holdout}", f"--batch={args.batch}", f"--lr={args.lr}",
        f"--epochs={args.epochs}", f"--max-length={args.max_length}", f"--seed={args.seed}",
        f"--threads={args.threads}", f"--model={args.model}", *[f"--honed-set={kv}" for kv in args.honed_set],
    ]


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=200, help="training examples")
    parser.add_argument("--holdout", type=int, default=100, help="holdout examples")
    parser.add_argument("--batch", type=int, default=8, help="global batch (examples per optimizer step)")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default=MODEL, help=f"model both tools train (default: the built-in {MODEL})")
    parser.add_argument("--systems", default=None, help=f"comma-separated (default: {FAST_BF16_SYSTEMS} where bf16 is fast; "
                        f"else {SLOW_BF16_SYSTEMS}, "
                        "since TRL's bf16 defaults take over 30 min on an AVX2-only CPU: name trl to run them anyway)")
    parser.add_argument("--honed-set", action="append", default=[], help="extra honed config override (key=value)")
    parser.add_argument("--isa", choices=sorted(ISA_CAPS), help="cap every system to this instruction set "
                        "(a stand-in for an older CPU: see the module's docstring)")
    parser.add_argument("--rounds", type=int, default=1, help="run the systems this many times, interleaved; "
                        "the report holds each one's median run")
    parser.add_argument("--no-write", action="store_true", help="print, do not update BENCHMARKS.md")
    parser.add_argument("--render-only", action="store_true", help=f"render the results saved in {RESULTS_NAME} "
                        "(-MODEL.jsonl for another --model)")
    parser.add_argument("--child", choices=SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--launched-at", type=float, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.child:
        child(args.child, args.work, args)
        return
    if not DATA.is_dir():
        raise SystemExit(f"{DATA} is missing: this benchmark reads banking77 from ../shared/data")
    os.environ.update(ISA_CAPS.get(args.isa or "", {}))  # before torch loads; the systems' processes inherit it
    from honed.train.build import cpu_has_fast_bf16

    load_before = os.getloadavg()
    if args.render_only:  # the systems' results as saved by an earlier run (one JSON object per line)
        results = [json.loads(line) for line in results_path(args.model, args.isa).read_text().splitlines()
                   if line.strip()]
    else:
        if args.systems is None:
            args.systems = FAST_BF16_SYSTEMS if cpu_has_fast_bf16() else SLOW_BF16_SYSTEMS
        results = run_systems(args)
    flops = matmul_flops(args.threads, "float32")
    # bf16 matmuls without AMX / AVX-512 BF16 run at ~2% of fp32's speed: not worth minutes of measuring
    bf16_flops = matmul_flops(args.threads, "bfloat16") if cpu_has_fast_bf16() else 0.0
    load_after = os.getloadavg()
    report = render_report(results, flops, bf16_flops, args, load=(load_before, load_after))
    print(report)
    if not args.no_write:
        start, end = section_markers(args.model, args.isa)
        write_section(ROOT / "BENCHMARKS.md", report, start=start, end=end)


def run_systems(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each system in its own process, one after another; each result is also saved to RESULTS as it comes,
    so a slow peer can be stopped without losing the others (`--render-only` renders them)."""
    results_file = results_path(args.model, args.isa)
    results_file.parent.mkdir(parents=True, exist_ok=True)
    results_file.write_text("")
    results = []
    with tempfile.TemporaryDirectory(prefix="honed-bench-") as tmp:
        work = Path(tmp)
        write_jsonl(work / "train.jsonl", read_banking77(DATA / "train.csv", count=args.train, seed=args.seed))
        write_jsonl(work / "holdout.jsonl", read_banking77(DATA / "test.csv", count=args.holdout, seed=args.seed))
        for round_ in range(1, args.rounds + 1):  # interleaved: A B A B ..., so drifting load hits all alike
            for system in args.systems.split(","):
                results.append({**run_child(system, work, args), "round": round_})
                with results_file.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(results[-1]) + "\n")
    return results


def median_runs(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each system's median run by whole-process seconds (the lower middle of an even count), in first-seen order.

    >>> runs = [{"system": "a", "whole_seconds": s} for s in (9.0, 5.0, 7.0)] + [{"system": "b", "whole_seconds": 1.0}]
    >>> [(r["system"], r["whole_seconds"]) for r in median_runs(runs)]
    [('a', 7.0), ('b', 1.0)]
    """
    by: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by.setdefault(r["system"], []).append(r)
    return [sorted(runs, key=lambda r: r["whole_seconds"])[(len(runs) - 1) // 2] for runs in by.values()]


def rounds_lines(results: list[dict[str, Any]]) -> list[str]:
    """Every round's whole-process seconds per system, and honed's ratio to each peer round by round."""
    rounds = sorted({r.get("round", 1) for r in results})
    if len(rounds) < 2:
        return []
    seconds = {(r["system"], r.get("round", 1)): r["whole_seconds"] for r in results}
    systems = list(dict.fromkeys(r["system"] for r in results))
    lines = ["", f"{len(rounds)} interleaved rounds (the table above holds each system's median run): whole "
             "process seconds, round by round:", ""]
    for system in systems:
        lines.append(f"- {system}: " + ", ".join(f"{seconds[system, k]:.1f}" for k in rounds if (system, k) in seconds))
    for peer in (s for s in systems if not s.startswith("honed")):
        ratios = [seconds[peer, k] / seconds["honed", k] for k in rounds
                  if (peer, k) in seconds and ("honed", k) in seconds]
        if ratios:
            lines.append(f"- {peer} / honed, round by round: " + ", ".join(f"{x:.2f}x" for x in ratios)
                         + f" (lowest {min(ratios):.2f}x)")
    return lines


def matmul_flops(threads: int, dtype: str) -> float:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "matmul_flops.py"), f"--threads={threads}", f"--dtype={dtype}"],
        capture_output=True, text=True, check=True,
    )
    return float(json.loads(out.stdout.splitlines()[0])["best_flops"])


def whole_process_lines(by: dict[str, dict[str, Any]]) -> list[str]:
    """honed's whole process against TRL's: how many times faster the user gets a trained model (target 2x)."""
    lines = []
    for name in ("honed", "honed-bf16"):
        for peer in ("trl", "trl-packing", "trl-fp32", "trl-evals", "trl-fp32-evals"):
            if name in by and peer in by:
                mine, theirs = by[name], by[peer]
                ratio = theirs["whole_seconds"] / mine["whole_seconds"]
                cpu = theirs["whole_cpu_seconds"] / mine["whole_cpu_seconds"]
                verdict = "met" if ratio >= 2.0 else "NOT met"
                same = (f"; both evaluated the holdout {mine.get('evaluations')} / {theirs.get('evaluations')} times"
                        if peer.endswith("-evals") else "")
                lines.append(
                    f"- whole process, {peer} / {name}: **{ratio:.2f}x** faster to a trained model "
                    f"({mine['whole_seconds']:.0f} s vs {theirs['whole_seconds']:.0f} s; target 2x: {verdict}), "
                    f"{cpu:.2f}x less CPU; honed spent {mine['eval_and_checkpoint_seconds']:.1f} s of it in holdout "
                    f"evaluations and checkpoints{same}"
                )
    return lines


PHASE_ROWS = (
    ("start", "process start and imports (to the training call)"),
    ("model", "model load (and honed's LoRA wrap)"),
    ("render", "data read, checks and tokenisation (TRL: SFTTrainer's constructor)"),
    ("steps", "training steps (forward, backward, optimizer)"),
    ("evaluations", "holdout evaluations (honed: before training and on its cadence; TRL: none by default, trl-evals: as honed)"),
    ("checkpoints", "checkpoint saves and the final model"),
    ("exit", "exit (interpreter teardown)"),
)


def phase_table(results: list[dict[str, Any]]) -> list[str]:
    """Where each system's whole process goes, phase by phase (seconds and share of its whole process); the
    rest is what neither clock covers (the benchmark's own holdout-loss pass after training, mostly)."""
    timed = [r for r in results if r.get("phases")]
    if not timed:
        return []
    lines = ["", "Where the time goes (wall seconds, share of the whole process; the largest row is the next target):",
             "", "| phase | " + " | ".join(r["system"] for r in timed) + " |", "|---|" + "---|" * len(timed)]
    for key, label in PHASE_ROWS:
        cells = [f"{r['phases'].get(key, 0.0):.1f} ({100 * r['phases'].get(key, 0.0) / r['whole_seconds']:.0f}%)"
                 for r in timed]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| whole process (to the trained model on disk) | "
                 + " | ".join(f"{r['whole_seconds']:.1f}" for r in timed) + " |")
    return lines


LABELS = {
    "honed": "honed defaults (`honed.train`: packing with the shared prefix once per row, fp32, no checkpointing)",
    "honed-bf16": "honed, `precision: bf16` (bf16 autocast on AMX, as TRL's default)",
    "trl": "TRL SFTTrainer defaults (no packing, bf16 autocast, gradient checkpointing)",
    "trl-packing": "TRL SFTTrainer, `packing=True` (bfd, padding-free)",
    "trl-fp32": "TRL SFTTrainer defaults with `bf16=False` (fp32, no packing, gradient checkpointing)",
    "trl-evals": "TRL SFTTrainer defaults, evaluating the holdout when honed does (`eval_on_start`, `eval_steps`)",
    "trl-fp32-evals": "TRL SFTTrainer with `bf16=False`, evaluating the holdout when honed does",
}


def head_lines(results: list[dict[str, Any]]) -> list[str]:
    """The output head's share of each system's training step (measured alone: see `head_share`)."""
    timed = [r for r in results if "head_share" in r]
    if not timed:
        return []
    cells = ", ".join(f"{r['system']} {100 * r['head_share']:.0f}% ({r['head_seconds_per_step']:.2f} s of a step, "
                      f"{r['head_positions_per_step']:.0f} positions)" for r in timed)
    return [f"- the output head's share of a training step (its forward and backward alone, on the positions the "
            f"system computes logits for, against the mean step): {cells}"]


def render_report(
    results: list[dict[str, Any]], flops: float, bf16_flops: float, args: argparse.Namespace, *, load: Any
) -> str:
    """The BENCHMARKS.md section: machine, command, date, the table, ratios and the FLOP accounting."""
    import torch
    import transformers
    import trl

    every_round, results = results, median_runs(results)
    by = {r["system"]: r for r in results}
    rounds = len({r.get("round", 1) for r in every_round})  # from the results: --render-only renders saved rounds
    extra = (f" --isa {args.isa}" if args.isa else "") + (f" --rounds {rounds}" if rounds > 1 else "")
    command = ("python benchmarks/train_vs_trl.py --systems " + ",".join(r["system"] for r in results) + extra
               + " " + " ".join(child_flags(args)))
    switches = ", ".join(f"{k}={v}" for k, v in ISA_CAPS[args.isa].items()) if args.isa else ""
    capped = (f", every system capped to {args.isa.upper()} ({switches}): a stand-in for an {args.isa.upper()}-only "
              "CPU, with this machine's caches, clock and memory" if args.isa else "")
    lines = [
        f"## Training speed: honed vs TRL SFTTrainer (LoRA r=16, {args.model}, banking77 chats{capped})",
        "",
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; machine: {platform.machine()}, "
        f"{os.cpu_count()} cores, CPU flags {cpu_flags()}, Linux {platform.release()}, no GPU; torch {torch.__version__}, "
        f"transformers {transformers.__version__}, trl {trl.__version__}",
        f"- command: `{command}`",
        f"- load average (1/5/15 min) before: {'/'.join(f'{x:.1f}' for x in load[0])}, after: "
        f"{'/'.join(f'{x:.1f}' for x in load[1])} (the 2 cores are shared with other work: compare ratios within "
        "this run, and the CPU-time column, which contention distorts less)",
        f"- job: {args.train} training chats (banking77 train.csv, seeded sample), 1 system prompt + user text + "
        f"assistant label; {args.holdout} holdout chats (test.csv); global batch {args.batch} examples, lr "
        f"{args.lr:g} constant, AdamW, no weight decay, grad clip 1.0, {args.epochs} epoch, max_length "
        f"{args.max_length}, LoRA r=16 alpha=32 dropout 0 on all linear layers of the blocks, "
        f"{args.threads} threads; each system in its own process, one after another",
        "- loss: every system trains on the assistant turn only (TRL: conversational prompt-completion data, "
        "its default `completion_only_loss`); a `messages` dataset would make TRL train on every token "
        "(its `assistant_only_loss` needs `{% generation %}` markers the SmolLM2 template lacks)",
        "- holdout loss: one function for all (`holdout_loss` in the script): mean cross-entropy over the "
        "assistant tokens of the same holdout chats, rendered by honed's renderer, after training",
        "",
        "- whole process: wall and CPU seconds from the moment this script launches the system's process to the "
        "trained model saved on disk (Python start, imports, model load, tokenisation, honed's data checks, its "
        "holdout evaluations and checkpoints at their default cadence; TRL evaluates nothing by default); train s "
        "and tokens/s: the training loop alone (honed: less its evaluations and checkpoint saves)",
        "",
        "| system | optimizer steps | real tokens (supervised) | whole process s | whole process CPU s | train s | "
        "real tokens/s | tokens/CPU-s | peak RSS MiB | holdout loss | holdout token acc |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {LABELS[r['system']]} | {r['optimizer_steps']} | {r['real_tokens']} ({r['supervised_tokens']}) | "
            f"**{r['whole_seconds']:.1f}** | {r['whole_cpu_seconds']:.1f} | "
            f"{r['train_seconds']:.1f} | **{r['tokens_per_s']:.1f}** | {r['tokens_per_cpu_s']:.1f} | "
            f"{r['peak_rss_mib']:.0f} | {r['holdout_loss']:.4f} | {r['holdout_token_accuracy']:.3f} |"
        )
    lines += phase_table(results)
    lines += rounds_lines(every_round)
    lines.append("")
    lines += whole_process_lines(by)
    lines += head_lines(results)
    for name in ("honed", "honed-bf16"):
        mine = by.get(name)
        for peer, target in (("trl", 3.0), ("trl-packing", 1.3), ("trl-fp32", 3.0)):
            if mine and peer in by:
                ratio = mine["tokens_per_s"] / by[peer]["tokens_per_s"]
                cpu_ratio = mine["tokens_per_cpu_s"] / by[peer]["tokens_per_cpu_s"]
                loss_ok = "equal or better" if mine["holdout_loss"] <= by[peer]["holdout_loss"] + 1e-3 else "WORSE"
                lines.append(
                    f"- {name} / {peer}: **{ratio:.2f}x** real tokens/s (target {target}x), {cpu_ratio:.2f}x per "
                    f"CPU-second; holdout loss {mine['holdout_loss']:.4f} vs {by[peer]['holdout_loss']:.4f} ({loss_ok})"
                )
    honed = by.get("honed")
    if honed:
        computed = honed.get("computed_tokens") or honed["real_tokens"]
        share = honed["supervised_tokens"] / computed
        per_token = lora_flops_per_token(
            body_params=honed["body_params"], head_params=honed["head_params"],
            lora_params=honed["lora_params"], supervised_share=share,
        )
        lines += [
            f"- this machine's matmul peak with {args.threads} threads (`benchmarks/matmul_flops.py`, best of "
            f"transformer-shaped and square products): fp32 **{flops / 1e9:.0f} GFLOP/s**, bf16 (AMX) "
            + (f"**{bf16_flops / 1e9:.0f} GFLOP/s**" if bf16_flops
               else "not measured (bf16 is slow here: no AMX / AVX-512 BF16, or capped by --isa)"),
            f"- honed computed {computed} positions for the {honed['real_tokens']} real tokens "
            f"({computed / honed['real_tokens']:.2f}: the tokens every example of a step starts with are held once "
            "per packed row, honed/train/batching.py); the FLOP accounting counts the computed positions",
            f"- LoRA model FLOPs per computed position = 4*N_body + 6*N_lora + 4*N_head*s = 4*{honed['body_params'] / 1e6:.1f}M"
            f" + 6*{honed['lora_params'] / 1e6:.2f}M + 4*{honed['head_params'] / 1e6:.1f}M*{share:.3f} = "
            f"{per_token / 1e6:.0f} MFLOP: forward 2*N through the frozen blocks and adapters, backward only the "
            "activation gradients 2*N plus the adapters' weight gradients 2*N_lora (no frozen-weight gradients), "
            "the output head only on the supervised positions (s of the computed ones); attention scores left out "
            "(<2% here). Full fine-tuning would count 6*N.",
        ]
        for name, peak, kind in (("honed", flops, "fp32"), ("honed-bf16", bf16_flops, "bf16")):
            if name in by and peak:
                mine = by[name]
                achieved = per_token * mine["tokens_per_s"] * (mine.get("computed_tokens") or mine["real_tokens"]) / mine["real_tokens"]
                lines.append(
                    f"- {name} reaches {achieved / 1e9:.1f} GFLOP/s of model FLOPs = **{100 * achieved / peak:.0f}%** "
                    f"of the {kind} matmul peak"
                )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
