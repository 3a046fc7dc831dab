"""`honed export`: ship a run's tuned model as a merged folder, a portable adapter, or one GGUF file.

    export_run("runs/demo", ExportSettings(to="gguf", quant="q8_0", ollama=True))
      -> runs/demo/exports/gguf-best-q8_0/  model-q8_0.gguf  Modelfile  README.md  export.json

Every export writes a model card (README.md) and export.json, and by default checks parity: the artifact
answers the first 64 holdout examples and is compared with the tuned model (honed.export.parity). All
options are checked before any work; the folder is filled in a temp folder and renamed into place, so an
export is whole or absent.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from honed.atomic import atomic_folder, write_json_atomic, write_text_atomic
from honed.errors import ConfigError, ModelError
from honed.export import gguf as G
from honed.export.card import model_card
from honed.export.settings import ExportSettings
from honed.model.merge import DTYPES, base_dtype, save_merged, write_merged
from honed.export import merged as M
from honed.export.parity import Answerer, Parity, answer_with_transformers, check_parity
from honed.runs.rundir import RunDir, now_iso

TARGETS = ("merged", "adapter", "gguf")
STEP = re.compile(r"^step-(\d+)$")
OnStep = Callable[[str], None]


@dataclass
class ExportPlan:
    """A checked export: every option valid, every path known; nothing written yet."""

    run: RunDir
    settings: ExportSettings
    checkpoint: str  # as RunDir.resolve_checkpoint takes it
    folder: Path
    quant: str | None
    base_spec: str


@dataclass
class ExportResult:
    target: str
    folder: Path
    files: list[str]
    checkpoint: str
    parity: Parity | None
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "folder": str(self.folder), "files": self.files, "checkpoint": self.checkpoint,
                "parity": self.parity.to_json() if self.parity else None, **self.details}


# ---- checking the options -------------------------------------------------------------------------------


def normalize_checkpoint(checkpoint: str) -> str:
    """`step-12` -> `checkpoints/step-000012`; best, final, last and checkpoints/step-N as they are.

    >>> normalize_checkpoint("step-12")
    'checkpoints/step-000012'
    """
    match = STEP.match(checkpoint)
    return f"checkpoints/step-{int(match.group(1)):06d}" if match else checkpoint


def _require_finished(run: RunDir, *, checkpoint: str) -> None:
    status = run.read_run().status
    if checkpoint in ("best", "final") and status != "completed":
        raise ConfigError(f"{run.path}: the run never finished (status: {status}), so it has no {checkpoint} "
                          f"checkpoint; finish it with `honed train --out {run.path} --resume`, or export a "
                          "checkpoint it saved with --checkpoint last or --checkpoint step-N")


def _check_out(folder: Path, *, force: bool) -> None:
    """Refuse an --out that exists (unless --force) or cannot be created."""
    if folder.exists() and not force:
        raise ConfigError(f"--out {folder}: already exists; choose another --out or pass --force to replace it")
    parent = folder.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {folder}: cannot be created ({parent} is not a writable folder); "
                          "choose another --out")


def _check_target(settings: ExportSettings) -> str | None:
    if settings.to not in TARGETS:
        raise ConfigError(f"--to {settings.to}: unknown export target; use one of {', '.join(TARGETS)}")
    if settings.to != "gguf":
        if settings.quant is not None or settings.ollama:
            raise ConfigError(f"--quant and --ollama apply to --to gguf only (not --to {settings.to})")
        if settings.dtype is not None and settings.dtype not in DTYPES:
            raise ConfigError(f"--dtype {settings.dtype}: use one of {', '.join(DTYPES)}")
        return None
    quant = settings.quant or G.DEFAULT_QUANT
    G.check_quant(quant)
    return quant


def plan_export(run_dir: str | Path, settings: ExportSettings) -> ExportPlan:
    """Check every option and path; a HonedError names the first problem and its fix."""
    run = RunDir(run_dir).require_run()
    quant = _check_target(settings)
    if settings.parity_examples() < 0:
        raise ConfigError(f"--parity {settings.parity}: give a number of holdout examples >= 1, or --no-parity")
    checkpoint = normalize_checkpoint(settings.checkpoint)
    _require_finished(run, checkpoint=checkpoint)
    run.resolve_checkpoint(checkpoint)  # no weights there: a clear error now, not after minutes of work
    if settings.to == "adapter":
        M.require_adapter(run, checkpoint=checkpoint)
    label = f"{settings.to}-{Path(checkpoint).name}" + (f"-{quant}" if quant else "")
    folder = Path(settings.out) if settings.out else run.exports / label
    _check_out(folder, force=settings.force)
    return ExportPlan(run, settings, checkpoint, folder, quant, M.run_base_spec(run))


# ---- writing ---------------------------------------------------------------------------------------------


def _write_merged(plan: ExportPlan, tmp: Path, on_step: OnStep) -> tuple[Answerer, dict[str, Any]]:
    dtype = plan.settings.dtype or base_dtype(plan.base_spec)
    on_step(f"merging the adapter into the base model ({dtype})")
    write_merged(plan.run, checkpoint=plan.checkpoint, folder=tmp, dtype=dtype)
    require_end_of_turn_eos(plan.run, _folder_eos_ids(tmp), artifact=tmp.name)

    def load() -> Any:
        from honed.model.loading import load_model

        return load_model(str(tmp)), artifact_tokenizer(tmp)

    return _lazy(load, plan), {"dtype": dtype}


def _write_adapter(plan: ExportPlan, tmp: Path, on_step: OnStep) -> tuple[Answerer, dict[str, Any]]:
    base_name = plan.settings.base_name or M.portable_base_name(plan.base_spec)
    on_step("writing the adapter")
    M.write_adapter(plan.run, checkpoint=plan.checkpoint, folder=tmp, base_name=base_name)
    return _lazy(lambda: M.load_adapter_model(tmp, base_spec=plan.base_spec), plan), {"base_model": base_name}


def _lazy(load: Callable[[], tuple[Any, Any]], plan: ExportPlan) -> Answerer:
    """An Answerer that loads its model on first use (only when parity runs)."""

    def answer(holdout: Any, max_new_tokens: int) -> list[str]:
        model, tokenizer = load()
        return answer_with_transformers(model, tokenizer, batch_size=plan.settings.batch_size,
                                        artifact=True)(holdout, max_new_tokens)

    return answer


def _write_gguf(plan: ExportPlan, tmp: Path, on_step: OnStep) -> tuple[Answerer, dict[str, Any]]:
    from honed.model.decode import stops_for
    from honed.model.stops import stop_strings
    from honed.model.tokenizers import model_tokenizer, run_template

    assert plan.quant is not None
    staging = tmp / ".merged"
    on_step("merging the adapter into the base model (float32, for the converter)")
    save_merged(plan.run, checkpoint=plan.checkpoint, target=staging, dtype="float32")
    name = f"model-{plan.quant}.gguf"
    on_step(f"converting to GGUF {plan.quant} with llama.cpp's converter")
    G.convert_to_gguf(staging, tmp / name, quant=plan.quant)
    tokenizer, _ = model_tokenizer(str(staging))
    metadata = G.gguf_metadata(tmp / name)
    require_end_of_turn_eos(plan.run, {metadata["eos_token_id"], metadata["eot_token_id"]} - {None}, artifact=name)
    if not metadata["chat_template"]:
        raise ConfigError(f"{name}: the converter wrote no chat template into the GGUF metadata")
    if plan.settings.ollama:
        stored = run_template(plan.run)
        stops = stop_strings(tokenizer, stops_for(tokenizer))
        write_text_atomic(tmp / "Modelfile", G.modelfile(tokenizer, gguf_name=name, stop_tokens=stops,
                                                         family=stored.name if stored is not None else None))
    answerer = _gguf_answerer(tmp / name, tokenizer, plan)
    details = {"quant": plan.quant, "gguf": name, "tensor_types": metadata["tensor_types"]}
    return answerer, details


def _gguf_answerer(path: Path, tokenizer: Any, plan: ExportPlan) -> Answerer:
    if G.has_llama_cpp():
        from honed.export.llamacpp import answer_with_llama_cpp

        return answer_with_llama_cpp(path, tokenizer)

    def load() -> Any:
        from honed.model.loading import load_model

        return load_model(str(path)), artifact_tokenizer(path)

    return _lazy(load, plan)


def _folder_eos_ids(folder: Path) -> set[int]:
    """The eos ids a plain transformers user of an exported folder stops on: tokenizer + generation config."""
    import json

    ids: set[int] = set()
    for name in ("config.json", "generation_config.json"):
        path = folder / name
        value = json.loads(path.read_text(encoding="utf-8")).get("eos_token_id") if path.is_file() else None
        ids.update(int(v) for v in (value if isinstance(value, list) else [value]) if v is not None)
    return ids


def require_end_of_turn_eos(run: Any, eos_ids: set[int], *, artifact: str) -> None:
    """Refuse an artifact whose own eos ids miss the run's end of turn (when that is one token): a runtime
    reading it would never stop after an answer, whatever honed's own engines do."""
    from honed.model.stops import stop_rule
    from honed.model.tokenizers import run_tokenizer

    tokenizer, template = run_tokenizer(run)
    turn_end = stop_rule(tokenizer, template.end_of_turn).end_of_turn_id
    if turn_end is not None and turn_end not in eos_ids:
        raise ModelError(f"{artifact}: the export names eos {sorted(eos_ids)}, not the end of turn "
                         f"{template.end_of_turn!r} (id {turn_end}), so runtimes reading it would not stop after an "
                         "answer; this is a bug in honed's export, please report it")


