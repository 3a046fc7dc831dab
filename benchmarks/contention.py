"""Benchmark: honed training on a busy machine. Tokens/s alone and beside 1 and 2 CPU burners, for honed's
thread rule and for the old behaviour, in one run.

Usage:
    .venv/bin/python benchmarks/contention.py                    # ~10 min on 2 cores, writes BENCHMARKS.md
    .venv/bin/python benchmarks/contention.py --steps 2 --chats 16 --batch 4 --model tests/assets/tiny-llama --no-write

The job: `honed.train` (what `honed train` calls), LoRA r=16 on smollm2-135m, `--steps` optimizer steps of
`--batch` banking77 chats (seeded sample of `--chats`), no holdout (no evaluations), fp32. Two behaviours
(a third on request), each run in its own fresh process per condition:

- rule: honed as shipped: OMP_WAIT_POLICY=PASSIVE (set by `import honed` before torch), torch threads by
        the rule in honed/threads.py, 1 inter-op thread;
- old:  honed before the rule: torch imported first with libgomp's default wait policy (threads spin
        before they sleep), threads = os.cpu_count();
- spin: (`--modes rule,old,spin`) the rule with GOMP_SPINCOUNT=`--spincount` instead of PASSIVE: a
        bounded spin, the candidate for a quiet machine's speed without collapsing under contention.

Conditions: alone, and with 1 and 2 competing CPU-bound processes (`python -c "while True: pass"`), started
by this script a moment before the training process and killed after it. The figure is real (non-padding)
tokens per wall second over the optimizer steps after the first (the first step warms up the thread pools
and allocator), from the steps' own timings in metrics.jsonl. Target: with one competitor, at least 0.5x
the quiet tokens/s (a fair share of the cores is 0.5x).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks_md import cpu_flags, cpu_model, write_section  # noqa: E402  (scripts run as python benchmarks/NAME.py)

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "banking77" / "train.csv"
FALLBACK_DATA = ROOT / "examples" / "support_triage.jsonl"
SECTION_START = "<!-- contention:start -->"
SECTION_END = "<!-- contention:end -->"
MODES = ("rule", "old", "spin")
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_NUM_THREADS")
TARGET = 0.5  # issue 23: keep at least half the quiet speed beside one competing process


# ---------------------------------------------------------------------------------------------- child


def child(args: argparse.Namespace) -> None:
    """Train in this fresh process with the `args.child` behaviour; print the figures as one JSON line."""
    if args.child == "old":
        import torch  # noqa: F401  (first, so libgomp reads the environment without honed's wait policy)

        threads: int | None = os.cpu_count() or 1
    elif args.child == "spin":  # a bounded spin: honed leaves a wait setting the user chose alone
        os.environ["GOMP_SPINCOUNT"] = str(args.spincount)
        threads = None
    else:
        threads = None  # the rule
    import honed  # noqa: F401  (sets OMP_WAIT_POLICY, too late for libgomp in the old mode: intended)
    import torch
    from rich.console import Console

    from honed.config import load_config
    from honed.train import loop

    overrides = [
        f"model={args.model}", "method=lora", "lora.r=16", "lora.alpha=32", "lora.dropout=0",
        "lora.target_modules=all-linear", "lr=0.0002", "schedule=constant", "warmup_ratio=0",
        f"batch_size={args.batch}", "max_length=256", "seed=0", f"max_steps={args.steps}", "epochs=100",
        "data.holdout_fraction=0", "save_every=1000000", "precision=fp32", f"data.train={args.work / 'train.jsonl'}",
    ]
    if threads:
        overrides.append(f"num_threads={threads}")
    os.environ.setdefault("HONED_HOME", str(args.work / "honed-home"))
    run_dir = args.work / f"run-{args.child}-{args.competitors}"
    loop.train(load_config(None, overrides=overrides), out=run_dir, console=Console(quiet=True))
    steps = [m for m in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "loss" in m]
    timed = steps[1:] or steps  # the first step warms up thread pools and the allocator
    seconds = sum(m["tokens"] / m["tokens_per_s"] for m in timed)
    print("RESULT " + json.dumps({
        "mode": args.child, "competitors": args.competitors, "threads": torch.get_num_threads(),
        "wait_policy": wait_policy_label(args),
        "steps": len(timed), "tokens": sum(m["tokens"] for m in timed), "seconds": seconds,
        "tokens_per_s": sum(m["tokens"] for m in timed) / seconds,
    }), flush=True)


def wait_policy_label(args: argparse.Namespace) -> str:
    if args.child == "rule":
        return os.environ.get("OMP_WAIT_POLICY", "libgomp default")
    return f"GOMP_SPINCOUNT={args.spincount}" if args.child == "spin" else "libgomp default"


# ---------------------------------------------------------------------------------------------- parent


def burners(count: int) -> list[subprocess.Popen[bytes]]:
    """`count` CPU-bound processes that compete for the cores until killed."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for proc in processes:
        proc.kill()
        proc.wait()


