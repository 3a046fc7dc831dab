"""Benchmark: train -> eval end to end through the CLI on two real tasks, at honed's DEFAULT settings.

Usage:
    .venv/bin/python benchmarks/eval_tasks.py                          # both tasks, the issue's sizes (hours on 2 cores)
    .venv/bin/python benchmarks/eval_tasks.py --tasks restaurant8k     # one task
    .venv/bin/python benchmarks/eval_tasks.py --train 40 --eval 20 --no-write   # smoke run

Tasks (data read from ../shared/data, subsets written under runs/bench-eval/, never into the repository):
- restaurant8k: slot extraction to JSON. A seeded sample of 2,000 (`--train`) examples of train.jsonl;
  evaluated on the first 1,000 (`--eval`) of test.jsonl. Main metric: micro field F1 (pooled slots).
- banking77: intent classification (CSV text,category). Seeded samples of 3,000 of train.csv and 1,000 of
  test.csv with a short system prompt (it does not list the 77 labels). Main metric: label accuracy.
- support-triage: the demo's data (examples/support_triage.jsonl, 400 chats answered with a JSON object).
  `honed data split` logic (near duplicates kept on one side) cuts 15% off as the test set, then 15% of the
  rest as the holdout. Main metric: field F1.

`--model gemma3-270m` (or any model) runs the same tasks on another model; its sections sit beside the
built-in model's.

Both tasks also draw 300 more training rows (valid.jsonl, disjoint from the training sample) as the holdout
`honed train` stops early and picks its best checkpoint on; the test examples are used only by `honed eval
--data test.jsonl`, so no choice made during training has seen them.

`honed train` runs with no learning-rate, epoch or batch flags: the learning rate, epochs and batch are
honed's defaults (honed/train/hparams.py, honed.config.auto_epochs); `--train-set key=value` adds an
override on purpose (e.g. precision=bf16 on a CPU with AMX). Then `honed eval RUN --limit N --baselines
few-shot:5,few-shot-knn:5` (plus majority, always) records the metrics with 95% paired-bootstrap CIs, the
verdict, and the wall and CPU time of each stage. Targets (issue 8): banking77 label accuracy >= 0.80,
restaurant8k micro field F1 >= 0.75, tuned significantly better than every baseline.
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


def _write_splits(work: Path, pool: list[Any], test: list[Any], *, train: int, seed: int) -> tuple[Path, Path, Path]:
    """train.jsonl and valid.jsonl (VALID_COUNT rows) drawn without overlap from the training pool; test.jsonl.

    Training picks its best checkpoint and stops early on valid.jsonl, never on the test examples the
    scores come from.
    """
    from honed.data.read import write_jsonl

    drawn = random.Random(seed).sample(pool, train + VALID_COUNT)
    return (write_jsonl(work / "train.jsonl", drawn[:train]), write_jsonl(work / "valid.jsonl", drawn[train:]),
            write_jsonl(work / "test.jsonl", test))


def prepare_restaurant8k(work: Path, *, train: int, eval_n: int, seed: int) -> tuple[Path, Path, Path]:
    from honed.data.read import read_conversations

    pool = read_conversations(DATA / "restaurant8k" / "train.jsonl").conversations
    test = read_conversations(DATA / "restaurant8k" / "test.jsonl").conversations[:eval_n]
    return _write_splits(work, pool, test, train=train, seed=seed)


def prepare_support_triage(work: Path, *, train: int, eval_n: int, seed: int) -> tuple[Path, Path, Path]:
    """Test, then holdout, split off with near-duplicate clusters kept whole (as `honed data split` does)."""
    from honed.data.read import read_conversations, write_jsonl
    from honed.data.split import split_conversations

    pool = read_conversations(ROOT / "examples" / "support_triage.jsonl").conversations
    first = split_conversations(pool, holdout_fraction=0.15, seed=seed)
    second = split_conversations(first.train, holdout_fraction=0.15, seed=seed)
    return (write_jsonl(work / "train.jsonl", second.train[:train]), write_jsonl(work / "valid.jsonl", second.holdout),
            write_jsonl(work / "test.jsonl", first.holdout[:eval_n]))


def prepare_banking77(work: Path, *, train: int, eval_n: int, seed: int) -> tuple[Path, Path, Path]:
    from honed.data.read import ColumnMapping, read_conversations

    columns = ColumnMapping("text", "category", system=BANKING_SYSTEM)
    pool = read_conversations(DATA / "banking77" / "train.csv", columns=columns).conversations
    test = read_conversations(DATA / "banking77" / "test.csv", columns=columns).conversations
    # test.csv is sorted by label: a seeded sample, not the first rows, so every label can appear.
    test = random.Random(seed + 1).sample(test, eval_n)
    return _write_splits(work, pool, test, train=train, seed=seed)


PREPARE = {"restaurant8k": prepare_restaurant8k, "banking77": prepare_banking77,
           "support-triage": prepare_support_triage}
VALID_COUNT = 300  # held-out training rows for early stopping and the best checkpoint
DEFAULT_SIZES = {"restaurant8k": (2000, 1000), "banking77": (3000, 1000),  # (train, eval): issue 8's sizes
                 "support-triage": (400, 400)}  # all of the demo's data (the split decides the sizes)


def honed(*args: str, log: Path) -> tuple[str, float, float]:
    """Run the real CLI; (stdout, wall s, CPU s of the child); stderr appended to `log`; a failure stops."""
    started, cpu_before = time.perf_counter(), _children_cpu()
    with log.open("a", encoding="utf-8") as err:
        err.write(f"\n$ honed {' '.join(args)}\n")
        err.flush()
        done = subprocess.run([sys.executable, "-m", "honed", *args], stdout=subprocess.PIPE, stderr=err, text=True)
    if done.returncode != 0:
        sys.exit(f"honed {' '.join(args)} failed with exit {done.returncode}; see {log}")
    return done.stdout, time.perf_counter() - started, _children_cpu() - cpu_before


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def work_dir(task: str, model: str) -> Path:
    """runs/bench-eval/TASK for the built-in model, TASK-MODEL for another."""
    return WORK / (task if model == MODEL else f"{task}-{Path(model).name}")


def section_key(task: str, model: str) -> str:
    return task if model == MODEL else f"{task}:{Path(model).name}"


def run_task(task: str, args: argparse.Namespace) -> dict[str, Any]:
    work = work_dir(task, args.model)
    work.mkdir(parents=True, exist_ok=True)
    train_n, eval_n = args.train or DEFAULT_SIZES[task][0], args.eval or DEFAULT_SIZES[task][1]
    train_path, valid_path, test_path = PREPARE[task](work, train=train_n, eval_n=eval_n, seed=args.seed)
    run_dir = work / "run"
    log = work / "log.txt"
    train_args = ["train", "--data", str(train_path), "--holdout", str(valid_path), "--model", args.model,
                  "--out", str(run_dir), "--json"]
    for setting in args.train_set:
        train_args += ["--set", setting]
    if run_dir.exists() and (run_dir / "run.json").is_file() and args.reuse:
        trained, train_s, train_cpu = json.loads((run_dir / "run.json").read_text()), float("nan"), float("nan")
        earlier = work / "result.json"  # the training's own figures, from the run that trained it
        if earlier.is_file():
            before = json.loads(earlier.read_text())
            train_s, train_cpu = before.get("train_seconds", train_s), before.get("train_cpu_seconds", train_cpu)
        else:  # trained outside this script: the run's own wall clock (run.json timings), CPU time unknown
            train_s = float((trained.get("timings") or {}).get("total", train_s))
    else:
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        out, train_s, train_cpu = honed(*train_args, log=log)
        trained = json.loads(out)
    eval_args = ["eval", str(run_dir), "--data", str(test_path), "--limit", str(eval_n), "--baselines", args.baselines,
                 "--batch-size", str(args.batch_size), "--json"]
    out, eval_s, eval_cpu = honed(*eval_args, log=log)
    summary = json.loads(out)
    import yaml

    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    result = {"task": task, "model": args.model, "train_args": train_args, "eval_args": eval_args, "train_seconds": train_s,
              "train_cpu_seconds": train_cpu, "eval_seconds": eval_s, "eval_cpu_seconds": eval_cpu,
              "trained": trained, "summary": summary,
              "train_count": sum(1 for line in train_path.read_text(encoding="utf-8").split("\n") if line.strip()),
              "resolved": {k: resolved.get(k) for k in ("lr", "epochs", "batch_size", "precision", "method")},
              "date": dt.date.today().isoformat(), "load_average": os.getloadavg()[0]}
    if args.long_base:
        result["long_base"] = run_long_base(run_dir, test_path, args, eval_n=eval_n, log=log)
    return result


def run_long_base(run_dir: Path, test_path: Path, args: argparse.Namespace, *, eval_n: int, log: Path) -> dict[str, Any]:
    """The base model again with room to finish (--long-base tokens), in a copy of the run so the main
    evaluation's files stay: is the base model's score a matter of the max_new_tokens budget?"""
    import shutil

    copy = run_dir.parent / "run-long-base"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("eval"))
    long_args = ["eval", str(copy), "--data", str(test_path), "--limit", str(eval_n), "--baselines", "base", "--max-new-tokens",
                 str(args.long_base), "--batch-size", str(args.batch_size), "--json"]
    out, seconds, _ = honed(*long_args, log=log)
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
        f"- Train: `honed {rel(result['train_args'])}` ({result['train_seconds']:.0f} s wall, "
        f"{result.get('train_cpu_seconds', float('nan')):.0f} s CPU, {result['trained'].get('steps')} steps, best "
        f"{result['trained'].get('best_checkpoint')}); defaults resolved to {_resolved(result)}",
        f"- Eval: `honed {rel(result['eval_args'])}` ({result['eval_seconds']:.0f} s wall, "
        f"{result.get('eval_cpu_seconds', float('nan')):.0f} s CPU for {len(systems)} systems, "
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


def _resolved(result: dict[str, Any]) -> str:
    resolved = result.get("resolved") or {}
    return ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in resolved.items()) or "(not recorded)"


def render_report(result: dict[str, Any], args: argparse.Namespace) -> str:
    import torch
    from benchmarks_md import cpu_flags

    model = result.get("model", MODEL)
    end_of_turn = _end_of_turn(result)
    lines = [
        f"## Evaluation on {result['task']}{'' if model == MODEL else f' with {model}'}: tuned at honed's defaults vs "
        "majority, few-shot and retrieved few-shot",
        "",
        f"- Date: {result['date']}; machine: {platform.machine()}, {os.cpu_count()} cores, CPU flags "
        f"{cpu_flags()}, torch {torch.__version__}; load average at the end {result['load_average']:.1f}.",
        f"- Command: `.venv/bin/python benchmarks/eval_tasks.py --tasks {result['task']}"
        f"{f' --train {args.train}' if args.train else ''}{f' --eval {args.eval}' if args.eval else ''}"
        f"{''.join(f' --train-set {kv}' for kv in args.train_set)}"
        f"{f' --long-base {args.long_base}' if result.get('long_base') else ''}"
        f"{'' if model == MODEL else f' --model {model}'}`",
        f"- Model {model}; {result.get('train_count', '?')} training examples, {_holdout_count(result)} more rows as "
        "the holdout for early stopping and the best checkpoint (never the test examples); honed's default training "
        f"settings (no lr, epoch or batch flags); greedy decoding stopped at {end_of_turn}; `*` marks a difference "
        "whose 95% CI excludes 0.",
        *_baseline_prompt_line(result),
        "",
    ]
    return "\n".join(lines + render_task(result)[2:]) + "\n"


def _baseline_prompt_line(result: dict[str, Any]) -> list[str]:
    """How the prompted baselines asked the base model (summary decoding.baseline_prompt, honed eval)."""
    decoding = result["summary"].get("decoding") or {}
    prompt, end = decoding.get("baseline_prompt"), decoding.get("baseline_answer_end")
    if not prompt:
        return []
    how = ("as plain text (Input:/Output: lines: the base model ships no chat template; docs/evaluate.md)"
           if prompt == "plain text" else "through the chat template")
    where = {"json": "after the first JSON value", "line": "at the first line break"}.get(end or "", "where the model stops")
    return [f"- Few-shot baselines prompt the base model {how}; their answers end {where} "
            "(`decoding.baseline_answer_end`)."]


def _end_of_turn(result: dict[str, Any]) -> str:
    """The run's end of turn (template.json), as the section says what decoding stopped at."""
    path = work_dir(result["task"], result.get("model", MODEL)) / "run" / "template.json"
    try:
        return str(json.loads(path.read_text(encoding="utf-8"))["end_of_turn"])
    except (OSError, ValueError, KeyError):
        return "<|im_end|>"


