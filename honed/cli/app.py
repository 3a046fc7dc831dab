"""The `honed` Typer app, its sub-apps and what every command shares: `user_errors` (a HonedError is one
message on stderr and exit status 2) and `err_console`. The command modules register on these; honed/cli/
__init__.py imports them all, so this module imports none of them.
"""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from honed.errors import EXIT_USER_ERROR, HonedError

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    help="honed: check your data, fine-tune open models correctly, and prove the tuned model is better.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Check, split and preview training data.", no_args_is_help=True)
runs_app = typer.Typer(help="List and inspect training runs.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(runs_app, name="runs")

err_console = Console(stderr=True, highlight=False)
MAX_DETAILS_SHOWN = 50


def user_errors(func: F) -> F:
    """Turn HonedError into a clear message and exit 2; Ctrl-C into exit 130 without a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except HonedError as exc:
            # escape: messages quote user data, which may look like rich markup ("[/x]")
            err_console.print(f"[bold red]error:[/] {escape(exc.message)}", soft_wrap=True)
            for line in exc.details[:MAX_DETAILS_SHOWN]:
                err_console.print(f"  {line}", soft_wrap=True, markup=False)
            if len(exc.details) > MAX_DETAILS_SHOWN:
                err_console.print(f"  ... and {len(exc.details) - MAX_DETAILS_SHOWN} more")
            sys.exit(EXIT_USER_ERROR)
        except KeyboardInterrupt as exc:
            terminated = type(exc).__name__ == "Terminated"  # SIGTERM during training (honed.train.loop)
            err_console.print("terminated" if terminated else "interrupted")
            sys.exit(143 if terminated else 130)

    return wrapper  # type: ignore[return-value]



def _version_callback(value: bool) -> None:
    if value:
        from honed import __version__

        print(f"honed {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                 help="print honed's version and exit"),
) -> None:
    """honed: check your data, fine-tune open models correctly, and prove the tuned model is better."""
