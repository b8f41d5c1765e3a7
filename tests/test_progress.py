"""The CLI progress reporter: a redrawn bar with ETA on a real pseudo-terminal, plain lines into a pipe."""

from __future__ import annotations

import os
import re
import select
import time

import pytest

from explainers import progress
from explainers.progress import Progress


def _drain(fd: int) -> str:
    out = b""
    while select.select([fd], [], [], 0.2)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the pty's other end is closed
            break
        if not chunk:
            break
        out += chunk
    return out.decode()


def test_bar_with_eta_on_a_pseudo_terminal() -> None:
    master, slave = os.openpty()
    with os.fdopen(slave, "w", buffering=1) as tty:
        assert tty.isatty()
        bar = Progress(40, "train", stream=tty, unit="step", interval_s=0.0, active=True)
        assert bar.tty
        for i in range(40):
            time.sleep(0.002)
            bar.update(note=f"loss {1.0 / (i + 1):.3f}")
        bar.close()
        text = _drain(master)
    os.close(master)
    frames = [f for f in text.replace("\r\n", "\n").split("\r") if f.strip()]
    assert len(frames) >= 40, "one redraw per update with interval 0"
    assert all(f.startswith("\x1b[2K") for f in frames), "each redraw clears the line"
    first, last = frames[0], frames[-1]
    assert re.search(
        r"train:\s+\d+% \|#*-+\| 1/40 step \[\d\d:\d\d<\d\d:\d\d, [\d.]+ step/s\] loss 1\.000", first
    )
    assert "100% |" + "#" * 28 + "| 40/40 step" in last and "loss 0.025" in last
    assert last.endswith("\n") and text.count("\n") == 1, "a single newline, when the bar closes"


def test_quiet_periodic_lines_into_a_pipe() -> None:
    r, w = os.pipe()
    with os.fdopen(w, "w") as pipe:
        assert not pipe.isatty()
        bar = Progress(1000, "embed", stream=pipe, unit="text", interval_s=0.05, active=True)
        started = time.monotonic()
        for _ in range(1000):
            bar.update()
            time.sleep(0.0002)
        elapsed = time.monotonic() - started
        bar.close()
    with os.fdopen(r) as f:
        text = f.read()
    lines = text.splitlines()
    assert "\r" not in text and "\x1b" not in text and "|" not in text, "no terminal control in a log"
    # The first update writes, then at most one line per interval, and one closing line.
    assert 2 <= len(lines) <= elapsed / 0.05 + 3, (len(lines), elapsed)
    assert re.fullmatch(r"embed:\s+0% 1/1000 text \[\d\d:\d\d<(\d\d:\d\d|\?), [\d.]+ text/s\]", lines[0])
    assert lines[-1].startswith("embed: 100% 1000/1000 text [")


def test_silent_unless_enabled(monkeypatch) -> None:
    r, w = os.pipe()
    monkeypatch.delenv("CACE_PROGRESS", raising=False)
    progress.enable(False)
    with os.fdopen(w, "w") as pipe:
        with Progress(10, "quiet", stream=pipe, interval_s=0.0) as bar:
            for _ in range(10):
                bar.update()
        monkeypatch.setenv("CACE_PROGRESS", "1")  # the environment forces it on
        with Progress(None, "forced", stream=pipe, interval_s=0.0) as bar:
            bar.update(3)
    with os.fdopen(r) as f:
        text = f.read()
    assert "quiet" not in text
    assert re.match(r"forced: 3 it \d\d:\d\d [\d.]+ it/s\n", text)
    monkeypatch.setenv("CACE_PROGRESS", "0")
    progress.enable(True)
    try:
        assert not progress.enabled(), "CACE_PROGRESS=0 wins over enable()"
    finally:
        progress.enable(False)


@pytest.mark.server  # runs `cace bench` as a process
def test_cace_bench_reports_progress_on_a_terminal_and_in_a_pipe(tfidf_lr_dir) -> None:
    """The `cace` entry point switches progress on: a bar on a pseudo-terminal, plain lines into a pipe."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(tfidf_lr_dir).parents[1]
    cmd = [
        sys.executable,
        "-m",
        "app.cli",
        "bench",
        "cebab",
        "--root",
        str(root),
        "--limit",
        "12",
        "--explainers",
        "zero",
        "--k",
        "1",
        "--no-write",
    ]
    env = {**os.environ, "CACE_PROGRESS": ""}
    piped = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert piped.returncode == 0, piped.stderr[-2000:]
    assert re.search(r"^zero K=1: 100% 12/12 pair \[", piped.stderr, re.M), piped.stderr
    assert "\r" not in piped.stderr

    master, slave = os.openpty()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=slave, env=env)
    os.close(slave)
    out = ""
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        out += _drain(master)
    out += _drain(master)  # what is left after the process ended (then the pty reads EIO)
    proc.wait(timeout=10)
    os.close(master)
    assert proc.returncode == 0
    assert re.search(r"\r\x1b\[2Kzero K=1: 100% \|#{28}\| 12/12 pair \[", out), out[-2000:]
