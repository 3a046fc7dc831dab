"""llama.cpp's own GGUF converter, taken from the `llama-cpp-python` sdist on PyPI at install time.

The converter (`convert_hf_to_gguf.py`, its `conversion/` package and the `gguf-py` it was written
against) is not in any wheel: the llama-cpp-python wheel ships only the compiled library. So `make
install` downloads the sdist once from PyPI and extracts those files (pure Python, no compiler) to
`<venv>/share/honed/llama.cpp/`; honed never downloads anything at run time.

    pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d build/
    python -m honed.export.tools build/llama_cpp_python-0.3.36.tar.gz

The compiled llama.cpp (for loading a GGUF with llama.cpp and for the q4_k_m quantiser) is the optional
`pip install llama-cpp-python` (`make llama-cpp`, a compile of several minutes).
"""

from __future__ import annotations

import os
import shutil
import sys
import tarfile
from pathlib import Path

from honed.atomic import atomic_folder

LLAMA_CPP_PYTHON = "llama-cpp-python==0.3.36"
CONVERTER = "convert_hf_to_gguf.py"
WANTED = (CONVERTER, "conversion/", "gguf-py/gguf/", "LICENSE")
INSTALL_HINT = (
    "install llama.cpp's converter with `make gguf-tools` (it runs `pip download --no-deps --no-binary :all: "
    f"{LLAMA_CPP_PYTHON}` and `python -m honed.export.tools <the .tar.gz>`), or point HONED_LLAMA_CPP at a "
    "llama.cpp checkout"
)


def default_location() -> Path:
    """Where `install_converter` puts the converter: inside the active environment."""
    return Path(sys.prefix) / "share" / "honed" / "llama.cpp"


def converter_dir() -> Path | None:
    """The folder holding convert_hf_to_gguf.py: $HONED_LLAMA_CPP, else the environment's copy, else None.

    >>> import tempfile
    >>> from unittest import mock
    >>> with tempfile.TemporaryDirectory() as checkout:
    ...     _ = (Path(checkout) / CONVERTER).write_text("")
    ...     with mock.patch.dict(os.environ, {"HONED_LLAMA_CPP": checkout}):
    ...         converter_dir() == Path(checkout)
    True
    """
    for folder in (os.environ.get("HONED_LLAMA_CPP"), default_location()):
        if folder and (Path(folder) / CONVERTER).is_file():
            return Path(folder)
    return None


def _member_target(name: str) -> str | None:
    """The path inside the install folder of an sdist member, or None when it is not wanted."""
    marker = "/vendor/llama.cpp/"
    if marker not in name:
        return None
    relative = name.split(marker, 1)[1]
    return relative if any(relative == w or relative.startswith(w) for w in WANTED) else None


def install_converter(sdist: str | Path, *, target: Path | None = None) -> Path:
    """Extract the converter files from a llama-cpp-python sdist into `target` (replaced whole).

    Usage: `install_converter("build/llama_cpp_python-0.3.36.tar.gz")` returns the folder, by default
    `<venv>/share/honed/llama.cpp` (needs the sdist: tests/unit/test_export_tools.py extracts a small one).
    """
    target = target or default_location()
    with tarfile.open(sdist, "r:gz") as archive, atomic_folder(target) as tmp:
        for member in archive.getmembers():
            relative = _member_target(member.name)
            if relative is None or not member.isfile():
                continue
            destination = tmp / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            source = archive.extractfile(member)
            assert source is not None
            with source, destination.open("wb") as out:
                shutil.copyfileobj(source, out)
        if not (tmp / CONVERTER).is_file():
            raise SystemExit(f"{sdist}: no vendor/llama.cpp/{CONVERTER} inside; is it the llama-cpp-python sdist?")
    return target


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m honed.export.tools llama_cpp_python-X.Y.Z.tar.gz")
    print(f"llama.cpp converter installed in {install_converter(sys.argv[1])}")
