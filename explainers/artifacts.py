"""Self-describing artifact directories, and the one place artifact paths are made.

Every artifact (reference classifier, tagger, concept space) is a directory with a
`meta.json` saying what it is, how it was made, from which data (a content hash) and with
which library versions, so `load(path)` needs nothing else and a stale one is easy to spot.

Names that arrive with data (concepts, values, domain ids, classifier names) never become
file names by themselves: an artifact addresses its parts by index (`slugs`) and records the
name -> slug map in its meta.json, and every path is joined by `child_path`, which refuses a
part that is not one plain file name or a result that leaves its folder. Builds write into a
folder of their own under `<root>/.staging` (`staging_dir`), renamed into place when done;
`clean_stale_staging` removes the folders of builds whose process died.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from explainers.errors import UnsafeName

META = "meta.json"
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
        **fields,
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
    return meta


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
    return Path(os.environ.get("CACE_CACHE_DIR", Path.home() / ".cache" / "cace"))


# -- paths from names --------------------------------------------------------------------------


def child_path(folder: Path, *parts: str) -> Path:
    """folder/part/..., each part one plain file name, the result checked to stay under folder.

    Raises UnsafeName for an empty part, `.`/`..`, a separator or NUL in a part, or a path that
    resolves (symbolic links followed) outside `folder`.
    """
    base = Path(folder)
    for part in parts:
        if (
            not isinstance(part, str)
            or part in ("", ".", "..")
            or "/" in part
            or "\\" in part
            or "\x00" in part
        ):
            raise UnsafeName(f"{part!r} is not a plain file name")
    path = base.joinpath(*parts)
    root = base.resolve()
    resolved = path.resolve()
    if resolved != root and root not in resolved.parents:
        raise UnsafeName(f"{path} leaves {base}")
    return path


def slugs(names: Sequence[str], prefix: str) -> dict[str, str]:
    """File names for data names, by position (`prefix0`, `prefix1`, ...): the name stays data."""
    return {name: f"{prefix}{i}" for i, name in enumerate(names)}


# -- build folders -----------------------------------------------------------------------------

STAGING = ".staging"
OWNER = "owner.json"
# A build folder another host owns is stale once untouched this long (builds touch it as they go).
STALE_STAGING_S = 6 * 3600.0
# Build folders of the layout before `.staging`: `<id>.building-<pid>-<6 hex>` beside the domains.
_OLD_STAGING = re.compile(r"^[a-z0-9][a-z0-9._-]*\.building-(\d+)-[0-9a-f]{6}$")


def _process_start(pid: int) -> str | None:
    """The start time of process `pid` (Linux /proc; tells a reused pid from the original), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if started is None:
        return True
    now = _process_start(pid)
    return now is None or now == started


def staging_dir(root: Path, name: str) -> Path:
    """A fresh folder under root/.staging to build artifact `name` in, with its owner recorded."""
    folder = child_path(Path(root) / STAGING, f"{name}-{uuid.uuid4().hex[:12]}")
    folder.mkdir(parents=True)
    owner = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "process_start": _process_start(os.getpid()),
        "started_at": time.time(),
    }
    (folder / OWNER).write_text(json.dumps(owner))
    return folder


def touch_staging(folder: Path) -> None:
    """Mark a build folder as still being written (its owner on another host is alive)."""
    with contextlib.suppress(OSError):
        os.utime(Path(folder) / OWNER)


def staging_is_stale(folder: Path, max_idle_s: float = STALE_STAGING_S) -> bool:
    """True when no live process builds in `folder`: its owner died on this host, or it is untouched too long."""
    try:
        owner = json.loads((folder / OWNER).read_text())
        idle = time.time() - (folder / OWNER).stat().st_mtime
    except (OSError, ValueError):
        # No owner file (killed between mkdir and write): judge by the folder's own age.
        with contextlib.suppress(OSError):
            return time.time() - folder.stat().st_mtime > 60.0
        return True
    if owner.get("host") == socket.gethostname():
        return not _alive(int(owner.get("pid", -1)), owner.get("process_start"))
    return idle > max_idle_s


def clean_stale_staging(root: Path, max_idle_s: float = STALE_STAGING_S) -> list[Path]:
    """Remove every build folder under root whose build is dead (see `staging_is_stale`); returns them.

    Also removes the old layout's `<id>.building-<pid>-<hex>` folders whose pid is not alive here.
    """
    root = Path(root)
    removed: list[Path] = []
    staging = root / STAGING
    for folder in sorted(staging.iterdir()) if staging.is_dir() else []:
        if folder.is_dir() and staging_is_stale(folder, max_idle_s):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        m = _OLD_STAGING.match(folder.name)
        if m and folder.is_dir() and not _alive(int(m.group(1)), None):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


# -- exclusive claims --------------------------------------------------------------------------


def _read_token(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def claim_exclusive(path: Path, token: str, is_stale: Callable[[str], bool]) -> str | None:
    """Create the lock file `path` holding `token`, atomically (O_EXCL, so also between hosts
    sharing the folder); None when claimed, else the current holder's token.

    A lock whose holder `is_stale` says is gone is taken over: it is renamed aside first, so of
    two processes taking over one stale lock only one wins, and a fresh lock is never lost.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    holder: str | None = None
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _read_token(path)
            if holder is None:
                continue  # released meanwhile: try again
            if not holder or not is_stale(holder):  # an empty one is being written right now
                return holder
            aside = path.with_name(f"{path.name}.stale-{uuid.uuid4().hex[:8]}")
            try:
                os.rename(path, aside)
            except FileNotFoundError:
                continue
            if _read_token(aside) != holder:  # a fresh lock replaced the stale one meanwhile: restore it
                with contextlib.suppress(FileExistsError):
                    os.link(aside, path)
                os.unlink(aside)
                return _read_token(path) or holder
            os.unlink(aside)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(token)
        return None
    return holder


def replace_token(path: Path, old: str, new: str) -> bool:
    """Rewrite a lock we hold (`old`) to `new` atomically; False if it is not ours any more."""
    if _read_token(path) != old:
        return False
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(new)
    os.replace(tmp, path)
    return True


def release(path: Path, token: str) -> None:
    """Remove a lock file if it still holds `token`."""
    if _read_token(path) == token:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
