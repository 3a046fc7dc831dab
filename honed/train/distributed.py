"""Several training processes on one machine: which process this is (`Dist`), torchrun launch, process
group, gradient sum, FSDP2.

`Dist` is the one source of rank and device information: `Dist.from_env()` (torchrun's variables, for the
CLI before a process group exists) and `Dist.current()` (the open group, for the training loop) give
rank, world size and local rank; `dist.is_main` says who prints and writes, `dist.device(setting)` which
device this process uses (the only place that refuses `device: cuda` without a GPU), and
`all_reduce_sum` / `broadcast` / `barrier` do nothing when there is one process.

`honed train --nproc N` (N > 1) does not train in the process the user started. It re-runs the same
command line under torchrun (`torchrun --standalone --nproc-per-node N -m honed ...`, launched in-process)
and waits for it; each of the N workers sees torchrun's RANK / WORLD_SIZE / LOCAL_RANK variables, opens a
process group (gloo on CPU, nccl on GPUs) and runs the ordinary training loop, which then:
- takes a disjoint share of every optimizer step's examples (round-robin, `batching.shard`);
- divides its summed token losses by the supervised-token count of the whole step over all ranks
  (`loss.step_normaliser` all-reduces it);
- sums the gradients over ranks (`all_reduce_gradients`), so the update equals the 1-process update;
- leaves every file (run.json, metrics.jsonl, checkpoints) to rank 0.

Why a plain all-reduce of the gradients after the step's backward passes, not DistributedDataParallel:
the loss is already normalised by the global token count, so the right combination is a SUM (DDP
averages, and would need the loss scaled by the world size); a rank may get fewer micro-batches than
another (or none, on a short last step), which DDP's per-backward hooks would turn into a hang, while
one collective per optimizer step is the same on every rank; and the model stays unwrapped, so peft,
checkpointing and the loss code see the same object as in one process. DDP overlaps communication with
the backward pass; with LoRA's ~5M trainable parameters and gloo on a CPU there is nothing to win.
The gradients travel as one flat buffer per dtype: one collective, not one per parameter.

FSDP2 (`torch.distributed.fsdp.fully_shard`) shards full fine-tuning of a model too large for one GPU
(`sharding: fsdp`, or `auto` = FSDP2 for `method: full` on several CUDA GPUs). FSDP2 then reduces the
gradients itself (reduce-scatter, a mean), and `all_reduce_gradients` scales the shards to the same sum.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from honed.errors import ConfigError

# torchrun sets these in every worker it starts; their presence means "already launched".
_TORCHRUN_VARIABLES = ("TORCHELASTIC_RUN_ID", "LOCAL_RANK")


def launched_by_torchrun() -> bool:
    """True inside a worker that torchrun started (so `--nproc` must not launch again)."""
    return all(name in os.environ for name in _TORCHRUN_VARIABLES)


def threads_per_process(nproc: int) -> int:
    """CPU threads for each of `nproc` workers, so together they use this process's usable cores once
    (the rule in honed/threads.py)."""
    from honed.threads import torch_threads, usable_cores

    return torch_threads(cores=usable_cores(), processes=nproc)


def without_nproc(argv: Sequence[str]) -> list[str]:
    """`argv` less `--nproc N` / `--nproc=N`: workers know they are workers from torchrun's variables, and
    torchrun's own parser would take `--nproc` for an abbreviation of its `--nproc-per-node`.

    >>> without_nproc(["train", "--nproc", "2", "--out", "r", "--nproc=3"])
    ['train', '--out', 'r']
    """
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def torchrun_arguments(argv: Sequence[str], *, nproc: int) -> list[str]:
    """torchrun's arguments that run `honed <argv>` as `nproc` workers on this machine.

    >>> torchrun_arguments(["train", "--data", "d.jsonl", "--nproc", "2"], nproc=2)
    ['--standalone', '--nproc-per-node', '2', '--local-ranks-filter', '0', '-m', 'honed', 'train', '--data', 'd.jsonl']
    """
    return [
        "--standalone",  # a local rendezvous on a free port: one machine, no cluster settings
        "--nproc-per-node",
        str(nproc),
        "--local-ranks-filter",  # rank 0 speaks for all: the others print the same progress and errors
        "0",
        "-m",
        "honed",
        *without_nproc(argv),
    ]


def relaunch(argv: Sequence[str], *, nproc: int) -> int:
    """Run `honed <argv>` under torchrun with `nproc` workers, wait, and return its exit status.

    torchrun runs in this process (its `run` function), so a worker's user error (exit 2, its message
    already printed by rank 0) comes back as that exit status instead of torchrun's own traceback.

    Usage: `relaunch(["train", "--data", "d.jsonl", "--out", "runs/x", "--nproc", "2"], nproc=2)`, the exit
    status (starts processes: tests/unit/test_train_distributed.py trains on two gloo processes).
    """
    import logging

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    if nproc < 2:
        raise ValueError("relaunch needs at least 2 processes")
    # torchrun would otherwise force 1 thread per worker and print a warning about it.
    os.environ.setdefault("OMP_NUM_THREADS", str(threads_per_process(nproc)))
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # failures: reported below
    try:
        run(parse_args(torchrun_arguments(argv, nproc=nproc)))
    except ChildFailedError as exc:
        _, failure = exc.get_first_failure()
        return failure.exitcode if failure.exitcode > 0 else 1
    return 0


def backend_for(device: str) -> str:
    """The collective backend for a device: nccl between GPUs, gloo on CPU."""
    return "nccl" if device.startswith("cuda") else "gloo"


@dataclass(frozen=True)
class Dist:
    """This process's place among the training processes: the one source of rank and device.

    `Dist.from_env()` is what torchrun told the process (before any process group exists; the CLI uses
    it to open one and to decide who prints); `Dist.current()` is the open process group's view, which
    the training loop uses (a plain `train(...)` call without a group is one process).

    >>> Dist().is_main, Dist(rank=1, world_size=2).is_main, Dist(rank=1, world_size=2).active
    (True, False, True)
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @classmethod
    def from_env(cls) -> Dist:
        """torchrun's RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE; one process when they are unset."""
        return cls(
            rank=int(os.environ.get("RANK", 0)),
            world_size=int(os.environ.get("WORLD_SIZE", 1)),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
            local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", 1)),
        )

    @classmethod
    def current(cls) -> Dist:
        """The initialised process group's rank and size; one process when no group is open."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return cls()
        env = cls.from_env()
        return cls(
            rank=torch.distributed.get_rank(),
            world_size=torch.distributed.get_world_size(),
            local_rank=env.local_rank,
            local_world_size=env.local_world_size,
        )

    @property
    def is_main(self) -> bool:
        """Rank 0, or the only process: the one that prints and writes files."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """True when there are other processes to exchange numbers with."""
        return self.world_size > 1

    def device(self, setting: str) -> str:
        """The device this process runs on for the config's `device` setting: its own GPU (local rank)
        when CUDA is used, else the CPU. `cuda` without a visible GPU is a ConfigError.

        >>> Dist().device("cpu")
        'cpu'
        """
        has_cuda = torch.cuda.is_available()
        if setting == "cuda" and not has_cuda:
            raise ConfigError("device: cuda was asked for but no CUDA GPU is visible; use device: auto or cpu")
        if setting == "cpu" or not has_cuda:
            return "cpu"
        torch.cuda.set_device(self.local_rank)
        return f"cuda:{self.local_rank}"

    def threads(self) -> int:
        """CPU threads for this process, so the processes on this machine use its cores once."""
        return threads_per_process(self.local_world_size)

    def barrier(self) -> None:
        """Wait for every process (nothing to wait for when alone)."""
        if self.active:
            torch.distributed.barrier()

    def all_reduce_sum(self, values: list[float], *, device: str) -> list[float]:
        """Sum a few numbers over the processes (the numbers themselves when alone)."""
        if not self.active:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        torch.distributed.all_reduce(tensor)
        return tensor.tolist()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value` on every process (a picklable object; the value itself when alone)."""
        if not self.active:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


