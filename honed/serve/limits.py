"""What one request may ask for (the front's limits) and how many requests run and wait (the engine's): the
defaults `honed serve`'s flags show.

A light module (no pydantic, no torch): the CLI reads these defaults when it starts.

>>> Limits().max_tokens, Limits(max_tokens=64).max_prompt_tokens
(1024, 4096)
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_BATCH = 32  # requests decoded together
DEFAULT_MAX_QUEUE = 256  # requests allowed to wait; more get 429
DEFAULT_DRAIN_S = 30.0  # seconds SIGTERM waits for in-flight requests


@dataclass(frozen=True)
class Limits:
    """What one request may ask for (`honed serve --max-tokens-limit ...`)."""

    max_body_bytes: int = 1 << 20
    max_tokens: int = 1024  # the largest max_tokens a request may ask for; also the default
    max_prompt_tokens: int = 4096
    max_n: int = 8  # choices per request (rows of one batch); times the prompts of a completions request
