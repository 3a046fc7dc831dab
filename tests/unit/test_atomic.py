"""honed.atomic: what it writes looks like any other file or folder, and a swap never loses both."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from honed.atomic import atomic_folder, replace_folder, write_text_atomic


@pytest.fixture()
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_and_folders_get_the_umask_modes_not_private_temp_modes(tmp_path: Path, umask_027) -> None:
    write_text_atomic(tmp_path / "a.txt", "x\n")
    with atomic_folder(tmp_path / "folder") as tmp:
        write_text_atomic(tmp / "inner.txt", "y\n")
    assert mode(tmp_path / "a.txt") == 0o640  # 0o666 & ~0o027, not mkstemp's 0o600
    assert mode(tmp_path / "folder") == 0o750  # 0o777 & ~0o027, not mkdtemp's 0o700
    assert mode(tmp_path / "folder" / "inner.txt") == 0o640


def test_replace_folder_moves_the_old_one_aside_until_the_new_one_is_in(tmp_path: Path) -> None:
    target, new = tmp_path / "split", tmp_path / ".new"
    target.mkdir()
    (target / "old.txt").write_text("old")
    new.mkdir()
    (new / "new.txt").write_text("new")
    replace_folder(new, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["split"]
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    # The new folder cannot go in (it is gone): the old one is still there, only moved aside.
    with pytest.raises(FileNotFoundError):
        replace_folder(new, target)
    assert [p.name for p in (tmp_path / ".old-split").iterdir()] == ["new.txt"]
