"""Benchmark: is honed's default learning rate near the best of a small grid? (issue 8, "defaults that win")

Usage:
    .venv/bin/python benchmarks/lr_grid.py                       # both tasks, 3 rates each (~2 h on 2 cores)
    .venv/bin/python benchmarks/lr_grid.py --epochs 1            # one epoch each (~40 min)
    .venv/bin/python benchmarks/lr_grid.py --tasks banking77 --lrs 2e-4,default --no-write

For each task (data prepared as benchmarks/eval_tasks.py does: seeded samples of ../shared/data, written under
runs/bench-grid/) and each rate in `--lrs` ("default" = no --lr flag: honed's rule, honed/train/hparams.py),
`honed train` runs with every other setting at honed's defaults (`--epochs N` fixes the epochs, to keep a
grid affordable on 2 cores), holding out 100 training rows that are not trained on for its best checkpoint,
then `honed eval RUN --data test.jsonl --baselines none` scores the best checkpoint on the same test examples
for every rate (majority is always added). Two runs at a time with one thread each: a grid measures
quality, not speed, and two single-thread processes use 2 cores better than one two-thread process.
The table (main metric with its 95% CI, final holdout loss, wall time) goes to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks_md import cpu_flags, write_section  # noqa: E402  (scripts run as python benchmarks/NAME.py)
from eval_tasks import DATA, MODEL, PREPARE, honed  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "runs" / "bench-grid"
SECTION = "<!-- lr_grid:{epochs}:{edge} -->"  # one section per epoch setting: a --epochs 1 grid keeps the default one
SIZES = {"banking77": (600, 200), "restaurant8k": (300, 200)}  # (train, test) examples


def setting_name(epochs: int | None) -> str:
    """The epoch setting's name in the results file and the BENCHMARKS markers."""
    return "epochs-auto" if epochs is None else f"epochs-{epochs}"


def run_point(task: str, lr: str, *, data: tuple[Path, Path, Path], args: argparse.Namespace) -> dict[str, Any]:
    """Train one setting and evaluate its best checkpoint; the figures as a dict."""
    import yaml

    run_dir = WORK / task / f"lr-{lr}"
    shutil.rmtree(run_dir, ignore_errors=True)
    log = WORK / task / f"lr-{lr}.log"
    log.unlink(missing_ok=True)
    train_path, valid_path, test_path = data
    train_args = ["train", "--data", str(train_path), "--holdout", str(valid_path), "--model", MODEL, "--out", str(run_dir),
                  "--set", "num_threads=1", "--set", "data.eval_max_examples=100", "--no-report", "--json"]
    train_args += ([] if args.epochs is None else ["--epochs", str(args.epochs)]) + ([] if lr == "default" else ["--lr", lr])
    out, train_s, _ = honed(*train_args, log=log)  # the CPU figure counts both parallel runs: not used
    trained = json.loads(out)
    out, _, _ = honed("eval", str(run_dir), "--data", str(test_path), "--baselines", "none", "--threads", "1",
                      "--no-report", "--json", log=log)
    summary = json.loads(out)
    metric = summary["main_metric"]
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    return {
        "task": task, "lr": lr, "resolved_lr": resolved["lr"], "epochs": resolved["epochs"],
        "batch_size": resolved["batch_size"], "metric": metric, "tuned": summary["systems"]["tuned"]["metrics"][metric],
        "majority": summary["systems"]["majority"]["metrics"][metric], "n": summary["n"],
        "holdout_loss": trained.get("best", {}).get("holdout_loss"), "train_seconds": train_s,
    }


def render(results: list[dict[str, Any]], *, epochs: int | None) -> str:
    """The section for one epoch setting; `results` may come from several invocations (one task each)."""
    commands = "; ".join(dict.fromkeys(f"`{r['command']}` ({r['date']})" for r in results))
    lines = [
        "## Default learning rate against a small grid (`benchmarks/lr_grid.py`, "
        f"{'default epochs' if epochs is None else f'{epochs} epoch(s)'})",
        "",
        f"- CPU flags {cpu_flags()}; commands: {commands}",
        "- Every other setting at honed's defaults (LoRA r=16, alpha 32, batch 16, cosine, warmup 3%); one thread per "
        "run, two runs at a time; best checkpoint by holdout loss on 100 held-out training rows (not the test "
        "examples), evaluated on the same test examples for every rate.",
        "",
        "| task | train / test | lr | epochs | main metric [95% CI] | majority | best holdout loss | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        t = r["tuned"]
        name = f"**default ({r['resolved_lr']:.2g})**" if r["lr"] == "default" else f"{float(r['lr']):.2g}"
        lines.append(
            f"| {r['task']} | {SIZES[r['task']][0]} / {r['n']} | {name} | {r['epochs']} | {r['metric']} "
            f"{t['value']:.3f} [{t['low']:.3f}, {t['high']:.3f}] | {r['majority']['value']:.3f} | "
            f"{r['holdout_loss']:.4f} | {r['train_seconds']:.0f} |"
        )
    for task in dict.fromkeys(r["task"] for r in results):
        rows = [r for r in results if r["task"] == task]
        best = max(rows, key=lambda r: r["tuned"]["value"])
        default = next((r for r in rows if r["lr"] == "default"), None)
        if default is best:
            lines.append(f"\n- {task}: the default is the best rate of the grid.")
        elif default:
            gap = best["tuned"]["value"] - default["tuned"]["value"]
            lines.append(f"\n- {task}: the default is {gap:.3f} below the best rate of the grid ({best['lr']}).")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=lambda s: s.split(","), default=["banking77", "restaurant8k"])
    parser.add_argument("--lrs", default="2e-4,default,4e-3", help="comma-separated rates; default = honed's rule")
    parser.add_argument("--epochs", type=int, default=None, help="default: honed's own (epochs: auto)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--render-only", action="store_true", help="rewrite the section from the saved results")
    args = parser.parse_args()
    saved = WORK / f"results-{setting_name(args.epochs)}.json"  # one results file per epoch setting
    if args.render_only:
        write_report(json.loads(saved.read_text()), args)
        return
    if not DATA.is_dir():
        sys.exit(f"{DATA} is missing: this benchmark reads ../shared/data beside the repository")
    data = {}
    for task in args.tasks:
        (WORK / task).mkdir(parents=True, exist_ok=True)
        data[task] = PREPARE[task](WORK / task, train=SIZES[task][0], eval_n=SIZES[task][1], seed=args.seed)
    points = [(task, lr) for task in args.tasks for lr in args.lrs.split(",")]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(lambda p: run_point(p[0], p[1], data=data[p[0]], args=args), points))
    command = (f".venv/bin/python benchmarks/lr_grid.py --tasks {','.join(args.tasks)} --lrs {args.lrs}"
               f"{'' if args.epochs is None else f' --epochs {args.epochs}'}")
    for row in results:
        row.update(command=command, date=dt.date.today().isoformat())
    # Rows of tasks not run this time are kept, so the tasks can run apart.
    earlier = json.loads(saved.read_text()) if saved.is_file() else []
    results = [r for r in earlier if r["task"] not in args.tasks] + results
    saved.write_text(json.dumps(results, indent=2))
    write_report(results, args)


def write_report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    report = render(results, epochs=args.epochs)
    print(report)
    if not args.no_write:
        setting = setting_name(args.epochs)
        write_section(ROOT / "BENCHMARKS.md", report, start=SECTION.format(epochs=setting, edge="start"),
                      end=SECTION.format(epochs=setting, edge="end"))


if __name__ == "__main__":
    main()