def _holdout_count(result: dict[str, Any]) -> int:
    path = work_dir(result["task"], result.get("model", MODEL)) / "valid.jsonl"
    return sum(1 for line in path.read_text(encoding="utf-8").split("\n") if line.strip()) if path.is_file() else VALID_COUNT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=lambda s: s.split(","), default=["restaurant8k", "banking77"])
    parser.add_argument("--train", type=int, default=0, help="training examples (default: 3000 banking77, 2000 restaurant8k)")
    parser.add_argument("--eval", type=int, default=0, help="test examples (default: 1000)")
    parser.add_argument("--baselines", default="few-shot:5,few-shot-knn:5", help="honed eval --baselines (majority always runs)")
    parser.add_argument("--train-set", action="append", default=[], help="a deliberate training override, key=value")
    parser.add_argument("--batch-size", type=int, default=32, help="prompts decoded together in eval")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=MODEL, help="model to train (default: the built-in smollm2-135m)")
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
            result = json.loads((work_dir(task, args.model) / "result.json").read_text())
        else:
            result = run_task(task, args)
            (work_dir(task, args.model) / "result.json").write_text(json.dumps(result, indent=2))
        report = render_report(result, args)
        print(report, flush=True)
        if not args.no_write:
            key = section_key(task, args.model)
            write_section(ROOT / "BENCHMARKS.md", report, start=SECTION.format(task=key, edge="start"),
                          end=SECTION.format(task=key, edge="end"))


if __name__ == "__main__":
    main()
