"""Fixtures every test gets: HONED_HOME (the run registry) in a temp folder, never the user's ~/.cache/honed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _session_honed_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """HONED_HOME for module- and session-scoped fixtures, which run before any per-test fixture."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HONED_HOME", str(tmp_path_factory.mktemp("home")))
        yield


@pytest.fixture(autouse=True)
def honed_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own HONED_HOME (`tmp_path / "home"`), also inherited by subprocesses it starts.

    >>> def test_registry(honed_home): ...  # ask for it by name to get the path  # doctest: +SKIP
    """
    home = tmp_path / "home"
    monkeypatch.setenv("HONED_HOME", str(home))
    return home
