"""Checkpoints: atomic save, exact resume, and the `Checkpointer` that decides when to save.

`Checkpointer` owns everything about checkpoints during a run: when to save (every `save_every` steps,
at an improved evaluation, at the last step and at an early stop), pruning to the `keep_last` newest
(the best one always survives), finding the newest complete one on resume, and exporting final/ (the
best or the last weights, as `final` says) and merged/ on request.

A checkpoint folder `checkpoints/step-000100/` holds the weights in Hugging Face layout (LoRA:
adapter_config.json + adapter_model.safetensors; full: config.json + model.safetensors), the tokenizer,
`optimizer.pt` (optimizer, scheduler and RNG states: tensors and plain values only, loaded with
`torch.load(weights_only=True)`, so nothing is unpickled) and `trainer_state.json` (step, early-stopping
state). It is written to a hidden temp folder and renamed, so a folder named step-N is always complete;
a kill mid-save leaves only a temp folder, which resume ignores and the next save cleans up.

Data order is a pure function of (seed, epoch), so the step number is all resume needs to replay it.

Usage (a model is saved: tests/unit/test_train_loop.py resumes from these and continues the same curve):

    checkpointer = Checkpointer(run_dir, model=m, tokenizer=t, optimizer=o, scheduler=s, save_every=4,
                                keep_last=1, total_steps=18, dist=Dist.current(), log=print)
    checkpointer.maybe_save(8, trainer_state={"step": 8}, best_step=4, improved=False, stopping=False)  # True
"""

from __future__ import annotations

import contextlib
import json
import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import torch

from honed.atomic import atomic_folder
from honed.errors import ConfigError
from honed.model.loading import quiet_transformers
from honed.runs.rundir import RunDir, checkpoint_name
from honed.train.distributed import Dist, gathered_state

OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "trainer_state.json"
TEMP_PREFIX = ".tmp-"


def is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config")


def save_weights(model: Any, tokenizer: Any, folder: Path, *, state_dict: dict[str, Any] | None = None) -> None:
    """Weights (adapter for LoRA, whole model for full) and tokenizer, as safetensors.
    `state_dict`: the whole weights gathered from FSDP2 shards (the model's own tensors are shards).

    A LoRA adapter never carries the whole embedding matrix: rows of tokens honed added are trained and saved
    as peft's trainable tokens (their values, not a delta), so the base grown to the tokenizer is all a
    loader needs (honed.model.run.fit_vocabulary); peft would otherwise save every row because it sees the
    vocabulary resized."""
    extra: dict[str, Any] = {} if state_dict is None else {"state_dict": state_dict}
    if is_peft(model):
        extra["save_embedding_layers"] = False
    with quiet_transformers():  # no "Writing model shards" bar in the training log
        model.save_pretrained(folder, safe_serialization=True, **extra)
    tokenizer.save_pretrained(folder)
    (folder / "README.md").unlink(missing_ok=True)  # peft writes a model-card stub; nothing in it is ours


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    model: Any,
    tokenizer: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    trainer_state: dict[str, Any],
    gathered: tuple[dict[str, Any], dict[str, Any]] | None = None,
) -> Path:
    """Write checkpoints/step-N atomically and return its path.

    Usage: `save_checkpoint("runs/a", 100, model=m, tokenizer=t, optimizer=o, scheduler=s, trainer_state={})`
    is `PosixPath('runs/a/checkpoints/step-000100')` (tests/unit/test_train_loop.py's resume tests).
    """
    target = RunDir(run_dir).checkpoint(step)
    # A folder named step-N is always complete; a kill mid-save leaves only a .tmp- folder (clean_temp).
    with atomic_folder(target, prefix=f"{TEMP_PREFIX}{checkpoint_name(step)}-") as tmp:
        save_weights(model, tokenizer, tmp, state_dict=gathered[0] if gathered else None)
        optimizer_state = gathered[1] if gathered else optimizer.state_dict()
        blob = {"optimizer": optimizer_state, "scheduler": scheduler.state_dict(), "rng": _rng_state()}
        torch.save(blob, tmp / OPTIMIZER_FILE)
        (tmp / STATE_FILE).write_text(json.dumps({"step": step, **trainer_state}, indent=2), encoding="utf-8")
    return target


