"""Benchmark: `honed serve` (continuous batching) against a plain transformers server, 1/4/16 clients.

Usage:
    .venv/bin/python benchmarks/serve.py                       # writes its section of BENCHMARKS.md
    .venv/bin/python benchmarks/serve.py --clients 1,4 --requests 2 --no-write   # quick smoke run

Both servers run in this process on 127.0.0.1 (real uvicorn, real HTTP) with smollm2-135m (fp32, CPU) and
are driven by the same client code: C clients (threads with the `openai` client), each sending its share
of the requests one after another. Every request asks for exactly `--max-tokens` tokens (honed:
`ignore_eos`; transformers: `min_new_tokens`), so both produce the same amount of text.

- honed:        `honed serve`'s engine (the request joins the running batch between decode steps);
- transformers: the server most people write first: one `model.generate()` per request behind a lock.
- llama.cpp:    llama-cpp-python's server (`python -m llama_cpp.server`, its own process) on the built-in
                model's GGUF, only when llama-cpp-python (with its [server] extra) is installed.

Reported per system and client count: total output tokens/s (all clients' tokens / wall seconds) and
the p50/p95 request latency. The target: 16 clients get at least 6x the total tokens/s of one.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.util
import os
import platform
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from fastapi import Request

from benchmarks_md import write_section  # noqa: E402  (scripts run as python benchmarks/NAME.py)

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "restaurant8k" / "test.jsonl"
MODEL = "smollm2-135m"
SECTION_START = "<!-- serve:start -->"
SECTION_END = "<!-- serve:end -->"


def prompts(count: int) -> list[str]:
    """User turns from restaurant8k's test split when present, else short synthetic requests."""
    if DATA.is_file():
        from honed.data.read import read_conversations

        convs = read_conversations(DATA).conversations
        users = [next(m.content for m in c.messages if m.role == "user") for c in convs[:count]]
        if len(users) == count:
            return users
    return [f"Book a table for {i % 8 + 2} people at {i % 12 + 1} pm, request {i}" for i in range(count)]


def transformers_app(model: Any, tokenizer: Any) -> Any:
    """One request at a time: `model.generate` behind a lock, in a worker thread, OpenAI's response shape."""
    import torch
    from fastapi import FastAPI

    app, lock = FastAPI(), threading.Lock()

    def answer(body: dict[str, Any]) -> dict[str, Any]:
        ids = tokenizer.apply_chat_template(body["messages"], add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)["input_ids"]
        with lock, torch.inference_mode():
            out = model.generate(ids, max_new_tokens=body["max_tokens"], min_new_tokens=body["max_tokens"],
                                 do_sample=False, pad_token_id=tokenizer.eos_token_id)
        new = out[0, ids.shape[1]:]
        return {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": tokenizer.decode(new)},
                             "finish_reason": "length"}],
                "usage": {"prompt_tokens": ids.shape[1], "completion_tokens": len(new),
                          "total_tokens": ids.shape[1] + len(new)}}

    @app.post("/v1/chat/completions")
    async def completions(request: Request) -> dict[str, Any]:  # Request: module level, FastAPI resolves it
        return await asyncio.to_thread(answer, await request.json())

    return app


@contextmanager
def uvicorn_thread(app: Any) -> Iterator[str]:
    import uvicorn

    from honed.serve.server import free_port, uvicorn_config

    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, host="127.0.0.1", port=port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def drive(url: str, model: str, texts: list[str], *, clients: int, max_tokens: int) -> dict[str, float]:
    """`clients` threads share `texts`; returns total output tokens/s and latency percentiles (s)."""
    from openai import OpenAI

    client = OpenAI(base_url=url + "/v1", api_key="bench", max_retries=0, timeout=3600)
    latencies: list[float] = []
    tokens = 0
    lock = threading.Lock()

    def one(text: str) -> None:
        nonlocal tokens
        started = time.perf_counter()
        reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}],
                                               max_tokens=max_tokens, temperature=0,
                                               extra_body={"ignore_eos": True})
        with lock:
            latencies.append(time.perf_counter() - started)
            tokens += reply.usage.completion_tokens

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, texts))
    wall = time.perf_counter() - started
    ordered = sorted(latencies)
    return {"tokens_per_s": tokens / wall, "p50": statistics.median(ordered),
            "p95": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], "requests": len(texts),
            "tokens": tokens, "wall": wall}


def run_system(name: str, url: str, model: str, *, client_counts: list[int], per_client: int,
               max_tokens: int) -> dict[int, dict[str, float]]:
    results = {}
    drive(url, model, prompts(1), clients=1, max_tokens=4)  # warm-up: first-call allocations
    for clients in client_counts:
        texts = prompts(clients * per_client)
        results[clients] = drive(url, model, texts, clients=clients, max_tokens=max_tokens)
        r = results[clients]
        print(f"{name:>12} {clients:>3} clients: {r['tokens_per_s']:7.1f} tok/s  p50 {r['p50']:6.2f}s  "
              f"p95 {r['p95']:6.2f}s  ({r['requests']} requests, {r['wall']:.1f}s)", flush=True)
    return results


