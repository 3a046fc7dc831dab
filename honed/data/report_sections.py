"""The sections of the data check report: plain dataclasses whose fields are the documented `--json` output
(honed/data/report.schema.json, docs/data-check.md). `honed.data.report` fills them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from honed.data import responses


@dataclass
class Example:
    """One row shown as evidence: where it is (`file:line`) and an excerpt."""

    source: str
    text: str


@dataclass
class LengthStats:
    p50: float
    p95: float
    max: int
    mean: float


@dataclass
class Tokens:
    """Token counts from the model's tokenizer and chat template (before truncation unless stated)."""

    total: int
    supervised: int
    supervised_share: float
    length: LengthStats
    max_length: int
    truncated: int  # examples longer than max_length
    all_supervised_lost: int  # examples that still had supervised tokens but lose all of them to truncation
    no_supervised: int  # examples with no supervised token at all, even untruncated
    end_of_turn_untrained: int  # examples with supervised tokens none of which is the end of turn
    per_epoch: int  # tokens one epoch processes after truncation
    supervised_per_epoch: int


@dataclass
class Duplicates:
    """Exact repeats (string equality) and near duplicates (MinHash + LSH)."""

    exact: int  # rows whose whole conversation appeared on an earlier row
    exact_groups: int  # distinct conversations that appear more than once
    repeated_prompts: int  # rows whose prompt appeared on an earlier row
    repeated_pairs: int  # rows whose (prompt, response) appeared on an earlier row
    exact_examples: list[list[Example]]
    near_threshold: float
    near_clusters: int  # groups of distinct texts that are near duplicates of each other
    near_rows: int  # rows whose text belongs to such a group
    near_examples: list[list[Example]]


@dataclass
class Conflicts:
    """Prompts that appear with more than one different response."""

    prompts: int  # distinct prompts (exact string) with 2+ different responses
    rows: int  # rows carrying those prompts
    prompts_normalized: int  # the same after normalizing prompts and responses
    examples: list[list[Example]]


@dataclass
class LabelCount:
    label: str
    count: int


@dataclass
class Labels:
    """Present when the data looks like classification: few distinct, short, repeating responses."""

    distinct: int
    top: list[LabelCount]
    smallest: list[LabelCount]
    imbalance_ratio: float  # largest class count / smallest class count


@dataclass
class Refusals:
    count: int
    share: float
    examples: list[Example]


@dataclass
class Leakage:
    """Holdout examples whose prompt also appears in the training data."""

    file: str
    holdout_examples: int
    exact: int  # holdout rows whose prompt equals a train prompt
    exact_distinct: int  # distinct such prompts
    normalized: int  # holdout rows equal to a train prompt after normalizing (includes `exact`)
    near: int  # further holdout rows with a near-duplicate train prompt (MinHash), not counted above
    near_threshold: float
    examples: list[list[Example]]  # [holdout row, train row] pairs, one per distinct leaked prompt
    near_examples: list[list[Example]]  # [holdout row, most similar train row] pairs


@dataclass
class Finding:
    """A warning: `code` is stable for scripts, `message` says what and how to fix."""

    code: str
    count: int
    message: str


@dataclass
class TemplateUsed:
    """The chat template the tokens were counted with, and why it was chosen (honed.model.template)."""

    name: str
    end_of_turn: str
    reason: str
    system_role: bool
    added_tokens: list[str]
    system_folded: int  # examples whose system text the template folds into the first user turn


@dataclass
class Report:
    file: str
    format: str
    model: str
    examples: int
    messages: int
    skipped_invalid: int  # rows left out by --skip-invalid (train and holdout)
    invalid_files: list[str]  # where those rows were written
    tokens: Tokens
    duplicates: Duplicates
    conflicts: Conflicts
    labels: Labels | None
    refusals: Refusals
    leakage: Leakage | None
    most_common_response: responses.MostCommonResponse | None = None
    chat_template: TemplateUsed | None = None
    warnings: list[Finding] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The documented `--json` object (docs/data-check.md, honed/data/report.schema.json)."""
        return {"schema_version": 1, **asdict(self)}