def clean_temp(run_dir: str | Path) -> None:
    """Remove temp folders a killed save left behind: checkpoints/.tmp-*, and the run root's half-written
    final/ and merged/ exports (.final-*, .merged-*, .old-final, .old-merged, from honed.atomic)."""
    root = Path(run_dir)
    for folder, prefixes in ((root / "checkpoints", (TEMP_PREFIX,)), (root, (".final-", ".merged-", ".old-"))):
        if folder.is_dir():
            for path in folder.iterdir():
                if path.is_dir() and path.name.startswith(prefixes):
                    shutil.rmtree(path, ignore_errors=True)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint (temp folders are never candidates)."""
    return RunDir(run_dir).latest_checkpoint()


def load_weights(model: Any, folder: Path) -> None:
    """Load checkpoint weights into an already built model of the same shape (LoRA or full)."""
    from safetensors.torch import load_file

    if is_peft(model):
        from peft import set_peft_model_state_dict

        state = load_file(str(folder / "adapter_model.safetensors"))
        result = set_peft_model_state_dict(model, state)
        unexpected = getattr(result, "unexpected_keys", [])
        assert not unexpected, f"unexpected adapter keys: {unexpected[:3]}"
        return
    state = load_file(str(folder / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()
    assert not unexpected and set(missing) <= tied, f"checkpoint does not match model: {missing[:3]} {unexpected[:3]}"


def load_checkpoint(folder: Path, *, model: Any, optimizer: torch.optim.Optimizer, scheduler: Any) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and RNG from a checkpoint; return its trainer_state.

    A damaged file (torn safetensors, truncated optimizer.pt or trainer_state.json) is one ConfigError
    naming it and the way out, never a traceback."""
    with damaged_checkpoint(folder, "adapter_model.safetensors / model.safetensors"):
        load_weights(model, folder)
    with damaged_checkpoint(folder, OPTIMIZER_FILE):
        blob = torch.load(folder / OPTIMIZER_FILE, weights_only=True, map_location="cpu")
        optimizer.load_state_dict(blob["optimizer"])
        scheduler.load_state_dict(blob["scheduler"])
    torch.set_rng_state(blob["rng"]["torch"])
    if "cuda" in blob["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(blob["rng"]["cuda"])
    with damaged_checkpoint(folder, STATE_FILE):
        state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
        if not isinstance(state, dict) or "step" not in state:
            raise ValueError("no step recorded")
    return state  # type: ignore[no-any-return]


@contextlib.contextmanager
def damaged_checkpoint(folder: Path, what: str) -> Iterator[None]:
    """Turn an unreadable checkpoint file into a ConfigError that says which and how to recover."""
    from safetensors import SafetensorError

    try:
        yield
    except (SafetensorError, OSError, EOFError, ValueError, RuntimeError, KeyError, pickle.UnpicklingError) as exc:
        detail = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"{folder}/{what}: cannot be read ({detail}); the checkpoint is damaged: move {folder} out of "
            "checkpoints/ and --resume again (from the previous checkpoint), or start over with --force"
        ) from exc


def prune(run_dir: str | Path, *, keep_last: int, keep: set[str]) -> None:
    """Delete old checkpoints, keeping the `keep_last` newest and the named ones (the best)."""
    found = RunDir(run_dir).checkpoint_dirs()
    recent = {p.name for p in found[-keep_last:]}
    for path in found:
        if path.name not in recent and path.name not in keep:
            shutil.rmtree(path, ignore_errors=True)


def export_final(source: Path, target: Path) -> Path:
    """Copy a checkpoint's weights and tokenizer (not optimizer state) to `target`, atomically."""
    with atomic_folder(target) as tmp:
        for path in source.iterdir():
            if path.is_file() and path.name not in (OPTIMIZER_FILE, STATE_FILE):
                shutil.copy2(path, tmp / path.name)
    return target


