"""`honed data check`: read -> validate -> report -> print (rich tables or one JSON object).

Exit status (also in docs/data-check.md):
    0  the report was produced (findings are warnings)
    1  --strict and the report has at least one warning
    2  the data could not be checked: invalid rows (without --skip-invalid), unreadable file, bad option

Usage: `exit_status(run_check("train.jsonl", model="smollm2-135m"), strict=True)` (1 when the report has
a warning; the check loads the model's tokenizer: tests/unit/test_report.py and test_monitor_loop.py run it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from honed.data.dedup import check_threshold
from honed.data.read import ColumnMapping, ReadResult, load_or_fail
from honed.data.report import (
    Example,
    Report,
    build_report,
    no_progress,
    notice_findings,
)
from honed.data.settings import DEFAULT_MAX_LENGTH, DEFAULT_NEAR_THRESHOLD
from honed.errors import ConfigError, DataError
from honed.model.loading import DEFAULT_MODEL
from honed.model.tokenizers import model_tokenizer

EXIT_OK = 0
EXIT_WARNINGS = 1  # only with --strict
EXIT_ERRORS = 2  # raised as HonedError; the CLI turns it into this status


def run_check(
    file: str,
    *,
    holdout: str | None = None,
    model: str = DEFAULT_MODEL,
    max_length: int = DEFAULT_MAX_LENGTH,
    near_threshold: float = DEFAULT_NEAR_THRESHOLD,
    fmt: str = "auto",
    columns: ColumnMapping | None = None,
    skip_invalid: bool = False,
    progress: Callable[[str, int], Callable[[int], None]] = no_progress,
    chat_template: str | None = None,
) -> Report:
    """Read and validate `file` (and `holdout`), then measure everything in the report.

    Invalid rows raise DataError listing them (exit 2) unless `skip_invalid`, which leaves them out,
    writes them to `<file>.invalid.jsonl` and counts them in the report. Data the model could not learn
    from raises DataError too (see `require_learnable`). `chat_template`: --chat-template.
    """
    if max_length < 1:
        raise ConfigError(f"--max-length must be at least 1 (got {max_length})")
    check_threshold(near_threshold)
    files = [file] if holdout is None else [file, holdout]
    advance = progress("reading and loading the tokenizer", len(files) + 1)
    train = load_or_fail(file, fmt=fmt, columns=columns, skip_invalid=skip_invalid)
    advance(1)
    held: ReadResult | None = None
    if holdout is not None:
        held = load_or_fail(holdout, fmt=fmt, columns=columns, skip_invalid=skip_invalid)
        advance(1)
    tokenizer, template = model_tokenizer(model, chat_template=chat_template)
    advance(1)
    report = build_report(
        train.conversations,
        tokenizer=tokenizer,
        file=file,
        format=train.format,
        model=model,
        max_length=max_length,
        near_threshold=near_threshold,
        holdout=held.conversations if held is not None else None,
        holdout_file=holdout or "",
        skipped_invalid=len(train.bad_rows) + (len(held.bad_rows) if held is not None else 0),
        invalid_files=[str(r.invalid_path) for r in (train, held) if r is not None and r.invalid_path],
        progress=progress,
        template=template,
    )
    require_learnable(report)
    report.warnings += notice_findings(train.notices + (held.notices if held is not None else []))
    return report


def require_learnable(report: Report) -> None:
    """Refuse data from which the model could learn nothing, or never learn to stop (exit 2).

    An empty assistant mask (no supervised token in any example) trains nothing; supervised tokens of
    which none is the template's end of turn teach answers that never end (a template or data that leaves
    the marker out of the trained turn).
    """
    t, used = report.tokens, report.chat_template
    template = f"{used.name} chat template" if used is not None else "chat template"
    if report.examples and t.supervised == 0:
        raise DataError(
            f"{report.file}: no example has a supervised token: the assistant mask is empty with the {template} "
            f"of {report.model}, so training would learn nothing; every example needs an assistant turn with "
            "weight != 0 (prompt/completion data: a non-empty completion), or pass --chat-template")
    trained = report.examples - t.no_supervised
    if used is not None and trained and t.end_of_turn_untrained == trained:
        raise DataError(
            f"{report.file}: the end of turn {used.end_of_turn!r} of the {template} is in no example's trained "
            f"tokens, so the model could never learn to stop; pass --chat-template with a template that writes "
            "it inside the assistant turn (`honed models` lists the families)")


def exit_status(report: Report, *, strict: bool) -> int:
    """0, or 1 when `strict` and the report has any warning."""
    return EXIT_WARNINGS if strict and report.warnings else EXIT_OK


class RichProgress:
    """Progress bars on stderr for the slow passes (tokenizing, duplicates); silent when not a terminal."""

    def __init__(self, console: Console) -> None:
        self.bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )

    def __enter__(self) -> RichProgress:
        self.bars.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.__exit__(*exc)

    def __call__(self, name: str, total: int) -> Callable[[int], None]:
        task = self.bars.add_task(name, total=total)
        return lambda n: self.bars.advance(task, n)


# ---------------------------------------------------------------- terminal output


def _n(value: int) -> str:
    return f"{value:,}"


def _pct(share: float) -> str:
    return f"{share:.1%}"


def _examples_table(title: str, groups: list[list[Example]]) -> Table:
    table = Table(title=title, title_justify="left", show_header=False, box=None, padding=(0, 1))
    table.add_column("where", style="cyan", no_wrap=True)
    table.add_column("text", overflow="fold")
    for number, group in enumerate(groups):
        if number:
            table.add_row("", "")
        for example in group:
            # Text, not str: user data like "[/INST]" must print as it is, not be parsed as rich markup
            table.add_row(Text(example.source), Text(example.text))
    return table


def _summary_table(report: Report) -> Table:
    t = report.tokens
    table = Table(title=Text(f"{report.file}  ({report.format}, {report.model})"), title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("examples", _n(report.examples)),
        ("messages (turns)", _n(report.messages)),
        ("invalid rows skipped", _n(report.skipped_invalid)),
        ("tokens, total", _n(t.total)),
        ("supervised tokens", f"{_n(t.supervised)} ({_pct(t.supervised_share)})"),
        ("length p50 / p95 / max", f"{t.length.p50:g} / {t.length.p95:g} / {_n(t.length.max)}"),
        (f"longer than --max-length {t.max_length}", _n(t.truncated)),
        ("lose every supervised token", _n(t.all_supervised_lost)),
        ("no supervised token at all", _n(t.no_supervised)),
        ("tokens per epoch (after truncation)", _n(t.per_epoch)),
        ("supervised tokens per epoch", _n(t.supervised_per_epoch)),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def _duplicates_table(report: Report) -> Table:
    d, c = report.duplicates, report.conflicts
    title = "duplicates and conflicts (a repeated row is one whose key appeared on an earlier row)"
    table = Table(title=title, title_justify="left")
    table.add_column("finding")
    table.add_column("rows", justify="right")
    table.add_row("repeated whole conversations (exact duplicates)", _n(d.exact))
    table.add_row("repeated prompts", _n(d.repeated_prompts))
    table.add_row("repeated (prompt, response) pairs", _n(d.repeated_pairs))
    near = f"{_n(d.near_clusters)} / {_n(d.near_rows)}"
    table.add_row(f"near-duplicate clusters (>= {d.near_threshold}) / rows in them", near)
    table.add_row("prompts with conflicting responses / rows", f"{_n(c.prompts)} / {_n(c.rows)}")
    table.add_row("  the same, lower-cased and trimmed", _n(c.prompts_normalized))
    table.add_row("refusal-like responses", f"{_n(report.refusals.count)} ({_pct(report.refusals.share)})")
    common = report.most_common_response
    if common is not None:
        table.add_row(Text(f"most common response: {common.text[:40]}"), f"{_n(common.count)} ({_pct(common.share)})")
        held = "" if common.holdout_exact_match is None else f" (holdout {common.holdout_exact_match:.2f})"
        table.add_row("  exact match of always answering it", f"{common.share:.2f}{held}")
    return table


def _leakage_table(report: Report) -> Table:
    leak = report.leakage
    assert leak is not None
    title = f"holdout leakage: {leak.file} ({_n(leak.holdout_examples)} examples)"
    table = Table(title=Text(title), title_justify="left")
    table.add_column("holdout rows whose prompt is in train")
    table.add_column("rows", justify="right")
    table.add_row(f"exact ({_n(leak.exact_distinct)} distinct prompts)", _n(leak.exact))
    table.add_row("after lower-casing and trimming (includes exact)", _n(leak.normalized))
    table.add_row(f"near duplicates only (>= {leak.near_threshold})", _n(leak.near))
    return table


def _labels_table(report: Report) -> Table:
    labels = report.labels
    assert labels is not None
    title = f"labels: {labels.distinct} distinct, largest/smallest = {labels.imbalance_ratio}"
    table = Table(title=title, title_justify="left")
    table.add_column("largest classes")
    table.add_column("n", justify="right")
    table.add_column("smallest classes")
    table.add_column("n", justify="right")
    largest = labels.top[:5]
    for k in range(max(len(largest), len(labels.smallest))):
        cells: list[str | Text] = []
        for side in (largest, labels.smallest):
            cells += [Text(side[k].label), _n(side[k].count)] if k < len(side) else ["", ""]
        table.add_row(*cells)
    return table


def _print_template(console: Console, report: Report) -> None:
    used = report.chat_template
    if used is None:
        return
    console.print(Text(f"chat template: {used.name} (end of turn {used.end_of_turn!r}): {used.reason}"), soft_wrap=True)
    if used.system_folded:
        console.print(Text(f"notice: {used.system_folded} examples have a system turn; the {used.name} template has "
                           "no system role, so it is folded into the first user turn, as the family's own template "
                           "does"), soft_wrap=True)


def print_report(console: Console, report: Report) -> None:
    """The report as rich tables, then the warnings (what to fix) and where the evidence is."""
    _print_template(console, report)
    console.print(_summary_table(report))
    console.print(_duplicates_table(report))
    if report.labels is not None:
        console.print(_labels_table(report))
    if report.leakage is not None:
        console.print(_leakage_table(report))
    d = report.duplicates
    sections = [
        ("exact duplicates", d.exact_examples),
        ("near duplicates", d.near_examples),
        ("conflicting responses", report.conflicts.examples),
        ("refusal-like responses", [[e] for e in report.refusals.examples]),
    ]
    if report.leakage is not None:
        sections += [("leaked holdout prompts (holdout, train)", report.leakage.examples),
                     ("near-leaked holdout prompts (holdout, train)", report.leakage.near_examples)]
    for title, groups in sections:
        if groups:
            console.print(_examples_table(f"examples: {title}", groups))
    if not report.warnings:
        console.print("[green]no warnings[/]")
    for warning in report.warnings:
        console.print(f"[yellow]warning[/] [bold]{warning.code}[/]: {escape(warning.message)}", soft_wrap=True)
    for path in report.invalid_files:
        console.print(f"invalid rows written to {Path(path)}", soft_wrap=True, markup=False)
