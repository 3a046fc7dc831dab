"""`honed train`, `honed runs list/show`, `honed curve`."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import typer
from rich.console import Console

from honed.cli.app import app, err_console, runs_app
from honed.cli.options import command
from honed.options import REQUIRED, argument, option


# ---- train: honed train, honed runs list, honed runs show -------------------------------------------------


@dataclass(kw_only=True)
class ConfigOptions:
    """Where a training config comes from, shared by `honed train` and `honed curve`: a YAML file, --set
    overrides and the flags below; a flag left out keeps the config's value (honed.config holds the defaults)."""

    holdout: str | None = option(None, "holdout data; without it a holdout is split off --data")
    model: str | None = option(None, "built-in alias (smollm2-135m), HF folder, .gguf file or hub id")
    config_file: str | None = option(None, "YAML file with any config field (see docs/train.md)", flag="--config")
    overrides: list[str] | None = option(None, "override one field, e.g. --set lora.r=8 (repeatable)", flag="--set")


@dataclass(kw_only=True)
class TrainOptions(ConfigOptions):
    """`honed train`: config fields given as flags (None: not given), and how this command runs."""

    data: str | None = option(None, "training data (JSONL/JSON chat, prompt-completion, alpaca, CSV, Parquet)")
    out: str = option(REQUIRED, "run directory to create (or to continue with --resume)")
    chat_template: str | None = option(None, "chat template: a family (chatml, gemma, llama3, phi3, mistral) or a "
                                       ".jinja file (default: the model's own, else its family's)")
    method: str | None = option(None, "lora (default), full, or qlora (GPU only)")
    epochs: str | None = option(None, "number of epochs or 'auto' (default, depends on data size)")
    lr: float | None = option(None, "learning rate (default: from the method and the model width, 1.3e-3 for LoRA "
                              "on smollm2-135m; see docs)")
    max_length: int | None = option(None, "tokens per example; longer ones are truncated")
    max_steps: int | None = option(None, "stop after this many optimizer steps")
    seed: int | None = option(None, "seed of data order and initialisation")
    merge: bool = option(False, "also save LoRA merged into the base weights in merged/")
    skip_invalid: bool = option(False, "set invalid rows aside instead of stopping")
    resume: bool = option(False, "continue --out from its newest complete checkpoint")
    force: bool = option(False, "start a failed, stopped or killed run in --out again from scratch (clears it)")
    discard_completed: bool = option(False, "with --force: also delete a completed run in --out")
    as_json: bool = option(False, "log to stderr and print the result as JSON", flag="--json")
    nproc: int = option(1, "training processes on this machine (torchrun; gloo on CPU, nccl on GPUs)", min=1)
    from_run: str | None = option(None, "continue from this run's best weights and settings (new data in --data)")
    mix_old: float = option(0.0, "with --from-run: also train on this share (x new examples) of the parent's data",
                            min=0.0, max=10.0)
    no_report: bool = option(False, "do not write RUN/report.html when training ends")
    threads: int | None = option(None, "CPU threads for torch (default: the usable cores / --nproc, see "
                                 "docs/train.md)", min=1)

    def config_flags(self) -> dict[str, Any]:
        """The config fields these flags set (dotted names); None: not given, the config's value stands."""
        epochs = int(self.epochs) if self.epochs is not None and self.epochs.isdigit() else self.epochs
        return {
            "data.train": self.data, "data.holdout": self.holdout, "model": self.model, "method": self.method,
            "chat_template": self.chat_template, "epochs": epochs, "lr": self.lr, "max_length": self.max_length,
            "max_steps": self.max_steps, "seed": self.seed, "merge": True if self.merge else None,
            "data.skip_invalid": True if self.skip_invalid else None, "num_threads": self.threads,
        }


