"""Where llama.cpp keeps a GGUF's weights on the CPU, and why honed keeps them in its plain buffers on AMX CPUs.

llama.cpp can copy weights into "extra" CPU buffer types at load time (`use_extra_bufts`, on by default): on
a CPU with AMX it repacks every matrix AMX takes (q4_0, q4_1, q8_0, the k-quants, f16) into an AMX buffer.
In llama-cpp-python 0.3.36 (measured on an Intel Xeon with AMX_INT8, 2 cores) the first decode of a q8_0
GGUF then dies with SIGSEGV inside `ggml_backend_amx_mul_mat`, for one sequence as for sixteen: the crash
of llama.cpp issue 20824 (open, no fix), which took `honed export --parity` and `honed serve --engine
llama.cpp` down with it. Without the extra buffers the same GGUFs run, and no slower: q8_0 67 tokens/s for
one sequence and 254 for sixteen; f16 47.6 and 216 without, 45.8 and 174 with the AMX buffer.

So on a CPU where llama.cpp reports AMX, honed loads weights without the extra buffers (also when layers go
to a GPU: the rule follows the CPU); elsewhere (AVX2, AVX-512 without AMX) llama.cpp's default stands and
its CPU_REPACK layouts keep their speed.

    params = llama_cpp.llama_model_default_params()
    params.use_extra_bufts = extra_buffers_safe()

    with plain_weight_buffers():  # llama-cpp-python's high-level Llama has no parameter for it
        llm = Llama(model_path="model-q8_0.gguf")
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from typing import Any

LLAMA_CPP_ISSUE = "https://github.com/ggml-org/llama.cpp/issues/20824"
log = logging.getLogger(__name__)


@functools.cache
def cpu_has_amx() -> bool:
    """True when the loaded llama.cpp was built with AMX and this CPU has it (its system info says AMX_INT8 = 1)."""
    import llama_cpp

    return b"AMX_INT8 = 1" in llama_cpp.llama_print_system_info()


def extra_buffers_safe() -> bool:
    """Whether llama.cpp may repack weights into its extra CPU buffer types here (not on AMX: see the module)."""
    if cpu_has_amx():
        log.info("llama.cpp: weights stay in plain CPU buffers on this AMX CPU (AMX repacking crashes: %s)",
                 LLAMA_CPP_ISSUE)
        return False
    return True


@contextlib.contextmanager
def plain_weight_buffers() -> Iterator[None]:
    """Within the block, llama-cpp-python's `Llama(...)` loads weights as `extra_buffers_safe()` says.

    `Llama.__init__` takes its model parameters from `llama_cpp.llama_model_default_params()` and exposes no
    `use_extra_bufts`, so the block wraps that one function and puts it back on the way out.
    """
    import llama_cpp.llama_cpp as bindings

    default = bindings.llama_model_default_params
    safe = extra_buffers_safe()

    def params() -> Any:
        chosen = default()
        chosen.use_extra_bufts = chosen.use_extra_bufts and safe
        return chosen

    bindings.llama_model_default_params = params
    try:
        yield
    finally:
        bindings.llama_model_default_params = default
