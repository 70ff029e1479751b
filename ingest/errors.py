"""The project's user-facing error: one line that names the file and the problem."""
from __future__ import annotations

from pathlib import Path


class OdinError(Exception):
    """A problem with the user's input or environment, reported as one line by the CLI."""

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)
