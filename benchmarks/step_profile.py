"""Benchmark: where a LoRA training step's time goes, and each speed change before/after, in one run.

Usage:
    .venv/bin/python benchmarks/step_profile.py            # ~5 min on 2 cores; writes BENCHMARKS.md
    .venv/bin/python benchmarks/step_profile.py --reps 3 --no-write

The work: forward + backward of 16 banking77 chats (one micro-batch, packed as `honed train` packs them) on
smollm2-135m with LoRA r=16 on every linear layer, fp32, as `honed train` runs it (honed.train.loss). Two
variants alternate in the same process, `--reps` times each, so machine noise hits both alike:
- before: peft's own LoRA forward (`base(x) + B(A(x)) * scale`), the head's chunks always checkpointed, and
  every example's tokens in its packed row (no shared prefix);
- unshared: "after" without the shared prefix (every example's tokens in its row, as before);
- after:  honed's folded forward (honed/train/lora_fold.py: one addmm), small logits kept (honed/train/loss.py)
  and the tokens all the chats start with held once per row (honed/train/batching.py);
- compiled: "after" with each decoder layer torch.compile'd, as `compile: auto` does for long runs
  (honed/train/compile.py); its compile time is reported apart, and not counted in the medians.
Reported: median wall and CPU seconds, real tokens per second, the largest gradient difference from
"before" (the changes must not change the numbers), then torch.profiler's top operators for "after" with the
share of time of each, and the fraction of this machine's fp32 matmul peak each variant reaches (counting the
positions it computes: a shared prefix is computed once).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks_md import cpu_flags, write_section  # noqa: E402  (scripts run as python benchmarks/NAME.py)

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "banking77"
SECTION_START, SECTION_END = "<!-- step_profile:start -->", "<!-- step_profile:end -->"


def build(chats: int) -> tuple[Any, dict[str, list[Any]], Any, dict[Any, Any]]:
    """The LoRA model (folded), one step's micro-batches ("shared": as `honed train` packs them, "unshared":
    without the shared prefix), the loss parts, and each layer's folded forward."""
    import torch
    from peft.tuners.lora import Linear as LoraLinear
    from train_vs_trl import conversations, read_banking77

    from honed.config import load_config
    from honed.model.tokenizers import model_tokenizer
    from honed.train import loss as loss_module
    from honed.train.batching import micro_batches, packed_row_capacity, shared_prefix_length
    from honed.train.build import attention_length, build_model
    from honed.train.data import to_examples

    torch.set_num_threads(2)
    torch.manual_seed(0)
    config = load_config(None, overrides=["model=smollm2-135m", "lora.r=16", "lora.alpha=32", "lora.dropout=0"])
    tokenizer, _ = model_tokenizer(config.model)
    chats_read = conversations(read_banking77(DATA / "train.csv", count=chats, seed=0))  # train_vs_trl's sample
    examples, _, _ = to_examples(chats_read, tokenizer, max_length=256)
    model = build_model(config, device="cpu")
    model.train()
    for layer in model.modules():  # B starts at zero; random B makes the LoRA path count in the gradients
        if isinstance(layer, LoraLinear):
            torch.nn.init.normal_(layer.lora_B["default"].weight, std=0.01)
    folded = {m: m.forward for m in model.modules() if isinstance(m, LoraLinear) and "forward" in m.__dict__}
    prefix = shared_prefix_length(examples)
    capacity = packed_row_capacity(examples, max_length=1024)  # as `honed train` packs, without a shared prefix
    shared_capacity = packed_row_capacity(examples, max_length=1024, shared_prefix=prefix,
                                          attention_length=attention_length(model))  # and with one
    batches = {"shared": micro_batches(examples, max_tokens=4096, packing=True, row_capacity=shared_capacity,
                                       shared_prefix=prefix),
               "unshared": micro_batches(examples, max_tokens=4096, packing=True, row_capacity=capacity,
                                         shared_prefix=0)}
    return model, batches, loss_module.model_parts(model), folded


