"""User-facing errors.

Every failure a user can cause is a HonedError whose message says what went wrong, where, and how to fix
it. The CLI prints the message on one line (plus any listed problems) and exits with status 2, never a
traceback. `assert` is kept for internal invariants only.
"""

from __future__ import annotations

EXIT_USER_ERROR = 2


class HonedError(Exception):
    """Base class for every error the user can act on.

    >>> raise DataError("train.jsonl:3: invalid JSON; fix the line or pass --skip-invalid")
    Traceback (most recent call last):
    honed.errors.DataError: train.jsonl:3: invalid JSON; fix the line or pass --skip-invalid
    """

    def __init__(self, message: str, *, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: list[str] = list(details or [])


class DataError(HonedError):
    """Bad input data: unreadable file, malformed rows, no trainable tokens."""


class ConfigError(HonedError):
    """A bad option or config field."""


class ModelError(HonedError):
    """A model or tokenizer that cannot be resolved or loaded."""


class DiskError(HonedError):
    """A write the file system refused: disk full, read-only, no permission (honed.atomic raises it)."""
