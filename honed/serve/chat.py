"""`honed chat RUN`: talk to a tuned model in the terminal, or ask it once from a script.

The same engine as `honed serve` (no HTTP in between): the same chat template, the same decoding, tokens
printed as they come. In the terminal the conversation keeps its history; `/reset` forgets it (the
system prompt stays), `/quit` (or Ctrl-D) leaves.

    session = ChatSession(served, engine, system="Answer in JSON.")
    session.reply("App crashes on login", on_delta=print)  # e.g. '{"category": "bug", ...}'
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from typing import Any, TextIO

from honed.errors import ConfigError
from honed.model.batch import Sampling
from honed.serve.engine import Delta, Engine, Event, Failed, Finished, Job
from honed.serve.loading import ServedModel

HELP = "type a message; /reset forgets the conversation, /quit leaves"


class ChatSession:
    """A conversation with one served model: history, reset, one streamed reply at a time."""

    def __init__(self, served: ServedModel, engine: Engine, *, system: str | None = None, max_tokens: int = 512,
                 temperature: float = 0.0, seed: int | None = None) -> None:
        self.served, self.engine = served, engine
        self.system = system
        self.sampling = dict(max_tokens=max_tokens, temperature=temperature, seed=seed)
        self.history: list[dict[str, Any]] = []
        self.reset()

    def reset(self) -> None:
        """Forget the conversation; keep the system prompt."""
        self.history = [{"role": "system", "content": self.system}] if self.system else []

    def reply(self, text: str, *, on_delta: Callable[[str], None] = lambda _: None) -> str:
        """Send one user message, stream the answer's text to `on_delta`, and remember both turns."""
        from jinja2.exceptions import TemplateError

        messages = [*self.history, {"role": "user", "content": text}]
        try:
            prompt = self.served.render(messages)
        except TemplateError as exc:
            raise ConfigError(f"the model's chat template refused the conversation ({exc}); try /reset") from exc
        room = self.served.context_length - len(prompt)
        if room < 1:
            raise ConfigError(f"the conversation is {len(prompt)} tokens, the model's whole context; /reset it")
        events: queue.Queue[Event] = queue.Queue()
        settings = {**self.sampling, "max_tokens": min(int(self.sampling["max_tokens"] or 1), room)}
        self.engine.submit(Job(served=self.served, prompt_ids=prompt, sampling=Sampling(**settings), emit=events.put))
        answer = _drain(events, on_delta)
        self.history = [*messages, {"role": "assistant", "content": answer}]
        return answer


def _drain(events: queue.Queue[Event], on_delta: Callable[[str], None]) -> str:
    parts: list[str] = []
    while True:
        event = events.get()
        if isinstance(event, Delta):
            parts.append(event.text)
            on_delta(event.text)
        elif isinstance(event, Failed):
            raise ConfigError(f"generation failed: {event.message}")
        elif isinstance(event, Finished):
            return "".join(parts)


def repl(session: ChatSession, *, read: Callable[[str], str] = input, out: TextIO) -> None:
    """The interactive loop: read a line, stream the answer, until /quit or end of input."""
    out.write(f"honed chat with {session.served.name} ({HELP})\n")
    while True:
        try:
            line = read("> ").strip()
        except EOFError:
            out.write("\n")
            return
        if line in ("/quit", "/exit"):
            return
        if line == "/reset":
            session.reset()
            out.write("(conversation reset)\n")
            continue
        if not line:
            continue
        if line.startswith("/"):
            out.write(f"unknown command {line}; {HELP}\n")
            continue
        session.reply(line, on_delta=lambda text: (out.write(text), out.flush()))
        out.write("\n")
