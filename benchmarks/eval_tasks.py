"""Benchmark: train -> eval end to end through the CLI on two real tasks; tables and verdicts to BENCHMARKS.md.

Usage:
    .venv/bin/python benchmarks/eval_tasks.py                          # both tasks (~1 h on 2 shared cores)
    .venv/bin/python benchmarks/eval_tasks.py --tasks restaurant8k     # one task
    .venv/bin/python benchmarks/eval_tasks.py --train 40 --eval 20 --no-write   # smoke run

Tasks (data read from ../shared/data, subsets written under runs/bench-eval/, never into the repository):
- restaurant8k: slot extraction to JSON. A seeded sample of `--train` examples of train.jsonl, one epoch of
  LoRA on smollm2-135m; evaluated on the first `--eval` examples of test.jsonl. Metrics picked by honed
  (JSON validity, schema conformance, field P/R/F1, exact match).
- banking77: intent classification (CSV text,category). Seeded samples of train.csv and test.csv converted
  with a short system prompt (the same one benchmarks/train_vs_trl.py uses; it does not list the 77
  labels, so zero-shot can only guess label names). Metrics: label accuracy, macro-F1, exact match.

Each task runs `honed train` then `honed eval RUN --limit N --baselines base,few-shot:5` (base zero-shot,
base 5-shot, tuned best checkpoint) and records the summary's metrics with 95% paired-bootstrap CIs, the
verdict, and the wall time of each stage.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks_md import write_section  # noqa: E402  (scripts run as python benchmarks/NAME.py)

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
WORK = ROOT / "runs" / "bench-eval"
MODEL = "smollm2-135m"
SECTION = "<!-- eval_tasks:{task}:{edge} -->"  # one section per task, so running one task keeps the other
BANKING_SYSTEM = (
    "You classify messages sent to a bank's customer support into one of 77 intents. "
    "Reply with the intent label only."
)


def prepare_restaurant8k(work: Path, *, train: int, eval_n: int, seed: int) -> tuple[Path, Path]:
    from honed.data.read import read_conversations, write_jsonl

    rows = read_conversations(DATA / "restaurant8k" / "train.jsonl").conversations
    sample = random.Random(seed).sample(rows, train)
    test = read_conversations(DATA / "restaurant8k" / "test.jsonl").conversations[:eval_n]
    return write_jsonl(work / "train.jsonl", sample), write_jsonl(work / "test.jsonl", test)


def prepare_banking77(work: Path, *, train: int, eval_n: int, seed: int) -> tuple[Path, Path]:
    from honed.data.read import ColumnMapping, read_conversations, write_jsonl

    columns = ColumnMapping("text", "category", system=BANKING_SYSTEM)
    rows = read_conversations(DATA / "banking77" / "train.csv", columns=columns).conversations
    test = read_conversations(DATA / "banking77" / "test.csv", columns=columns).conversations
    rng = random.Random(seed)
    # test.csv is sorted by label: a seeded sample, not the first rows, so every label can appear.
    return write_jsonl(work / "train.jsonl", rng.sample(rows, train)), write_jsonl(work / "test.jsonl", rng.sample(test, eval_n))


PREPARE = {"restaurant8k": prepare_restaurant8k, "banking77": prepare_banking77}


def honed(*args: str, log: Path) -> tuple[str, float]:
    """Run the real CLI; stdout returned, stderr appended to `log`; a failure stops the benchmark."""
    started = time.perf_counter()
    with log.open("a", encoding="utf-8") as err:
        err.write(f"\n$ honed {' '.join(args)}\n")
        err.flush()
        done = subprocess.run([sys.executable, "-m", "honed", *args], stdout=subprocess.PIPE, stderr=err, text=True)
    if done.returncode != 0:
        sys.exit(f"honed {' '.join(args)} failed with exit {done.returncode}; see {log}")
    return done.stdout, time.perf_counter() - started


def run_task(task: str, args: argparse.Namespace) -> dict[str, Any]:
    work = WORK / task
    work.mkdir(parents=True, exist_ok=True)
    train_path, test_path = PREPARE[task](work, train=args.train, eval_n=args.eval, seed=args.seed)
    run_dir = work / "run"
    log = work / "log.txt"
    train_args = ["train", "--data", str(train_path), "--holdout", str(test_path), "--model", MODEL,
                  "--out", str(run_dir), "--epochs", "1", "--lr", str(args.lr), "--max-length", "256",
                  "--set", "data.eval_max_examples=32", "--set", f"num_threads={args.threads}", "--json"]
    if run_dir.exists() and (run_dir / "run.json").is_file() and args.reuse:
        trained, train_s = json.loads((run_dir / "run.json").read_text()), float("nan")
    else:
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        out, train_s = honed(*train_args, log=log)
        trained = json.loads(out)
    eval_args = ["eval", str(run_dir), "--limit", str(args.eval), "--baselines", "base,few-shot:5",
                 "--batch-size", str(args.batch_size), "--threads", str(args.threads), "--json"]
    out, eval_s = honed(*eval_args, log=log)
    summary = json.loads(out)
    result = {"task": task, "train_args": train_args, "eval_args": eval_args, "train_seconds": train_s,
              "eval_seconds": eval_s, "trained": trained, "summary": summary}
    if args.long_base:
        result["long_base"] = run_long_base(run_dir, args, log=log)
    return result


def run_long_base(run_dir: Path, args: argparse.Namespace, *, log: Path) -> dict[str, Any]:
    """The base model again with room to finish (--long-base tokens), in a copy of the run so the main
    evaluation's files stay: is the base model's score a matter of the max_new_tokens budget?"""
    import shutil

    copy = run_dir.parent / "run-long-base"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("eval"))
    long_args = ["eval", str(copy), "--limit", str(args.eval), "--baselines", "base", "--max-new-tokens",
                 str(args.long_base), "--batch-size", str(args.batch_size), "--threads", str(args.threads), "--json"]
    out, seconds = honed(*long_args, log=log)
    return {"args": long_args, "seconds": seconds, "summary": json.loads(out)}


def render_long_base(result: dict[str, Any]) -> list[str]:
    long = result.get("long_base")
    if not long:
        return []
    summary = long["summary"]
    base = summary["systems"]["base"]
    metrics = ", ".join(f"{m} {_cell(base['metrics'][m])}" for m in summary["metrics"][:5])
    return [f"Base model with room to finish (`honed {' '.join(long['args'][:1] + ['RUN_COPY'] + long['args'][2:])}`): "
            f"{metrics}; {base['unfinished']} of {summary['n']} still unfinished.", ""]


def _cell(interval: dict[str, float]) -> str:
    return f"{interval['value']:.3f} [{interval['low']:.3f}, {interval['high']:.3f}]"


def render_task(result: dict[str, Any]) -> list[str]:
    summary = result["summary"]
    systems = summary["systems"]
    rel = lambda a: " ".join(str(Path(x).relative_to(ROOT)) if str(x).startswith(str(ROOT)) else str(x) for x in a)  # noqa: E731
    lines = [
        f"### {result['task']}",
        "",
        f"- Train: `honed {rel(result['train_args'])}` ({result['train_seconds']:.0f} s, "
        f"{result['trained'].get('steps')} steps, best {result['trained'].get('best_checkpoint')})",
        f"- Eval: `honed {rel(result['eval_args'])}` ({result['eval_seconds']:.0f} s for 3 systems, "
        f"max_new_tokens {summary['decoding']['max_new_tokens']})",
        f"- {summary['n']} holdout examples; main metric **{summary['main_metric']}**; value [95% CI], "
        f"paired bootstrap, {summary['resamples']} resamples.",
        "",
        "| metric | " + " | ".join(systems) + " | " + " | ".join(summary["differences"]) + " |",
        "| --- |" + " ---: |" * (len(systems) + len(summary["differences"])),
    ]
    for metric in summary["metrics"]:
        cells = [_cell(s["metrics"][metric]) for s in systems.values()]
        diffs = [d[metric] for d in summary["differences"].values()]
        marks = [f"{d['value']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]{' *' if d['low'] > 0 or d['high'] < 0 else ''}"
                 for d in diffs]
        lines.append(f"| {metric} | " + " | ".join(cells) + " | " + " | ".join(marks) + " |")
    lines.append("| unfinished (hit max_new_tokens) | " + " | ".join(str(s["unfinished"]) for s in systems.values())
                 + " |" + " |" * len(diffs))
    lines.append("| memorised | " + " | ".join(f"{s['memorised']:.1%}" for s in systems.values()) + " |" + " |" * len(diffs))
    lines.append("| generation tokens/s | " + " | ".join(f"{s['generation']['tokens_per_s']:.1f}" for s in systems.values())
                 + " |" + " |" * len(diffs))
    lines += ["", f"Verdict: {summary['verdict']}", ""] + render_long_base(result)
    if "label_accuracy" in summary["metrics"]:
        lines += ["`memorised` counts outputs equal to a training answer that is not the reference: for a label task",
                  "that is every wrong but valid label, so here it measures mistakes, not copying.", ""]
    return lines


def render_report(result: dict[str, Any], args: argparse.Namespace) -> str:
    import torch

    lines = [
        f"## Evaluation on {result['task']}: base vs few-shot vs tuned",
        "",
        f"- Date: {dt.date.today().isoformat()}; machine: {platform.machine()}, {os.cpu_count()} cores shared with "
        f"other jobs (timings are indicative only), torch {torch.__version__}.",
        f"- Command: `.venv/bin/python benchmarks/eval_tasks.py --tasks {result['task']} --train {args.train} "
        f"--eval {args.eval} --lr {args.lr} --batch-size {args.batch_size} --threads {args.threads}"
        f"{f' --long-base {args.long_base}' if result.get('long_base') else ''}`",
        f"- Model {MODEL}; LoRA r=16 on all linear layers, {args.train} training examples, 1 epoch, lr {args.lr}, "
        "max_length 256; greedy decoding stopped at <|im_end|>; `*` marks a difference whose 95% CI excludes 0.",
        "",
    ]
    return "\n".join(lines + render_task(result)[2:]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=lambda s: s.split(","), default=["restaurant8k", "banking77"])
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--eval", type=int, default=200)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    # One thread: on a machine shared with other jobs, 2 torch threads per process oversubscribe the cores and
    # run 5-20x slower (measured: prefill of 70 tokens 0.35 s with 1 thread, 2-11 s with 2).
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reuse", action="store_true", help="reuse a finished run directory instead of retraining")
    parser.add_argument("--long-base", type=int, default=0,
                        help="also evaluate the base model with this max_new_tokens (JSON tasks: restaurant8k)")
    parser.add_argument("--render-only", action="store_true", help="rewrite the sections from runs/bench-eval/*/result.json")
    parser.add_argument("--no-write", action="store_true", help="print, do not update BENCHMARKS.md")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"{DATA} is missing: this benchmark reads ../shared/data beside the repository")
    for task in args.tasks:
        if args.render_only:  # re-render BENCHMARKS.md from the saved result, without training again
            result = json.loads((WORK / task / "result.json").read_text())
        else:
            result = run_task(task, args)
            (WORK / task / "result.json").write_text(json.dumps(result, indent=2))
        report = render_report(result, args)
        print(report, flush=True)
        if not args.no_write:
            write_section(ROOT / "BENCHMARKS.md", report, start=SECTION.format(task=task, edge="start"),
                          end=SECTION.format(task=task, edge="end"))


if __name__ == "__main__":
    main()
