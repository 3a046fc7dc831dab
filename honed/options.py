"""Command options declared once: a typed dataclass per command, each field with its default and help.

A stage's settings (`honed.evaluate.settings.EvalSettings`, `honed.export.settings.ExportSettings`, ...)
are keyword-only dataclasses whose fields are declared with `option(...)` or `argument(...)`. The CLI
(`honed.cli.options.command`) builds each command's flags from those fields, so a default or a help text
is written in one place, beside the field the code reads, and a script calling the stage directly gets
the same defaults as the command line.

This module imports nothing of honed's, so any layer may declare its settings with it.

>>> from dataclasses import dataclass
>>> @dataclass(kw_only=True)
... class Greet:
...     name: str = argument("who to greet")
...     times: int = option(1, "how many times", min=1)
>>> Greet(name="Ada")
Greet(name='Ada', times=1)
>>> spec(Greet, "times").flags
('--times',)
"""

from __future__ import annotations

import dataclasses
from dataclasses import MISSING, dataclass
from typing import Any

SPEC_KEY = "honed.option"
REQUIRED: Any = MISSING  # option(REQUIRED, ...): a flag the user must give


@dataclass(frozen=True)
class OptionSpec:
    """How one settings field appears on the command line."""

    help: str
    flags: tuple[str, ...] = ()  # empty: --field-name
    is_argument: bool = False  # a positional argument rather than a --flag
    min: float | None = None
    max: float | None = None
    envvar: str | None = None


def option(default: Any, help: str, *, flag: str | None = None, short: str | None = None, min: float | None = None,
           max: float | None = None, envvar: str | None = None) -> Any:
    """A settings field shown as `--flag` (default: the field's name with dashes).

    `default` REQUIRED makes the flag mandatory. A list default is not allowed (it would be shared between
    instances): use None and read it as empty.
    """
    if isinstance(default, (list, dict, set)):
        raise TypeError("option(): a mutable default would be shared; use None")
    flags = tuple(f for f in (flag, short) if f)
    spec = OptionSpec(help=help, flags=flags, min=min, max=max, envvar=envvar)
    return dataclasses.field(default=default, metadata={SPEC_KEY: spec})


def argument(help: str, *, default: Any = MISSING) -> Any:
    """A settings field given positionally (required unless it has a default)."""
    return dataclasses.field(default=default, metadata={SPEC_KEY: OptionSpec(help=help, is_argument=True)})


def spec(settings: type, name: str) -> OptionSpec:
    """The command-line spec of field `name`, with its flags filled in."""
    found = next(f for f in dataclasses.fields(settings) if f.name == name)
    return flags_filled(found)


def flags_filled(field: dataclasses.Field) -> OptionSpec:
    """The field's spec, its flags defaulting to `--field-name`; a field declared without option() has none."""
    declared: OptionSpec | None = field.metadata.get(SPEC_KEY)
    if declared is None:
        raise TypeError(f"settings field {field.name!r} is not declared with option() or argument()")
    if declared.flags or declared.is_argument:
        return declared
    return dataclasses.replace(declared, flags=("--" + field.name.replace("_", "-"),))
