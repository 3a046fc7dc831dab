"""`honed serve --engine vllm`: vLLM decodes, honed's front keeps the same API, limits and request log.

vLLM's own OpenAI server is started on a private loopback port with the base model and every run's
adapter as a LoRA module (`--enable-lora --lora-modules NAME=PATH ...`). honed's front (app.py, the
same routes, auth, limits, metrics and request log as the torch engine) renders each prompt with the
run's chat template exactly as training did and forwards the token ids to vLLM's /v1/completions,
streaming the text back and averaging the returned log-probabilities into `mean_logprob`. It passes
`seed`, the penalties and `logit_bias` through; the request parameters it does not pass through
(`logprobs`, `response_format`, `n` > 1, `echo`) are refused by the front with a 400
(honed.serve.schemas.ENGINE_PARAMS).

Several GPUs: pass vLLM's own flags through, e.g. `--vllm-arg=--tensor-parallel-size=4` (one model
sharded over 4 GPUs) or `--vllm-arg=--data-parallel-size=2` (two replicas).

>>> export = Target(name="exp", weights=Path("runs/demo/exports/merged"), base=None, run=None, checkpoint="merged")
>>> build_command([export], port=8100, python="python")[:4]
['python', '-m', 'vllm.entrypoints.openai.api_server', '--model']
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from honed.errors import ConfigError
from honed.serve.engine import Delta, Failed, Finished, Job, QueueFull
from honed.serve.limits import DEFAULT_MAX_QUEUE
from honed.serve.loading import Target, parse_target

LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts
STARTUP_TIMEOUT_S = 900


def require_vllm() -> None:
    """Refuse clearly when vLLM is not installed (it needs a CUDA GPU)."""
    if importlib.util.find_spec("vllm") is None:
        raise ConfigError("--engine vllm needs vLLM, which is not installed here; on a machine with an NVIDIA "
                          "GPU run `pip install vllm`, or use the built-in engine (--engine torch)")


def _max_lora_rank(targets: list[Target]) -> int:
    ranks = [int(json.loads((t.weights / "adapter_config.json").read_text(encoding="utf-8")).get("r", 8))
             for t in targets]
    return next((r for r in LORA_RANKS if r >= max(ranks)), max(ranks))


def model_args(targets: list[Target]) -> list[str]:
    """vLLM's model flags: one base and every adapter, or one whole model (an export or full fine-tune)."""
    from honed.model.loading import local_path

    adapters = [t for t in targets if t.base is not None]
    whole = [t for t in targets if t.base is None]
    if whole and (adapters or len(whole) > 1):
        raise ConfigError("vLLM serves one base model: pass either LoRA runs on the same base, or a single "
                          f"exported/full model (got {', '.join(t.name for t in targets)}); start one server each")
    if whole:
        return ["--model", str(whole[0].weights.resolve()), "--served-model-name", whole[0].name]
    bases = {t.base for t in adapters}
    if len(bases) != 1:
        raise ConfigError(f"vLLM serves one base model, but these runs have {len(bases)}: {', '.join(map(str, bases))}; "
                          "start one server per base")
    base_path, gguf = local_path(str(adapters[0].base))
    if gguf is not None:
        raise ConfigError(f"the base model {adapters[0].base} is a GGUF file; vLLM needs a Hugging Face folder")
    modules = [f"{t.name}={t.weights.resolve()}" for t in adapters]
    return ["--model", str(Path(base_path).resolve()), "--served-model-name", "base", "--enable-lora",
            "--max-loras", str(len(adapters)), "--max-lora-rank", str(_max_lora_rank(adapters)),
            "--lora-modules", *modules]


def build_command(targets: list[Target], *, port: int, extra_args: list[str] = (), python: str = sys.executable,
                  max_model_len: int | None = None) -> list[str]:
    """The command line that starts vLLM's OpenAI server for these targets on 127.0.0.1:`port`.

    It listens on loopback only: clients talk to honed's front, which checks keys and limits and logs.
    """
    command = [python, "-m", "vllm.entrypoints.openai.api_server", *model_args(targets),
               "--host", "127.0.0.1", "--port", str(port), "--dtype", "auto", "--disable-log-requests"]
    if max_model_len is not None:
        command += ["--max-model-len", str(max_model_len)]
    return command + list(extra_args)


