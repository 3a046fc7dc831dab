"""Measure this machine's fp32 matmul throughput (FLOP/s) with torch, the ceiling training is compared to.

Usage:
    .venv/bin/python benchmarks/matmul_flops.py --threads 2 [--dtype bfloat16]

A square (or transformer-shaped) fp32 `torch.matmul` of [m x k] by [k x n] does 2*m*k*n floating point
operations. We time a few shapes that occur when training a ~135M model on short chats (tokens x hidden by
hidden x hidden/intermediate) and report the best sustained rate: the fraction of it that a training loop
reaches is its "model FLOP utilisation" on this CPU.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

# (m, k, n): tokens x in_features x out_features, shapes a SmolLM2-135M step multiplies.
SHAPES: tuple[tuple[int, int, int], ...] = (
    (512, 576, 576),
    (512, 576, 1536),
    (512, 1536, 576),
    (1024, 1024, 1024),
    (2048, 2048, 2048),
)


def time_matmul(m: int, k: int, n: int, *, min_seconds: float = 0.5, dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of an fp32 [m x k] @ [k x n] matmul, best of repeated timed loops.

    >>> time_matmul(256, 256, 256, min_seconds=0.05) > 0
    True
    """
    a = torch.randn(m, k, dtype=dtype)
    b = torch.randn(k, n, dtype=dtype)
    out = torch.empty(m, n, dtype=dtype)
    torch.matmul(a, b, out=out)  # warm-up: thread pool, caches
    best = 0.0
    for _ in range(3):
        reps = 0
        start = time.perf_counter()
        while time.perf_counter() - start < min_seconds / 3:
            torch.matmul(a, b, out=out)
            reps += 1
        elapsed = time.perf_counter() - start
        best = max(best, 2.0 * m * k * n * reps / elapsed)
    return best


def measure(*, threads: int = 2, dtype: str = "float32") -> dict[str, float]:
    """The best fp32 matmul FLOP/s over SHAPES with `threads` threads, plus the per-shape figures.

    >>> measure(threads=1)["best_flops"] > 0  # doctest: +SKIP
    True
    """
    torch.set_num_threads(threads)
    per_shape = {f"{m}x{k}x{n}": time_matmul(m, k, n, dtype=getattr(torch, dtype)) for m, k, n in SHAPES}
    return {"threads": float(threads), "best_flops": max(per_shape.values()), **per_shape}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    result = measure(threads=args.threads, dtype=args.dtype)
    print(json.dumps(result))
    print(f"best {args.dtype} matmul: {result['best_flops'] / 1e9:.1f} GFLOP/s with {args.threads} threads")


if __name__ == "__main__":
    main()
