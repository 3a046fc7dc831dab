"""`honed data ...`: check, split, show, and turning served traffic into reviewed training data."""

from __future__ import annotations

from dataclasses import dataclass

import typer
from rich.console import Console

from honed.cli.app import data_app, err_console
from honed.cli.options import command
from honed.data.settings import CheckOptions, ShowOptions, SplitOptions
from honed.monitor.settings import FromTrafficSettings
from honed.options import argument, option


# ---- data: honed data check, split, show ---------------------------------------------------------------


@command(data_app, "check", CheckOptions)
def data_check_command(options: CheckOptions) -> None:
    """Report on training data before training: tokens, truncation, duplicates, conflicts, labels, leakage.

    Exit status: 0 report produced, 1 warnings with --strict, 2 invalid data or options.

    Example: honed data check train.jsonl --holdout test.jsonl --model smollm2-135m --max-length 1024
    """
    import json

    from honed.data.check import RichProgress, exit_status, print_report, run_check

    o = options
    with RichProgress(err_console) as progress:
        report = run_check(
            o.file, holdout=o.holdout, model=o.model, max_length=o.max_length, near_threshold=o.near_threshold,
            fmt=o.fmt, columns=o.columns(), skip_invalid=o.skip_invalid, progress=progress,
            chat_template=o.chat_template,
        )
    if o.as_json:
        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        print_report(Console(highlight=False), report)
    raise typer.Exit(exit_status(report, strict=o.strict))


@command(data_app, "split", SplitOptions)
def data_split_command(options: SplitOptions) -> None:
    """Split a data file into train and holdout, deterministically and without leaks.

    Near and exact duplicates stay on one side; classification-like data is stratified by label.

    Example: honed data split examples/support_triage.jsonl --holdout-fraction 0.2 --seed 0 --out data/split
    """
    import json

    from honed.data.split import split_file

    o = options
    with err_console.status("splitting (clustering near duplicates)...", spinner="dots"):
        manifest = split_file(
            o.file, out=o.out, holdout_fraction=o.holdout_fraction, seed=o.seed, near_threshold=o.near_threshold,
            fmt=o.fmt, columns=o.columns(), force=o.force, skip_invalid=o.skip_invalid, strict=o.strict,
        )
    if o.as_json:
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
    console.print(f"wrote {o.out}/train.jsonl, {o.out}/holdout.jsonl, {o.out}/manifest.json", soft_wrap=True)
    for notice in manifest["notices"]:
        err_console.print(f"warning: {notice}", soft_wrap=True, markup=False)
    if manifest["skipped_invalid"]:
        from honed.data.read import invalid_path_for

        console.print(f"skipped {manifest['skipped_invalid']} invalid rows (written to {invalid_path_for(o.file)})",
                      soft_wrap=True, markup=False)


@command(data_app, "show", ShowOptions)
def data_show_command(options: ShowOptions) -> None:
    """Show examples through the model's chat template, marking the tokens training learns from.

    Supervised tokens (the loss is computed on them) are bold green, masked tokens dim.

    Example: honed data show examples/support_triage.jsonl --model smollm2-135m -n 3
    """
    import json

    from honed.data.read import load_or_fail
    from honed.data.show import preview, print_preview
    from honed.model.tokenizers import model_tokenizer

    o = options
    conversations = load_or_fail(o.file, fmt=o.fmt, columns=o.columns(), skip_invalid=o.skip_invalid, strict=o.strict)
    for notice in conversations.notices:
        err_console.print(f"warning: {notice}", soft_wrap=True, markup=False)
    tokenizer, choice = model_tokenizer(o.model, chat_template=o.chat_template)
    views = preview(conversations.conversations, tokenizer, n=o.n, max_length=o.max_length)
    if o.as_json:
        used = {"name": choice.name, "end_of_turn": choice.end_of_turn, "reason": choice.reason}
        payload = {"model": o.model, "chat_template": used, "default_chat_template": choice.name != "model",
                   "examples": [v.to_json() for v in views]}
        print(json.dumps(payload, ensure_ascii=False))
        return
    line = f"chat template: {choice.name} (end of turn {choice.end_of_turn!r}): {choice.reason}"
    print_preview(Console(highlight=False), views, template=line)



@command(data_app, "from-traffic", FromTrafficSettings)
def data_from_traffic_command(settings: FromTrafficSettings) -> None:
    """Turn logged requests into draft training examples for review (deduplicated against training data).

    Example: honed data from-traffic runs/demo/requests.jsonl --out new.jsonl --uncertain 50
    """
    from honed.monitor.from_traffic import traffic_to_data

    result = traffic_to_data(settings)
    Console(highlight=False).print(
        f"{result.read} requests read; {result.left_out} left out (/v1/completions or tool-calling requests), "
        f"{result.duplicates} repeated a prompt, {result.in_training} already in the "
        f"run's training or holdout data; {result.written} drafts ({result.drafted_by}) written to {result.out}\n"
        f"next: honed data review {result.out}", markup=False, soft_wrap=True)


@dataclass(kw_only=True)
class ReviewOptions:
    """`honed data review`."""

    drafts: str = argument("drafts file written by `honed data from-traffic`")
    out: str | None = option(None, "reviewed examples (default: <drafts>.reviewed.jsonl)")


@command(data_app, "review", ReviewOptions)
def data_review_command(options: ReviewOptions) -> None:
    """Accept, edit ($EDITOR) or reject each draft; every decision is saved at once.

    Example: honed data review new.jsonl --out reviewed.jsonl
    """
    from honed.monitor.review import review_file, terminal_decider

    console = Console(highlight=False)
    result = review_file(options.drafts, out=options.out, decide=terminal_decider(console))
    console.print(f"{result.accepted} accepted, {result.edited} edited, {result.rejected} rejected, "
                  f"{result.left} left to review; training data in {result.out}", markup=False, soft_wrap=True)
