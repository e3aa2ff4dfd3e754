"""Errors with one-line messages that name the file and the item at fault."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path


class InstsegError(Exception):
    """Base error; the CLI prints ``str(err)`` as one line and exits 1."""


class DataError(InstsegError):
    """Bad input data: ``file: item: message``."""

    def __init__(self, file: str | Path | None, item: str | None, message: str) -> None:
        self.file = str(file) if file is not None else None
        self.item = item
        self.message = message
        parts = [p for p in (self.file, item, message) if p]
        super().__init__(": ".join(parts).replace("\n", " "))


class InvalidItemWarning(UserWarning):
    """Emitted for each bad item skipped under ``skip_invalid=True``."""


@dataclass
class ErrorPolicy:
    """Raise on the first bad item, or (``skip_invalid``) warn, skip it and count it.

    ``skipped`` keeps every skipped item's message, so a batch job can report them at the end.
    """

    skip_invalid: bool = False
    skipped: list[str] = field(default_factory=list)

    def fail(self, error: DataError) -> None:
        """Raise ``error``, or record and warn when skipping invalid items."""
        if not self.skip_invalid:
            raise error
        self.skipped.append(str(error))
        warnings.warn(str(error), InvalidItemWarning, stacklevel=3)
