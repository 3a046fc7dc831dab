"""The examples in honed's docstrings run and print what they claim (they are documentation a reader trusts)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import honed

MODULES = sorted(info.name for info in pkgutil.walk_packages(honed.__path__, prefix="honed."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_hold(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring example(s) in {name} failed (output above)"
