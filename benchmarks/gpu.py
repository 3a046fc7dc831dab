"""Benchmark and checks of honed's GPU path on one GPU, with no network: `bash benchmarks/gpu.sh` runs this.

Usage:
    python3 benchmarks/gpu.py --out "$OUT"          # on one H100/H200: under 8 minutes
    python3 benchmarks/gpu.py --dry-run --out /tmp/gpu-dry   # the same code on the CPU, tiny shapes, ~2 min

Models are built from a config with random weights (no hub is reachable there) and saved as a local folder
with the test tokenizer (tests/assets/tiny-llama), so every job runs honed's own training code
(`honed.train.train`, what `honed train` calls) on a model spec like any user's. Data: synthetic chats of
common words, seeded. Every job runs in its own process (its own peak memory), one after another:

- curve-cpu / curve-gpu: the same tiny seeded run (fp32, LoRA) on the CPU and on the GPU: the loss curves
  must agree within 1e-4 at every step;
- packing: per-example losses of packed rows (honed's block-diagonal mask) against one example per row,
  through the GPU's attention kernel (SDPA), fp32 and bf16 autocast;
- full: full fine-tuning of a ~1B Llama-shaped model (Llama-3.2-1B's shape), bf16 autocast: real tokens/s,
  MFU = 6 * parameters * tokens/s over the GPU's dense bf16 peak, peak GPU memory;
- lora: LoRA r=16 on all linear layers of the same model (MFU counted as for full fine-tuning: 6N);
- qlora: the same on a 4-bit NF4 base, when bitsandbytes is importable;
- trl: TRL's SFTTrainer, the same LoRA job with padding-free packing, when trl is importable.

Results: gpu.json and gpu.md under --out. Targets (issue 13): full fine-tuning >= 40% MFU; LoRA >= 1.5x
TRL's tokens/s at <= 0.7x its peak memory; the curves within 1e-4; packed = unpacked.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER = ROOT / "tests" / "assets" / "tiny-llama"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
CURVE_TOLERANCE = 1e-4
# Dense bf16 tensor-core peaks (no sparsity), FLOP/s, from NVIDIA's data sheets; matched on the device name.
BF16_PEAKS = (("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("A100", 312e12), ("L40S", 362e12))
WORDS = ("the a to of and in is it you that was for on are with as his they be at one have this from or had "
         "by word but what some we can out other were all there when up use your how said an each she which do "
         "their time if will way about many then them write would like so these her long make thing see him two "
         "has look more day could go come did number sound no most people my over know water than call first").split()

# (hidden, intermediate, layers, heads, kv heads, vocab); ~1B = Llama-3.2-1B's shape (1.24B parameters, tied).
SHAPES = {
    # a larger initialisation than training's 0.02, so attention visibly matters: a mask that leaks across
    # packed examples changes the losses (the packing job's "leak control" shows the check can fail)
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512, initializer_range=0.2),
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256),
}


# ---------------------------------------------------------------------------------------------- setup


def build_model_folder(folder: Path, *, shape: str, device: str, seed: int = 0) -> int:
    """Save a Llama model of `shape` with random weights and the test tokenizer to `folder`; return its
    parameter count. Built on `device` (fast initialisation on a GPU), saved in bf16 for the large shape."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(**SHAPES[shape], max_position_embeddings=4096, tie_word_embeddings=True,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0, rms_norm_eps=1e-5)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    if shape != "tiny":
        model = model.to(torch.bfloat16)  # half the bytes to write and read; honed loads it in fp32
    model.save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copy(TOKENIZER / name, folder / name)
    count = sum(p.numel() for p in model.parameters())
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()  # the jobs run in other processes: give them the memory
    return count


