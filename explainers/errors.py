"""The library's one exception hierarchy: every error a caller may want to tell apart.

Why one tree: the service maps library errors to HTTP problems by `isinstance`, in one
place (`app/problems.py`), so an error class must say what went wrong, not which module
raised it. Modelled on httpx's single hierarchy:

    CaceError
    ├── UpstreamError                 a called endpoint (classifier or LLM) failed
    │   ├── UpstreamTimeout           ... did not answer in time                   (504)
    │   ├── UpstreamUnavailable       ... unreachable, or 5xx/429 after retries    (502)
    │   ├── UpstreamRejected          ... refused the request with a 4xx           (502)
    │   ├── UpstreamMalformed         ... answered something unusable              (502)
    │   └── OutboundDenied            the URL policy refused the target            (403)
    └── MissingResource               the deployment lacks what a method needs     (409)

`OutboundDenied` is deliberately *not* an `httpx.TransportError`: a denial is a decision,
not a network fault, and nothing may retry it. Each upstream error carries `what`
("classifier" or "llm") so the problem title can say which endpoint failed, and a short
`detail` that never holds more than a sanitised excerpt of an upstream body.
"""

from __future__ import annotations

import re

# Longest excerpt of an upstream answer an error message may quote.
EXCERPT_CHARS = 120
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]+")


def excerpt(text: str | bytes | None, limit: int = EXCERPT_CHARS) -> str:
    """A short, printable-ASCII excerpt of an upstream body, safe to put in a problem detail.

    Why: a 502 detail that echoes the upstream body turns the service into a reflector for
    whatever an allow-listed host answers (keys, internal pages). Control and non-ASCII
    characters become one space; the result is cut to `limit` characters.
    """
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    clean = _UNPRINTABLE.sub(" ", text).strip()
    return clean if len(clean) <= limit else clean[:limit] + "..."


class CaceError(Exception):
    """Root of every error this library raises on purpose."""


class UpstreamError(CaceError):
    """A classifier or LLM endpoint could not give a usable answer."""

    what = "upstream"

    def __init__(self, message: str, *, what: str | None = None) -> None:
        super().__init__(message)
        if what is not None:
            self.what = what


class UpstreamTimeout(UpstreamError):
    """The endpoint did not answer within its timeout or the call's total deadline."""


class UpstreamUnavailable(UpstreamError):
    """The endpoint could not be reached, or kept failing (5xx, 429) after bounded retries."""


class UpstreamRejected(UpstreamError):
    """The endpoint refused the request with a 4xx other than 429; retrying cannot help."""


class UpstreamMalformed(UpstreamError):
    """The endpoint answered, but not with something this library can read."""


class OutboundDenied(UpstreamError):
    """The outbound URL policy refused the target. Never retried: the same URL is refused every time."""

    def __init__(self, message: str, *, request: object | None = None, what: str | None = None) -> None:
        super().__init__(message, what=what)
        self.request = request


class MissingResource(CaceError, ValueError):
    """The method needs a resource (pool, space, LLM, ...) this deployment does not have."""


class UnsafeName(CaceError, ValueError):
    """A name (concept, value, domain, classifier) cannot address a file: it would leave its folder."""


class Cancelled(CaceError):
    """Long work stopped at a checkpoint because its job was cancelled (not a failure of the work)."""


class BudgetExhausted(CaceError):
    """A cost budget (texts a classifier may be sent in a window, say) has no room for this work."""

    def __init__(self, message: str, *, retry_at: float | None = None) -> None:
        super().__init__(message)
        self.retry_at = retry_at  # when the budget has room again (epoch seconds), if known


__all__ = [
    "BudgetExhausted",
    "CaceError",
    "Cancelled",
    "MissingResource",
    "OutboundDenied",
    "UnsafeName",
    "UpstreamError",
    "UpstreamMalformed",
    "UpstreamRejected",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "excerpt",
]
