"""The examples in honed's docstrings run and print what they claim (they are documentation a reader trusts).

None is skipped: an example that needs a model, a server or minutes is written as a plain usage line (no
`>>>`) naming the test that runs it, so every `>>>` line in honed/ is checked here.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import honed

MODULES = sorted(info.name for info in pkgutil.walk_packages(honed.__path__, prefix="honed."))
PACKAGE = Path(honed.__file__).parent
SKIP = re.compile(r"doctest:.*\+SKIP")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_hold(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring example(s) in {name} failed (output above)"


def skipped_examples(root: Path) -> list[str]:
    """Every `doctest: +SKIP` under `root`, as `path:line`."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if SKIP.search(line):
                found.append(f"{path.relative_to(root.parent).as_posix()}:{number}")
    return found


def test_no_docstring_example_is_skipped() -> None:
    skipped = skipped_examples(PACKAGE)
    assert not skipped, ("docstring examples marked `doctest: +SKIP` (make each run, or write it as a plain "
                         "usage line naming the test that runs it):\n" + "\n".join(skipped))


def test_a_skipped_example_is_found(tmp_path: Path) -> None:
    """The check above can fail: a skipped example is named by file and line."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "m.py").write_text('"""Doc.\n\n>>> load()  # doctest: +SKIP\n"""\n')
    assert skipped_examples(package) == ["pkg/m.py:3"]
