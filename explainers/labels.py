"""The one label resolver: a text's concept labels are the given ones, else the taggers' reading.

Every caller that needs a text's concept labels (the baselines, matching, generation,
splice, `auto`, the service's source inference and its effects jobs) resolves them here, so
"given labels, else taggers" means the same everywhere: given labels always win, the taggers
are asked once per batch, and only for the texts that need them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from explainers.concepts import Intervention
from explainers.errors import MissingResource


def tagged(
    texts: Sequence[str],
    given: Sequence[Mapping[str, str] | None] | None,
    taggers: Any | None,
    *,
    concept: str | None = None,
) -> list[dict[str, str] | None]:
    """Each text's labels: the given ones, topped up (one tagger call for the batch) by the taggers.

    A text needs the taggers when it has no labels or, with `concept`, none for that concept; the
    given labels win over the taggers' where both say something. Without taggers, a text keeps what
    it was given (None when nothing).
    """
    labels: list[dict[str, str] | None] = [
        None if lab is None else dict(lab) for lab in (given if given is not None else [None] * len(texts))
    ]
    missing = [
        i for i, lab in enumerate(labels) if lab is None or (concept is not None and concept not in lab)
    ]
    if missing and taggers is not None:
        for i, tags in zip(missing, taggers.predict([texts[i] for i in missing]), strict=True):
            labels[i] = {**dict(tags), **(labels[i] or {})}
    return labels


def labels_of(text: str, given: Mapping[str, str] | None, taggers: Any | None, method: str) -> dict[str, str]:
    """One text's labels (given, else the taggers'); MissingResource naming `method` when neither exists."""
    labels = tagged([text], [given], taggers)[0]
    if labels is None:
        raise MissingResource(
            f"method {method!r} needs the text's concept labels (base_labels) or concept taggers"
        )
    return labels


def source_value(
    text: str,
    intervention: Intervention,
    given: Mapping[str, str] | None,
    taggers: Any | None,
    method: str,
) -> str:
    """The value the concept has now: the intervention's source, else the text's label."""
    if intervention.source is not None:
        return intervention.source
    labels = labels_of(text, given, taggers, method)
    if intervention.concept not in labels:
        raise MissingResource(f"method {method!r}: no label for concept {intervention.concept!r}")
    return labels[intervention.concept]
