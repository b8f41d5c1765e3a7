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
`Stages` tracks a build made of named stages (a domain build: embed, taggers, space, ...) for
whoever asks while it runs: a snapshot with the stage, the percent and an ETA from the measured
rate, and a log line per stage and per 10% step. A `Progress` created while a stage runs (the
encoder's, a head's training loop) feeds that stage's fraction, so long inner loops show up
without knowing who watches.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any, TextIO

from explainers import env
from explainers.errors import Cancelled

_enabled = False
# Where a Progress reports its fraction done, when a `Stages` stage is running in this context.
_stage_sink: contextvars.ContextVar[Callable[[float, str], None] | None] = contextvars.ContextVar(
    "cace_stage_sink", default=None
)


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
    forced = env.progress()
    return _enabled if forced is None else forced


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
        self._sink = _stage_sink.get()

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
        if self._sink is not None and self.total:
            self._sink(min(1.0, self.n / self.total), f"{self.n}/{self.total} {self.unit}")
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


def current_sink() -> Callable[[float, str], None] | None:
    """Where Progress bars created here would report (to hand to a worker thread)."""
    return _stage_sink.get()


@contextmanager
def reporting_to(sink: Callable[[float, str], None] | None) -> Iterator[None]:
    """Progress bars created inside (in this thread or context) report their fraction to `sink`.

    What a worker thread uses to feed its share of a stage (threads do not inherit the caller's).
    """
    token = _stage_sink.set(sink)
    try:
        yield
    finally:
        _stage_sink.reset(token)