VARIANTS = ("before", "unshared", "after", "compiled")
UNSHARED = ("before", "unshared")  # the variants that run the batches without the shared prefix


def use(variant: str, folded: dict[Any, Any], *, keep_logits_bytes: int, compiled: dict[Any, Any]) -> None:
    """Switch the model to "before" (peft's forward, head always recomputed), "after" (as shipped, eager)
    or "compiled" (as shipped, decoder layers compiled: `compiled` maps each layer to its compiled call)."""
    from honed.train import loss as loss_module

    for layer, forward in folded.items():
        if variant == "before":
            layer.__dict__.pop("forward", None)
        else:
            layer.forward = forward
    for layer, call in compiled.items():  # nn.Module.compile's own switch: None runs the layer eagerly
        layer._compiled_call_impl = call if variant == "compiled" else None
    loss_module.KEEP_LOGITS_BYTES = 0 if variant == "before" else keep_logits_bytes


def compile_all(model: Any) -> dict[Any, Any]:
    """honed's regional compilation of every decoder layer; each layer's compiled call, for `use`."""
    from honed.train.compile import compile_layers, decoder_layers

    compile_layers(model)
    return {layer: layer._compiled_call_impl for layer in decoder_layers(model)}


def step(model: Any, batches: list[Any], parts: Any) -> None:
    from honed.train.loss import loss_sum

    for batch in batches:
        loss_sum(model, batch, parts=parts).backward()


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import honed  # noqa: F401  (before torch: its OpenMP wait policy, as `honed train` runs)
    import torch
    from train_vs_trl import param_counts

    from honed.train.loss import KEEP_LOGITS_BYTES

    model, plans, parts, folded = build(args.chats)
    compiled = compile_all(model)
    batches_of = {v: plans["unshared" if v in UNSHARED else "shared"] for v in VARIANTS}
    tokens = sum(b.num_tokens for b in plans["shared"])
    positions = {v: sum(b.num_positions for b in batches_of[v]) for v in VARIANTS}
    times: dict[str, tuple[list[float], list[float]]] = {v: ([], []) for v in VARIANTS}
    grads: dict[str, list[Any]] = {}
    compile_s = 0.0
    for rep in range(args.reps + 1):  # the first round warms up (and compiles) and is not counted
        for variant in VARIANTS:
            use(variant, folded, keep_logits_bytes=KEEP_LOGITS_BYTES, compiled=compiled)
            model.zero_grad(set_to_none=True)
            wall, cpu = time.perf_counter(), time.process_time()
            step(model, batches_of[variant], parts)
            if rep:
                times[variant][0].append(time.perf_counter() - wall)
                times[variant][1].append(time.process_time() - cpu)
            else:
                grads[variant] = [p.grad.clone() for p in model.parameters() if p.requires_grad]
                compile_s = time.perf_counter() - wall if variant == "compiled" else compile_s
    difference = {v: max(float((a - b).abs().max()) for a, b in zip(grads["before"], grads[v])) for v in VARIANTS[1:]}
    use("after", folded, keep_logits_bytes=KEEP_LOGITS_BYTES, compiled=compiled)
    with torch.profiler.profile() as profile:
        for _ in range(2):
            model.zero_grad(set_to_none=True)
            step(model, batches_of["after"], parts)
    events = sorted(profile.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    top = [(e.key, e.self_cpu_time_total / total, e.count // 2) for e in events[: args.top]]
    shapes = {v: [tuple(b.input_ids.shape) for b in batches_of[v]] for v in ("unshared", "after")}
    return {"tokens": tokens, "positions": positions, "shapes": shapes, "times": times,
            "grad_difference": difference, "compile_seconds": compile_s, "top": top,
            "targets": sum(b.num_targets for b in plans["shared"]), **param_counts(model)}


def render(result: dict[str, Any], args: argparse.Namespace, *, peak: float) -> str:
    import torch
    from train_vs_trl import lora_flops_per_token

    lines = [
        "## Where a training step goes, and the speed changes before/after (`benchmarks/step_profile.py`)",
        "",
        f"- Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; CPU flags {cpu_flags()}; torch {torch.__version__}, "
        f"2 threads; command: `.venv/bin/python benchmarks/step_profile.py --chats {args.chats} --reps {args.reps}`",
        f"- Work: forward + backward of {args.chats} banking77 chats ({result['tokens']} real tokens; rows "
        f"{result['shapes']['unshared']} without the shared prefix, {result['shapes']['after']} with it, "
        f"{result['positions']['after']} positions computed), smollm2-135m, LoRA r=16 all-linear, fp32; the "
        f"variants alternate in one process, {args.reps} timed rounds each (medians).",
        "",
        "| variant | wall s | CPU s | real tokens/s | tokens/CPU-s | share of the fp32 matmul peak |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for variant, label in (("before", "before: peft's forward, head always recomputed, no shared prefix"),
                           ("unshared", "unshared: folded addmm, small logits kept, no shared prefix"),
                           ("after", "after: folded addmm, small logits kept, shared prefix once per row"),
                           ("compiled", "compiled: after + each decoder layer torch.compile'd (`compile: auto`)")):
        wall = statistics.median(result["times"][variant][0])
        cpu = statistics.median(result["times"][variant][1])
        rate = result["tokens"] / wall
        positions = result["positions"][variant]
        flops = positions * lora_flops_per_token(
            body_params=result["body_params"], head_params=result["head_params"], lora_params=result["lora_params"],
            supervised_share=result["targets"] / positions)
        lines.append(f"| {label} | {wall:.2f} | {cpu:.2f} | **{rate:.1f}** | {result['tokens'] / cpu:.1f} | "
                     f"{100 * flops / wall / peak:.0f}% |")
    before = statistics.median(result["times"]["before"][0])
    unshared = statistics.median(result["times"]["unshared"][0])
    after = statistics.median(result["times"]["after"][0])
    compiled = statistics.median(result["times"]["compiled"][0])
    rounds = list(zip(result["times"]["after"][0], result["times"]["compiled"][0]))
    faster = sum(1 for a, c in rounds if c < a)
    lines += [
        "",
        f"- after / before: **{before / after:.3f}x** real tokens per wall second, of which the shared prefix "
        f"**{unshared / after:.3f}x** (after / unshared; {result['positions']['after']} positions computed instead "
        f"of {result['positions']['unshared']}); largest gradient difference from before: unshared "
        f"{result['grad_difference']['unshared']:.1e}, after {result['grad_difference']['after']:.1e} (float "
        "reassociation: the same numbers)",
        f"- compiled / after: **{after / compiled:.3f}x** tokens per wall second (compiled faster in {faster} of "
        f"{len(rounds)} rounds); largest gradient difference from before {result['grad_difference']['compiled']:.1e} "
        f"(float reassociation); compiling took {result['compile_seconds']:.0f} s in the first round (less when "
        "inductor's on-disk cache already holds the graphs)",
        f"- fp32 matmul peak of this machine, 2 threads (`benchmarks/matmul_flops.py`): {peak / 1e9:.0f} GFLOP/s; "
        "model FLOPs per computed position: the formula of `benchmarks/train_vs_trl.py` (~470 M here)",
        "",
        "Top operators of the step after the changes (torch.profiler, self time):",
        "",
        "| operator | share of the step | calls per step |",
        "|---|---:|---:|",
    ]
    lines += [f"| `{name}` | {100 * share:.1f}% | {calls} |" for name, share, calls in result["top"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=16)
    parser.add_argument("--reps", type=int, default=8)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"{DATA} is missing: this benchmark reads ../shared/data beside the repository")
    from matmul_flops import measure as matmul_peak

    result = measure(args)
    peak = matmul_peak(threads=2)["best_flops"]
    report = render(result, args, peak=peak)
    print(report)
    if not args.no_write:
        write_section(ROOT / "BENCHMARKS.md", report, start=SECTION_START, end=SECTION_END)


if __name__ == "__main__":
    main()
