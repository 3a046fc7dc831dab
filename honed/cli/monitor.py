"""`honed monitor`: drift, output health and canaries for a served run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import typer
from rich.console import Console

from honed.cli.app import app, err_console
from honed.cli.options import command
from honed.monitor.settings import MonitorSettings
from honed.options import argument, option


# ---- monitor: honed monitor ----------------------------------------------------------------------------


@dataclass(kw_only=True)
class MonitorOptions(MonitorSettings):
    """`honed monitor`: the traffic comparison's settings, or a canary replay, and how to report."""

    run_dir: str = argument("the run directory of the served model")
    canary: bool = option(False, "replay the evaluation's first examples against --endpoint")
    endpoint: str = option("http://127.0.0.1:8000/v1", "OpenAI-compatible base URL (canary)")
    endpoint_model: str | None = option(None, "model name to ask the endpoint for (default: the run's name)")
    canary_size: int = option(32, "examples the canary replays", min=2)
    strict: bool = option(False, "exit 1 when any window drifts or is degraded")
    as_json: bool = option(False, "print the report as JSON", flag="--json")


@command(app, "monitor", MonitorOptions)
def monitor_command(options: MonitorOptions) -> None:
    """Watch a served run: traffic vs training data (drift, shifts, output health), or canary replays.

    Example: honed monitor runs/demo --traffic runs/demo/requests.jsonl --window 1d --strict
    Example: honed monitor runs/demo --canary --endpoint http://127.0.0.1:8000/v1
    """
    o = options
    if o.canary:
        alarm = _monitor_canary(o.run_dir, endpoint=o.endpoint, model=o.endpoint_model, size=o.canary_size,
                                seed=o.seed, as_json=o.as_json)
    else:
        alarm = _monitor_traffic(o.run_dir, o, as_json=o.as_json)
    if o.strict and alarm:
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
