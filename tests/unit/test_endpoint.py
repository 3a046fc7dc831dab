"""The endpoint baseline against a real local HTTP server through the official openai client."""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

import pytest

from honed.data.types import Conversation, Message
from honed.evaluate import endpoint
from honed.evaluate.endpoint import EndpointError
from honed.evaluate.systems import parse_baselines

_spec = importlib.util.spec_from_file_location("chat_server", Path(__file__).parents[1] / "assets" / "chat_server.py")
chat_server = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(chat_server)  # type: ignore[union-attr]


def _conv(user: str, answer: str = "ref") -> Conversation:
    return Conversation((Message("system", "Label it."), Message("user", user), Message("assistant", answer)))


def _system(url: str, model: str = ""):
    spec = f"endpoint:remote={url}" + (f"#{model}" if model else "")
    return next(s for s in parse_baselines(spec) if s.name == "remote")


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    for name in ("HONED_ENDPOINT_API_KEY", "OPENAI_API_KEY", "HONED_ENDPOINT_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)


def test_answers_come_back_in_order_with_the_same_messages_and_greedy_settings(monkeypatch) -> None:
    monkeypatch.setenv("HONED_ENDPOINT_API_KEY", "secret")
    holdout = [_conv(f"question {i}") for i in range(9)]
    table = {f"question {i}": f"answer {i}" for i in range(9)}
    with chat_server.ChatServer(table, api_key="secret") as server:
        system = endpoint.resolved(_system(server.url))
        assert system.endpoint_model == "table-model"  # the first model the server lists
        outputs, stopped, tokens = endpoint.answer(system, holdout, max_tokens=17)
    assert outputs == [f"answer {i}" for i in range(9)] and all(stopped) and tokens == 18
    first = server.requests[0]
    assert first["messages"] == [{"role": "system", "content": "Label it."}, {"role": "user", "content": "question 0"}]
    assert first["temperature"] == 0 and first["max_tokens"] == 17 and first["model"] == "table-model"


def test_a_named_model_is_sent_as_is() -> None:
    with chat_server.ChatServer({"q": "a"}) as server:
        system = endpoint.resolved(_system(server.url, "my-model"))
        assert endpoint.answer(system, [_conv("q")], max_tokens=4)[0] == ["a"]
    assert server.requests[0]["model"] == "my-model"


def test_wrong_key_refused_connection_and_timeout_are_one_clear_error(monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "wrong")
    with chat_server.ChatServer({}, api_key="secret") as server:
        with pytest.raises(EndpointError, match=r"endpoint remote .*HTTP 401.*HONED_ENDPOINT_API_KEY"):
            endpoint.resolved(_system(server.url))
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(EndpointError, match="cannot connect.*check the URL"):
        endpoint.resolved(_system(f"http://127.0.0.1:{port}/v1"))
    monkeypatch.setenv("HONED_ENDPOINT_TIMEOUT", "0.3")
    with chat_server.ChatServer({"q": "a"}, delay_s=2.0) as server:
        system = endpoint.resolved(_system(server.url))
        with pytest.raises(EndpointError, match=r"no answer within 0.3 s.*HONED_ENDPOINT_TIMEOUT"):
            endpoint.answer(system, [_conv("q")], max_tokens=4)
    monkeypatch.setenv("HONED_ENDPOINT_TIMEOUT", "soon")
    with pytest.raises(EndpointError, match="HONED_ENDPOINT_TIMEOUT='soon'"):
        endpoint.timeout_s()