class VllmEngine:
    """The Engine protocol (submit, start, stop, queue_depth, running) over a vLLM server: each job is
    forwarded on its own thread, streamed, and cancelled by closing its connection."""

    name = "vllm"  # which request parameters it passes through: honed.serve.schemas.ENGINE_PARAMS

    def __init__(self, base_url: str, *, max_queue: int = DEFAULT_MAX_QUEUE) -> None:
        self.base_url = base_url
        self.max_queue = max_queue
        self.running = 0
        self.queue_depth = 0  # vLLM queues internally; honed's front only bounds what it forwards
        self._lock = threading.Lock()

    def start(self) -> None:
        pass

    def stop(self, *, timeout: float = 30.0) -> None:
        pass

    def submit(self, job: Job) -> None:
        with self._lock:
            if self.running >= self.max_queue:
                raise QueueFull(f"{self.running} requests are in flight")
            self.running += 1
        threading.Thread(target=self._forward, args=(job,), daemon=True).start()

    def _forward(self, job: Job) -> None:
        try:
            self._stream(job)
        except (OSError, ValueError, KeyError) as exc:
            job.emit(Failed(f"vLLM: {type(exc).__name__}: {exc}"))
        finally:
            with self._lock:
                self.running -= 1

    def _payload(self, job: Job) -> dict[str, Any]:
        stop_ids = [] if job.ignore_eos else job.served.stop_ids
        turn_end = [] if job.ignore_eos else list(job.served.stops.strings)
        sampling = job.sampling
        payload = {"model": job.served.name, "prompt": job.prompt_ids,
                   "max_tokens": sampling.max_tokens, "temperature": sampling.temperature,
                   "top_p": sampling.top_p, "seed": sampling.seed, "stop": [*job.stop, *turn_end] or None,
                   "stop_token_ids": stop_ids, "ignore_eos": job.ignore_eos, "logprobs": 1, "stream": True,
                   "stream_options": {"include_usage": True}, "skip_special_tokens": True}
        if sampling.penalized:
            payload.update(presence_penalty=sampling.presence_penalty, frequency_penalty=sampling.frequency_penalty)
        if sampling.logit_bias:
            payload["logit_bias"] = {str(token): bias for token, bias in sampling.logit_bias}
        return payload

    def _stream(self, job: Job) -> None:
        request = urllib.request.Request(f"{self.base_url}/v1/completions", data=json.dumps(self._payload(job)).encode(),
                                         headers={"Content-Type": "application/json"})
        parts, logprobs, reason, tokens = [], [], "stop", 0
        with urllib.request.urlopen(request, timeout=600) as response:
            for raw in response:
                if job.cancelled.is_set():
                    return  # closing the connection makes vLLM abort the request
                line = raw.decode("utf-8").strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    tokens = int(chunk["usage"]["completion_tokens"])
                for choice in chunk.get("choices", []):
                    if choice.get("text"):
                        parts.append(choice["text"])
                        job.emit(Delta(choice["text"]))
                    logprobs += [lp for lp in (choice.get("logprobs") or {}).get("token_logprobs", []) if lp is not None]
                    reason = choice.get("finish_reason") or reason
        mean = sum(logprobs) / len(logprobs) if logprobs else None
        job.emit(Finished(reason, "".join(parts), tokens or len(logprobs), mean, None))


def _wait_until_up(process: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ConfigError(f"vLLM exited with status {process.returncode} while starting; its messages are above")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(2)
    process.terminate()
    raise ConfigError(f"vLLM did not answer {url}/health within {STARTUP_TIMEOUT_S} s")


def serve_vllm(texts: list[str], *, host: str, port: int, settings: Any, checkpoint: str, extra_args: list[str],
               max_queue: int, drain_s: float) -> None:
    """Start vLLM on a private port, then honed's front on host:port, until SIGTERM / Ctrl-C."""
    import uvicorn

    from honed.serve.app import create_app
    from honed.serve.loading import vllm_front_models
    from honed.serve.server import free_port, uvicorn_config

    require_vllm()
    targets = [parse_target(text, checkpoint=checkpoint) for text in texts]
    private = free_port()
    process = subprocess.Popen(build_command(targets, port=private, extra_args=extra_args))
    try:
        _wait_until_up(process, f"http://127.0.0.1:{private}")
        served = vllm_front_models(targets)
        engine = VllmEngine(f"http://127.0.0.1:{private}", max_queue=max_queue)
        app = create_app(served, engine, settings=settings)  # type: ignore[arg-type]
        uvicorn.Server(uvicorn_config(app, host=host, port=port, drain_s=drain_s)).run()
    finally:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
