"""Prometheus metrics for GET /metrics (prometheus_client, the reference client library).

One registry per server (not the process-wide default), so tests can start several servers.

    honed_requests_total{model,status}            requests answered, by HTTP status
    honed_prompt_tokens_total{model}              prompt tokens of completed requests
    honed_completion_tokens_total{model}          generated tokens
    honed_request_latency_seconds{model}          arrival to last token (histogram)
    honed_time_to_first_token_seconds{model}      arrival to first token (histogram)
    honed_queue_depth                             requests waiting for a decoding slot
    honed_running_requests                        requests decoding now

>>> from honed.serve.engine import Engine
>>> Metrics(Engine()).render()[:6]
b'# HELP'
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    """The server's counters; queue depth and running requests are read from the engine when scraped."""

    def __init__(self, engine: Any) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("honed_requests", "Chat completion requests answered", ["model", "status"],
                                registry=self.registry)
        self.prompt_tokens = Counter("honed_prompt_tokens", "Prompt tokens of completed requests", ["model"],
                                     registry=self.registry)
        self.completion_tokens = Counter("honed_completion_tokens", "Generated tokens", ["model"],
                                         registry=self.registry)
        self.latency = Histogram("honed_request_latency_seconds", "Arrival to last token", ["model"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.ttft = Histogram("honed_time_to_first_token_seconds", "Arrival to first token", ["model"],
                              buckets=LATENCY_BUCKETS, registry=self.registry)
        queue = Gauge("honed_queue_depth", "Requests waiting for a decoding slot", registry=self.registry)
        queue.set_function(lambda: engine.queue_depth)
        running = Gauge("honed_running_requests", "Requests decoding now", registry=self.registry)
        running.set_function(lambda: engine.running)

    def observe(self, model: str, *, status: int, prompt_tokens: int = 0, completion_tokens: int = 0,
                latency_s: float | None = None, ttft_s: float | None = None) -> None:
        """Count one answered request."""
        self.requests.labels(model=model, status=str(status)).inc()
        if prompt_tokens:
            self.prompt_tokens.labels(model=model).inc(prompt_tokens)
        if completion_tokens:
            self.completion_tokens.labels(model=model).inc(completion_tokens)
        if latency_s is not None:
            self.latency.labels(model=model).observe(latency_s)
        if ttft_s is not None:
            self.ttft.labels(model=model).observe(ttft_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)
