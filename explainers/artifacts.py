"""Self-describing artifact directories.

Every artifact (reference classifier, tagger, concept space) is a directory with a
`meta.json` saying what it is, how it was made, from which data (a content hash) and with
which library versions, so `load(path)` needs nothing else and a stale one is easy to spot.
Every kind carries a format version (`FORMAT_VERSIONS`), written by `write_meta` and checked by
`read_meta` in one place: an artifact written in another format is refused with what to do.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from explainers import env

META = "meta.json"
# The format each artifact kind is written in; `read_meta` refuses any other. Kinds written before
# they carried a version (spaces, taggers, classifiers) read a missing version as their first.
FORMAT_VERSIONS = {"domain": 1, "calibration": 1, "concept_space": 1, "taggers": 1, "classifier": 1}
_UNVERSIONED_AS = {"concept_space": 1, "taggers": 1, "classifier": 1}
_REMEDY = {"calibration": "recalibrate"}
_VERSIONED = ("numpy", "scikit-learn", "torch", "transformers", "sentence-transformers", "faiss-cpu")


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def data_hash(items: Iterable[str]) -> str:
    h = hashlib.sha256()
    for s in items:
        h.update(s.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def write_meta(directory: Path, kind: str, **fields: Any) -> dict[str, Any]:
    directory.mkdir(parents=True, exist_ok=True)
    meta = {
        "kind": kind,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "library_versions": library_versions(),
        **versioned(kind, fields),
    }
    (directory / META).write_text(json.dumps(meta, indent=2, default=str))
    return meta


def read_meta(directory: Path, kind: str | None = None) -> dict[str, Any]:
    path = Path(directory) / META
    if not path.exists():
        raise FileNotFoundError(f"{directory} is not an artifact directory (no {META})")
    meta = json.loads(path.read_text())
    if kind is not None and meta.get("kind") != kind:
        raise ValueError(f"{directory} holds a {meta.get('kind')!r}, not a {kind!r}")
    check_format(directory, meta)
    return meta


def versioned(kind: str, fields: dict[str, Any]) -> dict[str, Any]:
    """`fields` with the kind's format version (unless they carry one: a re-saved artifact keeps its own)."""
    if kind not in FORMAT_VERSIONS:
        return fields
    return {"format_version": FORMAT_VERSIONS[kind], **fields}


def check_format(directory: Path, meta: dict[str, Any]) -> None:
    """Refuse an artifact whose format version is not the one this library reads for its kind."""
    kind = str(meta.get("kind"))
    want = FORMAT_VERSIONS.get(kind)
    if want is None:
        return
    got = meta.get("format_version", _UNVERSIONED_AS.get(kind))
    if got != want:
        raise ValueError(
            f"{directory}: {kind} format {got!r}, this library reads {want}; {_REMEDY.get(kind, 'rebuild it')}"
        )


def model_fingerprint(path: str) -> str:
    """Identify a model by its content, not its location.

    The same packaged model sits at a different path in every virtual environment (a CI
    clone, a container); keying the cache by its config and file sizes lets them share it.
    """
    h = hashlib.sha1()
    folder = Path(path)
    if folder.is_dir():
        for f in sorted(folder.rglob("*")):
            if f.is_file() and not f.name.startswith("."):
                h.update(f"{f.relative_to(folder)}:{f.stat().st_size}".encode())
                if f.name == "config.json":
                    h.update(f.read_bytes())
    else:
        h.update(path.encode())  # a hub id
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    return env.cache_dir()