def artifact_tokenizer(path: Path) -> Any:
    """The tokenizer an artifact carries, as a runtime reads it: a folder's own files, or the tokenizer and
    chat template in a GGUF's metadata; never the run's. Parity then tests what ships."""
    from honed.model.loading import load_tokenizer

    tokenizer = load_tokenizer(str(path))
    if not getattr(tokenizer, "chat_template", None) and path.suffix == ".gguf":
        tokenizer.chat_template = G.gguf_metadata(path)["chat_template"]
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError(f"{path}: the exported artifact carries no chat template, so a runtime would not know "
                         "how to prompt it; this is a bug in the export, please report it")
    return tokenizer


WRITERS = {"merged": _write_merged, "adapter": _write_adapter, "gguf": _write_gguf}


def export_run(run_dir: str | Path, settings: ExportSettings, *, on_step: OnStep | None = None) -> ExportResult:
    """Export a run's tuned model; check parity; write README.md and export.json. All or nothing.

    Usage: `export_run("runs/demo", ExportSettings(to="merged")).folder` is
    `PosixPath('runs/demo/exports/merged-best')` (needs a trained run: tests/e2e/test_export_cli.py).
    """
    plan = plan_export(run_dir, settings)
    step = on_step or (lambda message: None)
    # The run's lock: a train or --resume must not change the checkpoint while it is exported.
    with RunDir(run_dir).lock("export"), atomic_folder(plan.folder) as tmp:
        answerer, details = WRITERS[settings.to](plan, tmp, step)
        parity = None
        if settings.parity_examples():
            backend = "llama.cpp" if settings.to == "gguf" and G.has_llama_cpp() else "transformers"
            step(f"parity: the tuned model and the artifact ({backend}) on {settings.parity_examples()} holdout examples")
            parity = check_parity(plan.run, checkpoint=plan.checkpoint, artifact=answerer, n=settings.parity_examples(),
                                  backend=backend, batch_size=settings.batch_size)
        shutil.rmtree(tmp / ".merged", ignore_errors=True)
        files = sorted(p.name for p in tmp.iterdir()) + ["README.md", "export.json"]
        result = ExportResult(settings.to, plan.folder, files, plan.checkpoint, parity, details)
        _write_records(plan, tmp, result)
        _shareable(tmp)
    return result


def _shareable(folder: Path) -> None:
    """Give the export the permissions of an ordinary folder (temp files are created owner-only), so a
    server running as another user, or a container, can read what was shipped."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _write_records(plan: ExportPlan, tmp: Path, result: ExportResult) -> None:
    base_name = result.details.get("base_model") or M.portable_base_name(plan.base_spec)
    card = model_card(
        plan.run, target=result.target, checkpoint=plan.checkpoint, base_spec=plan.base_spec, base_name=base_name,
        files=result.files, parity=result.parity.to_json() if result.parity else None, details=result.details,
    )
    write_text_atomic(tmp / "README.md", card)
    write_json_atomic(tmp / "export.json", {"created_at": now_iso(), "run": str(plan.run.path.resolve()),
                                            "base_spec": plan.base_spec, **result.to_json()})
