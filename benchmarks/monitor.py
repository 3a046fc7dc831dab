"""Benchmark: does `honed monitor`'s drift test catch a foreign task, and does it keep quiet otherwise?

Usage:
    .venv/bin/python benchmarks/monitor.py              # writes its section of BENCHMARKS.md
    .venv/bin/python benchmarks/monitor.py --no-write --windows 5

For each of banking77 and restaurant8k (../shared/data) as the training side: 1,000 training prompts
(user turns) are the reference; traffic windows of 200 prompts come from (a) the same data set's test
split, (b) the other data set, (c) mixes with 10%, 25% and 50% foreign prompts. Each window gets the
drift tests `honed monitor` runs on prompt embeddings from smollm2-135m (mean-pooled last hidden states:
the tuned model's default path, with the base weights standing in for a tuned adapter): MMD with an RBF
kernel (200 permutations) and the novelty test, each at alpha 0.01; a window drifts when both reject.
Reported: the share of windows flagged per mix by MMD alone and by `honed monitor`'s rule (at 0% foreign
that is the false-alarm rate), the mean share of prompts unlike training, and the time to embed 10,000
traffic prompts on this machine. Embeddings are cached in runs/bench-monitor/ (`--fresh` recomputes them).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import sys
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


def embed_cached(texts: list[str], *, name: str, fresh: bool) -> tuple[np.ndarray, float, float]:
    """Embeddings of `texts` (from runs/bench-monitor/NAME.npz when it holds these texts), wall and CPU seconds."""
    from honed.model.loading import load_model, load_tokenizer
    from honed.monitor.embed import embed_texts

    cache = ROOT / "runs" / "bench-monitor" / f"{name}.npz"
    if cache.is_file() and not fresh:
        stored = np.load(cache, allow_pickle=False)
        if stored["texts"].tolist() == texts:
            return stored["vectors"], float(stored["wall"]), float(stored["cpu"])
    model, tokenizer = load_model(MODEL), load_tokenizer(MODEL)
    started, cpu = time.perf_counter(), time.process_time()
    vectors = embed_texts(model, tokenizer, texts)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, texts=np.array(texts), vectors=vectors, wall=wall, cpu=cpu)
    return vectors, wall, cpu


def main() -> None:
    from honed.monitor.drift import window_drift

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--windows", type=int, default=20)
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--pool", type=int, default=0, help="test prompts per data set (0: all)")
    parser.add_argument("--reference", type=int, default=1000, help="training prompts per data set")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--fresh", action="store_true", help="recompute the cached embeddings")
    args = parser.parse_args()
    rng = random.Random(0)
    sets = {name: {"ref": rng.sample(prompts(name, "train"), args.reference), "test": prompts(name, "test")}
            for name in ("banking77", "restaurant8k")}
    for name in sets:
        if args.pool:
            sets[name]["test"] = rng.sample(sets[name]["test"], args.pool)
    traffic = sets["banking77"]["test"] + sets["restaurant8k"]["test"]
    traffic_vectors, embed_s, embed_cpu = embed_cached(traffic, name="traffic", fresh=args.fresh)
    n_bank = len(sets["banking77"]["test"])
    vectors = {"banking77": {"test": traffic_vectors[:n_bank]},
               "restaurant8k": {"test": traffic_vectors[n_bank : n_bank + len(sets["restaurant8k"]["test"])]}}
    for name in sets:
        vectors[name]["ref"] = embed_cached(sets[name]["ref"], name=f"reference-{name}", fresh=args.fresh)[0]
    rows, test_s = [], []
    for name, other in (("banking77", "restaurant8k"), ("restaurant8k", "banking77")):
        for mix in MIXES:
            by_mmd = by_rule = 0
            novel = []
            for k, window in enumerate(windows(vectors[name]["test"], vectors[other]["test"], mix=mix,
                                               count=args.windows, size=args.size, seed=round(mix * 100))):
                t = time.perf_counter()
                result = window_drift(vectors[name]["ref"], window, alpha=0.01, seed=k)
                test_s.append(time.perf_counter() - t)
                by_mmd += result.mmd.p_value < 0.01
                by_rule += result.drifted
                novel.append(result.novelty.share)
            rows.append((name, other, mix, by_mmd, by_rule, float(np.mean(novel)), args.windows))
            print(f"{name} vs {other} at {mix:.0%} foreign: MMD {by_mmd}/{args.windows}, "
                  f"honed monitor {by_rule}/{args.windows}, unlike training {np.mean(novel):.1%}", flush=True)
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
        f"load average at the end {load[0]:.1f}; command `.venv/bin/python benchmarks/monitor.py {' '.join(sys.argv[1:])}`.",
        f"- Reference: {reference:,} training prompts; windows of {size} prompts drawn from the test split (and the "
        "other data set's test split for the foreign share); embeddings: smollm2-135m mean-pooled last hidden states.",
        "- Tests, each at alpha 0.01: MMD (RBF, median bandwidth, 200 permutations) for any change; novelty (the "
        "share of prompts less like any training prompt than 5% of training prompts are like their nearest "
        "neighbour, one-sided binomial test). `honed monitor` flags drift when both reject.",
        f"- Embedding 10,000 traffic prompts: {embed_s:.1f} s wall, {embed_cpu:.1f} s CPU (scaled from the "
        f"{embedded:,} test prompts embedded); one drift test ({reference:,} x {size}) {test_s * 1000:.0f} ms.",
        "",
        "| training side | foreign prompts from | share foreign | flagged by MMD alone | flagged by honed monitor "
        "| prompts unlike training (mean) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    lines += [f"| {name} | {other} | {mix:.0%} | {mmd} / {total} | **{rule} / {total}** | {novel:.1%} |"
              for name, other, mix, mmd, rule, novel, total in rows]
    lines += ["", "At 0% foreign the flagged share is the false-alarm rate (target: 0 of 20); detection is "
              "targeted at 25% foreign."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