class Checkpointer:
    """Saves, prunes, restores and exports one run's checkpoints (every rank calls it; rank 0 writes)."""

    def __init__(
        self,
        run_dir: Path,
        *,
        model: Any,
        tokenizer: Any,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        save_every: int,
        keep_last: int,
        total_steps: int,
        dist: Dist,
        log: Callable[[str], None],
    ) -> None:
        self.run = RunDir(run_dir)
        self.model, self.tokenizer, self.optimizer, self.scheduler = model, tokenizer, optimizer, scheduler
        self.save_every, self.keep_last, self.total_steps = save_every, keep_last, total_steps
        self.dist, self.log = dist, log

    def due(self, step: int, *, improved: bool, stopping: bool) -> bool:
        """Save at every `save_every` steps, at a new best, at the last step and when stopping early."""
        return improved or stopping or step % self.save_every == 0 or step == self.total_steps

    def maybe_save(
        self, step: int, *, trainer_state: dict[str, Any], best_step: int | None, improved: bool, stopping: bool
    ) -> bool:
        """Save checkpoints/step-N when `due`; return whether it did."""
        if not self.due(step, improved=improved, stopping=stopping):
            return False
        self.save(step, trainer_state=trainer_state, best_step=best_step)
        return True

    def save(self, step: int, *, trainer_state: dict[str, Any], best_step: int | None) -> None:
        """Write checkpoints/step-N, then prune to `keep_last` (keeping the best step's checkpoint)."""
        gathered = gathered_state(self.model, self.optimizer)  # FSDP2: every rank helps gather the shards
        if not self.dist.is_main:
            return
        save_checkpoint(
            self.run.path, step, model=self.model, tokenizer=self.tokenizer, optimizer=self.optimizer,
            scheduler=self.scheduler, trainer_state=trainer_state, gathered=gathered,
        )
        keep = {checkpoint_name(best_step)} if best_step is not None else set()
        prune(self.run.path, keep_last=self.keep_last, keep=keep)

    def restore(self) -> tuple[Path, dict[str, Any]] | None:
        """Load the newest complete checkpoint (temp folders of a killed save are removed first);
        return its folder and trainer_state, or None when there is none yet."""
        if self.dist.is_main:
            clean_temp(self.run.path)
        self.dist.barrier()
        latest = self.run.latest_checkpoint()
        if latest is None:
            return None
        saved = load_checkpoint(latest, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler)
        return latest, saved

    def load(self, step: int) -> None:
        """Put the weights of checkpoints/step-N into the model (every rank, once rank 0 has written them)."""
        self.dist.barrier()
        load_weights(self.model, self.run.checkpoint(step))

    def export(
        self, *, step: int, best_step: int | None, final: str, merge_with: str | None, trainer_state: dict[str, Any]
    ) -> Path | None:
        """final/ = the best checkpoint (`final: best` and a best exists) or the last; merged/ when
        `merge_with` names the base model. Rank 0 only; returns final/ (None on other ranks)."""
        if not self.dist.is_main:
            return None
        use_best = final == "best" and best_step is not None
        source = self.run.checkpoint(best_step if use_best and best_step is not None else step)
        if not source.is_dir():  # the last step is always saved; this only guards odd configs
            self.save(step, trainer_state=trainer_state, best_step=best_step)
            source = self.run.checkpoint(step)
        final_dir = export_final(source, self.run.final)
        self.log(f"final weights ({'best' if use_best else 'last'} checkpoint, {source.name}) in {final_dir}")
        if merge_with is not None:
            # One implementation with `honed export --to merged`: the same dtype, tokenizer and generation config.
            from honed.model.merge import base_dtype, save_merged

            merged = save_merged(self.run, checkpoint="final", target=self.run.merged, dtype=base_dtype(merge_with))
            self.log(f"merged weights in {merged}")
        return final_dir