class Stages:
    """Progress of one build made of named, weighted stages, readable from any thread.

    `weight` is a stage's expected share of the work (from measured builds); it only shapes the
    percent. The ETA comes from the rate measured in this run: work done here per second, so
    stages reused from an interrupted build count as done without making the estimate optimistic.
    `log` gets one line when a stage starts and ends and one each time the total crosses a 10% step.
    """

    def __init__(
        self,
        what: str,
        plan: Sequence[tuple[str, float]] = (),
        *,
        log: Callable[[str], None] | None = None,
        on_update: Callable[[dict[str, Any]], None] | None = None,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.log = log
        self.on_update = on_update
        self.interval_s = interval_s
        self._notified = -float("inf")
        self.clock = clock
        self._lock = threading.Lock()
        self._names: list[str] = []
        self._weight: dict[str, float] = {}
        self._status: dict[str, str] = {}  # pending, running, done, reused
        self._seconds: dict[str, float] = {}
        self._cpu: dict[str, float] = {}  # process CPU seconds (all threads) spent while the stage ran
        self._stage_cpu = 0.0
        self._fraction = 0.0
        self._note = ""
        self._span = (0.0, 1.0)
        self._current: str | None = None
        self._stage_started = 0.0
        self.started = clock()
        self._logged_step = 0
        self.expect(plan)

    # -- the plan ---------------------------------------------------------------------------
    def expect(self, plan: Sequence[tuple[str, float]]) -> None:
        """Add stages, placed before the stages still pending (a caller declares its last stage
        first; the library adds the stages it finds it must run)."""
        with self._lock:
            new = [(n, float(w)) for n, w in plan if n not in self._weight]
            if not new:
                return
            first_pending = next(
                (i for i, n in enumerate(self._names) if self._status[n] == "pending"), len(self._names)
            )
            self._names[first_pending:first_pending] = [n for n, _ in new]
            for n, w in new:
                self._weight[n] = max(w, 1e-6)
                self._status[n] = "pending"

    # -- reporting --------------------------------------------------------------------------
    @contextmanager
    def stage(self, name: str, note: str = "") -> Iterator[Stages]:
        """Run one stage: Progress bars created inside feed its fraction; it ends done (or not, on error)."""
        self.begin(name, note)
        token = _stage_sink.set(self._from_progress)
        try:
            yield self
        finally:
            _stage_sink.reset(token)
        self.end(name)

    @contextmanager
    def span(self, low: float, high: float) -> Iterator[None]:
        """Inner progress of this part of the current stage maps to [low, high] of it."""
        with self._lock:
            previous, self._span = self._span, (low, high)
        try:
            yield
        finally:
            with self._lock:
                self._span = previous
            self.update(high)

    def begin(self, name: str, note: str = "") -> None:
        self.expect([(name, 1.0)])
        with self._lock:
            if all(st == "pending" for st in self._status.values()):
                self.started = self.clock()  # elapsed and the rate count from the first stage
            self._current = name
            self._status[name] = "running"
            self._fraction, self._note, self._span = 0.0, note, (0.0, 1.0)
            self._stage_started = self.clock()
            self._stage_cpu = time.process_time()
            index = self._names.index(name) + 1
        self._say(f"stage {index}/{len(self._names)} {name} started" + (f" ({note})" if note else ""))
        self._notify(force=True)

    def update(self, fraction: float, note: str | None = None) -> None:
        """Fraction (0..1) of the current stage done; never goes back."""
        with self._lock:
            if self._current is None:
                return
            self._fraction = max(self._fraction, min(1.0, float(fraction)))
            if note is not None:
                self._note = note
        self._maybe_step()
        self._notify()

    def _from_progress(self, fraction: float, note: str) -> None:
        low, high = self._span
        self.update(low + (high - low) * fraction, note)

    def end(self, name: str, *, reused: bool = False) -> None:
        """Mark a stage finished (`reused`: its output came from an earlier, interrupted run)."""
        self.expect([(name, 1.0)])
        with self._lock:
            took = 0.0 if reused else self.clock() - self._stage_started
            if reused or self._current != name:
                took = 0.0
            self._status[name] = "reused" if reused else "done"
            self._seconds[name] = round(took, 2)
            if took:
                self._cpu[name] = round(time.process_time() - self._stage_cpu, 2)
            if self._current == name:
                self._current, self._fraction, self._note = None, 0.0, ""
        self._say(
            f"stage {name} " + ("reused from an interrupted build" if reused else f"done in {took:.1f}s")
        )
        self._maybe_step()
        self._notify(force=True)

    # -- reading ----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Stage, percent, elapsed and ETA (None until a rate is measured), and every stage's state."""
        with self._lock:
            return self._snapshot()

    def _snapshot(self) -> dict[str, Any]:
        total = sum(self._weight.values()) or 1.0
        reused = sum(self._weight[n] for n in self._names if self._status[n] == "reused")
        done_here = sum(self._weight[n] for n in self._names if self._status[n] == "done")
        if self._current is not None:
            done_here += self._weight[self._current] * self._fraction
        elapsed = self.clock() - self.started
        remaining = max(0.0, total - reused - done_here)
        eta = None
        if done_here > 0 and elapsed >= 1.0:
            eta = round(remaining / (done_here / elapsed), 1)
        current = self._current
        return {
            "stage": current,
            "stage_index": self._names.index(current) + 1 if current else None,
            "stage_count": len(self._names),
            "stage_percent": round(100 * self._fraction, 1) if current else None,
            "note": self._note,
            "percent": round(100 * (reused + done_here) / total, 1),
            "elapsed_s": round(elapsed, 1),
            "eta_s": eta,
            "stages": [
                {
                    "name": n,
                    "status": self._status[n],
                    "seconds": self._seconds.get(n),
                    "cpu_s": self._cpu.get(n),
                }
                for n in self._names
            ],
        }

    def line(self) -> str:
        snap = self.snapshot()
        eta = "?" if snap["eta_s"] is None else _duration(snap["eta_s"])
        where = f", {snap['stage']} {snap['stage_percent']:.0f}%" if snap["stage"] else ""
        note = f" {snap['note']}" if snap["note"] else ""
        return f"{snap['percent']:.0f}%{where}{note} [{_duration(snap['elapsed_s'])} elapsed, ETA {eta}]"

    def _maybe_step(self) -> None:
        with self._lock:
            step = int(self._snapshot()["percent"] // 10)
            if step <= self._logged_step:
                return
            self._logged_step = step
        self._say(self.line())

    def _notify(self, force: bool = False) -> None:
        """Hand a snapshot to `on_update` (a job's store row): on stage changes, else at most every interval_s."""
        if self.on_update is None:
            return
        now = self.clock()
        if not force and now - self._notified < self.interval_s:
            return
        self._notified = now
        try:
            self.on_update(self.snapshot())
        except Exception:  # a store that blinks must not stop the work it reports on
            pass

    def _say(self, text: str) -> None:
        if self.log is not None:
            try:
                self.log(f"{self.what}: {text}")
            except Exception:  # a broken log sink must not stop a build
                pass
