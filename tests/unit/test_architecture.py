"""docs/architecture.md's module map names every module under honed/ and nothing that does not exist.

The map is the one list of honed's modules (each package's `__init__` docstring points to it), so it
must follow the tree: a module added without a line, or a line left behind by a removed module, fails.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAP_HEADING = "## Module map (one line per module)"
# A package heading: "`honed/data/`: what the package holds"; a module line: "- `honed/data/check.py`: ...".
PACKAGE_LINE = re.compile(r"^`(honed/(?:\w+/)*)`: \S")
MODULE_LINE = re.compile(r"^- `(honed/(?:\w+/)*\w+\.py)`: \S")


def map_section(text: str) -> list[str]:
    """The lines of the module map: from its heading to the next heading.

    >>> map_section("# A\\n## Module map (one line per module)\\n- `honed/x.py`: x\\n## Next\\n- y")
    ['- `honed/x.py`: x']
    """
    lines = text.splitlines()
    start = lines.index(MAP_HEADING) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("#")), len(lines))
    return lines[start:end]


def mapped_modules(lines: list[str]) -> tuple[list[str], list[str]]:
    """The module paths the map names (a package heading stands for its `__init__.py`), and the bullet
    lines that name no module in the map's form (so a typo cannot hide a module from the check).

    >>> mapped_modules(["`honed/data/`: the data stage", "- `honed/data/read.py`: reading", "- read.py"])
    (['honed/data/__init__.py', 'honed/data/read.py'], ['- read.py'])
    """
    named, malformed = [], []
    for line in lines:
        if package := PACKAGE_LINE.match(line):
            named.append(package.group(1) + "__init__.py")
        elif module := MODULE_LINE.match(line):
            named.append(module.group(1))
        elif line.startswith("- "):
            malformed.append(line)
    return named, malformed


def tree_modules() -> set[str]:
    """Every Python module under honed/, as a path relative to the repository root."""
    paths = (ROOT / "honed").rglob("*.py")
    return {p.relative_to(ROOT).as_posix() for p in paths if "__pycache__" not in p.parts}


def test_the_module_map_matches_the_tree() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    named, malformed = mapped_modules(map_section(text))
    tree = tree_modules()
    missing = sorted(tree - set(named))
    extra = sorted(set(named) - tree)
    repeated = sorted({n for n in named if named.count(n) > 1})
    assert not missing, f"docs/architecture.md's module map has no line for: {', '.join(missing)}"
    assert not extra, f"docs/architecture.md's module map names modules that do not exist: {', '.join(extra)}"
    assert not repeated, f"docs/architecture.md's module map names these twice: {', '.join(repeated)}"
    assert not malformed, ("module map lines not in the form '- `honed/path.py`: what it holds':\n"
                           + "\n".join(malformed))


def test_a_map_out_of_step_is_caught() -> None:
    """The check can fail: a missing module, a removed one and a line in another form are each seen."""
    tree = tree_modules()
    lines = ["`honed/`: the package", "- `honed/no_such_module.py`: gone", "- `atomic.py`: x"]
    named, malformed = mapped_modules(lines)
    assert "honed/atomic.py" in tree - set(named)
    assert set(named) - tree == {"honed/no_such_module.py"}
    assert malformed == ["- `atomic.py`: x"]
