"""The model card (README.md) every export writes: what the artifact is, what it was trained on, and how
well it did (the run's evaluation with intervals, and the artifact's own parity check).

    write_text_atomic(folder / "README.md", model_card(run, target="gguf", ...))
"""

from __future__ import annotations

from typing import Any

import yaml

from honed.runs.rundir import EvalSummary, RunDir


def _front_matter(base_name: str, target: str) -> str:
    tags = ["honed", "sft"] + (["lora"] if target == "adapter" else []) + (["gguf"] if target == "gguf" else [])
    return "---\n" + yaml.safe_dump({"base_model": base_name, "library_name": "transformers" if target != "adapter"
                                     else "peft", "tags": tags}, sort_keys=False) + "---\n"


def _data_section(run: RunDir) -> list[str]:
    data = run.read_data()
    lines = ["## Data", ""]
    for part, entry in (("train", data.train), ("holdout", data.holdout)):
        if entry is not None:
            lines.append(f"- {part}: `{entry.path}`, {entry.count} examples, sha256 `{entry.sha256}`")
    if data.split is not None:
        lines.append(f"- holdout split off `{data.split.source.path}` (fraction {data.split.holdout_fraction}, "
                     f"seed {data.split.seed})")
    return lines + ([] if len(lines) > 2 else ["- not recorded"]) + [""]


def _eval_section(summary: EvalSummary) -> list[str]:
    main = summary.main_metric
    lines = [f"## Evaluation (`honed eval`, {summary.n} holdout examples, checkpoint {summary.checkpoint})", "",
             f"| system | {main} (95% CI) |", "| --- | --- |"]
    for name, system in summary.systems.items():
        value = system.metrics[main]
        lines.append(f"| {name} | {value.value:.3f} ({value.low:.3f} to {value.high:.3f}) |")
    for name, metrics in summary.differences.items():
        d = metrics[main]
        lines.append(f"| {name} | {d.value:+.3f} ({d.low:+.3f} to {d.high:+.3f}) |")
    return lines + ["", summary.verdict, ""]


def _parity_section(parity: dict[str, Any] | None) -> list[str]:
    if parity is None:
        return ["## Parity", "", "Not checked (`--no-parity`).", ""]
    d = parity["difference"]
    lines = ["## Parity (this artifact vs the tuned model)", "",
             f"On the first {parity['n']} holdout examples ({parity['backend']}): {parity['metric']} "
             f"{parity['artifact']:.3f} for this artifact vs {parity['tuned']:.3f} for the tuned model "
             f"(difference {d['value']:+.3f}, 95% CI {d['low']:+.3f} to {d['high']:+.3f}); "
             f"{parity['identical']:.0%} of the answers identical."]
    if parity["significantly_worse"]:
        lines.append("\n**Warning: this artifact is significantly worse than the tuned model.**")
    return lines + [""]


def model_card(run: RunDir, *, target: str, checkpoint: str, base_spec: str, base_name: str, files: list[str],
               parity: dict[str, Any] | None, details: dict[str, Any]) -> str:
    """README.md for an export folder (markdown with Hugging Face front matter).

    >>> import tempfile
    >>> from honed.config import config_to_yaml, load_config
    >>> with tempfile.TemporaryDirectory() as folder:  # a run with its config.yaml, nothing evaluated yet
    ...     RunDir(folder).write_config(config_to_yaml(load_config(None)))
    ...     card = model_card(RunDir(folder), target="merged", checkpoint="best", base_spec="smollm2-135m",
    ...                       base_name="HuggingFaceTB/SmolLM2-135M-Instruct", files=["model.safetensors"],
    ...                       parity=None, details={})
    >>> print(next(line for line in card.splitlines() if line.startswith("Fine-tuned")))
    Fine-tuned with honed from `HuggingFaceTB/SmolLM2-135M-Instruct` (trained as `smollm2-135m`), method lora, checkpoint `best`.
    >>> [line for line in card.splitlines() if line.startswith("## ")]
    ['## Data', '## Evaluation', '## Parity', '## Training config']
    """
    config = run.config()
    lines = [_front_matter(base_name, target), f"# {run.name} ({target})", "",
             f"Fine-tuned with honed from `{base_name}` (trained as `{base_spec}`), method {config.method}, "
             f"checkpoint `{checkpoint}`.", "", "Files: " + ", ".join(f"`{f}`" for f in files), ""]
    lines += [f"- {key}: {value}" for key, value in details.items()] + ([""] if details else [])
    lines += _data_section(run)
    if run.has_summary():
        lines += _eval_section(run.read_summary())
    else:
        lines += ["## Evaluation", "", f"Not evaluated yet: run `honed eval {run.path}`.", ""]
    lines += _parity_section(parity)
    lines += ["## Training config", "", "```yaml", yaml.safe_dump(run.config_fields(), sort_keys=False).rstrip(), "```", ""]
    return "\n".join(lines)