@contextlib.contextmanager
def process_group(dist: Dist, *, device_setting: str = "auto", timeout_s: float = 1800) -> Iterator[None]:
    """Open the torch.distributed process group when torchrun started this process; close it after.

    Outside torchrun (`dist.world_size` 1) this does nothing, so one code path serves both.

    >>> dist = Dist.from_env()  # not under torchrun: one process
    >>> with process_group(dist, device_setting="cpu"):
    ...     dist.world_size, torch.distributed.is_initialized()
    (1, False)
    """
    if not dist.active or torch.distributed.is_initialized():
        yield
        return
    device = dist.device(device_setting)
    kwargs: dict[str, Any] = {"backend": backend_for(device), "timeout": dt.timedelta(seconds=timeout_s)}
    if device.startswith("cuda"):
        kwargs["device_id"] = torch.device(device)
    torch.distributed.init_process_group(**kwargs)
    try:
        yield
    finally:
        torch.distributed.destroy_process_group()


def all_reduce_gradients(params: Sequence[torch.nn.Parameter]) -> None:
    """Sum every parameter's gradient over all ranks, in one collective per dtype.

    A parameter without a gradient on this rank (no examples this step) takes part with zeros, so
    every rank issues the same collectives and none waits forever.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    world_size = torch.distributed.get_world_size()
    if world_size == 1:
        return
    from torch.distributed.tensor import DTensor

    by_dtype: dict[torch.dtype, list[torch.nn.Parameter]] = {}
    for param in params:
        if isinstance(param, DTensor):  # FSDP2 already reduce-scattered it, as a mean over ranks
            if param.grad is not None:
                param.grad.mul_(world_size)
            continue
        if param.grad is None:
            param.grad = torch.zeros_like(param)
        by_dtype.setdefault(param.grad.dtype, []).append(param)
    for group in by_dtype.values():
        flat = torch.cat([p.grad.reshape(-1) for p in group])
        torch.distributed.all_reduce(flat)
        offset = 0
        for p in group:
            n = p.grad.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
            offset += n


def use_fsdp(*, sharding: str, method: str, device: str, world_size: int) -> bool:
    """Whether to shard the model with FSDP2. `auto`: full fine-tuning on several CUDA GPUs.

    `fsdp` asked for explicitly also runs on the CPU (gloo; no memory is saved on one machine, but the
    same code path can be tested without GPUs). Where it cannot work it is a ConfigError saying why.

    >>> use_fsdp(sharding="auto", method="full", device="cuda:0", world_size=2)
    True
    >>> use_fsdp(sharding="auto", method="lora", device="cuda:0", world_size=2)
    False
    """
    if sharding == "none":
        return False
    if sharding == "auto":
        return method == "full" and device.startswith("cuda") and world_size > 1
    if world_size < 2:
        raise ConfigError("sharding: fsdp needs several processes: add --nproc N (N = number of GPUs)")
    if method != "full":
        raise ConfigError(
            "sharding: fsdp is for method: full (LoRA's frozen base fits where its adapters do); "
            "use sharding: auto with method: lora"
        )
    return True


def is_fsdp(model: Any) -> bool:
    """True when `model` was sharded by FSDP2 (its forward then has to go through the root module)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def prepare_model(
    model: Any, *, sharding: str, method: str, device: str, world_size: int, resume: bool, task_metric: bool
) -> Any:
    """Shard `model` with FSDP2 when `use_fsdp` says so (before the optimizer is built); else return it.

    Not yet with FSDP2: --resume (the optimizer state would have to be resharded) and task-metric
    selection (generation runs on rank 0 alone, sharded weights need every rank); both refuse clearly.
    """
    if not use_fsdp(sharding=sharding, method=method, device=device, world_size=world_size):
        return model
    if resume:
        raise ConfigError("--resume is not supported with sharding: fsdp yet; start a new run or use sharding: none")
    if task_metric:
        raise ConfigError("a task metric (select_by) is not supported with sharding: fsdp yet; use holdout_loss")
    return shard_with_fsdp2(model)


