"""`honed export`, `honed serve`, `honed chat`: the tuned model out of honed and in front of users."""

from __future__ import annotations

import sys
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from honed.cli.app import app, err_console, user_errors


@app.command("export")
@user_errors
def export_command(
    run_dir: str = typer.Argument(..., help="a finished run directory written by `honed train`"),
    to: str = typer.Option(..., "--to", help="merged (HF folder), adapter (portable LoRA) or gguf (one file)"),
    quant: str = typer.Option(None, "--quant", help="gguf only: f16, q8_0 (default) or q4_k_m"),
    out: str = typer.Option(None, "--out", help="folder to create (default RUN/exports/<target>-<checkpoint>[-<quant>])"),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best, final, last, step-N or checkpoints/step-N"),
    ollama: bool = typer.Option(False, "--ollama", help="gguf only: also write an Ollama Modelfile"),
    parity: int = typer.Option(64, "--parity", min=1, help="holdout examples the parity check answers"),
    no_parity: bool = typer.Option(False, "--no-parity", help="skip the parity check"),
    dtype: str = typer.Option(None, "--dtype", help="merged only: float32, bfloat16 or float16 (default: the base's)"),
    base_name: str = typer.Option(None, "--base-name", help="adapter only: base_model_name_or_path to record"),
    force: bool = typer.Option(False, "--force", help="replace --out if it exists"),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="prompts decoded together in the parity check"),
    as_json: bool = typer.Option(False, "--json", help="print the export record as JSON"),
) -> None:
    """Export a run's tuned model (merged weights, a portable adapter, or GGUF) with a model card,
    then check parity: the artifact answers the holdout like the tuned model, or a warning says it does not.

    Example: honed export runs/demo --to gguf --quant q8_0 --ollama

    Example: honed export runs/demo --to merged --out shipped/support-v1
    """
    import json

    from honed.export.run_export import ExportSettings, export_run

    settings = ExportSettings(
        to=to, quant=quant, out=out, checkpoint=checkpoint, ollama=ollama, parity=0 if no_parity else parity,
        dtype=dtype, base_name=base_name, force=force, batch_size=batch_size,
    )
    with err_console.status("exporting...", spinner="dots") as status:
        result = export_run(run_dir, settings, on_step=_step_reporter(status))
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


