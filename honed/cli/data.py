"""`honed data ...`: check, split, show, and turning served traffic into reviewed training data."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console

from honed.cli.app import data_app, err_console, user_errors


# ---- data: honed data check, split, show ---------------------------------------------------------------


def _column_mapping(
    prompt_col: str | None, response_col: str | None, system: str | None, system_col: str | None = None
) -> Any:
    """A ColumnMapping from --prompt-col/--response-col/--system/--system-col, or None when no column is named."""
    from honed.data.read import ColumnMapping
    from honed.errors import ConfigError

    if prompt_col is None and response_col is None:
        for flag, value in (("--system", system), ("--system-col", system_col)):
            if value is not None:
                raise ConfigError(f"{flag} applies to column data; pass it with --prompt-col and --response-col")
        return None
    if prompt_col is None or response_col is None:
        raise ConfigError("--prompt-col and --response-col go together; pass both column names")
    return ColumnMapping(prompt_col, response_col, system=system, system_col=system_col)


DATA_HELP = "data: a file, a folder of shards, a glob or a save_to_disk folder (formats: docs/data.md)"
FORMAT_HELP = "auto, chat, sharegpt, prompt-completion, alpaca, text, csv, parquet, arrow"
SYSTEM_COL_HELP = "column holding each row's system prompt (an empty cell falls back to --system)"

# How to read a data file: the same options on check, split and show (each command sets the default).
FormatOption = Annotated[str, typer.Option("--format", help=FORMAT_HELP)]
PromptColOption = Annotated[str | None, typer.Option("--prompt-col", help="column holding the prompt (CSV/Parquet/JSON)")]
ResponseColOption = Annotated[str | None, typer.Option("--response-col", help="column holding the response")]
SystemOption = Annotated[str | None, typer.Option("--system", help="system prompt added to column data")]
SystemColOption = Annotated[str | None, typer.Option("--system-col", help=SYSTEM_COL_HELP)]
SkipInvalidOption = Annotated[bool, typer.Option(
    "--skip-invalid", help="leave invalid rows out (written to FILE.invalid.jsonl) instead of failing")]
ChatTemplateOption = Annotated[str | None, typer.Option(
    "--chat-template", help="a family name (gemma, llama3, phi3, mistral, chatml) or a .jinja file; default: the "
    "model's own, else its family's (`honed models`)")]
NearThresholdOption = Annotated[float, typer.Option(
    "--near-threshold", help="MinHash Jaccard similarity at which two examples count as near duplicates")]


@data_app.command("check")
@user_errors
def data_check_command(
    file: str = typer.Argument(..., help=DATA_HELP),
    holdout: str = typer.Option(None, "--holdout", help="holdout file to check for leakage from the training data"),
    model: str = typer.Option("smollm2-135m", "--model", help="model whose tokenizer and chat template count tokens"),
    chat_template: ChatTemplateOption = None,
    max_length: int = typer.Option(2048, "--max-length", min=1, help="training sequence length: truncation counts"),
    near_threshold: NearThresholdOption = 0.85,
    fmt: FormatOption = "auto",
    prompt_col: PromptColOption = None,
    response_col: ResponseColOption = None,
    system: SystemOption = None,
    system_col: SystemColOption = None,
    skip_invalid: SkipInvalidOption = False,
    strict: bool = typer.Option(
        False, "--strict", help="exit 1 when the report has any warning (content not trained on included)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the report as one JSON object (docs/data-check.md)"),
) -> None:
    """Report on training data before training: tokens, truncation, duplicates, conflicts, labels, leakage.

    Exit status: 0 report produced, 1 warnings with --strict, 2 invalid data or options.

    Example: honed data check train.jsonl --holdout test.jsonl --model smollm2-135m --max-length 1024
    """
    import json

    from honed.data.check import RichProgress, exit_status, print_report, run_check

    with RichProgress(err_console) as progress:
        report = run_check(
            file, holdout=holdout, model=model, max_length=max_length, near_threshold=near_threshold, fmt=fmt,
            columns=_column_mapping(prompt_col, response_col, system, system_col), skip_invalid=skip_invalid, progress=progress,
            chat_template=chat_template,
        )
    if as_json:
        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        print_report(Console(highlight=False), report)
    raise typer.Exit(exit_status(report, strict=strict))


@data_app.command("split")
@user_errors
def data_split_command(
    file: str = typer.Argument(..., help=DATA_HELP),
    out: str = typer.Option(..., "--out", help="folder to create with train.jsonl, holdout.jsonl, manifest.json"),
    holdout_fraction: float = typer.Option(0.1, "--holdout-fraction", help="share of examples held out, in (0, 1)"),
    seed: int = typer.Option(0, "--seed", help="same file and seed give byte-identical outputs"),
    near_threshold: NearThresholdOption = 0.85,
    fmt: FormatOption = "auto",
    prompt_col: PromptColOption = None,
    response_col: ResponseColOption = None,
    system: SystemOption = None,
    system_col: SystemColOption = None,
    force: bool = typer.Option(False, "--force", help="replace --out if it exists and is not empty"),
    skip_invalid: SkipInvalidOption = False,
    strict: bool = typer.Option(False, "--strict", help="refuse data holding content not trained on (images, <image>)"),
    as_json: bool = typer.Option(False, "--json", help="print the manifest as JSON"),
) -> None:
    """Split a data file into train and holdout, deterministically and without leaks.

    Near and exact duplicates stay on one side; classification-like data is stratified by label.

    Example: honed data split examples/support_triage.jsonl --holdout-fraction 0.2 --seed 0 --out data/split
    """
    import json

    from honed.data.split import split_file

    columns = _column_mapping(prompt_col, response_col, system, system_col)
    with err_console.status("splitting (clustering near duplicates)...", spinner="dots"):
        manifest = split_file(
            file, out=out, holdout_fraction=holdout_fraction, seed=seed, near_threshold=near_threshold,
            fmt=fmt, columns=columns, force=force, skip_invalid=skip_invalid, strict=strict,
        )
    if as_json:
        print(json.dumps(manifest, indent=2, ensure_ascii=False))
        return
    counts = manifest["counts"]
    grouped = counts["input"] - manifest["clusters"]
    console = Console(highlight=False, markup=False)  # paths and column names are shown as they are
    console.print(f"{counts['input']} examples ({manifest['format']}) -> {counts['train']} train, "
                  f"{counts['holdout']} holdout ({counts['holdout'] / counts['input']:.1%})", soft_wrap=True)
    console.print(f"{manifest['clusters']} clusters: {grouped} examples joined a near or exact duplicate "
                  "and stayed on its side", soft_wrap=True)
    strata = f"stratified by {manifest['labels']} labels" if manifest["stratified"] else "not stratified (no labels)"
    console.print(strata)
    console.print(f"wrote {out}/train.jsonl, {out}/holdout.jsonl, {out}/manifest.json", soft_wrap=True)
    for notice in manifest["notices"]:
        err_console.print(f"warning: {notice}", soft_wrap=True, markup=False)
    if manifest["skipped_invalid"]:
        from honed.data.read import invalid_path_for

        console.print(f"skipped {manifest['skipped_invalid']} invalid rows (written to {invalid_path_for(file)})",
                      soft_wrap=True, markup=False)


@data_app.command("show")
@user_errors
def data_show_command(
    file: str = typer.Argument(..., help=DATA_HELP),
    model: str = typer.Option("smollm2-135m", "--model", help="model whose tokenizer and chat template to use"),
    chat_template: ChatTemplateOption = None,
    n: int = typer.Option(3, "-n", "--num", min=1, help="how many examples to show (from the top)"),
    max_length: int = typer.Option(None, "--max-length", min=1, help="truncate as training would"),
    fmt: FormatOption = "auto",
    prompt_col: PromptColOption = None,
    response_col: ResponseColOption = None,
    system: SystemOption = None,
    system_col: SystemColOption = None,
    skip_invalid: SkipInvalidOption = False,
    strict: bool = typer.Option(False, "--strict", help="refuse data holding content not trained on (images, <image>)"),
    as_json: bool = typer.Option(False, "--json", help="print every token (text, id, supervised) as JSON"),
) -> None:
    """Show examples through the model's chat template, marking the tokens training learns from.

    Supervised tokens (the loss is computed on them) are bold green, masked tokens dim.

    Example: honed data show examples/support_triage.jsonl --model smollm2-135m -n 3
    """
    import json

    from honed.data.read import load_or_fail
    from honed.data.show import preview, print_preview
    from honed.model.tokenizers import model_tokenizer

    columns = _column_mapping(prompt_col, response_col, system, system_col)
    conversations = load_or_fail(file, fmt=fmt, columns=columns, skip_invalid=skip_invalid, strict=strict)
    for notice in conversations.notices:
        err_console.print(f"warning: {notice}", soft_wrap=True, markup=False)
    tokenizer, choice = model_tokenizer(model, chat_template=chat_template)
    views = preview(conversations.conversations, tokenizer, n=n, max_length=max_length)
    if as_json:
        used = {"name": choice.name, "end_of_turn": choice.end_of_turn, "reason": choice.reason}
        payload = {"model": model, "chat_template": used, "default_chat_template": choice.name != "model",
                   "examples": [v.to_json() for v in views]}
        print(json.dumps(payload, ensure_ascii=False))
        return
    line = f"chat template: {choice.name} (end of turn {choice.end_of_turn!r}): {choice.reason}"
    print_preview(Console(highlight=False), views, template=line)



@data_app.command("from-traffic")
@user_errors
def data_from_traffic_command(
    log: str = typer.Argument(..., help="the request log of `honed serve` (RUN/requests.jsonl)"),
    out: str = typer.Option(..., "--out", help="drafts file to write (chat JSONL)"),
    run: str = typer.Option(None, "--run", help="dedupe against this run's training data (default: the run the log names)"),
    since: str = typer.Option(None, "--since", help="only requests at or after this ISO date/time"),
    uncertain: int = typer.Option(None, "--uncertain", min=1, help="keep the N requests the model was least sure of"),
    draft_with: str = typer.Option(None, "--draft-with", help="endpoint:URL[#model]: a teacher model drafts the answers"),
    force: bool = typer.Option(False, "--force", help="replace --out if it exists"),
) -> None:
    """Turn logged requests into draft training examples for review (deduplicated against training data).

    Example: honed data from-traffic runs/demo/requests.jsonl --out new.jsonl --uncertain 50
    """
    from honed.monitor.from_traffic import FromTrafficSettings, traffic_to_data

    result = traffic_to_data(FromTrafficSettings(log=log, out=out, run=run, since=since, uncertain=uncertain,
                                                 draft_with=draft_with, force=force))
    Console(highlight=False).print(
        f"{result.read} requests read; {result.left_out} left out (/v1/completions or tool-calling requests), "
        f"{result.duplicates} repeated a prompt, {result.in_training} already in the "
        f"run's training or holdout data; {result.written} drafts ({result.drafted_by}) written to {result.out}\n"
        f"next: honed data review {result.out}", markup=False, soft_wrap=True)


@data_app.command("review")
@user_errors
def data_review_command(
    drafts: str = typer.Argument(..., help="drafts file written by `honed data from-traffic`"),
    out: str = typer.Option(None, "--out", help="reviewed examples (default: <drafts>.reviewed.jsonl)"),
) -> None:
    """Accept, edit ($EDITOR) or reject each draft; every decision is saved at once.

    Example: honed data review new.jsonl --out reviewed.jsonl
    """
    from honed.monitor.review import review_file, terminal_decider

    console = Console(highlight=False)
    result = review_file(drafts, out=out, decide=terminal_decider(console))
    console.print(f"{result.accepted} accepted, {result.edited} edited, {result.rejected} rejected, "
                  f"{result.left} left to review; training data in {result.out}", markup=False, soft_wrap=True)
