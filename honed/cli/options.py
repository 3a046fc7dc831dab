"""Typer commands built from a settings dataclass (honed.options): one source for every flag and default.

    @command(app, "eval", EvalOptions)
    def eval_command(options: EvalOptions) -> None:
        ...

registers `honed eval` with one parameter per field of EvalOptions (its type, default, help, bounds), and
calls `eval_command` with the filled-in EvalOptions. The function's docstring is the command's help.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from honed.cli.app import user_errors
from honed.options import OptionSpec, flags_filled

S = TypeVar("S")


def command(group: typer.Typer, name: str, settings: type[S]) -> Callable[[Callable[[S], None]], Callable[[S], None]]:
    """Register the decorated `fn(settings) -> None` as `name` in `group`, its flags built from `settings`."""

    def register(fn: Callable[[S], None]) -> Callable[[S], None]:
        def run(**values: Any) -> None:
            fn(settings(**values))

        run.__signature__ = signature_of(settings)  # type: ignore[attr-defined]
        run.__doc__, run.__name__ = fn.__doc__, fn.__name__
        group.command(name)(user_errors(run))
        return fn

    return register


def signature_of(settings: type) -> inspect.Signature:
    """One keyword-only parameter per dataclass field: its resolved type and a typer.Option/Argument default."""
    hints = typing.get_type_hints(settings)
    parameters = [
        inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, annotation=hints[field.name],
                          default=_typer_parameter(field, flags_filled(field)))
        for field in dataclasses.fields(settings)
    ]
    return inspect.Signature(parameters)


def _typer_parameter(field: dataclasses.Field, spec: OptionSpec) -> Any:
    default = ... if field.default is dataclasses.MISSING else field.default
    if spec.is_argument:
        return typer.Argument(default, help=spec.help)
    return typer.Option(default, *spec.flags, help=spec.help, min=spec.min, max=spec.max, envvar=spec.envvar)