@app.command("serve")
@user_errors
def serve_command(
    targets: list[str] = typer.Argument(..., help="run directories or exported model folders ([NAME=]PATH)"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (loopback only unless you say so)"),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="TCP port"),
    api_key: str = typer.Option(None, "--api-key", envvar="HONED_API_KEY",
                                help="require `Authorization: Bearer KEY` on /v1/* (or set HONED_API_KEY)"),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best, final, last or checkpoints/step-N of each run"),
    engine: str = typer.Option("torch", "--engine", help="torch (built in: CPU or one GPU), llama.cpp (the run's GGUF "
                               "export, llama-cpp-python installed) or vllm (GPU, vLLM installed)"),
    no_log: bool = typer.Option(False, "--no-log", help="write no request log"),
    request_log: str = typer.Option(None, "--request-log", help="one log file for every model (default: RUN/requests.jsonl)"),
    max_tokens_limit: int = typer.Option(1024, "--max-tokens-limit", min=1, help="largest max_tokens a request may ask for (also the default)"),
    max_prompt_tokens: int = typer.Option(4096, "--max-prompt-tokens", min=1, help="longest prompt accepted, in tokens"),
    max_body_bytes: int = typer.Option(1 << 20, "--max-body-bytes", min=1024, help="largest request body (413 above)"),
    max_batch: int = typer.Option(32, "--max-batch", min=1, help="requests decoded together"),
    max_queue: int = typer.Option(256, "--max-queue", min=0, help="requests allowed to wait; more get 429"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (torch and llama.cpp engines)"),
    threads: int = typer.Option(None, "--threads", min=1, help="CPU threads for torch and llama.cpp (default: the usable cores, see docs/train.md)"),
    drain_timeout: float = typer.Option(30.0, "--drain-timeout", min=0, help="seconds SIGTERM waits for in-flight requests"),
    vllm_args: list[str] = typer.Option(None, "--vllm-arg", help="extra argument for vLLM, e.g. --vllm-arg=--tensor-parallel-size=2"),
) -> None:
    """Serve runs and exported models over an OpenAI-compatible HTTP API (one base model, one adapter per run).

    Clients pick a run by its name in the request's `model` field. Every request is appended to
    RUN/requests.jsonl (docs/request-log.md) unless --no-log. SIGTERM or Ctrl-C drains in-flight requests.

    Example: honed serve runs/support runs/billing --port 8000 --api-key secret

    Example: honed serve runs/support --engine llama.cpp   (after `honed export runs/support --to gguf`)

    Example: honed serve runs/support --engine vllm --vllm-arg=--tensor-parallel-size=2
    """
    from honed.errors import ConfigError
    from honed.serve.app import Settings
    from honed.serve.requestlog import RequestLog
    from honed.serve.schemas import Limits

    if engine not in ("torch", "llama.cpp", "vllm"):
        raise ConfigError(f"--engine {engine}: use torch, llama.cpp or vllm")
    if no_log and request_log:
        raise ConfigError("--no-log and --request-log contradict each other; pass one")
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        err_console.print(f"warning: listening on {host} without --api-key: anyone who reaches this port can use the models")
    settings = Settings(
        api_key=api_key, limits=Limits(max_body_bytes=max_body_bytes, max_tokens=max_tokens_limit,
                                       max_prompt_tokens=max_prompt_tokens),
        request_log=RequestLog(single=request_log, enabled=not no_log),
    )
    if engine == "vllm":
        from honed.serve.vllm import serve_vllm

        serve_vllm(targets, host=host, port=port, settings=settings, checkpoint=checkpoint,
                   extra_args=vllm_args or [], max_queue=max_queue, drain_s=drain_timeout)
        return
    if engine == "llama.cpp":
        from honed.serve.llamacpp import serve_llamacpp

        served = _load_gguf_served(targets, checkpoint=checkpoint, device=device, threads=threads, max_batch=max_batch)
        err_console.print(f"OpenAI-compatible API on http://{host}:{port}/v1 (Ctrl-C or SIGTERM to stop)", markup=False)
        serve_llamacpp(served, host=host, port=port, settings=settings, max_batch=max_batch, max_queue=max_queue,
                       drain_s=drain_timeout)
        return
    from honed.serve.server import serve

    served = _load_served(targets, checkpoint=checkpoint, device=device, threads=threads)
    err_console.print(f"OpenAI-compatible API on http://{host}:{port}/v1 (Ctrl-C or SIGTERM to stop)", markup=False)
    serve(served, host=host, port=port, settings=settings, max_batch=max_batch, max_queue=max_queue,
          drain_s=drain_timeout)


def _load_served(targets: list[str], *, checkpoint: str, device: str, threads: int | None) -> Any:
    """Load what `honed serve` serves (torch engine) and say what it is."""
    from honed.serve.loading import load_targets
    from honed.threads import apply_threads

    apply_threads(threads)  # --threads, else the rule in honed/threads.py
    with err_console.status("loading models...", spinner="dots"):
        served = load_targets(targets, checkpoint=checkpoint, device=_serve_device(device))
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


@app.command("chat")
@user_errors
def chat_command(
    target: str = typer.Argument(..., help="a run directory or an exported model folder"),
    system: str = typer.Option(None, "--system", help="system prompt for the conversation"),
    prompt: str = typer.Option(None, "--prompt", help="ask once, print the answer and exit (for scripts)"),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best, final, last or checkpoints/step-N"),
    max_tokens: int = typer.Option(512, "--max-tokens", min=1, help="longest answer, in tokens"),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0, max=2.0, help="0 = greedy (as eval decodes)"),
    seed: int = typer.Option(None, "--seed", help="seed for sampling (temperature > 0)"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda"),
) -> None:
    """Chat with a tuned model in the terminal (history, /reset, /quit, streamed tokens), or ask once.

    Example: honed chat runs/support --system "Triage the ticket as JSON."

    Example: honed chat runs/support --prompt "App crashes on login"
    """
    from honed.serve.chat import ChatSession, repl
    from honed.serve.engine import Engine
    from honed.serve.loading import load_targets

    with err_console.status("loading model...", spinner="dots"):
        served = load_targets([target], checkpoint=checkpoint, device=_serve_device(device))[0]
    engine = Engine(max_batch=1)
    engine.start()
    try:
        session = ChatSession(served, engine, system=system, max_tokens=max_tokens, temperature=temperature, seed=seed)
        if prompt is not None:
            session.reply(prompt, on_delta=lambda text: (sys.stdout.write(text), sys.stdout.flush()))
            sys.stdout.write("\n")
            return
        repl(session, out=sys.stdout)
    finally:
        engine.stop()
