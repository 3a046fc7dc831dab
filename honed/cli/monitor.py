"""`honed monitor`: drift, output health and canaries for a served run."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console

from honed.cli.app import app, err_console, user_errors


# ---- monitor: honed monitor ----------------------------------------------------------------------------


@app.command("monitor")
@user_errors
def monitor_command(
    run_dir: str = typer.Argument(..., help="the run directory of the served model"),
    traffic: str = typer.Option(None, "--traffic", help="request log of `honed serve` (RUN/requests.jsonl) or any data file"),
    window: str = typer.Option("auto", "--window", help="auto, all, a duration (30m, 6h, 1d, 1w) or a request count (200)"),
    alpha: float = typer.Option(0.01, "--alpha", min=1e-6, max=0.5, help="drift test level: a window drifts when p < alpha"),
    permutations: int = typer.Option(200, "--permutations", min=20, help="permutations of the drift test"),
    max_reference: int = typer.Option(1000, "--max-reference", min=10, help="training prompts sampled as the reference"),
    embed_model: str = typer.Option(None, "--embed-model", help="model that embeds prompts (default: the run's tuned model)"),
    schema: str = typer.Option(None, "--schema", help="JSON schema the outputs must match (JSON tasks)"),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best, final, last or checkpoints/step-N"),
    canary: bool = typer.Option(False, "--canary", help="replay the evaluation's first examples against --endpoint"),
    endpoint: str = typer.Option("http://127.0.0.1:8000/v1", "--endpoint", help="OpenAI-compatible base URL (canary)"),
    endpoint_model: str = typer.Option(None, "--endpoint-model", help="model name to ask the endpoint for (default: the run's name)"),
    canary_size: int = typer.Option(32, "--canary-size", min=2, help="examples the canary replays"),
    seed: int = typer.Option(0, "--seed", help="seed of the reference sample, the permutations and the bootstrap"),
    strict: bool = typer.Option(False, "--strict", help="exit 1 when any window drifts or is degraded"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Watch a served run: traffic vs training data (drift, shifts, output health), or canary replays.

    Example: honed monitor runs/demo --traffic runs/demo/requests.jsonl --window 1d --strict
    Example: honed monitor runs/demo --canary --endpoint http://127.0.0.1:8000/v1
    """
    from honed.errors import ConfigError
    from honed.monitor.watch import MonitorSettings, parse_window

    if canary:
        alarm = _monitor_canary(run_dir, endpoint=endpoint, model=endpoint_model, size=canary_size, seed=seed,
                                as_json=as_json)
    else:
        if traffic is None:
            raise ConfigError("pass --traffic LOG (the request log or a data file), or --canary to replay examples")
        parse_window(window)  # a bad --window fails before any model loads
        settings = MonitorSettings(
            traffic=traffic, window=window, alpha=alpha, permutations=permutations, max_reference=max_reference,
            embed_model=embed_model, checkpoint=checkpoint, seed=seed,
            schema=_read_schema_option(schema) if schema else None,
        )
        alarm = _monitor_traffic(run_dir, settings, as_json=as_json)
    if strict and alarm:
        raise typer.Exit(1)


def _monitor_traffic(run_dir: str, settings: Any, *, as_json: bool) -> bool:
    import json

    from honed.cli.progress import PassProgress
    from honed.monitor.watch import monitor_run

    with PassProgress(err_console) as on_progress:
        report = monitor_run(run_dir, settings, on_progress=on_progress)
    if as_json:
        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        _print_monitor(report)
    return report.alarm


def _monitor_canary(run_dir: str, *, endpoint: str, model: str | None, size: int, seed: int, as_json: bool) -> bool:
    import json

    from honed.cli.progress import PassProgress
    from honed.monitor.canary import run_canary
    from honed.monitor.watch import progress_counter

    with PassProgress(err_console) as on_progress:
        result = run_canary(run_dir, endpoint=endpoint, model=model, size=size, seed=seed,
                            progress=progress_counter(on_progress, "canary", size))
    if as_json:
        print(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
        return result.status != "ok"
    d = result.difference
    Console(highlight=False).print(
        f"canary: {result.status.upper()}  {result.metric} {result.served:.3f} served by {result.endpoint} "
        f"({result.model}) vs {result.evaluated:.3f} at eval on the same {result.size} examples: "
        f"{d['value']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]; identical outputs {result.identical:.0%}",
        markup=False, soft_wrap=True)
    return result.status != "ok"
def _read_schema_option(path: str) -> dict[str, Any]:
    from honed.evaluate.run_eval import read_schema

    return read_schema(path)


def _print_monitor(report: Any) -> None:
    console = Console(highlight=False)
    console.print(f"reference: {report.reference} training prompts; embeddings: {report.embedder}", markup=False)
    for w in report.windows:
        drift = (f"unlike training {w.drift['novel_share']:.0%} (training {w.drift['novel_expected']:.0%}), "
                 f"MMD p {w.drift['p_value']:.4f}") if w.drift else "no drift test"
        shifts = w.shifts or {}
        console.print(f"{w.name}: {w.status.upper()}  {w.count} requests, {drift}, unseen words "
                      f"{shifts.get('oov_share', 0):.1%} (training {shifts.get('train_oov_share', 0):.1%}), "
                      f"median length {shifts.get('length_median')} words (training {shifts.get('train_length_median')})",
                      markup=False, soft_wrap=True)
        for reason in w.reasons:
            console.print(f"  - {reason}", markup=False, soft_wrap=True)
        if w.status == "drift":
            for ex in w.least_like[:3]:
                console.print(f"  least like training: {ex['where']} (similarity {ex['similarity']:.2f}): "
                              f"{ex['prompt'][:100]}", markup=False, soft_wrap=True)
