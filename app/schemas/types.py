"""Field types every request model uses: text the service may store and echo, strict numbers."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator

Aggregation = Literal["mean", "similarity_weighted", "median"]

# Characters no text field may hold: NUL (PostgreSQL text cannot store it) and lone UTF-16
# surrogates (not encodable as UTF-8: every later JSON response holding them would fail).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def unstorable(text: str) -> bool:
    """True if `text` holds a NUL or a lone surrogate (cannot be stored or sent on as UTF-8)."""
    return _UNSTORABLE.search(text) is not None


def _storable(v: str) -> str:
    if unstorable(v):
        raise ValueError("must not contain NUL characters or unpaired UTF-16 surrogates")
    return v


def _not_blank(v: str) -> str:
    if not v.strip():
        raise ValueError("must contain non-whitespace characters")
    return v


def _no_bool(v: Any) -> Any:
    # JSON true/false are not numbers: lax validation would read `top_k: true` as 1.
    if isinstance(v, bool):
        raise ValueError("must be a number, not a boolean")
    return v


# Reusable field types: any text the service stores or echoes, and texts to explain.
SafeText = Annotated[str, AfterValidator(_storable)]
NonBlankText = Annotated[str, AfterValidator(_storable), AfterValidator(_not_blank)]
Labels = dict[SafeText, SafeText]
StrictInt = Annotated[int, BeforeValidator(_no_bool)]
StrictFloat = Annotated[float, BeforeValidator(_no_bool)]
# numpy's seed range.
MAX_SEED = 2**32 - 1
