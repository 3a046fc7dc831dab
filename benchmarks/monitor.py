"""Benchmark: does `honed monitor`'s drift test catch a foreign task, and does it keep quiet otherwise?

Usage:
    .venv/bin/python benchmarks/monitor.py              # writes its section of BENCHMARKS.md
    .venv/bin/python benchmarks/monitor.py --no-write --windows 5

For each of banking77 and restaurant8k (../shared/data) as the training side: 1,000 training prompts
(user turns) are the reference; traffic windows of 200 prompts come from (a) the same data set's test
split, (b) the other data set, (c) mixes with 10%, 25% and 50% foreign prompts. Each window gets the
drift test `honed monitor` runs (MMD with an RBF kernel, 200 permutations, alpha 0.01) on prompt
embeddings from smollm2-135m (mean-pooled last hidden states: the tuned model's default path, with the
base weights standing in for a tuned adapter). Reported: the share of windows flagged per mix (at 0%
foreign that is the false-alarm rate), and the time to embed 10,000 traffic prompts on this machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import time
from pathlib import Path

import numpy as np

from benchmarks_md import write_section  # noqa: E402  (scripts run as python benchmarks/NAME.py)

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
MODEL = "smollm2-135m"
SECTION_START = "<!-- monitor:start -->"
SECTION_END = "<!-- monitor:end -->"
MIXES = (0.0, 0.1, 0.25, 0.5, 1.0)


def prompts(name: str, split: str) -> list[str]:
    from honed.data.read import ColumnMapping, read_conversations

    if name == "banking77":
        columns = ColumnMapping("text", "category")
        convs = read_conversations(DATA / name / f"{split}.csv", columns=columns).conversations
    else:
        convs = read_conversations(DATA / name / f"{split}.jsonl").conversations
    return [c.user_text() for c in convs]


def windows(same: np.ndarray, foreign: np.ndarray, *, mix: float, count: int, size: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        k = int(round(mix * size))
        parts = [same[rng.choice(len(same), size - k, replace=False)], foreign[rng.choice(len(foreign), k, replace=False)]]
        out.append(np.concatenate(parts))
    return out


def main() -> None:
    from honed.models import load_model, load_tokenizer
    from honed.monitor.drift import mmd_test
    from honed.monitor.embed import embed_texts

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--windows", type=int, default=20)
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--pool", type=int, default=0, help="test prompts per data set (0: all)")
    parser.add_argument("--reference", type=int, default=1000, help="training prompts per data set")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    model, tokenizer = load_model(MODEL), load_tokenizer(MODEL)
    rng = random.Random(0)
    sets = {name: {"ref": rng.sample(prompts(name, "train"), args.reference), "test": prompts(name, "test")}
            for name in ("banking77", "restaurant8k")}
    for name in sets:
        if args.pool:
            sets[name]["test"] = rng.sample(sets[name]["test"], args.pool)
    traffic = sets["banking77"]["test"] + sets["restaurant8k"]["test"]
    started, cpu = time.perf_counter(), time.process_time()
    traffic_vectors = embed_texts(model, tokenizer, traffic)
    embed_s, embed_cpu = time.perf_counter() - started, time.process_time() - cpu
    n_bank = len(sets["banking77"]["test"])
    vectors = {"banking77": {"test": traffic_vectors[:n_bank]},
               "restaurant8k": {"test": traffic_vectors[n_bank : n_bank + len(sets["restaurant8k"]["test"])]}}
    for name in sets:
        vectors[name]["ref"] = embed_texts(model, tokenizer, sets[name]["ref"])
    rows, test_s = [], []
    for name, other in (("banking77", "restaurant8k"), ("restaurant8k", "banking77")):
        for mix in MIXES:
            flagged = 0
            for k, window in enumerate(windows(vectors[name]["test"], vectors[other]["test"], mix=mix,
                                               count=args.windows, size=args.size, seed=round(mix * 100))):
                t = time.perf_counter()
                flagged += mmd_test(vectors[name]["ref"], window, seed=k).p_value < 0.01
                test_s.append(time.perf_counter() - t)
            rows.append((name, other, mix, flagged, args.windows))
            print(f"{name} vs {other} at {mix:.0%} foreign: {flagged}/{args.windows} windows flagged", flush=True)
    text = render(rows, embed_s=embed_s * 10_000 / len(traffic), embed_cpu=embed_cpu * 10_000 / len(traffic),
                  test_s=float(np.mean(test_s)), size=args.size, reference=args.reference, embedded=len(traffic))
    print(text)
    if not args.no_write:
        write_section(ROOT / "BENCHMARKS.md", text, start=SECTION_START, end=SECTION_END)


def render(rows: list[tuple], *, embed_s: float, embed_cpu: float, test_s: float, size: int, reference: int,
           embedded: int) -> str:
    load = os.getloadavg()
    lines = [
        "## Monitoring: drift detection on banking77 and restaurant8k",
        "",
        f"- Date {dt.date.today()}; machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load average at the end {load[0]:.1f}; command `.venv/bin/python benchmarks/monitor.py`.",
        f"- Reference: {reference:,} training prompts; windows of {size} prompts; MMD (RBF, median bandwidth), 200 "
        "permutations, alpha 0.01; embeddings: smollm2-135m mean-pooled last hidden states.",
        f"- Embedding 10,000 traffic prompts: {embed_s:.1f} s wall, {embed_cpu:.1f} s CPU (scaled from the "
        f"{embedded:,} test prompts embedded); one drift test ({reference:,} x {size}) {test_s * 1000:.0f} ms.",
        "",
        "| training side | foreign prompts from | share foreign | windows flagged |",
        "| --- | --- | ---: | ---: |",
    ]
    lines += [f"| {name} | {other} | {mix:.0%} | {flagged} / {total} |" for name, other, mix, flagged, total in rows]
    lines += ["", "At 0% foreign the flagged share is the false-alarm rate (target: 0 of 20); detection is "
              "targeted at 25% foreign."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