def honed_system(client_counts: list[int], *, per_client: int, max_tokens: int) -> dict[int, dict[str, float]]:
    from honed.model.loading import local_path
    from honed.serve.app import Settings
    from honed.serve.engine import Engine
    from honed.serve.loading import load_targets
    from honed.serve.requestlog import RequestLog
    from honed.serve.server import ServerThread

    served = load_targets([f"smollm2={local_path(MODEL)[0]}"])
    engine = Engine(max_batch=max(client_counts))
    with ServerThread(served, engine, settings=Settings(request_log=RequestLog(enabled=False))) as url:
        return run_system("honed", url, "smollm2", client_counts=client_counts, per_client=per_client,
                          max_tokens=max_tokens)


def transformers_system(client_counts: list[int], *, per_client: int, max_tokens: int) -> dict[int, dict[str, float]]:
    from honed.model.loading import load_model
    from honed.model.tokenizers import model_tokenizer

    model, tokenizer = load_model(MODEL).eval(), model_tokenizer(MODEL)[0]
    with uvicorn_thread(transformers_app(model, tokenizer)) as url:
        return run_system("transformers", url, "smollm2", client_counts=client_counts, per_client=per_client,
                          max_tokens=max_tokens)


def llama_cpp_system(client_counts: list[int], *, per_client: int, max_tokens: int) -> dict[int, dict[str, float]]:
    """llama-cpp-python's OpenAI server on the built-in model's GGUF (its own process, same port rules)."""
    import subprocess
    import urllib.request

    from honed.model.loading import resolve
    from honed.serve.server import free_port

    source = resolve(MODEL)
    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(Path(source.path) / str(source.gguf_file)),
               "--host", "127.0.0.1", "--port", str(port), "--model_alias", "smollm2", "--n_threads", "1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(url + "/v1/models", timeout=2).close()
                break
            except OSError:
                assert process.poll() is None, "llama_cpp.server exited while starting"
                time.sleep(0.5)
        return run_system("llama.cpp", url, "smollm2", client_counts=client_counts, per_client=per_client,
                          max_tokens=max_tokens)
    finally:
        process.terminate()
        process.wait(30)


def section(results: dict[str, dict[int, dict[str, float]]], *, args: argparse.Namespace, load: str,
            load_end: str) -> str:
    import torch

    lines = [
        "## Serving: `honed serve` vs a plain transformers server (smollm2-135m, concurrent clients)", "",
        f"Measured {dt.date.today()} on {platform.processor() or platform.machine()} ({os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}), fp32. **Under load**: the machine is shared (load average "
        f"{load} at the start, {load_end} at the end), so read ratios measured in this one run, not absolute speeds.",
        f"Command: `python benchmarks/serve.py --clients {args.clients} --requests {args.requests} "
        f"--max-tokens {args.max_tokens} --threads {args.threads}`. Each client sends {args.requests} requests one after another; every "
        f"request generates exactly {args.max_tokens} tokens; both servers run on 127.0.0.1 in one process.", "",
        "| system | clients | total output tokens/s | vs 1 client | p50 latency (s) | p95 latency (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, rows in results.items():
        one = rows[min(rows)]["tokens_per_s"]
        for clients, r in rows.items():
            lines.append(f"| {name} | {clients} | {r['tokens_per_s']:.1f} | {r['tokens_per_s'] / one:.1f}x | "
                         f"{r['p50']:.2f} | {r['p95']:.2f} |")
    if "honed" in results and "transformers" in results:
        most = max(results["honed"])
        ratio = results["honed"][most]["tokens_per_s"] / results["transformers"][most]["tokens_per_s"]
        lines += ["", f"At {most} clients honed serves {ratio:.1f}x the tokens/s of the one-at-a-time server."]
    if "honed" in results and len(results["honed"]) > 1:
        rows = results["honed"]
        gain = rows[max(rows)]["tokens_per_s"] / rows[min(rows)]["tokens_per_s"]
        verdict = "met" if gain >= 6 else "not met"
        lines += ["", f"Target ({max(rows)} clients >= 6x one client's total tokens/s): {verdict} ({gain:.1f}x)."]
    if importlib.util.find_spec("llama_cpp") is None:
        lines += ["", "llama.cpp's server: skipped (llama-cpp-python is not installed)."]
    else:
        lines += ["", "llama.cpp runs the GGUF (Q4_1) and may stop before max_tokens (it has no ignore_eos): "
                  "its tokens/s count the tokens it generated."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--requests", type=int, default=1, help="requests per client")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a shared machine more threads collapse, see DESIGN.md)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    counts = [int(c) for c in args.clients.split(",")]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load average {load}", flush=True)
    results = {"honed": honed_system(counts, per_client=args.requests, max_tokens=args.max_tokens),
               "transformers": transformers_system(counts, per_client=args.requests, max_tokens=args.max_tokens)}
    if importlib.util.find_spec("llama_cpp") is not None:
        results["llama.cpp"] = llama_cpp_system(counts, per_client=args.requests, max_tokens=args.max_tokens)
    load_end = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    text = section(results, args=args, load=load, load_end=load_end)
    print(text)
    if not args.no_write:
        write_section(ROOT / "BENCHMARKS.md", text, start=SECTION_START, end=SECTION_END)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
