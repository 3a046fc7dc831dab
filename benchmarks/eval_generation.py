"""Benchmark: honed's batched greedy generation against one-by-one decoding and transformers' batched generate.

Usage:
    .venv/bin/python benchmarks/eval_generation.py                  # 64 prompts, writes BENCHMARKS.md
    .venv/bin/python benchmarks/eval_generation.py --prompts 8 --no-write   # quick smoke run

The prompts are the first N user turns of restaurant8k's test.jsonl rendered with the model's chat template
(system prompt included), exactly as `honed eval` renders them; max_new_tokens is derived from the
references as `honed eval` does. Systems, one after another in this process on smollm2-135m (fp32, CPU):

- honed batched:     `honed.model.decode.generate(batch_size=B)` (left padding, KV cache, length-sorted
                     batches, finished rows dropped);
- honed one-by-one:  the same function with batch_size=1 (KV cache, no padding);
- transformers batched: `model.generate(do_sample=False)` on the same left-padded batches (same batch size,
                     the same length-sorted grouping honed uses, attention mask, eos = <|im_end|>);
- transformers one-by-one: `model.generate(do_sample=False)` called once per prompt, eos = <|im_end|> (the
                     loop most evaluation scripts write).

Throughput = generated tokens (stop token included) per CPU second (one torch thread, so process time is
the work done; wall time depends on the other jobs). Every system's outputs are compared token for token
with honed's one-by-one run (greedy decoding is deterministic). The machine's load average is recorded
before and after: on a shared, loaded machine only the ratios between systems mean anything.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks_md import write_section  # noqa: E402  (scripts run as python benchmarks/NAME.py)

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "restaurant8k" / "test.jsonl"
MODEL = "smollm2-135m"
SECTION_START = "<!-- eval_generation:start -->"
SECTION_END = "<!-- eval_generation:end -->"


def load_prompts(count: int, *, data: Path = DATA) -> tuple[Any, Any, list[list[int]], int]:
    from honed.data.read import read_conversations
    from honed.model.decode import default_max_new_tokens
    from honed.model.loading import load_model
    from honed.model.prompt import render_prompt
    from honed.model.tokenizers import model_tokenizer

    tokenizer, _ = model_tokenizer(MODEL)
    model = load_model(MODEL)
    convs = read_conversations(data).conversations[:count]
    prompts = [render_prompt(c, tokenizer) for c in convs]
    refs = [c.response_text() for c in convs]
    max_new = default_max_new_tokens([len(ids) for ids in tokenizer(refs, add_special_tokens=False)["input_ids"]])
    return model, tokenizer, prompts, max_new


def run_honed(model: Any, tokenizer: Any, prompts: list[list[int]], *, max_new: int, batch_size: int) -> dict[str, Any]:
    from honed.model.decode import generate

    cpu = time.process_time()
    outputs, stats = generate(model, tokenizer, prompts, max_new_tokens=max_new, batch_size=batch_size)
    return {"tokens": stats.new_tokens, "seconds": stats.seconds, "cpu_seconds": time.process_time() - cpu,
            "ids": [o.token_ids for o in outputs]}


def run_transformers(model: Any, tokenizer: Any, prompts: list[list[int]], *, max_new: int) -> dict[str, Any]:
    import torch

    from honed.model.decode import stops_for

    stops = stops_for(tokenizer, model).id_list
    started, cpu, tokens, ids = time.perf_counter(), time.process_time(), 0, []
    with torch.inference_mode():
        for prompt in prompts:
            out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                 max_new_tokens=max_new, do_sample=False, eos_token_id=stops,
                                 pad_token_id=tokenizer.pad_token_id or stops[0])
            new = out[0, len(prompt):].tolist()
            tokens += len(new)
            ids.append([t for t in new if t not in stops])
    return {"tokens": tokens, "seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu,
            "ids": ids}


def run_transformers_batched(model: Any, tokenizer: Any, prompts: list[list[int]], *, max_new: int,
                             batch_size: int) -> dict[str, Any]:
    """transformers' own batched greedy `generate` on left-padded batches grouped as honed groups them."""
    import torch

    from honed.model.decode import length_batches, pad_token_id, stops_for

    rule = stops_for(tokenizer, model)
    stops, pad = rule.id_list, pad_token_id(tokenizer, rule)
    started, cpu, tokens, ids = time.perf_counter(), time.process_time(), 0, [[] for _ in prompts]
    with torch.inference_mode():
        for batch in length_batches([len(p) for p in prompts], batch_size=batch_size):
            width = max(len(prompts[i]) for i in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                input_ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
                mask[row, width - len(prompts[i]):] = 1
            out = model.generate(input_ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
                                 eos_token_id=stops, pad_token_id=pad)
            for row, i in enumerate(batch):
                new = out[row, width:].tolist()
                end = next((k for k, t in enumerate(new) if t in stops), None)  # after it: padding
                ids[i] = new if end is None else new[:end]
                tokens += len(ids[i]) + (end is not None)
    return {"tokens": tokens, "seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu,
            "ids": ids}


def render_report(results: dict[str, dict[str, Any]], args: argparse.Namespace, *, max_new: int,
                  matches: dict[str, int], load: tuple[float, float]) -> str:
    import torch

    one = results["honed one-by-one"]["tokens"] / results["honed one-by-one"]["cpu_seconds"]
    lines = [
        "## Evaluation: batched vs one-by-one generation, and transformers' batched generate",
        "",
        f"- Date: {dt.date.today().isoformat()}; machine: {platform.machine()}, {os.cpu_count()} cores "
        f"(shared with other jobs), torch {torch.__version__}, torch threads: {torch.get_num_threads()}.",
        f"- Command: `.venv/bin/python benchmarks/eval_generation.py --prompts {args.prompts} "
        f"--batch-size {args.batch_size} --threads {args.threads}`",
        f"- Work: {MODEL} (fp32, CPU), greedy, the first {args.prompts} prompts of restaurant8k test.jsonl "
        f"rendered with the chat template, max_new_tokens {max_new} (derived from the references).",
        f"- Load: 1-minute load average {load[0]:.1f} before and {load[1]:.1f} after, on {os.cpu_count()} cores. "
        "These figures were measured under that load: compare the ratios between systems, not the rates.",
        "",
        "CPU seconds (one thread, so process time is the work done) are the fair measure on this shared",
        "machine; wall seconds depend on what else ran at the time. The transformers batched run gets the same",
        "batches (size and length-sorted grouping) as honed batched.",
        "",
        "| system | generated tokens | CPU seconds | tokens per CPU second | vs honed one-by-one | wall seconds "
        "| same tokens as one-by-one |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results.items():
        rate = r["tokens"] / r["cpu_seconds"]
        lines.append(f"| {name} | {r['tokens']} | {r['cpu_seconds']:.1f} | {rate:.1f} | {rate / one:.2f}x | "
                     f"{r['seconds']:.1f} | {matches[name]}/{args.prompts} |")
    batched = next(iter(results.values()))
    theirs = results[f"transformers generate batched (batch {args.batch_size})"]
    wall_one = results["honed one-by-one"]["seconds"]
    rate = batched["tokens"] / batched["cpu_seconds"]
    lines += ["", f"honed's batched decoding does {rate / one:.1f}x the tokens per CPU second of one-by-one decoding "
              f"({wall_one / batched['seconds']:.1f}x in wall time) and "
              f"{rate / (theirs['tokens'] / theirs['cpu_seconds']):.2f}x those of transformers' batched generate on "
              "the same batches."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    # One thread: on a machine shared with other jobs, more torch threads oversubscribe the cores (5-20x slower).
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="print, do not update BENCHMARKS.md")
    parser.add_argument("--data", type=Path, default=DATA, help="restaurant8k test.jsonl (default: ../shared/data)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if not args.data.is_file():
        sys.exit(f"{args.data} is missing: this benchmark reads restaurant8k from ../shared/data (or --data)")
    model, tokenizer, prompts, max_new = load_prompts(args.prompts, data=args.data)
    load_before = os.getloadavg()[0]
    run_honed(model, tokenizer, prompts[:2], max_new=4, batch_size=2)  # warm-up (first-call allocations)
    results = {
        f"honed batched (batch {args.batch_size})": run_honed(model, tokenizer, prompts, max_new=max_new,
                                                              batch_size=args.batch_size),
        "honed one-by-one": run_honed(model, tokenizer, prompts, max_new=max_new, batch_size=1),
        f"transformers generate batched (batch {args.batch_size})": run_transformers_batched(
            model, tokenizer, prompts, max_new=max_new, batch_size=args.batch_size),
        "transformers generate one-by-one": run_transformers(model, tokenizer, prompts, max_new=max_new),
    }
    reference = results["honed one-by-one"]["ids"]
    matches = {name: sum(a == b for a, b in zip(r["ids"], reference)) for name, r in results.items()}
    report = render_report(results, args, max_new=max_new, matches=matches, load=(load_before, os.getloadavg()[0]))
    print(report)
    if not args.no_write:
        write_section(ROOT / "BENCHMARKS.md", report, start=SECTION_START, end=SECTION_END)


if __name__ == "__main__":
    main()
