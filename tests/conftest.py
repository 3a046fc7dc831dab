"""Fixtures every test can ask for: HONED_HOME (the run registry) in a temp folder, never the user's
~/.cache/honed; the tiny model and tokenizer; one tiny trained run for the session, and private copies of it.

The shared objects are made once per session, so they are read only: a test that changes the model, the
tokenizer or a run asks for its own (`copy.deepcopy(tiny_model)`, `load_tokenizer(TINY)`, `run_copy`),
and the session fails at teardown if one of them was changed anyway.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import DATA, FAST, TINY, cli, copy_run


@pytest.fixture(scope="session", autouse=True)
def _session_honed_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """HONED_HOME for module- and session-scoped fixtures, which run before any per-test fixture."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HONED_HOME", str(tmp_path_factory.mktemp("home")))
        yield


@pytest.fixture(autouse=True)
def honed_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own HONED_HOME (`tmp_path / "home"`), also inherited by subprocesses it starts.

    Usage: `def test_registry(honed_home): ...` (ask for it by name to get the path).
    """
    home = tmp_path / "home"
    monkeypatch.setenv("HONED_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_tokenizer() -> Iterator[Any]:
    """The committed tiny tokenizer (tests/assets/tiny-llama), loaded once; read only.

    Usage: `def test_render(tiny_tokenizer): render(conversation, tiny_tokenizer)`.
    """
    from honed.model.loading import load_tokenizer

    tokenizer = load_tokenizer(TINY)
    before = (tokenizer.chat_template, len(tokenizer))
    yield tokenizer
    assert (tokenizer.chat_template, len(tokenizer)) == before, (
        "a test changed the shared tiny_tokenizer; load its own with load_tokenizer(TINY)")


@pytest.fixture(scope="session")
def tiny_model() -> Iterator[Any]:
    """The committed tiny random Llama model in eval mode, loaded once; read only (gradients are fine).

    Usage: `def test_decode(tiny_model, tiny_tokenizer): generate(tiny_model, tiny_tokenizer, prompts)`.
    """
    import torch

    from honed.model.loading import load_model

    model = load_model(TINY).eval()
    weights = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    yield model
    changed = [name for name, tensor in model.state_dict().items() if not torch.equal(tensor, weights[name])]
    assert not changed, f"a test changed the shared tiny_model's weights ({changed[:3]}); deepcopy it first"


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One finished run, trained once per session: `honed train` of the tiny model on the example data
    (examples/support_triage.jsonl, 10% split off as holdout) with LoRA and `tests.helpers.FAST` (2 steps,
    batch 8, max length 256, one thread), with the report train writes. Read only: a test that evaluates,
    exports, serves or resumes a run asks for `run_copy` or makes one with `tests.helpers.copy_run`.

    Usage: `def test_show(trained_run): RunDir(trained_run).read_run()`.
    """
    root = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as patch:  # its own registry, whichever test first asks for it
        patch.setenv("HONED_HOME", str(root / "home"))
        result = cli("train", "--data", DATA, "--model", TINY, "--out", str(root / "run"), *FAST, "--json")
    assert result.exit_code == 0, result.output
    before = _files(root / "run")
    yield root / "run"
    assert _files(root / "run") == before, "a test wrote into the shared trained_run; give it a run_copy"


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` with its size and modification time: what a write would change."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def run_copy(trained_run: Path, tmp_path: Path) -> Path:
    """This test's own copy of `trained_run` at `tmp_path / "run"`, free to evaluate, export, serve or damage.

    Usage: `def test_export(run_copy): cli("export", str(run_copy), "--to", "merged")`.
    """
    return copy_run(trained_run, tmp_path / "run")
