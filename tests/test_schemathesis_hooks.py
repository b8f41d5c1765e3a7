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
    502: (
        "classifier-unavailable",
        "classifier-malformed",
        "classifier-rejected",
        "llm-unavailable",
        "llm-malformed",
        "llm-rejected",
        "upstream-unavailable",
        "upstream-malformed",
        "upstream-rejected",
    ),
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


# Hostile text the fuzzer plants in generated bodies (issue #12): a lone surrogate (not
# encodable as UTF-8, so any later response holding it would fail), NUL (PostgreSQL text
# cannot store it), whitespace-only text, and look-alike unicode digits/hosts. Every one must
# be answered with a 4xx or succeed; the checks above fail the run on any 500.
HOSTILE_TEXT = ("\ud800", "tail \udfff", "nul\x00byte", " \t\n ", "\uff11\uff12\uff17.0.0.1", "\u2460\u2461")
# Multipart bodies are encoded as UTF-8 by the client itself, which cannot encode a surrogate.
MULTIPART_PATHS = ("/v1/effects/upload", "/v1/domains")


def _plant(body: object, value: str) -> object:
    """`body` with its first string (depth-first) replaced by `value`; unchanged if it has none."""
    if isinstance(body, dict):
        for k, v in body.items():
            new = value if isinstance(v, str) else _plant(v, value)
            if new is not v:
                return {**body, k: new}
    elif isinstance(body, list):
        for i, v in enumerate(body):
            new = value if isinstance(v, str) else _plant(v, value)
            if new is not v:
                return [*body[:i], new, *body[i + 1 :]]
    return body


@schemathesis.hook
def before_generate_body(context, strategy):  # noqa: ANN001, ANN201 (schemathesis' hook signature)
    from hypothesis import strategies as st

    path = getattr(getattr(context, "operation", None), "path", "")
    texts = [t for t in HOSTILE_TEXT if path not in MULTIPART_PATHS or t.isascii()]
    hostile = st.none() | st.sampled_from(texts)
    return st.tuples(strategy, hostile).map(lambda pair: pair[0] if pair[1] is None else _plant(*pair))
