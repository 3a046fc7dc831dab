"""Run the server: load the targets, start uvicorn; or run it on a thread (tests, benchmarks).

uvicorn handles SIGTERM and Ctrl-C: it stops accepting connections, lets in-flight requests (also
streams) finish for up to `drain_s` seconds, then the app's lifespan stops the engine and the process
exits.

    serve(load_targets(["runs/support"]), host="127.0.0.1", port=8000, settings=Settings())  # until SIGTERM
    with ServerThread(served, engine) as url:
        OpenAI(base_url=url + "/v1", api_key="x").models.list()
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from honed.errors import ConfigError
from honed.serve.app import Settings, create_app
from honed.serve.engine import Engine
from honed.serve.limits import DEFAULT_DRAIN_S, DEFAULT_MAX_BATCH, DEFAULT_MAX_QUEUE
from honed.serve.loading import ServedModel

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on right now (for tests and benchmarks)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def uvicorn_config(app: Any, *, host: str, port: int, drain_s: float = DEFAULT_DRAIN_S) -> Any:
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=drain_s,
                          access_log=False, lifespan="on")


def serve(served: list[ServedModel], *, host: str, port: int, settings: Settings,
          max_batch: int = DEFAULT_MAX_BATCH, max_queue: int = DEFAULT_MAX_QUEUE, drain_s: float = DEFAULT_DRAIN_S,
          engine: Any = None) -> None:
    """Serve until SIGTERM / Ctrl-C (blocking). `engine`: another engine (honed.serve.llamacpp), else the torch
    Engine with `max_batch` and `max_queue`."""
    import uvicorn

    engine = engine if engine is not None else Engine(max_batch=max_batch, max_queue=max_queue)
    server = uvicorn.Server(uvicorn_config(create_app(served, engine, settings=settings), host=host, port=port,
                                           drain_s=drain_s))
    try:
        server.run()
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port} ({exc}); pick another --port") from exc
    if not server.started:
        raise ConfigError(f"the server did not start on {host}:{port} (is the port in use?); pick another --port")


class ServerThread:
    """A real uvicorn server on a thread, on 127.0.0.1 and a free port; stopped on exit.

        with ServerThread(served, Engine()) as url:
            print(url)  # http://127.0.0.1:41234
    """

    def __init__(self, served: list[ServedModel], engine: Engine, *, settings: Settings | None = None,
                 port: int | None = None) -> None:
        import uvicorn

        self.port = port or free_port()
        self.app = create_app(served, engine, settings=settings)
        self.server = uvicorn.Server(uvicorn_config(self.app, host=LOOPBACK, port=self.port, drain_s=5.0))
        self.thread = threading.Thread(target=self.server.run, name="honed-uvicorn", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the test server did not start on port {self.port}")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
