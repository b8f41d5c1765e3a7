"""Reading an LLM's answer as a choice among declared options.

Two places ask an LLM to pick one of a few options: the `openai-chat` classifier (a label per
text) and the LLM concept labeller of a domain build (a value per text and concept). Both read
the answer the same way, from here:

* `top_pairs`: the (token, logprob) pairs at the answer position, from a chat response's list
  of {token, logprob} or a completions response's mapping token -> logprob;
* `first_token_distribution`: the probability of each option from those pairs (" 4" and "4"
  both count for "4"; a token that is a prefix of exactly one option counts for it; an option
  outside the top-k gets at most the leftover mass, never more than the least likely listed
  token), renormalised over the options;
* `answer_option`: the option a sampled answer names (the whole answer, a JSON
  {"label": ...}, or its first word), for endpoints without logprobs.

`names` maps a normalised option name (`norm`) to the option's index; aliases may map to the
same index. Errors are raised as the caller's `error` class (an `UpstreamMalformed`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from explainers.errors import UpstreamMalformed

EDGE = "\"'`*_.,;:!?()[]<> \t\n"
# Logprobs above 0 by more than rounding are malformed; below the floor they are all probability 0.
LOGPROB_SLACK = 1e-3
LOGPROB_FLOOR = -1e4


def norm(s: str) -> str:
    return s.strip(EDGE).casefold()


def top_pairs(raw: Any, source: str, error: type[Exception] = UpstreamMalformed) -> list[tuple[str, float]]:
    """(token, logprob) pairs from a chat list of {token, logprob} or a completions dict token -> logprob."""
    if isinstance(raw, Mapping):
        items = list(raw.items())
    elif isinstance(raw, list):
        items = [(x.get("token"), x.get("logprob")) if isinstance(x, Mapping) else (x, None) for x in raw]
    else:
        raise error(f"{source}: top_logprobs is {type(raw).__name__}, not a list or mapping")
    pairs = []
    for tok, lp in items:
        if not isinstance(tok, str) or isinstance(lp, bool) or not isinstance(lp, int | float):
            raise error(f"{source}: top_logprobs entry {tok!r}: {lp!r} is not a token and a logprob")
        if not math.isfinite(lp):
            raise error(f"{source}: logprob for token {tok!r} is {lp!r}, not a finite number")
        if lp > LOGPROB_SLACK:
            raise error(f"{source}: logprob for token {tok!r} is {lp:.3g}; a log-probability is at most 0")
        # Rounding may put a certain token a hair above 0; a vanishing one may be -1e308. Neither
        # may reach exp() or a sum of logprobs as such: clamp to the range that means something.
        pairs.append((tok, min(0.0, max(LOGPROB_FLOOR, float(lp)))))
    return pairs


def token_option(token: str, names: Mapping[str, int]) -> int | None:
    t = norm(token)
    if not t:
        return None
    if t in names:
        return names[t]
    starts = {i for name, i in names.items() if name.startswith(t)}
    return starts.pop() if len(starts) == 1 else None  # a prefix of several options says nothing


def first_token_distribution(
    pairs: list[tuple[str, float]],
    names: Mapping[str, int],
    options: Sequence[str],
    source: str,
    error: type[Exception] = UpstreamMalformed,
    what: str = "option",
) -> np.ndarray:
    """Each option's probability at the answer position (see the module docstring)."""
    mass = np.zeros(len(options))
    seen = np.zeros(len(options), dtype=bool)
    for tok, lp in pairs:
        i = token_option(tok, names)
        if i is not None:
            mass[i] += math.exp(lp)
            seen[i] = True
    if not seen.any():
        top = [t for t, _ in sorted(pairs, key=lambda p: -p[1])[:5]]
        raise error(
            f"{source}: no declared {what} {list(options)} among the top {len(pairs)} tokens at the "
            f"answer position (top: {top}); the prompt does not make the model answer with a {what}"
        )
    if not seen.all():
        # An option outside the top-k has at most the least likely listed token's probability,
        # and all missing options together at most the mass the top-k leaves over.
        listed = [math.exp(lp) for _, lp in pairs]
        leftover = max(0.0, 1.0 - sum(listed))
        mass[~seen] = min(min(listed), leftover / int((~seen).sum()))
    if not mass.sum() > 0:
        raise error(
            f"{source}: the {what}s' tokens carry no probability at the answer position "
            f"(logprobs {[round(lp, 1) for _, lp in pairs[:5]]})"
        )
    return mass / mass.sum()


def answer_option(answer: str, names: Mapping[str, int]) -> int | None:
    """The option a free-text answer names: the whole answer, a JSON {"label": ...}, or its first word."""
    a = answer.strip()
    if a.startswith("{"):
        try:
            obj = json.loads(a)
        except ValueError:
            obj = None
        if isinstance(obj, Mapping):
            a = str(obj.get("label", obj.get("answer", "")))
    if norm(a) in names:
        return names[norm(a)]
    first = re.split(r"[\s,.;:!?)\]]+", a.strip(EDGE), maxsplit=1)[0]
    return names.get(norm(first))
