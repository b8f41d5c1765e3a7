"""A small progress reporter for long CLI work (training, embedding, benchmarks).

On a terminal it redraws one line, a bar with the rate and ETA; into a pipe or a log file it
writes a plain line at most every `interval_s` seconds (and one at the end), so CI logs show
that work is moving without thousands of carriage returns.

Library code creates `Progress(total, "what")` and calls `update()`; it writes nothing unless
progress is switched on, so the service (which trains the same heads at start-up) and tests
stay quiet. The `cace` subcommands call `enable()` first. `CACE_PROGRESS=0` silences it and
`CACE_PROGRESS=1` forces it on.

The same calls are where long work can be stopped: inside `cancellable(is_cancelled)`, every
`Progress.update()` and every `checkpoint()` raises `explainers.errors.Cancelled` once
`is_cancelled()` says so (asked at most once per interval). A service runs a domain build in
such a block, so cancelling its job stops training within one batch.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TextIO

from explainers.errors import Cancelled

_enabled = False


class _Canceller:
    def __init__(self, is_cancelled: Callable[[], bool], interval_s: float) -> None:
        self.is_cancelled = is_cancelled
        self.interval_s = interval_s
        self._next = 0.0

    def check(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.interval_s
        if self.is_cancelled():
            raise Cancelled("cancelled")


_canceller: contextvars.ContextVar[_Canceller | None] = contextvars.ContextVar("cace_canceller", default=None)


@contextlib.contextmanager
def cancellable(is_cancelled: Callable[[], bool], interval_s: float = 1.0) -> Iterator[None]:
    """Within the block, `checkpoint()` and `Progress.update()` raise Cancelled once `is_cancelled()`."""
    token = _canceller.set(_Canceller(is_cancelled, interval_s))
    try:
        yield
    finally:
        _canceller.reset(token)


def checkpoint() -> None:
    """Raise Cancelled if the enclosing `cancellable` block's work was cancelled (else a no-op)."""
    canceller = _canceller.get()
    if canceller is not None:
        canceller.check()


def enable(on: bool = True) -> None:
    """Switch reporting on for this process (the CLI entry points do this)."""
    global _enabled
    _enabled = on


def enabled() -> bool:
    env = os.environ.get("CACE_PROGRESS", "").strip().lower()
    if env in ("0", "false", "no", "off"):
        return False
    if env in ("1", "true", "yes", "on"):
        return True
    return _enabled


def _duration(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):  # nan/inf: no estimate yet
        return "?"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """Count `total` steps of one piece of work and report them to `stream` (stderr by default)."""

    def __init__(
        self,
        total: int | None,
        desc: str = "",
        *,
        stream: TextIO | None = None,
        unit: str = "it",
        interval_s: float | None = None,
        tty: bool | None = None,
        active: bool | None = None,
        width: int = 28,
    ) -> None:
        self.total = total if total and total > 0 else None
        self.desc = desc
        self.stream = stream if stream is not None else sys.stderr
        self.unit = unit
        self.active = enabled() if active is None else active
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty()) if tty is None else tty
        # A redraw is cheap on a terminal; a line in a log is not.
        self.interval_s = interval_s if interval_s is not None else (0.1 if self.tty else 10.0)
        self.width = width
        self.n = 0
        self.note = ""
        self.started = time.monotonic()
        self._last = -float("inf")
        self._closed = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def update(self, n: int = 1, note: str | None = None) -> None:
        """Count n more steps; `note` (e.g. the current loss) is shown after the counts."""
        self.n += n
        if note is not None:
            self.note = note
        checkpoint()
        if not self.active:
            return
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            self._last = now
            self._write(final=False)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.active:
            self._write(final=True)

    def line(self) -> str:
        """The current report as text (without terminal control characters)."""
        elapsed = time.monotonic() - self.started
        rate = self.n / elapsed if elapsed > 0 else 0.0
        head = f"{self.desc}: " if self.desc else ""
        tail = f" {self.note}" if self.note else ""
        if self.total is None:
            return f"{head}{self.n} {self.unit} {_duration(elapsed)} {rate:.2f} {self.unit}/s{tail}"
        frac = min(1.0, self.n / self.total)
        eta = (self.total - self.n) / rate if rate > 0 else float("nan")
        counts = f"{self.n}/{self.total} {self.unit}"
        when = f"{_duration(elapsed)}<{_duration(max(0.0, eta))}, {rate:.2f} {self.unit}/s"
        if not self.tty:
            return f"{head}{frac:4.0%} {counts} [{when}]{tail}"
        filled = int(frac * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        return f"{head}{frac:4.0%} |{bar}| {counts} [{when}]{tail}"

    def _write(self, final: bool) -> None:
        text = self.line()
        try:
            if self.tty:
                self.stream.write("\r\x1b[2K" + text + ("\n" if final else ""))
            else:
                self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed pipe must not break training
            self.active = False
