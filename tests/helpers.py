"""Constants the tests share: `from tests.helpers import TINY`.

(Fixtures live in tests/conftest.py; a constant is here because module-level helpers and module-scoped
fixtures need it too, and pytest advises against importing from conftest.py.)
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The tiny randomly initialised Llama-architecture model and its tokenizer, committed for tests (no download).
TINY = str(ROOT / "tests" / "assets" / "tiny-llama")
