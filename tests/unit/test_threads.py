"""The thread rule (honed/threads.py): wait policy, usable cores, torch thread counts, --threads override."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from honed.threads import (
    apply_threads,
    configure_environment,
    quota_cores,
    torch_threads,
    usable_cores,
    wait_policy_settings,
)


def test_passive_wait_policy_is_added_only_when_the_user_chose_nothing() -> None:
    assert wait_policy_settings({}) == {"OMP_WAIT_POLICY": "PASSIVE"}
    for name, value in (("OMP_WAIT_POLICY", "ACTIVE"), ("GOMP_SPINCOUNT", "10000"), ("KMP_BLOCKTIME", "0")):
        assert wait_policy_settings({name: value}) == {}
    env = {"OMP_WAIT_POLICY": "active"}
    assert configure_environment(env) == {} and env == {"OMP_WAIT_POLICY": "active"}
    env = {"PATH": "/bin"}
    configure_environment(env)
    assert env == {"PATH": "/bin", "OMP_WAIT_POLICY": "PASSIVE"}


@pytest.mark.parametrize("user_value, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_importing_honed_sets_the_policy_before_torch_and_keeps_the_users(user_value: str | None, expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")}
    if user_value:
        env["OMP_WAIT_POLICY"] = user_value
    code = "import sys, os, honed; print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    # torch not yet imported when honed set the variable: libgomp will read it at torch's first import
    assert out.stdout.split() == [expected, "False"]


def test_cgroup_quota_in_whole_cores() -> None:
    assert quota_cores("200000 100000") == 2
    assert quota_cores("50000 100000") == 1  # half a core still needs one thread
    assert quota_cores("250000 100000") == 3
    assert quota_cores("max 100000") is None
    assert quota_cores("garbage") is None and quota_cores("") is None


def test_usable_cores_never_exceed_the_affinity() -> None:
    assert 1 <= usable_cores() <= len(os.sched_getaffinity(0))


def test_torch_threads_split_the_cores_among_processes() -> None:
    assert torch_threads(cores=2) == 2
    assert torch_threads(cores=16, processes=4) == 4
    assert torch_threads(cores=2, processes=3) == 1  # never zero
    assert torch_threads(cores=1, processes=0) == 1


def test_apply_threads_uses_the_override_else_the_rule() -> None:
    before = torch.get_num_threads()
    try:
        assert apply_threads(1) == 1 and torch.get_num_threads() == 1
        expected = torch_threads(cores=usable_cores(), processes=2)
        assert apply_threads(None, processes=2) == expected == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
