"""One chat completion from any OpenAI-compatible endpoint (honed serve, vLLM, llama.cpp, a hosted API).

The key comes from $HONED_ENDPOINT_API_KEY, else $OPENAI_API_KEY, else a placeholder (local servers
without --api-key accept anything). Decoding is greedy (temperature 0) so answers are reproducible.

>>> chat_once("http://127.0.0.1:8000/v1", [{"role": "user", "content": "hi"}], model="demo")  # doctest: +SKIP
'Hello!'
"""

from __future__ import annotations

import os
from typing import Any

from honed.errors import ConfigError

TIMEOUT_S = 120.0


def client_for(url: str) -> Any:
    from openai import OpenAI

    key = os.environ.get("HONED_ENDPOINT_API_KEY") or os.environ.get("OPENAI_API_KEY") or "not-needed"
    return OpenAI(base_url=url, api_key=key, timeout=TIMEOUT_S, max_retries=1)


def chat_once(url: str, messages: list[dict[str, Any]], *, model: str | None, max_tokens: int = 512,
              client: Any = None) -> str:
    """The endpoint's greedy answer to `messages`; any failure is one ConfigError naming the endpoint."""
    import openai

    client = client or client_for(url)
    try:
        response = client.chat.completions.create(
            model=model or "default", messages=messages, temperature=0.0, max_tokens=max_tokens
        )
    except openai.AuthenticationError as exc:
        raise ConfigError(f"{url}: the endpoint refused the API key (401); set HONED_ENDPOINT_API_KEY") from exc
    except openai.APIConnectionError as exc:
        raise ConfigError(f"{url}: cannot connect to the endpoint ({exc}); is the server running?") from exc
    except openai.APIError as exc:
        raise ConfigError(f"{url}: the endpoint answered with an error: {exc}") from exc
    return response.choices[0].message.content or ""
