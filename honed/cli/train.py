"""`honed train`, `honed runs list/show`, `honed curve`."""

from __future__ import annotations

import sys
from typing import Any

import typer
from rich.console import Console

from honed.cli.app import app, err_console, runs_app, user_errors


# ---- train: honed train, honed runs list, honed runs show -------------------------------------------------


@app.command("train")
@user_errors
def train_command(
    data: str = typer.Option(None, "--data", help="training data (JSONL/JSON chat, prompt-completion, alpaca, CSV, Parquet)"),
    out: str = typer.Option(..., "--out", help="run directory to create (or to continue with --resume)"),
    holdout: str = typer.Option(None, "--holdout", help="holdout data; without it a holdout is split off --data"),
    model: str = typer.Option(None, "--model", help="built-in alias (smollm2-135m), HF folder, .gguf file or hub id"),
    chat_template: str = typer.Option(None, "--chat-template", help="chat template: a family (chatml, gemma, llama3, phi3, mistral) or a .jinja file (default: the model's own, else its family's)"),
    config_file: str = typer.Option(None, "--config", help="YAML file with any config field (see docs/train.md)"),
    overrides: list[str] = typer.Option(None, "--set", help="override one field, e.g. --set lora.r=8 (repeatable)"),
    method: str = typer.Option(None, "--method", help="lora (default), full, or qlora (GPU only)"),
    epochs: str = typer.Option(None, "--epochs", help="number of epochs or 'auto' (default, depends on data size)"),
    lr: float = typer.Option(None, "--lr", help="learning rate (default: from the method and the model width, 1.3e-3 for LoRA on smollm2-135m; see docs)"),
    max_length: int = typer.Option(None, "--max-length", help="tokens per example; longer ones are truncated"),
    max_steps: int = typer.Option(None, "--max-steps", help="stop after this many optimizer steps"),
    seed: int = typer.Option(None, "--seed", help="seed of data order and initialisation"),
    merge: bool = typer.Option(False, "--merge", help="also save LoRA merged into the base weights in merged/"),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="set invalid rows aside instead of stopping"),
    resume: bool = typer.Option(False, "--resume", help="continue --out from its newest complete checkpoint"),
    force: bool = typer.Option(False, "--force", help="start a failed, stopped or killed run in --out again from scratch (clears it)"),
    discard_completed: bool = typer.Option(False, "--discard-completed", help="with --force: also delete a completed run in --out"),
    as_json: bool = typer.Option(False, "--json", help="log to stderr and print the result as JSON"),
    nproc: int = typer.Option(1, "--nproc", min=1, help="training processes on this machine (torchrun; gloo on CPU, nccl on GPUs)"),
    from_run: str = typer.Option(None, "--from-run", help="continue from this run's best weights and settings (new data in --data)"),
    mix_old: float = typer.Option(0.0, "--mix-old", min=0.0, max=10.0, help="with --from-run: also train on this share (x new examples) of the parent's data"),
    no_report: bool = typer.Option(False, "--no-report", help="do not write RUN/report.html when training ends"),
    threads: int = typer.Option(None, "--threads", min=1, help="CPU threads for torch (default: the usable cores / --nproc, see docs/train.md)"),
) -> None:
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

    console = err_console if as_json else Console(highlight=False)
    flags = {  # config fields set by flags; None = not given
        "data.train": data, "data.holdout": holdout, "model": model, "method": method,
        "chat_template": chat_template, "epochs": int(epochs) if epochs is not None and epochs.isdigit() else epochs, "lr": lr,
        "max_length": max_length, "max_steps": max_steps, "seed": seed, "merge": True if merge else None,
        "data.skip_invalid": True if skip_invalid else None, "num_threads": threads,
    }
    if resume and (config_file or overrides or any(v is not None for v in flags.values())):
        console.print("note: --resume continues with the run's saved config.yaml; the other options are ignored")
    _check_force(force=force, discard_completed=discard_completed, resume=resume)
    config = load_config(config_file, overrides=overrides or [], flags=flags, base=_parent_base(from_run, mix_old))
    _require_trackers(config.tracking)
    if nproc > 1 and not distributed.launched_by_torchrun():
        # The config was checked above, once; the same command now runs as `nproc` torchrun workers.
        raise typer.Exit(distributed.relaunch(sys.argv[1:], nproc=nproc))
    dist = distributed.Dist.from_env()
    with distributed.process_group(dist, device_setting=config.device):
        # eval_metric: the scorer (generation + task metrics) lives in honed.evaluate; train gets it injected.
        result = train(config, out=out, resume=resume, console=console, make_score_fn=score_fn_from_config,
                       force=force, discard_completed=discard_completed)
    if not dist.is_main:
        return
    _print_train_result(result, console=console, as_json=as_json, no_report=no_report)


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


