"""Every command's flags come from one typed options dataclass (honed.options, honed.cli.options)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

import pytest
import typer

import honed.cli  # noqa: F401  (registers every command)
from honed.cli.app import app
from honed.cli.options import signature_of
from honed.evaluate.settings import EvalSettings
from honed.options import REQUIRED, argument, option, spec
from tests.helpers import ROOT, cli


def _commands() -> list[tuple[str, typer.models.CommandInfo]]:
    found = [(c.name or "", c) for c in app.registered_commands]
    for group in app.registered_groups:
        found += [(f"{group.name} {c.name}", c) for c in group.typer_instance.registered_commands]
    return found


COMMANDS = _commands()


def test_every_command_is_registered() -> None:
    names = {name for name, _ in COMMANDS}
    assert {"train", "eval", "export", "serve", "monitor", "report", "data check", "runs list"} <= names


@pytest.mark.parametrize("name,info", COMMANDS, ids=[name for name, _ in COMMANDS])
def test_each_command_takes_one_options_object(name: str, info: typer.models.CommandInfo) -> None:
    """Its Typer parameters are exactly the fields of one dataclass, with the fields' defaults."""
    callback = info.callback
    settings = _settings_of(callback)
    parameters = inspect.signature(callback).parameters
    fields = {f.name: f for f in dataclasses.fields(settings)}
    assert list(parameters) == list(fields), name
    for field_name, parameter in parameters.items():
        declared = fields[field_name].default
        default = parameter.default.default  # the typer.Option/Argument's default
        assert default == (... if declared is dataclasses.MISSING else declared), (name, field_name)


def _settings_of(callback: object) -> type:
    """The options class the command was built from (its wrapper calls fn(settings(**values)))."""
    wrapped = inspect.unwrap(callback)  # type: ignore[arg-type]
    closure = dict(zip(wrapped.__code__.co_freevars, (c.cell_contents for c in wrapped.__closure__ or ())))
    settings = closure["settings"]
    assert dataclasses.is_dataclass(settings)
    return settings


def test_options_build_the_flags_with_types_defaults_and_bounds() -> None:
    @dataclasses.dataclass(kw_only=True)
    class Opts:
        path: str = argument("a file")
        count: int = option(3, "how many", min=1)
        out: str = option(REQUIRED, "where to write")
        as_json: bool = option(False, "print JSON", flag="--json")

    params = signature_of(Opts).parameters
    assert params["count"].annotation is int and params["count"].default.default == 3
    assert params["count"].default.min == 1
    assert params["out"].default.default is ...
    assert params["as_json"].default.param_decls == ("--json",)
    assert spec(Opts, "count").flags == ("--count",)
    with pytest.raises(TypeError, match="mutable"):
        option([], "shared list")


def test_a_stage_and_its_command_share_defaults() -> None:
    """`honed eval --help` shows EvalSettings' own default (no second copy in the CLI)."""
    result = cli("eval", "--help")
    assert result.exit_code == 0
    assert f"[default: {EvalSettings().batch_size}]" in result.output
    assert EvalSettings(metrics="a, b").metric_names() == ["a", "b"]


def test_a_bound_from_the_options_is_enforced() -> None:
    result = cli("eval", "runs/none", "--batch-size", "0")
    assert result.exit_code == 2
    assert "--batch-size" in result.output


def test_no_function_in_honed_is_over_60_lines() -> None:
    long = []
    for path in sorted((ROOT / "honed").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if length > 60:
                    long.append(f"{Path(path).relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, "split these functions: " + "; ".join(long)


def test_the_manuals_option_tables_state_the_codes_defaults() -> None:
    """A hand-written `| --flag X | default | meaning |` row in docs/ says what the options object says."""
    import re

    from honed.data.settings import CheckOptions

    fields = {spec(CheckOptions, f.name).flags[0]: f.default for f in dataclasses.fields(CheckOptions)
              if not spec(CheckOptions, f.name).is_argument}
    rows = re.findall(r"^\| `(--[a-z-]+)[^`]*` \| ([^|]+) \|", (ROOT / "docs/data-check.md").read_text(), re.M)
    assert len(rows) >= 5
    for flag, written in rows:
        default = fields[flag]
        expected = {None: "none", False: "off", True: "on"}.get(default, str(default)) if not isinstance(default, float) \
            else f"{default:g}"
        assert written.strip().strip("`") == expected, f"docs/data-check.md: {flag} default {written.strip()!r}, code {default!r}"
