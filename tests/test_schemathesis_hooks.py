"""schemathesis hooks for tests/test_schemathesis.py (loaded by the CLI via SCHEMATHESIS_HOOKS).

`no_internal_error` is "no 5xx" made precise for a service that calls other services: a 500
(a bug) always fails, and so does any 5xx that is not one of the documented upstream or
overload problems. A 502/504 whose problem type says the classifier or LLM endpoint failed
is the documented answer when the fuzzer registers an unreachable endpoint (the spec's
examples name hosts that do not exist here), and a 503 is documented load shedding.
"""

from __future__ import annotations

import schemathesis

ALLOWED_5XX = {
    502: ("classifier-unavailable", "classifier-malformed", "llm-unavailable", "llm-malformed",
          "upstream-unavailable", "upstream-malformed"),
    503: ("overloaded", "not-ready", "queue-full"),
    504: ("classifier-timeout", "llm-timeout", "upstream-timeout", "request-timeout"),
}


@schemathesis.check
def no_internal_error(ctx, response, case) -> None:  # noqa: ANN001 (schemathesis' check signature)
    status = response.status_code
    if status < 500:
        return None
    try:
        kind = str(response.json().get("type", "")).rsplit("/", 1)[-1]
    except Exception:
        kind = ""
    if kind not in ALLOWED_5XX.get(status, ()):
        raise AssertionError(f"server error {status} ({kind or 'no problem type'}): {response.text[:500]}")
    return None
