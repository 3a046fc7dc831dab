"""install_converter takes llama.cpp's converter files, and only those, out of a llama-cpp-python sdist."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from honed.export.tools import install_converter

PREFIX = "llama_cpp_python-0.3.36/vendor/llama.cpp/"


def sdist(path: Path, files: dict[str, str]) -> Path:
    """A .tar.gz holding `files` (name -> text), laid out like the llama-cpp-python sdist."""
    with tarfile.open(path, "w:gz") as archive:
        for name, text in files.items():
            data = text.encode()
            member = tarfile.TarInfo(name)
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    return path


def test_the_converter_and_its_packages_are_extracted_and_nothing_else(tmp_path: Path) -> None:
    archive = sdist(tmp_path / "llama.tar.gz", {
        PREFIX + "convert_hf_to_gguf.py": "# converter",
        PREFIX + "conversion/__init__.py": "",
        PREFIX + "gguf-py/gguf/__init__.py": "# gguf",
        PREFIX + "LICENSE": "MIT",
        PREFIX + "src/llama.cpp": "// compiled code, not wanted",
        "llama_cpp_python-0.3.36/setup.py": "# the bindings, not wanted",
    })
    target = install_converter(archive, target=tmp_path / "share" / "llama.cpp")
    files = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert files == ["LICENSE", "conversion/__init__.py", "convert_hf_to_gguf.py", "gguf-py/gguf/__init__.py"]
    assert (target / "convert_hf_to_gguf.py").read_text() == "# converter"


def test_an_archive_without_the_converter_is_refused_and_leaves_the_target_alone(tmp_path: Path) -> None:
    target = tmp_path / "llama.cpp"
    target.mkdir()
    (target / "convert_hf_to_gguf.py").write_text("# the installed one")
    archive = sdist(tmp_path / "other.tar.gz", {"other-1.0/setup.py": ""})
    with pytest.raises(SystemExit, match="no vendor/llama.cpp/convert_hf_to_gguf.py inside"):
        install_converter(archive, target=target)
    assert (target / "convert_hf_to_gguf.py").read_text() == "# the installed one"
