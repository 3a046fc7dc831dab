"""On an AMX CPU honed loads GGUF weights without llama.cpp's extra buffers (AMX repacking segfaults there)."""

from __future__ import annotations

import pytest

from honed.export import llamacpp_buffers

bindings = pytest.importorskip("llama_cpp.llama_cpp", reason="needs llama-cpp-python (make llama-cpp)")


@pytest.mark.parametrize("amx", [True, False])
def test_extra_buffers_are_refused_on_amx_only(monkeypatch: pytest.MonkeyPatch, amx: bool) -> None:
    monkeypatch.setattr(llamacpp_buffers, "cpu_has_amx", lambda: amx)
    assert llamacpp_buffers.extra_buffers_safe() is not amx


@pytest.mark.parametrize("amx", [True, False])
def test_the_high_level_loader_gets_the_same_choice_and_the_default_comes_back(
        monkeypatch: pytest.MonkeyPatch, amx: bool) -> None:
    monkeypatch.setattr(llamacpp_buffers, "cpu_has_amx", lambda: amx)
    default = bindings.llama_model_default_params
    with llamacpp_buffers.plain_weight_buffers():
        assert bindings.llama_model_default_params().use_extra_bufts is not amx
    assert bindings.llama_model_default_params is default
    assert bindings.llama_model_default_params().use_extra_bufts is True


def test_the_default_comes_back_when_loading_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llamacpp_buffers, "cpu_has_amx", lambda: True)
    default = bindings.llama_model_default_params
    with pytest.raises(ValueError), llamacpp_buffers.plain_weight_buffers():
        raise ValueError("the GGUF did not load")
    assert bindings.llama_model_default_params is default


def test_this_cpu_is_read_from_llama_cpps_system_info() -> None:
    info = bindings.llama_print_system_info()
    assert llamacpp_buffers.cpu_has_amx() is (b"AMX_INT8 = 1" in info)