@runs_app.command("list")
@user_errors
def runs_list_command(
    as_json: bool = typer.Option(False, "--json", help="print the runs as a JSON list"),
) -> None:
    """List every training run in the registry ($HONED_HOME/runs.db), newest first.

    Example: honed runs list --json
    """
    import json

    from rich.table import Table

    from honed.runs.registry import list_runs

    runs = list_runs()
    if as_json:
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


@runs_app.command("show")
@user_errors
def runs_show_command(
    run: str = typer.Argument(..., help="run name or run directory"),
    as_json: bool = typer.Option(False, "--json", help="print the run record as JSON"),
) -> None:
    """Show one run: status, model, data hashes, best metrics and the full config.

    Example: honed runs show runs/first
    """
    import json

    from honed.runs.registry import get_run

    record = get_run(run)
    if as_json:
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


@app.command("curve")
@user_errors
def curve_command(
    data: str = typer.Option(..., "--data", help="training data; nested subsets of it are trained"),
    out: str = typer.Option(..., "--out", help="folder for the runs, the subsets and curve.json"),
    fractions: str = typer.Option("0.25,0.5,1.0", "--fractions", help="increasing shares of the data, e.g. 0.25,0.5,1"),
    holdout: str = typer.Option(None, "--holdout", help="holdout data; without it one holdout is split off --data"),
    model: str = typer.Option(None, "--model", help="built-in alias (smollm2-135m), HF folder, .gguf file or hub id"),
    config_file: str = typer.Option(None, "--config", help="YAML file with any config field"),
    overrides: list[str] = typer.Option(None, "--set", help="override one field, e.g. --set lr=1e-3 (repeatable)"),
    baselines: str = typer.Option("none", "--baselines", help="baselines to evaluate at every point (default none)"),
    limit: int = typer.Option(None, "--limit", min=1, help="evaluate only the first N holdout examples"),
    resume: bool = typer.Option(False, "--resume", help="continue --out, reusing finished points"),
    as_json: bool = typer.Option(False, "--json", help="print curve.json"),
) -> None:
    """How much data do I need? Train on nested subsets and evaluate each on the same holdout.

    Example: honed curve --data examples/support_triage.jsonl --model smollm2-135m --out runs/curve --fractions 0.25,0.5,1
    """
    import json

    from honed.config import load_config
    from honed.curve import learning_curve, parse_fractions

    shares = parse_fractions(fractions)
    config = load_config(config_file, overrides=overrides or [], flags={"data.train": data, "data.holdout": holdout,
                                                                         "model": model})
    console = err_console if as_json else Console(highlight=False)

    def on_point(point: Any) -> None:
        m = point.metric
        console.print(f"{point.fraction:.0%} of the data ({point.examples} examples): {m.value:.3f} "
                      f"[{m.low:.3f}, {m.high:.3f}]", markup=False)

    curve = learning_curve(config, out=out, fractions=shares, baselines=baselines, limit=limit, resume=resume,
                           console=console, on_point=on_point)
    if as_json:
        print(json.dumps(curve.model_dump(mode="json"), indent=2))
        return
    from honed.evaluate.tables import curve_table

    Console(highlight=False).print(curve_table(curve))
    Console(highlight=False).print(curve.sentence(), markup=False, soft_wrap=True)