def write_chats(path: Path, *, count: int, words: int, seed: int = 0) -> None:
    """`count` synthetic chats: a user turn and an assistant turn of about `words` words each, seeded."""
    rng = random.Random(seed)

    def text(n: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(max(1, n)))

    rows = []
    for _ in range(count):
        n = rng.randint(words // 2, words)
        rows.append({"messages": [{"role": "user", "content": text(n)}, {"role": "assistant", "content": text(n)}]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


# ---------------------------------------------------------------------------------------------- jobs (children)


def honed_job(work: Path, name: str, *, model: Path, device: str, method: str, precision: str, steps: int, batch: int,
              max_length: int, data: Path) -> dict[str, Any]:
    """Train with `honed.train.train` and return its per-step figures from metrics.jsonl."""
    import torch
    from rich.console import Console

    from honed.config import load_config
    from honed.train import train

    overrides = [
        f"model={model}", f"method={method}", "lora.r=16", "lora.alpha=32", "lora.dropout=0",
        "lora.target_modules=all-linear", "lr=0.0001", "schedule=constant", "warmup_ratio=0", "seed=0",
        f"batch_size={batch}", f"max_length={max_length}", f"micro_batch_tokens={batch * max_length}",
        f"max_steps={steps}", "epochs=100", "data.holdout_fraction=0", "save_every=1000000", f"data.train={data}",
        f"precision={precision}", f"device={'cuda' if device.startswith('cuda') else 'cpu'}",
    ]
    run_dir = work / f"run-{name}"
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    train(load_config(None, overrides=overrides), out=run_dir, console=Console(quiet=True))
    steps_done = [m for m in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "loss" in m]
    timed = steps_done[2:] or steps_done  # the first steps warm up kernels and the allocator
    seconds = sum(m["tokens"] / m["tokens_per_s"] for m in timed)
    return {
        "losses": [m["loss"] for m in steps_done],
        "tokens_per_s": sum(m["tokens"] for m in timed) / seconds,
        "timed_steps": len(timed),
        "tokens_per_step": sum(m["tokens"] for m in timed) / len(timed),
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None,
    }


def packing_job(*, model: Path, device: str, data: Path, max_length: int) -> dict[str, Any]:
    """Largest difference between per-example losses of packed rows and of one example per row."""
    import torch

    from honed.data.read import read_conversations
    from honed.data.render import render_batch
    from honed.model.loading import load_model, load_tokenizer
    from honed.train.batching import Example, collate
    from honed.train.loss import per_example_losses

    tokenizer = load_tokenizer(str(model))
    net = load_model(str(model), device=device).eval()
    rendered = render_batch(read_conversations(data).conversations[:8], tokenizer, max_length=max_length)
    examples = [Example(index=i, input_ids=r.input_ids, loss_mask=r.loss_mask) for i, r in enumerate(rendered)]
    pad = tokenizer.pad_token_id or 0
    result: dict[str, Any] = {"attention": getattr(net.config, "_attn_implementation", "?")}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        cast = torch.autocast(device.split(":")[0], dtype=dtype) if dtype else contextlib.nullcontext()
        with torch.no_grad(), cast:
            packed = per_example_losses(net, collate([examples[:4], examples[4:]], pad_id=pad).to(device))
            alone = {}
            for e in examples:
                alone.update(per_example_losses(net, collate([[e]], pad_id=pad).to(device)))
        result[f"max_diff_{name}"] = max(abs(packed[i] - alone[i]) for i in alone)
    # Leak control: the same packed rows with a plain causal mask (examples see each other) must differ.
    batch = collate([examples[:4], examples[4:]], pad_id=pad)
    width = batch.input_ids.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool).tril().expand(2, 1, width, width)
    with torch.no_grad():
        leaky = per_example_losses(net, dataclasses.replace(batch, attention_mask=causal).to(device))
    result["leak_control_diff"] = max(abs(leaky[i] - alone[i]) for i in alone)
    return result


def trl_job(work: Path, *, model: Path, device: str, steps: int, batch: int, max_length: int, data: Path) -> dict[str, Any]:
    """TRL's SFTTrainer: LoRA r=16 all-linear, padding-free packing, bf16; tokens/s and peak memory."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from honed.model.loading import load_model, load_tokenizer

    rows = [json.loads(line) for line in data.read_text().splitlines()]
    config = SFTConfig(
        output_dir=str(work / "trl"), per_device_train_batch_size=batch, learning_rate=1e-4, lr_scheduler_type="constant",
        max_steps=steps, max_length=max_length, packing=True, padding_free=True, bf16=device.startswith("cuda"),
        use_cpu=not device.startswith("cuda"), logging_steps=1, save_strategy="no", report_to=[], disable_tqdm=True,
        seed=0, gradient_checkpointing=False,
    )
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    marks: list[tuple[float, float]] = []  # (time, TRL's running count of trained tokens) after every step

    class Clock(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            if logs and "num_tokens" in logs:
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                marks.append((time.perf_counter(), float(logs["num_tokens"])))

    trainer = SFTTrainer(model=load_model(str(model), device=device), args=config, train_dataset=Dataset.from_list(rows),
                         processing_class=load_tokenizer(str(model)), peft_config=lora, callbacks=[Clock()])
    trainer.train()
    first = marks[1] if len(marks) > 2 else marks[0]  # as for honed: the first 2 steps are not timed
    return {
        "tokens_per_s": (marks[-1][1] - first[1]) / (marks[-1][0] - first[0]), "steps": trainer.state.global_step,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None,
        "note": "TRL's own count of trained tokens (num_tokens), after the first 2 steps",
    }


def child(args: argparse.Namespace) -> None:
    """Run one job in this fresh process and print its figures as one JSON line."""
    import honed  # noqa: F401  (first: honed's thread settings before torch)

    plan = json.loads(args.plan)
    work, job = Path(plan["work"]), args.child
    common = dict(model=Path(plan["model_tiny" if job.startswith("curve") or job == "packing" else "model_large"]))
    if job.startswith("curve"):
        device = "cpu" if job == "curve-cpu" else plan["device"]
        result = honed_job(work, job, device=device, method="lora", precision="fp32", steps=plan["curve_steps"], batch=4,
                           max_length=128, data=Path(plan["tiny_data"]), **common)
    elif job == "packing":
        result = packing_job(device=plan["device"], data=Path(plan["tiny_data"]), max_length=128, **common)
    elif job == "trl":
        result = trl_job(work, device=plan["device"], steps=plan["steps"], batch=plan["batch"],
                         max_length=plan["max_length"], data=Path(plan["data"]), **common)
    else:
        result = honed_job(work, job, device=plan["device"], method=job, precision=plan["precision"], steps=plan["steps"],
                           batch=plan["batch"], max_length=plan["max_length"], data=Path(plan["data"]), **common)
    print("RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------------- parent


def run_job(job: str, plan: dict[str, Any], *, timeout_s: float) -> dict[str, Any]:
    """Run `job` in its own process; its figures, or {"error": ...} when it failed (the others still run)."""
    print(f"== {job}", flush=True)
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, __file__, "--child", job, "--plan", json.dumps(plan)],
                              capture_output=True, text=True, cwd=ROOT, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    Path(plan["out"], f"{job}.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        print(f"   failed: {tail[0]}", flush=True)
        return {"error": f"exit {proc.returncode}: {tail[0]}"}
    result = json.loads(lines[-1][len("RESULT "):])
    result["job_seconds"] = time.perf_counter() - start
    print("   " + json.dumps({k: v for k, v in result.items() if k != "losses"}), flush=True)
    return result


def gpu_peak(device: str) -> tuple[str, float | None]:
    """The device's name and its dense bf16 peak FLOP/s (None when unknown: MFU is then not reported)."""
    import torch

    if not device.startswith("cuda"):
        return "CPU (dry run)", None
    name = torch.cuda.get_device_name(0)
    return name, next((peak for key, peak in BF16_PEAKS if key in name), None)


def checks(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The correctness verdicts: loss curves CPU vs GPU, packed vs unpacked."""
    out: dict[str, Any] = {}
    cpu, gpu = results.get("curve-cpu", {}), results.get("curve-gpu", {})
    if "losses" in cpu and "losses" in gpu:
        out["curve_max_diff"] = max(abs(a - b) for a, b in zip(cpu["losses"], gpu["losses"]))
        out["curve_ok"] = len(cpu["losses"]) == len(gpu["losses"]) and out["curve_max_diff"] <= CURVE_TOLERANCE
    packing = results.get("packing", {})
    if "max_diff_fp32" in packing:
        # equal when masked, and visibly different when the mask leaks (else the check proves nothing)
        out["packing_ok"] = packing["max_diff_fp32"] <= CURVE_TOLERANCE < packing.get("leak_control_diff", 0.0)
    return out


def add_mfu(results: dict[str, dict[str, Any]], *, params: int, peak: float | None) -> None:
    """MFU = 6 * parameters * tokens/s / peak (the full fine-tuning count, for LoRA too: comparable rows)."""
    for job in ("full", "lora", "qlora", "trl"):
        r = results.get(job, {})
        if "tokens_per_s" in r and peak:
            r["mfu"] = 6 * params * r["tokens_per_s"] / peak


def markdown(summary: dict[str, Any]) -> str:
    """gpu.md: the machine, the checks and the speed table."""
    r, c = summary["results"], summary["checks"]
    lines = [
        f"## honed on a GPU: {summary['device_name']} ({summary['date']})",
        "",
        f"- Command: `{summary['command']}`; torch {summary['torch']}, transformers {summary['transformers']}; "
        f"model: Llama shape `{summary['shape']}`, {summary['params'] / 1e6:,.1f}M parameters, random weights; "
        f"{summary['batch']} chats x up to {summary['max_length']} tokens per step, {summary['steps']} steps "
        "(the first 2 not timed).",
        f"- Loss curve, same tiny seeded LoRA run, CPU vs {summary['device']} (fp32): max difference "
        f"{c.get('curve_max_diff', float('nan')):.2e} (tolerance {CURVE_TOLERANCE:g}): "
        f"{'OK' if c.get('curve_ok') else 'FAILED or not run'}",
        f"- Packed vs one example per row, per-example losses ({r.get('packing', {}).get('attention', '?')} attention): "
        f"fp32 max difference {r.get('packing', {}).get('max_diff_fp32', float('nan')):.2e}, bf16 "
        f"{r.get('packing', {}).get('max_diff_bf16', float('nan')):.2e}; with a leaking causal mask instead "
        f"{r.get('packing', {}).get('leak_control_diff', float('nan')):.2e}: {'OK' if c.get('packing_ok') else 'FAILED or not run'}",
        "",
        "| job | real tokens/s | MFU (6N, dense bf16 peak) | peak GPU memory GiB | note |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for job, label in (("full", f"honed full fine-tuning, {summary['precision']}"), ("lora", "honed LoRA r=16 all-linear"),
                       ("qlora", "honed QLoRA (NF4)"), ("trl", "TRL SFTTrainer LoRA, padding-free packing")):
        x = r.get(job, {})
        if "error" in x or "skipped" in x:
            lines.append(f"| {label} | | | | {x.get('error') or x.get('skipped')} |")
        elif x:
            mfu = f"{100 * x['mfu']:.0f}%" if "mfu" in x else ""
            memory = f"{x['peak_memory_gib']:.1f}" if x.get("peak_memory_gib") is not None else ""
            lines.append(f"| {label} | {x['tokens_per_s']:.0f} | {mfu} | {memory} | {x.get('note', '')} |")
    lora, trl = r.get("lora", {}), r.get("trl", {})
    if "tokens_per_s" in lora and "tokens_per_s" in trl:
        speed = lora["tokens_per_s"] / trl["tokens_per_s"]
        memory = (f"{lora['peak_memory_gib'] / trl['peak_memory_gib']:.2f}x" if lora.get("peak_memory_gib")
                  and trl.get("peak_memory_gib") else "n/a (no GPU)")
        lines += ["", f"- LoRA, honed / TRL: {speed:.2f}x tokens/s (target >= 1.5x), {memory} peak memory (target <= 0.7x)"]
    if "mfu" in r.get("full", {}):
        lines.append(f"- Full fine-tuning MFU {100 * r['full']['mfu']:.0f}% (target >= 40%)")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="the same code on the CPU with tiny shapes")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-results")))
    parser.add_argument("--steps", type=int, help="optimizer steps per speed job (default 12; dry run 3)")
    parser.add_argument("--batch", type=int, help="chats per step (default 16; dry run 4)")
    parser.add_argument("--max-length", type=int, help="tokens per chat at most (default 1024; dry run 128)")
    parser.add_argument("--jobs", default="curve-cpu,curve-gpu,packing,full,lora,qlora,trl")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--plan", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def make_plan(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Build the models and data once; the plan every job reads."""
    import torch

    device = "cpu" if args.dry_run else "cuda:0"
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU is visible: run `bash benchmarks/gpu.sh --dry-run` for the CPU rehearsal")
    shape = "tiny" if args.dry_run else "1b"
    plan: dict[str, Any] = {
        "work": str(work), "out": str(args.out), "device": device, "shape": shape,
        "precision": "fp32" if args.dry_run else "bf16", "curve_steps": 4,
        "steps": args.steps or (3 if args.dry_run else 12), "batch": args.batch or (4 if args.dry_run else 16),
        "max_length": args.max_length or (128 if args.dry_run else 1024),
        "model_tiny": str(work / "model-tiny"), "model_large": str(work / f"model-{shape}"),
        "tiny_data": str(work / "tiny.jsonl"), "data": str(work / "train.jsonl"),
    }
    tiny_params = build_model_folder(Path(plan["model_tiny"]), shape="tiny", device="cpu")
    if args.dry_run:  # the speed jobs run on the tiny model too
        plan["model_large"], plan["params"] = plan["model_tiny"], tiny_params
    else:
        plan["params"] = build_model_folder(Path(plan["model_large"]), shape=shape, device=device)
    write_chats(Path(plan["tiny_data"]), count=32, words=20)
    # about max_length tokens per chat (the test tokenizer spends ~2 tokens on a word)
    write_chats(Path(plan["data"]), count=plan["batch"] * (plan["steps"] + 1), words=plan["max_length"] // 5)
    return plan


def wanted(job: str) -> dict[str, Any] | None:
    """A skip record for a job whose package is not importable here, else None (run it)."""
    needs = {"qlora": "bitsandbytes", "trl": "trl"}.get(job)
    if needs and importlib.util.find_spec(needs) is None:
        return {"skipped": f"{needs} is not installed here"}
    return None


def main() -> None:
    args = parse_args()
    if args.child:
        child(args)
        return
    import tempfile

    import torch
    import transformers

    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="honed-gpu-") as tmp:
        plan = make_plan(args, Path(tmp))
        print(f"models and data ready in {time.perf_counter() - started:.0f} s", flush=True)
        results: dict[str, dict[str, Any]] = {}
        for job in args.jobs.split(","):
            if args.dry_run and job == "qlora":
                results[job] = {"skipped": "dry run: QLoRA needs a CUDA GPU"}
                continue
            results[job] = wanted(job) or run_job(job, plan, timeout_s=300)
    name, peak = gpu_peak(plan["device"])
    add_mfu(results, params=plan["params"], peak=peak)
    summary = {
        "date": f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC", "device": plan["device"], "device_name": name,
        "bf16_peak_flops": peak, "torch": torch.__version__, "transformers": transformers.__version__,
        "command": "bash benchmarks/gpu.sh" + (" --dry-run" if args.dry_run else ""),
        "shape": plan["shape"], "params": plan["params"], "precision": "bf16 autocast" if plan["precision"] == "bf16" else "fp32", "steps": plan["steps"], "batch": plan["batch"],
        "max_length": plan["max_length"], "results": results, "checks": checks(results),
        "seconds": time.perf_counter() - started,
    }
    (args.out / "gpu.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    (args.out / "gpu.md").write_text(markdown(summary), encoding="utf-8")
    print(markdown(summary))
    print(f"total {summary['seconds']:.0f} s; results in {args.out}/gpu.json and gpu.md")


if __name__ == "__main__":
    main()
