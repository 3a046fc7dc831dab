"""`honed export`, `honed serve`, `honed chat`: the tuned model out of honed and in front of users."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.markup import escape

from honed.cli.app import app, err_console
from honed.cli.options import command
from honed.export.settings import ExportSettings
from honed.options import argument, option
from honed.serve.limits import DEFAULT_DRAIN_S, DEFAULT_MAX_BATCH, DEFAULT_MAX_QUEUE, Limits


@dataclass(kw_only=True)
class ExportOptions(ExportSettings):
    """`honed export`: the export's settings, the run, and how to print."""

    run_dir: str = argument("a finished run directory written by `honed train`")
    as_json: bool = option(False, "print the export record as JSON", flag="--json")


@command(app, "export", ExportOptions)
def export_command(options: ExportOptions) -> None:
    """Export a run's tuned model (merged weights, a portable adapter, or GGUF) with a model card,
    then check parity: the artifact answers the holdout like the tuned model, or a warning says it does not.

    Example: honed export runs/demo --to gguf --quant q8_0 --ollama

    Example: honed export runs/demo --to merged --out shipped/support-v1
    """
    import json

    from honed.export.run_export import export_run

    as_json = options.as_json
    with err_console.status("exporting...", spinner="dots") as status:
        result = export_run(options.run_dir, options, on_step=_step_reporter(status))
    if as_json:
        print(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
    else:
        console = Console(highlight=False, markup=False)
        console.print(f"exported {result.target} ({result.checkpoint}) to {result.folder}", soft_wrap=True)
        console.print("files: " + ", ".join(result.files), soft_wrap=True)
        for line in result.parity.lines() if result.parity else ["parity not checked (--no-parity)"]:
            console.print(line, soft_wrap=True)
    if as_json and result.parity is not None and result.parity.significantly_worse:
        err_console.print(f"[bold red]warning:[/] {escape(result.parity.lines()[-1])}", soft_wrap=True)


def _step_reporter(status: Any) -> Any:
    """The spinner's text on a terminal; elsewhere (a log file, CI) a plain stderr line per step, since a
    spinner shows nothing there and a GGUF conversion or a parity check runs for minutes."""
    def on_step(message: str) -> None:
        if err_console.is_terminal:
            status.update(message + "...")
        else:
            err_console.print(message + "...", markup=False, highlight=False, soft_wrap=True)

    return on_step


def _serve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


@dataclass(kw_only=True)
class ServeOptions:
    """`honed serve`: what to serve, where, on which engine, and the limits on each request."""

    targets: list[str] = argument("run directories or exported model folders ([NAME=]PATH)")
    host: str = option("127.0.0.1", "address to listen on (loopback only unless you say so)")
    port: int = option(8000, "TCP port", min=1, max=65535)
    api_key: str | None = option(None, "require `Authorization: Bearer KEY` on /v1/* (or set HONED_API_KEY)",
                                 envvar="HONED_API_KEY")
    checkpoint: str = option("best", "best, final, last or checkpoints/step-N of each run")
    engine: str = option("torch", "torch (built in: CPU or one GPU), llama.cpp (the run's GGUF export, "
                         "llama-cpp-python installed) or vllm (GPU, vLLM installed)")
    no_log: bool = option(False, "write no request log")
    request_log: str | None = option(None, "one log file for every model (default: RUN/requests.jsonl)")
    max_tokens_limit: int = option(Limits.max_tokens, "largest max_tokens a request may ask for (also the default)",
                                   min=1)
    max_prompt_tokens: int = option(Limits.max_prompt_tokens, "longest prompt accepted, in tokens", min=1)
    max_body_bytes: int = option(Limits.max_body_bytes, "largest request body (413 above)", min=1024)
    max_batch: int = option(DEFAULT_MAX_BATCH, "requests decoded together", min=1)
    max_queue: int = option(DEFAULT_MAX_QUEUE, "requests allowed to wait; more get 429", min=0)
    device: str = option("auto", "auto, cpu or cuda (torch and llama.cpp engines)")
    precision: str = option("fp32", "the torch engine's weights: fp32 (the numbers `honed eval` measured) or bf16 "
                            "(half the bytes read per token: faster on a GPU or a CPU with AVX-512 BF16 / AMX; "
                            "greedy answers may differ from eval's where two tokens nearly tie)")
    threads: int | None = option(
        None, "CPU threads for torch and llama.cpp (default: the usable cores, see docs/train.md)", min=1)
    drain_timeout: float = option(DEFAULT_DRAIN_S, "seconds SIGTERM waits for in-flight requests", min=0)
    vllm_args: list[str] | None = option(
        None, "extra argument for vLLM, e.g. --vllm-arg=--tensor-parallel-size=2", flag="--vllm-arg")


@command(app, "serve", ServeOptions)
def serve_command(options: ServeOptions) -> None:
    """Serve runs and exported models over an OpenAI-compatible HTTP API (one base model, one adapter per run).

    Clients pick a run by its name in the request's `model` field. Every request is appended to
    RUN/requests.jsonl (docs/request-log.md) unless --no-log. SIGTERM or Ctrl-C drains in-flight requests.

    Example: honed serve runs/support runs/billing --port 8000 --api-key secret

    Example: honed serve runs/support --engine llama.cpp   (after `honed export runs/support --to gguf`)

    Example: honed serve runs/support --engine vllm --vllm-arg=--tensor-parallel-size=2
    """
    o = options
    settings = _front_settings(o)
    if o.engine == "vllm":
        from honed.serve.vllm import serve_vllm

        serve_vllm(o.targets, host=o.host, port=o.port, settings=settings, checkpoint=o.checkpoint,
                   extra_args=o.vllm_args or [], max_queue=o.max_queue, drain_s=o.drain_timeout)
        return
    if o.engine == "llama.cpp":
        from honed.serve.llamacpp import serve_llamacpp

        served = _load_gguf_served(o.targets, checkpoint=o.checkpoint, device=o.device, threads=o.threads,
                                   max_batch=o.max_batch)
        err_console.print(f"OpenAI-compatible API on http://{o.host}:{o.port}/v1 (Ctrl-C or SIGTERM to stop)", markup=False)
        serve_llamacpp(served, host=o.host, port=o.port, settings=settings, max_batch=o.max_batch,
                       max_queue=o.max_queue, drain_s=o.drain_timeout)
        return
    from honed.serve.server import serve

    served = _load_served(o.targets, checkpoint=o.checkpoint, device=o.device, threads=o.threads,
                          dtype=_serve_dtype(o.precision, device=_serve_device(o.device)))
    err_console.print(f"OpenAI-compatible API on http://{o.host}:{o.port}/v1 (Ctrl-C or SIGTERM to stop)", markup=False)
    serve(served, host=o.host, port=o.port, settings=settings, max_batch=o.max_batch, max_queue=o.max_queue,
          drain_s=o.drain_timeout)


def _front_settings(options: ServeOptions) -> Any:
    """The HTTP front's settings (auth, limits, request log) after checking the options that conflict."""
    from honed.errors import ConfigError
    from honed.serve.app import Settings
    from honed.serve.requestlog import RequestLog

    if options.engine not in ("torch", "llama.cpp", "vllm"):
        raise ConfigError(f"--engine {options.engine}: use torch, llama.cpp or vllm")
    if options.precision not in ("fp32", "bf16"):
        raise ConfigError(f"--precision {options.precision}: use fp32 or bf16")
    if options.precision != "fp32" and options.engine != "torch":
        raise ConfigError(f"--precision applies to the torch engine; the {options.engine} engine keeps its own "
                          "weights (llama.cpp: the GGUF's quantisation, `honed export --quant`; vLLM: --vllm-arg=--dtype)")
    if options.no_log and options.request_log:
        raise ConfigError("--no-log and --request-log contradict each other; pass one")
    if options.host not in ("127.0.0.1", "localhost", "::1") and not options.api_key:
        err_console.print(f"warning: listening on {options.host} without --api-key: anyone who reaches this port "
                          "can use the models")
    limits = Limits(max_body_bytes=options.max_body_bytes, max_tokens=options.max_tokens_limit,
                    max_prompt_tokens=options.max_prompt_tokens)
    return Settings(api_key=options.api_key, limits=limits,
                    request_log=RequestLog(single=options.request_log, enabled=not options.no_log))


def _serve_dtype(precision: str, *, device: str) -> str:
    """The torch engine's weight dtype for --precision; bf16 is refused where it would be slower than fp32."""
    from honed.errors import ConfigError
    from honed.machine import cpu_has_fast_bf16

    if precision == "fp32":
        return "float32"
    if device == "cpu" and not cpu_has_fast_bf16():
        raise ConfigError("--precision bf16 needs a GPU or a CPU with AVX-512 BF16 / AMX; this CPU has neither, "
                          "and bf16 would run slower than fp32 here: leave --precision at fp32")
    return "bfloat16"


def _load_served(targets: list[str], *, checkpoint: str, device: str, threads: int | None,
                 dtype: str = "float32") -> Any:
    """Load what `honed serve` serves (torch engine) and say what it is."""
    from honed.serve.loading import load_targets
    from honed.threads import apply_threads

    apply_threads(threads)  # --threads, else the rule in honed/threads.py
    with err_console.status("loading models...", spinner="dots"):
        served = load_targets(targets, checkpoint=checkpoint, device=_serve_device(device), dtype=dtype)
    for model in served:
        where = model.run or model.checkpoint
        err_console.print(f"serving {model.name} ({where}, {model.checkpoint})", markup=False, soft_wrap=True)
    return served


def _load_gguf_served(targets: list[str], *, checkpoint: str, device: str, threads: int | None, max_batch: int) -> Any:
    """Load what `honed serve --engine llama.cpp` serves (each run's GGUF export) and say what it is."""
    from honed.serve.llamacpp import load_llamacpp_targets
    from honed.threads import apply_threads, local_processes, torch_threads, usable_cores

    count = threads or torch_threads(cores=usable_cores(), processes=local_processes())  # --threads, else the rule
    apply_threads(1)  # torch only picks tokens from llama.cpp's logits: a second busy thread pool would slow it
    with err_console.status("loading GGUF files into llama.cpp...", spinner="dots"):
        served = load_llamacpp_targets(targets, checkpoint=checkpoint, sequences=max_batch, threads=count,
                                       gpu=_serve_device(device) == "cuda")
    for model in served:
        where = model.run or model.checkpoint
        err_console.print(f"serving {model.name} ({where}, {model.checkpoint}) with llama.cpp: "
                          f"{model.model.sequences} sequences x {model.context_length} tokens", markup=False,
                          soft_wrap=True)
    return served


@dataclass(kw_only=True)
class ChatOptions:
    """`honed chat`."""

    target: str = argument("a run directory or an exported model folder")
    system: str | None = option(None, "system prompt for the conversation")
    prompt: str | None = option(None, "ask once, print the answer and exit (for scripts)")
    checkpoint: str = option("best", "best, final, last or checkpoints/step-N")
    max_tokens: int = option(512, "longest answer, in tokens", min=1)
    temperature: float = option(0.0, "0 = greedy (as eval decodes)", min=0.0, max=2.0)
    seed: int | None = option(None, "seed for sampling (temperature > 0)")
    device: str = option("auto", "auto, cpu or cuda")


@command(app, "chat", ChatOptions)
def chat_command(options: ChatOptions) -> None:
    """Chat with a tuned model in the terminal (history, /reset, /quit, streamed tokens), or ask once.

    Example: honed chat runs/support --system "Triage the ticket as JSON."

    Example: honed chat runs/support --prompt "App crashes on login"
    """
    from honed.serve.chat import ChatSession, repl
    from honed.serve.engine import Engine
    from honed.serve.loading import load_targets

    with err_console.status("loading model...", spinner="dots"):
        served = load_targets([options.target], checkpoint=options.checkpoint, device=_serve_device(options.device))[0]
    engine = Engine(max_batch=1)
    engine.start()
    try:
        session = ChatSession(served, engine, system=options.system, max_tokens=options.max_tokens,
                              temperature=options.temperature, seed=options.seed)
        if options.prompt is not None:
            session.reply(options.prompt, on_delta=lambda text: (sys.stdout.write(text), sys.stdout.flush()))
            sys.stdout.write("\n")
            return
        repl(session, out=sys.stdout)
    finally:
        engine.stop()
