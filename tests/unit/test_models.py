from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from honed.errors import ModelError
from honed.model.loading import hub_reachable, load_tokenizer, model_config

from tests.helpers import TINY


def test_model_folder_without_tokenizer_files_is_a_model_error(tmp_path: Path) -> None:
    shutil.copy(Path(TINY) / "config.json", tmp_path / "config.json")
    with pytest.raises(ModelError, match="tokenizer"):
        load_tokenizer(str(tmp_path))


def test_unreachable_hub_fails_at_once_with_the_offline_alternatives(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:  # a local port nobody listens on: the connection is refused at once
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    hub_reachable.cache_clear()
    try:
        assert not hub_reachable()
        # without the probe huggingface_hub would retry for ~25 s; only the (empty) cache is asked instead
        with pytest.raises(ModelError, match="smollm2-135m"):
            model_config("no-such-org/no-such-model")
        with pytest.raises(ModelError, match="Offline alternatives"):
            load_tokenizer("no-such-org/no-such-model")
    finally:
        hub_reachable.cache_clear()
