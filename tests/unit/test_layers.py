"""honed's packages import one way: no circles between them, and no layer imports a higher one.

The layers, lowest first, are the design's (docs/architecture.md): the foundation modules, the config, the run
directory, the model layer, data, then the stages in pipeline order, and the CLI on top. Every `import` counts,
at module level and inside functions (a function-level import only delays the dependency), read with `ast`
from the source, so nothing is imported to check it. Imports under `if TYPE_CHECKING:` never run and are not
counted.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
PACKAGE = ROOT / "honed"

# A unit is a subpackage (honed/model/) or a top-level module (honed/config.py); "honed" is the package root
# (honed/__init__.py: the thread policy and __version__). Units in one layer may import each other.
LAYERS: list[set[str]] = [
    {"honed", "errors", "atomic", "options", "threads", "machine"},  # the foundation: imports nothing above it
    {"config"},  # the typed training config
    {"runs"},  # the run directory contract, its lock, the registry: RunDir returns a TrainConfig
    {"model"},  # loading, templates, prompts, decoding: every stage asks it
    {"data"},  # reading and checking examples needs the model's tokenizer and template
    {"train"},
    {"evaluate"},
    {"export"},  # parity runs eval's metrics
    {"serve"},
    {"monitor"},  # replays eval's holdout against a served model
    {"curve"},  # trains and evaluates nested subsets (train, evaluate)
    {"report"},  # shows every stage's files, the learning curve included
    {"cli", "__main__"},  # parses, calls one stage, prints
]
RANK = {unit: rank for rank, layer in enumerate(LAYERS) for unit in layer}

# Imports that go the wrong way today, each with the change that removes it. When one is fixed, delete its
# entry (test_known_exceptions_are_still_there says so); never add one without saying why it must stay.
KNOWN: dict[tuple[str, str], str] = {
}


@dataclass(frozen=True)
class Import:
    where: str  # "honed/x/y.py:12"
    source: str  # "honed/x/y.py"
    module: str  # the importing module, "honed.x.y"
    target: str  # the honed module imported, "honed.runs.rundir"
    top_level: bool  # executed when the module is imported (not inside a function or class body)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def unit_of(module: str) -> str:
    """honed.runs.rundir -> runs; honed.config -> config; honed -> honed."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def resolve(name: str) -> str | None:
    """The honed module an imported name lives in (`from honed.runs.rundir import RunDir` -> honed.runs.rundir)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported_names(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: resolved against the importing module's package
        package = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
        base = ".".join(package + ([node.module] if node.module else []))
    return [base] + [f"{base}.{alias.name}" for alias in node.names]  # `from honed.x import module` too


def imports_of(module: str, path: Path) -> list[Import]:
    """Every import of a honed module in `path`, at module level or inside functions and classes."""
    source = path.relative_to(ROOT).as_posix()
    found: list[Import] = []

    def visit(node: ast.AST, *, top_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                targets = {resolve(n) for n in _imported_names(child, module, path.name == "__init__.py")}
                found.extend(Import(f"{source}:{child.lineno}", source, module, t, top_level)
                             for t in sorted(t for t in targets if t and t != module))
            nested = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef))
            visit(child, top_level=top_level and not nested)

    visit(ast.parse(path.read_text(encoding="utf-8")), top_level=True)
    return found


IMPORTS = [imp for module, path in MODULES.items() for imp in imports_of(module, path)]


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges.get(node, ())):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return cycles


def _counted(imp: Import) -> bool:
    return (imp.source, imp.target) not in KNOWN


def test_the_scan_sees_module_and_function_level_imports() -> None:
    # rundir imports lock at module level; the CLI imports its stages inside its command functions.
    assert any(i.module == "honed.runs.rundir" and i.target == "honed.runs.lock" and i.top_level for i in IMPORTS)
    assert any(i.source.startswith("honed/cli/") and not i.top_level for i in IMPORTS)
    assert len({unit_of(i.target) for i in IMPORTS}) >= 10


def test_every_unit_has_a_layer() -> None:
    units = {unit_of(module) for module in MODULES}
    assert units - set(RANK) == set(), "place each new package or top-level module in LAYERS"
    assert set(RANK) - units == set(), "LAYERS names a unit honed no longer has"


def test_no_layer_imports_a_higher_one() -> None:
    upward = [f"{i.where}: {i.module} imports {i.target} ({unit_of(i.module)} is below {unit_of(i.target)})"
              for i in IMPORTS if RANK[unit_of(i.target)] > RANK[unit_of(i.module)] and _counted(i)]
    assert upward == [], "\n".join(upward)


def test_no_circles_between_packages() -> None:
    edges: dict[str, set[str]] = defaultdict(set)
    for i in filter(_counted, IMPORTS):
        if unit_of(i.module) != unit_of(i.target):
            edges[unit_of(i.module)].add(unit_of(i.target))
    assert _cycles(edges) == []


def test_no_import_circles_between_modules() -> None:
    # Only module-level imports run at import time; a circle among them is a partly initialised module.
    edges: dict[str, set[str]] = defaultdict(set)
    for i in IMPORTS:
        if i.top_level:
            edges[i.module].add(i.target)
    assert _cycles(edges) == []


def test_the_runs_layer_imports_only_the_foundation_and_the_config() -> None:
    # RunDir.config() validates config.yaml into a TrainConfig: honed.config is the one layer above the foundation
    # it may use (docs/architecture.md).
    used = {unit_of(i.target) for i in IMPORTS if unit_of(i.module) == "runs"} - {"runs"}
    assert used <= LAYERS[0] | {"config"}, used


@pytest.mark.parametrize("known", sorted(KNOWN))
def test_known_exceptions_are_still_there(known: tuple[str, str]) -> None:
    assert any((i.source, i.target) == known for i in IMPORTS), (
        f"{known[0]} no longer imports {known[1]}: delete its entry from KNOWN in {Path(__file__).name}")


def test_the_cycle_finder_finds_a_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
