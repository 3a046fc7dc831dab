from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from honed.errors import ModelError
from honed.models import load_tokenizer

from tests.helpers import TINY


def test_model_folder_without_tokenizer_files_is_a_model_error(tmp_path: Path) -> None:
    shutil.copy(Path(TINY) / "config.json", tmp_path / "config.json")
    with pytest.raises(ModelError, match="tokenizer"):
        load_tokenizer(str(tmp_path))