def pad_micro_batch_count(batches: list[Any], *, model: Any, pad_id: int) -> list[Any]:
    """With FSDP2 every rank must run as many forward/backward passes as the others (each one gathers
    the weights from all ranks), so a rank with fewer micro-batches adds empty ones (no targets, loss 0).
    Without FSDP2 the list is returned as it is."""
    if not is_fsdp(model):
        return batches
    from honed.train.batching import Example, collate

    count = torch.tensor([len(batches)], dtype=torch.long)
    torch.distributed.all_reduce(count, op=torch.distributed.ReduceOp.MAX)
    empty = Example(index=-1, input_ids=[pad_id], loss_mask=[False])
    return batches + [collate([[empty]], pad_id=pad_id) for _ in range(int(count) - len(batches))]


def gathered_state(model: Any, optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(model, optimizer) state dicts gathered whole onto the CPU when the model is sharded; None if not.
    Every rank must call it (it all-gathers the shards); rank 0 then writes them."""
    if not is_fsdp(model):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def shard_with_fsdp2(model: Any, *, mixed_precision: torch.dtype | None = None) -> Any:
    """Wrap a transformers causal LM with FSDP2: each decoder layer, then the whole model, is sharded.

    FSDP2 reduce-scatters the gradients as a MEAN over ranks (a divide factor of 1 would need PREMUL_SUM,
    which gloo lacks); `all_reduce_gradients` turns that mean into the sum the loop needs.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    kwargs: dict[str, Any] = {}
    if mixed_precision is not None:
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=mixed_precision, reduce_dtype=torch.float32)
    for layer in model.get_decoder().layers:
        fully_shard(layer, **kwargs)
    fully_shard(model, **kwargs)
    return model
