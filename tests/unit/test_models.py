from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from honed.errors import ModelError
from honed.models import load_tokenizer

TINY = Path(__file__).resolve().parents[1] / "assets" / "tiny-llama"


def test_model_folder_without_tokenizer_files_is_a_model_error(tmp_path: Path) -> None:
    shutil.copy(TINY / "config.json", tmp_path / "config.json")
    with pytest.raises(ModelError, match="tokenizer"):
        load_tokenizer(str(tmp_path))
