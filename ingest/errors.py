"""The project's user-facing error: one line that names the file and the problem."""
from __future__ import annotations

from pathlib import Path


class OdinError(Exception):
    """A problem with the user's input or environment, reported as one line by the CLI."""

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else str(path)
        self.problem = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


def read_json_object(path: str | Path) -> dict:
    """A user's JSON file as a dict; missing, binary, malformed or non-object content is one OdinError."""
    import json

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise OdinError("file not found", path) from None
    except IsADirectoryError:
        raise OdinError("is a folder, expected a JSON file", path) from None
    except NotADirectoryError:
        raise OdinError("a folder in this path is a file", path) from None
    try:
        meta = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise OdinError("not a JSON file (binary content)", path) from None
    except json.JSONDecodeError as e:
        raise OdinError(f"invalid JSON ({e.msg} at line {e.lineno})", path) from None
    if not isinstance(meta, dict):
        raise OdinError(f"expected a JSON object, got a {type(meta).__name__}", path)
    return meta
