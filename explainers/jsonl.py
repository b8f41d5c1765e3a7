"""Reading JSON Lines uploads: one JSON value per line, every way a line can fail as a ValueError.

Lines are split on "\n" only: str.splitlines() would also break at U+2028, U+0085 and other
characters that JSON strings may hold unescaped, cutting a text in two.
"""

from __future__ import annotations

import json
from typing import Any


def split_lines(text: str) -> list[str]:
    """The lines of a JSONL document ("\r\n" endings are fine: json ignores the trailing "\r")."""
    return text.split("\n")


def loads_line(line: str | bytes) -> Any:
    """json.loads of one line; ValueError("invalid JSON: ...") for bad syntax, nesting too deep for
    the parser (RecursionError) or an integer past Python's digit limit."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"invalid JSON: {e.msg} (column {e.colno})") from e
    except RecursionError as e:
        raise ValueError("invalid JSON: nested too deeply") from e
    except ValueError as e:  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"
        raise ValueError(f"invalid JSON: {e}") from e