@command(app, "train", TrainOptions)
def train_command(options: TrainOptions) -> None:
    """Fine-tune a model on your examples; writes a self-describing run directory.

    With --resume, the run's saved config.yaml is used and the other options are ignored.
    With --nproc N, the same command runs as N torchrun processes that split every step's examples
    (the loss curve matches one process); add --set sharding=fsdp to shard full fine-tuning (FSDP2).

    Example: honed train --data examples/support_triage.jsonl --model smollm2-135m --out runs/first --epochs 2

    Example: honed train --data train.jsonl --out runs/two --nproc 2

    Example: honed train --from-run runs/first --data reviewed.jsonl --mix-old 0.5 --out runs/first-v2

    Example: honed train --data train.jsonl --out runs/first --force   (runs/first failed: start it again)
    """
    from honed.config import load_config
    from honed.evaluate.scorer import score_fn_from_config
    from honed.train import distributed, train

    o = options
    console = err_console if o.as_json else Console(highlight=False)
    flags = o.config_flags()
    if o.resume and (o.config_file or o.overrides or any(v is not None for v in flags.values())):
        console.print("note: --resume continues with the run's saved config.yaml; the other options are ignored")
    _check_force(force=o.force, discard_completed=o.discard_completed, resume=o.resume)
    config = load_config(o.config_file, overrides=o.overrides or [], flags=flags,
                         base=_parent_base(o.from_run, o.mix_old))
    _require_trackers(config.tracking)
    if o.nproc > 1 and not distributed.launched_by_torchrun():
        # The config was checked above, once; the same command now runs as `nproc` torchrun workers.
        raise typer.Exit(distributed.relaunch(sys.argv[1:], nproc=o.nproc))
    dist = distributed.Dist.from_env()
    with distributed.process_group(dist, device_setting=config.device):
        # eval_metric: the scorer (generation + task metrics) lives in honed.evaluate; train gets it injected.
        result = train(config, out=o.out, resume=o.resume, console=console, make_score_fn=score_fn_from_config,
                       force=o.force, discard_completed=o.discard_completed)
    if not dist.is_main:
        return
    _print_train_result(result, console=console, as_json=o.as_json, no_report=o.no_report)


def _check_force(*, force: bool, discard_completed: bool, resume: bool) -> None:
    """--force starts over, --resume continues: not both; --discard-completed only confirms a --force."""
    from honed.errors import ConfigError

    if force and resume:
        raise ConfigError("--force starts the run again from scratch and --resume continues it; pass one of them")
    if discard_completed and not force:
        raise ConfigError("--discard-completed confirms that --force may delete a completed run; pass it with --force")


def _require_trackers(tracking: list[str]) -> None:
    """A tracker the config names but this machine lacks fails now, not after the training."""
    if tracking:
        from honed.report.trackers import require_installed

        require_installed(tracking)


def _parent_base(from_run: str | None, mix_old: float) -> dict[str, Any] | None:
    """--from-run: the parent's settings and weights as the base config (honed.train.from_run)."""
    from honed.errors import ConfigError
    from honed.runs.rundir import RunDir
    from honed.train.from_run import parent_config

    if from_run is None:
        if mix_old:
            raise ConfigError("--mix-old mixes in a parent run's data; use it with --from-run RUN")
        return None
    return parent_config(RunDir(from_run), mix_ratio=mix_old)


def _print_train_result(result: Any, *, console: Console, as_json: bool, no_report: bool) -> None:
    """The run's outcome: JSON for scripts, or the before/after holdout loss and where the run is."""
    import json

    summary = {
        "run_dir": str(result.run_dir),
        "status": result.status,
        "steps": result.steps,
        "best_checkpoint": result.best_checkpoint,
        "best": result.best,
        "first_eval": result.first_eval,
        "last_eval": result.last_eval,
    }
    from honed.cli.report import export_to_trackers, refresh_report

    report = None if no_report else refresh_report(result.run_dir, console=err_console if as_json else console)
    export_to_trackers(result.run_dir, stage="train", report=report, console=err_console if as_json else console)
    if as_json:
        print(json.dumps({**summary, "report": str(report) if report else None}, indent=2))
        return
    before = result.first_eval.get("holdout_loss")
    after = result.best.get("holdout_loss")
    if before is not None and after is not None:
        console.print(f"holdout loss {before:.4f} before training -> {after:.4f} at the best step ({result.best['step']})")
    console.print(f"run directory: {result.run_dir}  (next: honed eval {result.run_dir})", soft_wrap=True)


@dataclass(kw_only=True)
class RunsListOptions:
    """`honed runs list`."""

    as_json: bool = option(False, "print the runs as a JSON list", flag="--json")


