"""The options of `honed data check / split / show`: typed objects whose fields build the commands' flags.

The defaults the data stage's functions share live here too (a light module: the CLI imports it at start).

>>> ReadOptions(file="tickets.csv", prompt_col="q", response_col="a").columns()
ColumnMapping(prompt_col='q', response_col='a', system=None, system_col=None)
>>> ReadOptions(file="train.jsonl").columns() is None
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from honed.model.builtins import DEFAULT_MODEL
from honed.options import REQUIRED, argument, option

DEFAULT_NEAR_THRESHOLD = 0.85  # MinHash Jaccard similarity at which two examples are near duplicates
DEFAULT_MAX_LENGTH = 2048  # training sequence length `honed data check` counts truncation against


@dataclass(kw_only=True)
class ReadOptions:
    """How to read a data file: the same flags on check, split and show."""

    file: str = argument("data: a file, a folder of shards, a glob or a save_to_disk folder (formats: docs/data.md)")
    fmt: str = option("auto", "auto, chat, sharegpt, prompt-completion, alpaca, text, csv, parquet, arrow",
                      flag="--format")
    prompt_col: str | None = option(None, "column holding the prompt (CSV/Parquet/JSON)")
    response_col: str | None = option(None, "column holding the response")
    system: str | None = option(None, "system prompt added to column data")
    system_col: str | None = option(None, "column holding each row's system prompt (an empty cell falls back to --system)")
    skip_invalid: bool = option(False, "leave invalid rows out (written to FILE.invalid.jsonl) instead of failing")

    def columns(self) -> Any:
        """A ColumnMapping from --prompt-col/--response-col/--system/--system-col, or None when no column is named."""
        from honed.data.read import ColumnMapping
        from honed.errors import ConfigError

        if self.prompt_col is None and self.response_col is None:
            for flag, value in (("--system", self.system), ("--system-col", self.system_col)):
                if value is not None:
                    raise ConfigError(f"{flag} applies to column data; pass it with --prompt-col and --response-col")
            return None
        if self.prompt_col is None or self.response_col is None:
            raise ConfigError("--prompt-col and --response-col go together; pass both column names")
        return ColumnMapping(self.prompt_col, self.response_col, system=self.system, system_col=self.system_col)


CHAT_TEMPLATE_HELP = ("a family name (gemma, llama3, phi3, mistral, chatml) or a .jinja file; default: the model's own, "
                      "else its family's (`honed models`)")
NEAR_HELP = "MinHash Jaccard similarity at which two examples count as near duplicates"
STRICT_HELP = "refuse data holding content not trained on (images, <image>)"


@dataclass(kw_only=True)
class CheckOptions(ReadOptions):
    """`honed data check`."""

    holdout: str | None = option(None, "holdout file to check for leakage from the training data")
    model: str = option(DEFAULT_MODEL, "model whose tokenizer and chat template count tokens")
    chat_template: str | None = option(None, CHAT_TEMPLATE_HELP)
    max_length: int = option(DEFAULT_MAX_LENGTH, "training sequence length: truncation counts", min=1)
    near_threshold: float = option(DEFAULT_NEAR_THRESHOLD, NEAR_HELP)
    strict: bool = option(False, "exit 1 when the report has any warning (content not trained on included)")
    as_json: bool = option(False, "print the report as one JSON object (docs/data-check.md)", flag="--json")


@dataclass(kw_only=True)
class SplitOptions(ReadOptions):
    """`honed data split`."""

    out: str = option(REQUIRED, "folder to create with train.jsonl, holdout.jsonl, manifest.json")
    holdout_fraction: float = option(0.1, "share of examples held out, in (0, 1)")
    seed: int = option(0, "same file and seed give byte-identical outputs")
    near_threshold: float = option(DEFAULT_NEAR_THRESHOLD, NEAR_HELP)
    force: bool = option(False, "replace --out if it exists and is not empty")
    strict: bool = option(False, STRICT_HELP)
    as_json: bool = option(False, "print the manifest as JSON", flag="--json")


@dataclass(kw_only=True)
class ShowOptions(ReadOptions):
    """`honed data show`."""

    model: str = option(DEFAULT_MODEL, "model whose tokenizer and chat template to use")
    chat_template: str | None = option(None, CHAT_TEMPLATE_HELP)
    n: int = option(3, "how many examples to show (from the top)", flag="--num", short="-n", min=1)
    max_length: int | None = option(None, "truncate as training would", min=1)
    strict: bool = option(False, STRICT_HELP)
    as_json: bool = option(False, "print every token (text, id, supervised) as JSON", flag="--json")
