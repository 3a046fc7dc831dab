"""How many threads honed uses, decided in one place, so a busy machine slows honed down fairly instead of
collapsing it.

The rule (docs/train.md, "Threads on a shared machine"):

1. OpenMP threads wait PASSIVELY (`OMP_WAIT_POLICY=PASSIVE`). torch's CPU kernels run on an OpenMP pool
   (GNU libgomp in the pip wheels); by default a thread that finishes its share of an op spins on the
   core for a while (GOMP_SPINCOUNT) waiting for the others and for the next op. On a machine where other
   processes want the same cores, the spinning thread burns the time slice its sibling needs to finish,
   and every op of a training step waits for the slowest thread: measured on 2 cores with one CPU burner,
   2 spinning threads trained a 135M-shaped model at 10-22 tokens/s where 2 passive threads managed 58-87
   and 1 thread 22-44 (BENCHMARKS.md, "Choosing the thread rule"). libgomp reads the variable once, when
   torch is first imported, so `honed/__init__.py` sets it (`configure_environment`) before any honed
   module imports torch; a value the user set (or GOMP_SPINCOUNT, KMP_BLOCKTIME) is never overridden.
2. torch intra-op threads = the cores this process may use (`usable_cores`: its CPU affinity, capped by a
   cgroup CPU quota such as `docker --cpus 2`) divided among the training processes on this machine
   (torchrun's LOCAL_WORLD_SIZE), at least 1 (`torch_threads`). The current load is deliberately NOT an
   input: the thread count changes the order of floating-point sums, and the same seeded run must give the
   same loss curve whatever else the machine was doing; with passive waiting, all cores stay the faster
   choice under contention too (measured, same BENCHMARKS.md section).
3. torch inter-op threads = 1: honed runs no independent ops in parallel (eager mode), so the inter-op
   pool's threads would only sit idle.
4. Tokenizer threads: the Rust tokenizer's own pool (TOKENIZERS_PARALLELISM) stays on for tokenising in
   one process (it runs before training, never beside it); forked data workers turn it off
   (`honed.data.chunks`), so the two never oversubscribe the cores.
5. Data workers (`data check`'s forked processes): one per usable core (`honed.data.chunks.default_workers`,
   HONED_WORKERS overrides). Training itself uses no data-loader workers: batches are built in the loop.

`--threads N` (train, eval, serve; `num_threads` in a training config) overrides rule 2.

>>> torch_threads(cores=8, processes=2)
4

`apply_threads(None)` applies the rule to torch and returns the count (2 for one process on 2 cores).
"""

from __future__ import annotations

import math
import os
from collections.abc import MutableMapping
from pathlib import Path

# Set before torch is first imported; see rule 1 above. Variables whose presence means "the user chose".
WAIT_POLICY = ("OMP_WAIT_POLICY", "PASSIVE")
_USER_WAIT_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def wait_policy_settings(environ: MutableMapping[str, str]) -> dict[str, str]:
    """The environment variables honed adds (nothing when the user already chose a wait behaviour).

    >>> wait_policy_settings({})
    {'OMP_WAIT_POLICY': 'PASSIVE'}
    >>> wait_policy_settings({"OMP_WAIT_POLICY": "ACTIVE"})
    {}
    """
    if any(name in environ for name in _USER_WAIT_SETTINGS):
        return {}
    name, value = WAIT_POLICY
    return {name: value}


def configure_environment(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Add honed's OpenMP wait policy to the environment (before torch is imported); return what it set.

    Called by `honed/__init__.py`, so `honed ...`, `python -m honed` and `import honed.anything` all get it.
    When torch was imported earlier (a script that imports torch first), libgomp has already read its
    settings and this changes nothing for that process; child processes still inherit it.

    >>> configure_environment({})
    {'OMP_WAIT_POLICY': 'PASSIVE'}
    """
    env = os.environ if environ is None else environ
    added = wait_policy_settings(env)
    env.update(added)
    return added


def quota_cores(cpu_max: str) -> int | None:
    """Cores a cgroup v2 `cpu.max` line allows ("max 100000" = no limit -> None), rounded up.

    >>> quota_cores("200000 100000"), quota_cores("150000 100000"), quota_cores("max 100000")
    (2, 2, None)
    """
    parts = cpu_max.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return max(1, math.ceil(quota / period)) if quota > 0 and period > 0 else None


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (taskset, cpusets), capped by a cgroup quota.

    >>> usable_cores() >= 1
    True
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota = quota_cores(_CGROUP_CPU_MAX.read_text())
    except OSError:  # no cgroup v2 (macOS, Windows, cgroup v1): the affinity is all we know
        quota = None
    return max(1, min(cores, quota) if quota else cores)


def torch_threads(*, cores: int, processes: int = 1) -> int:
    """torch intra-op threads for one of `processes` training processes sharing `cores` (rule 2).

    >>> torch_threads(cores=2), torch_threads(cores=2, processes=2), torch_threads(cores=2, processes=4)
    (2, 1, 1)
    """
    return max(1, cores // max(1, processes))


def local_processes() -> int:
    """Training processes on this machine: torchrun's LOCAL_WORLD_SIZE, else 1."""
    value = os.environ.get("LOCAL_WORLD_SIZE", "1")
    return int(value) if value.isdigit() and int(value) > 0 else 1


def apply_threads(threads: int | None, *, processes: int | None = None) -> int:
    """Set torch's thread pools: `threads` when given (--threads), else the rule; return the count used.

    >>> import torch
    >>> before = torch.get_num_threads()
    >>> apply_threads(1), torch.get_num_threads()
    (1, 1)
    >>> _ = apply_threads(before)  # as it was
    """
    import torch

    count = threads or torch_threads(cores=usable_cores(), processes=processes or local_processes())
    torch.set_num_threads(count)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only settable before the first inter-op parallel work; then it stays as it is
        pass
    return count
