"""`honed models`: the built-in models (installed or how to install them) and the tested architectures."""

from __future__ import annotations

import json
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from honed.cli.app import app
from honed.cli.options import command
from honed.options import option


@dataclass(kw_only=True)
class ModelsOptions:
    """`honed models`."""

    as_json: bool = option(False, "print the listing as JSON", flag="--json")


@command(app, "models", ModelsOptions)
def models_command(options: ModelsOptions) -> None:
    """List the built-in models and the architectures the test suite runs through every stage.

    Example: honed models --json
    """
    from honed.model.builtins import models_report

    report = models_report()
    if options.as_json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return
    console = Console(highlight=False)
    builtin = Table(title="built-in models (--model ALIAS, offline)", title_justify="left")
    for column in ("alias", "model", "template", "size", "status"):
        builtin.add_column(column, overflow="fold")
    for row in report["builtin"]:  # type: ignore[union-attr]
        status = ("converted" if row["converted"] else "installed") if row["installed"] else f"install: {row['install']}"
        name = f"{row['model']} ({row['kind']}{', default' if row['default'] else ''})"
        builtin.add_row(str(row["alias"]), name, f"{row['family']}: {row['template_source']}",
                        f"{row['size_mb']} MB", status)
    console.print(builtin)
    tested = Table(title=f"tested architectures ({', '.join(report['tested_stages'])})",  # type: ignore[arg-type]
                   title_justify="left")
    for column in ("model_type", "template when the model has none", "stands for"):
        tested.add_column(column, overflow="fold")
    for row in report["tested"]:  # type: ignore[union-attr]
        tested.add_row(row["model_type"], row["family"], row["models"])
    console.print(tested)
    console.print(f"any other model: {report['unlisted']}", soft_wrap=True, markup=False)