@command(runs_app, "list", RunsListOptions)
def runs_list_command(options: RunsListOptions) -> None:
    """List every training run in the registry ($HONED_HOME/runs.db), newest first.

    Example: honed runs list --json
    """
    import json

    from rich.table import Table

    from honed.runs.registry import list_runs

    runs = list_runs()
    if options.as_json:
        print(json.dumps(runs, indent=2, default=str))
        return
    table = Table()
    for column in ("name", "status", "model", "method", "best holdout_loss", "started", "parent", "run_dir"):
        # the status is never cut; long paths wrap instead
        table.add_column(column, overflow="fold", no_wrap=column == "status", min_width=9 if column == "status" else None)
    names = {run["run_dir"]: run["name"] for run in runs}
    for run in runs:
        loss = run["best"].get("holdout_loss")
        status = {"stale": "stale (the process is gone)", "missing": "missing (folder deleted)"}.get(run["status"], run["status"])
        parent = names.get(run["parent"], run["parent"]) if run.get("parent") else "-"
        table.add_row(
            run["name"], status, str(run["model"]), str(run["method"]),
            f"{loss:.4f}" if isinstance(loss, (int, float)) else "-", str(run["started_at"] or "-"), parent,
            run["run_dir"],
        )
    Console(highlight=False).print(table)


@dataclass(kw_only=True)
class RunsShowOptions:
    """`honed runs show`."""

    run: str = argument("run name or run directory")
    as_json: bool = option(False, "print the run record as JSON", flag="--json")


@command(runs_app, "show", RunsShowOptions)
def runs_show_command(options: RunsShowOptions) -> None:
    """Show one run: status, model, data hashes, best metrics and the full config.

    Example: honed runs show runs/first
    """
    import json

    from honed.runs.registry import get_run

    record = get_run(options.run)
    if options.as_json:
        print(json.dumps(record, indent=2, default=str))
        return
    console = Console(highlight=False)
    for key in ("name", "status", "model", "method", "run_dir", "started_at", "finished_at", "parent"):
        console.print(f"[bold]{key}:[/] {record[key]}", soft_wrap=True)
    owner = record.get("owner")
    if owner:  # a running or killed run: who owns it and when it last said it was alive
        console.print(f"[bold]owner:[/] honed {owner.get('command')}, pid {owner.get('pid')} on host {owner.get('host')}, "
                      f"since {owner.get('since')}, last heartbeat {owner.get('heartbeat')}", soft_wrap=True)
    console.print("[bold]best:[/] " + json.dumps(record["best"]), soft_wrap=True)
    for part in ("train", "holdout"):
        entry = record["data"].get(part) or {}
        if entry:
            console.print(f"[bold]{part}:[/] {entry.get('path')} ({entry.get('count')} examples, sha256 {str(entry.get('sha256'))[:12]})", soft_wrap=True)
    console.print("[bold]config:[/]")
    console.print(json.dumps(record["config"], indent=2), markup=False)



# ---- curve: honed curve --------------------------------------------------------------------------------


@dataclass(kw_only=True)
class CurveOptions(ConfigOptions):
    """`honed curve`: the training config's sources, the shares of the data, and what each point evaluates."""

    data: str = option(REQUIRED, "training data; nested subsets of it are trained")
    out: str = option(REQUIRED, "folder for the runs, the subsets and curve.json")
    fractions: str = option("0.25,0.5,1.0", "increasing shares of the data, e.g. 0.25,0.5,1")
    baselines: str = option("none", "baselines to evaluate at every point (see honed eval --baselines)")
    limit: int | None = option(None, "evaluate only the first N holdout examples", min=1)
    resume: bool = option(False, "continue --out, reusing finished points")
    as_json: bool = option(False, "print curve.json", flag="--json")


@command(app, "curve", CurveOptions)
def curve_command(options: CurveOptions) -> None:
    """How much data do I need? Train on nested subsets and evaluate each on the same holdout.

    Example: honed curve --data examples/support_triage.jsonl --model smollm2-135m --out runs/curve --fractions 0.25,0.5,1
    """
    import json

    from honed.config import load_config
    from honed.curve import learning_curve, parse_fractions

    o = options
    shares = parse_fractions(o.fractions)
    config = load_config(o.config_file, overrides=o.overrides or [],
                         flags={"data.train": o.data, "data.holdout": o.holdout, "model": o.model})
    console = err_console if o.as_json else Console(highlight=False)

    def on_point(point: Any) -> None:
        m = point.metric
        console.print(f"{point.fraction:.0%} of the data ({point.examples} examples): {m.value:.3f} "
                      f"[{m.low:.3f}, {m.high:.3f}]", markup=False)

    curve = learning_curve(config, out=o.out, fractions=shares, baselines=o.baselines, limit=o.limit,
                           resume=o.resume, console=console, on_point=on_point)
    if o.as_json:
        print(json.dumps(curve.model_dump(mode="json"), indent=2))
        return
    from honed.evaluate.tables import curve_table

    Console(highlight=False).print(curve_table(curve))
    Console(highlight=False).print(curve.sentence(), markup=False, soft_wrap=True)