def child_environment() -> dict[str, str]:
    """This environment less any thread or wait settings, so each mode starts from the same defaults."""
    env = {k: v for k, v in os.environ.items() if k not in WAIT_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def run_one(mode: str, competitors: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train once with `mode`'s behaviour beside `competitors` burners; return the child's figures."""
    command = [sys.executable, __file__, "--child", mode, "--competitors", str(competitors), "--work", str(args.work),
               *child_flags(args)]
    print(f"== {mode}, {competitors} competing process(es)", flush=True)
    competing = burners(competitors)
    try:
        time.sleep(1.0 if competitors else 0.0)  # the burners are running before training starts
        load = os.getloadavg()[0]
        proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=child_environment())
    finally:
        stop(competing)
    log = args.work / f"{mode}-{competitors}.log"
    log.write_text(proc.stdout + proc.stderr, encoding="utf-8")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{mode} with {competitors} competitors failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    result["load_at_start"] = load
    print(f"   {result['tokens_per_s']:.1f} tokens/s ({result['threads']} threads, {result['wait_policy']})", flush=True)
    return result


def child_flags(args: argparse.Namespace) -> list[str]:
    return [f"--steps={args.steps}", f"--chats={args.chats}", f"--batch={args.batch}", f"--model={args.model}",
            f"--spincount={args.spincount}"]


def write_chats(path: Path, *, count: int) -> str:
    """`count` training chats: banking77 (seeded sample) when ../shared/data has it, else the example data."""
    if DATA.is_file():
        from train_vs_trl import read_banking77, write_jsonl

        write_jsonl(path, read_banking77(DATA, count=count, seed=0))
        return f"{count} banking77 chats (train.csv, seeded sample)"
    lines = FALLBACK_DATA.read_text(encoding="utf-8").splitlines()[:count]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return f"{len(lines)} chats of {FALLBACK_DATA.relative_to(ROOT)} (banking77 not found)"


# ---------------------------------------------------------------------------------------------- report


def render(results: list[dict[str, Any]], args: argparse.Namespace, *, data: str, load: tuple[Any, Any]) -> str:
    """The BENCHMARKS.md section: machine, flags, command, load, the table and the verdict."""
    import torch

    quiet = {r["mode"]: r["tokens_per_s"] for r in results if r["competitors"] == 0}
    command = "python benchmarks/contention.py " + " ".join(child_flags(args))
    lines = [
        "## Training on a busy machine: tokens/s alone and beside CPU burners, thread rule vs old behaviour",
        "",
        f"- Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; machine: {cpu_model()}, "
        f"{len(os.sched_getaffinity(0))} usable cores, CPU flags {cpu_flags()}; Python {platform.python_version()}, "
        f"torch {torch.__version__}.",
        f"- Command: `{command}`",
        f"- Load average (1/5/15 min) before: {'/'.join(f'{x:.1f}' for x in load[0])}, after: "
        f"{'/'.join(f'{x:.1f}' for x in load[1])}. The burners count in it: compare rows of this run.",
        f"- Job: {args.model}, LoRA r=16 all-linear, fp32, {args.steps} optimizer steps of {args.batch} chats "
        f"({data}), no holdout; each row its own process; tokens/s over the steps after the first.",
        "- rule: honed as shipped (honed/threads.py: OMP_WAIT_POLICY=PASSIVE, threads = usable cores, 1 inter-op "
        "thread); old: torch imported before honed (libgomp's default spin-then-sleep wait), threads = all cores"
        + (f"; spin: the rule with a bounded spin (GOMP_SPINCOUNT={args.spincount}) instead of PASSIVE."
           if "spin" in args.modes.split(",") else "."),
        "",
        "| behaviour | competing processes | threads | wait policy | 1-min load at start | real tokens/s | "
        "vs alone | fair share |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        ratio = r["tokens_per_s"] / quiet[r["mode"]] if r["mode"] in quiet else float("nan")
        lines.append(
            f"| {r['mode']} | {r['competitors']} | {r['threads']} | {r['wait_policy']} | {r['load_at_start']:.1f} | "
            f"{r['tokens_per_s']:.1f} | {ratio:.2f}x | {1 / (1 + r['competitors']):.2f}x |"
        )
    lines.append("")
    for mode in MODES:
        one = next((r for r in results if r["mode"] == mode and r["competitors"] == 1), None)
        if one and mode in quiet:
            ratio = one["tokens_per_s"] / quiet[mode]
            verdict = "met" if ratio >= TARGET else "NOT met"
            lines.append(f"- {mode}: {ratio:.2f}x of its quiet tokens/s with one competitor (target {TARGET}x): {verdict}")
    if "rule" in quiet and "old" in quiet:
        lines.append(f"- alone, rule / old: {quiet['rule'] / quiet['old']:.2f}x tokens/s (the rule must not cost "
                     "speed on a quiet machine)")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per run (the first is not timed)")
    parser.add_argument("--chats", type=int, default=64, help="training chats to sample from")
    parser.add_argument("--batch", type=int, default=8, help="chats per optimizer step")
    parser.add_argument("--model", default="smollm2-135m", help="model spec (tests/assets/tiny-llama for a smoke run)")
    parser.add_argument("--competitors", default="0,1,2", help="numbers of competing processes to run beside")
    parser.add_argument("--modes", default="rule,old")
    parser.add_argument("--spincount", type=int, default=10000, help="GOMP_SPINCOUNT of the `spin` mode")
    parser.add_argument("--no-write", action="store_true", help="print, do not update BENCHMARKS.md")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.child:
        args.competitors = int(args.competitors)
        child(args)
        return
    with tempfile.TemporaryDirectory(prefix="honed-contention-") as tmp:
        args.work = Path(tmp)
        data = write_chats(args.work / "train.jsonl", count=args.chats)
        load_before = os.getloadavg()
        # Modes alternate within each condition, so the two behaviours meet the same background load.
        results = [run_one(mode, int(k), args) for k in args.competitors.split(",") for mode in args.modes.split(",")]
        load_after = os.getloadavg()
    report = render(results, args, data=data, load=(load_before, load_after))
    print(report)
    if not args.no_write:
        write_section(ROOT / "BENCHMARKS.md", report, start=SECTION_START, end=SECTION_END)


if __name__ == "__main__":
    main()
