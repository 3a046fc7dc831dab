"""The machine a run trained on, as run.json records it (`machine`): what its speed depends on.

Runs are compared across machines that differ a lot (an AVX2-only EPYC against a Xeon with AMX: bf16
matmul 7x apart), so every run records its CPU, the CPU features that decide the speed of torch's kernels,
the GPU when one is used, and the torch version. The CPU facts come from torch's own CPU probe
(`torch.cpu.get_capabilities`, torch >= 2.9), so they are what torch itself sees.

>>> info = machine_info("cpu")
>>> sorted(info) == ["cores", "cpu", "cpu_capability", "cpu_flags", "gpu", "torch"]
True
"""

from __future__ import annotations

import os
import platform
from typing import Any

# CPU features that change how fast torch runs (vector width, bf16/int8 matrix units).
SPEED_FLAGS = ("avx2", "avx512", "amx")


def machine_info(device: str) -> dict[str, Any]:
    """CPU name, logical cores, speed-relevant CPU flags, the GPU's name (None on CPU) and torch's version.

    >>> machine_info("cpu")["gpu"] is None
    True
    """
    import torch

    probe = getattr(torch.cpu, "get_capabilities", None)
    capabilities: dict[str, Any] = probe() if probe is not None else {}
    flags = sorted(name for name, on in capabilities.items() if on is True and name.startswith(SPEED_FLAGS))
    return {
        "cpu": str(capabilities.get("cpu_name") or platform.processor() or platform.machine()),
        "cores": int(capabilities.get("num_logical_cores") or os.cpu_count() or 1),
        "cpu_flags": flags,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the kernels torch picked: AVX2, AVX512, ...
        "gpu": torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else None,
        "torch": torch.__version__,
    }


def cpu_has_fast_bf16() -> bool:
    """True when this CPU multiplies bf16 in hardware (AMX tiles or AVX-512 BF16) and torch may use it, so bf16
    pays off: bf16 autocast in training, bf16 weights in serving. Elsewhere bf16 runs at a few percent of fp32's
    speed. A user (or a benchmark standing in for an older CPU) can cap the instructions torch uses with
    ATEN_CPU_CAPABILITY (torch's own kernels) and ONEDNN_MAX_CPU_ISA (its matmuls); below AVX-512 BF16 the
    hardware is there but unused, so bf16 is slow again."""
    import torch

    get_capabilities = getattr(torch.cpu, "get_capabilities", None)  # torch >= 2.9
    capabilities = get_capabilities() if get_capabilities is not None else {}
    hardware = bool(capabilities.get("amx_bf16") or capabilities.get("avx512_bf16"))
    return hardware and torch.backends.cpu.get_cpu_capability() == "AVX512" and onednn_allows_bf16(
        os.environ.get("ONEDNN_MAX_CPU_ISA", ""))


def onednn_allows_bf16(max_isa: str) -> bool:
    """Whether oneDNN's ISA cap (the ONEDNN_MAX_CPU_ISA value; empty: none) leaves it bf16 instructions.

    >>> [onednn_allows_bf16(v) for v in ("", "ALL", "AVX2", "AVX512_CORE", "AVX512_CORE_BF16", "AVX512_CORE_AMX")]
    [True, True, False, False, True, True]
    """
    cap = max_isa.strip().upper()
    return cap in ("", "ALL", "DEFAULT") or "BF16" in cap or "AMX" in cap or "FP16" in cap or cap.startswith("AVX10")


def machine_text(machine: Any) -> str | None:
    """One line for a report header, or None when the run recorded no machine (runs before this field).

    >>> machine_text({"cpu": "AMD EPYC", "cores": 2, "cpu_flags": ["avx2"], "gpu": None, "torch": "2.13.0"})
    'AMD EPYC, 2 cores, avx2, torch 2.13.0'
    """
    if not machine:
        return None
    if not isinstance(machine, dict):
        return str(machine)
    parts = [str(machine.get("cpu") or "unknown CPU")]
    if machine.get("cores"):
        parts.append(f"{machine['cores']} cores")
    parts.append(" ".join(machine.get("cpu_flags") or []) or "no AVX2/AVX-512/AMX")
    if machine.get("gpu"):
        parts.append(f"GPU {machine['gpu']}")
    if machine.get("torch"):
        parts.append(f"torch {machine['torch']}")
    return ", ".join(parts)
