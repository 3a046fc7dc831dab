"""A tokenizer with its chat template set: for a model (chosen, honed.model.template) or for a run (stored).

`model_tokenizer` is what `data check` and `train` call: it chooses the template and says why. Every later
stage calls `run_tokenizer`, which applies the run's stored template.json and never chooses again.

Usage: `tokenizer, choice = model_tokenizer("smollm2-135m")`; `choice.name, choice.reason` is then
`('model', "the model's own chat template")` (a model's files: tests/unit/test_render.py, test_models.py).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from honed.model.builtins import TESTED_ARCHITECTURES
from honed.model.loading import load_tokenizer, model_type
from honed.model.template import ChatTemplate, choose_template, read_template
from honed.runs.rundir import RunDir


def model_tokenizer(spec: str, *, chat_template: str | None = None) -> tuple[Any, ChatTemplate]:
    """The model's tokenizer with its chat template chosen and set (`chat_template`: --chat-template)."""
    tokenizer = load_tokenizer(spec)
    architecture = model_type(spec)
    choice = choose_template(tokenizer, model_type=architecture, override=chat_template)
    if architecture not in {t.model_type for t in TESTED_ARCHITECTURES}:
        # Never refused for its name: said once, where the template choice is said (data check, train).
        choice = replace(choice, reason=f"{choice.reason}; architecture {architecture} is outside honed's tested "
                         "matrix (`honed models`): it loads, but check `honed data check` and the eval before trusting it")
    return choice.apply(tokenizer), choice


def tokenizer_source(run: RunDir, folder: Path | None) -> str:
    """Where a run's tokenizer is read: the checkpoint folder when it saved one, else the base model."""
    if folder is not None and folder.is_dir() and (folder / "tokenizer_config.json").is_file():
        return str(folder)
    return run.base_model()


def run_template(run: RunDir) -> ChatTemplate | None:
    """The run's stored template (None for a run trained before template.json existed)."""
    return read_template(run.template_json)


def run_tokenizer(run: RunDir, folder: Path | None = None) -> tuple[Any, ChatTemplate]:
    """The tokenizer of a run's checkpoint `folder` (or its base) with the run's stored template applied.

    A run from before template.json gets what its checkpoint's tokenizer carries (it saved the template
    it trained with), else the choice for its base model.
    """
    tokenizer = load_tokenizer(tokenizer_source(run, folder))
    stored = run_template(run)
    if stored is None:
        stored = choose_template(tokenizer, model_type=model_type(run.base_model()))
    return stored.apply(tokenizer), stored
