"""Time to ready of `cace serve` on the embedded defaults: cold (fresh data dir and caches), warm,
and a cold start killed half way then restarted (the build resumes its finished stages).

Each start is a real `python -m app.server` subprocess polled on /readyz every second; the
stages, percent and ETA it reports are recorded, and so is the process's CPU time (user + sys,
all threads), which other work on a shared machine barely moves: on an idle 2-core machine the
wall time is about CPU time / (the cores the work keeps busy). After ready, the first and the
tenth request of the prebuilt methods are timed (a first request must cost what the tenth does).

    .venv/bin/python -m benchmarks.startup                 # cold start -> results/startup_idle.md
    .venv/bin/python -m benchmarks.startup --runs cold,warm,resume --out benchmarks/results/startup.md

By default one cold start, written to benchmarks/results/startup_idle.md (and .json beside it):
the number the README quotes, meant for an idle machine; the load average before the start is
recorded and a note says when the machine was not idle (the wall time is then an upper bound).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"
TEXT = "The food was delicious but the waiter ignored us for twenty minutes."
METHODS = ("match", "splice", "auto")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def start(data_dir: Path, cache_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CACE_DATA_DIR": str(data_dir),
        "CACE_CACHE_DIR": str(cache_dir),
        "CACE_PORT": str(port),
        "CACE_HOST": "127.0.0.1",
        "CACE_AUTO_CALIBRATE": "false",
        "CACE_DATABASE_URL": f"sqlite:///{data_dir / 'jobs.sqlite'}",
        "CACE_LOG_FORMAT": "text",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "app.server", "--log-level", "info"],
        cwd=ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def until_ready(
    proc: subprocess.Popen[bytes], base: str, *, timeout: float, kill_at_stage: str | None = None
) -> dict[str, Any]:
    """Poll /readyz each second until 200 (or, with kill_at_stage, until that stage starts: SIGKILL)."""
    started = time.monotonic()
    samples: list[dict[str, Any]] = []
    loads = [loadavg()]
    cpu = 0.0
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited with {proc.returncode}")
        try:
            cpu = cpu_seconds(proc.pid)
            r = httpx.get(base + "/readyz", timeout=5)
        except (httpx.HTTPError, OSError):
            time.sleep(0.5)
            continue
        t = time.monotonic() - started
        body = r.json()
        dom = body["components"].get("domain", {})
        prog = dom.get("progress") or {}
        samples.append(
            {
                "t": round(t, 1),
                "percent": prog.get("percent"),
                "eta_s": prog.get("eta_s"),
                "stage": prog.get("stage"),
            }
        )
        loads.append(loadavg())
        if kill_at_stage is not None and prog.get("stage") == kill_at_stage:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            return {"killed_at_s": round(t, 1), "killed_in_stage": kill_at_stage, "samples": samples}
        if r.status_code == 200:
            return {
                "ready_s": round(t, 1),
                "cpu_s": round(cpu, 1),
                "load_avg": round(sum(loads) / len(loads), 2),
                "components": body["components"],
                "samples": samples,
            }
        time.sleep(1.0)
    raise TimeoutError(f"not ready after {timeout}s")


def first_requests(base: str) -> dict[str, dict[str, float]]:
    """Wall ms (client side) and the answer's timings.total_ms, first and tenth request per method."""
    out: dict[str, dict[str, float]] = {}
    with httpx.Client(base_url=base, timeout=300) as c:
        for method in METHODS:
            times, totals = [], []
            for i in range(10):
                body = {
                    "text": TEXT if i == 0 else f"{TEXT} Visit {i}.",
                    "intervention": {"concept": "service", "target": "Positive"},
                    "method": method,
                    "top_k": 5,
                }
                t = time.perf_counter()
                r = c.post("/v1/explanations", json=body)
                r.raise_for_status()
                times.append((time.perf_counter() - t) * 1000)
                totals.append(r.json()["timings"]["total_ms"])
            out[method] = {
                "first_ms": round(times[0], 1),
                "first_total_ms": round(totals[0], 1),
                "tenth_ms": round(times[9], 1),
                "tenth_total_ms": round(totals[9], 1),
            }
    return out


def eta_error(samples: list[dict[str, Any]], ready_s: float) -> str:
    """How far the ETA shown at 25/50/75% of the time to ready was from the real remaining time."""
    parts = []
    for share in (0.25, 0.5, 0.75):
        near = [s for s in samples if s["eta_s"] is not None and s["t"] >= share * ready_s]
        if near:
            s = near[0]
            parts.append(f"at {s['t']:.0f}s: ETA {s['eta_s']:.0f}s, really {ready_s - s['t']:.0f}s")
    return "; ".join(parts) or "no ETA sampled"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="cold", help="any of cold,warm,resume")
    ap.add_argument("--port", type=int, default=9710)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--out", type=Path, default=OUT / "startup_idle.md")
    ap.add_argument("--render-only", action="store_true", help="rewrite the .md from the .json beside it")
    args = ap.parse_args(argv)
    if args.render_only:
        saved = json.loads(args.out.with_suffix(".json").read_text())
        write(args.out, saved["results"], saved["took_s"], saved.get("date"), saved.get("notes", []))
        return 0
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    base = f"http://127.0.0.1:{args.port}"
    work = Path(tempfile.mkdtemp(prefix="cace-startup-"))
    log = work / "server.log"
    results: dict[str, Any] = {}
    before = loadavg()
    begun = time.time()
    try:
        data, cache = work / "var", work / "cache"
        # A warm start loads what the cold one built in the same folders.
        for name in [n for n in ("cold", "warm") if n in runs or (n == "cold" and "warm" in runs)]:
            proc = start(data, cache, args.port, log)
            try:
                results[name] = until_ready(proc, base, timeout=args.timeout)
                results[name]["encoder"] = built_encoder(data)
                results[name]["requests"] = first_requests(base)
            finally:
                stop(proc)
            print(name, json.dumps({k: v for k, v in results[name].items() if k != "samples"}), flush=True)
        if "resume" in runs:
            # A cold start killed when the taggers stage begins (the corpus is embedded), then restarted.
            data, cache = work / "var-resume", work / "cache-resume"
            proc = start(data, cache, args.port, log)
            try:
                killed = until_ready(proc, base, timeout=args.timeout, kill_at_stage="taggers")
            finally:
                stop(proc)
            leftover = sorted(p.name for p in (data / "domains").glob("*.building-*"))
            proc = start(data, cache, args.port, log)
            try:
                results["resume"] = {
                    **until_ready(proc, base, timeout=args.timeout),
                    **killed,
                    "staging": leftover,
                    "encoder": built_encoder(data),
                }
            finally:
                stop(proc)
            print(
                "resume",
                json.dumps({k: v for k, v in results["resume"].items() if k != "samples"}),
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    took = time.time() - begun
    notes = [idle_note(before, results)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(
        json.dumps(
            {"results": results, "took_s": took, "date": time.strftime("%Y-%m-%d"), "notes": notes},
            indent=1,
        )
    )
    write(args.out, results, took, notes=notes)
    return 0


def built_encoder(data_dir: Path) -> dict[str, Any] | None:
    """The encoder (model, backend) the default domain's meta.json says embedded its corpus."""
    meta = data_dir / "domains" / "cebab" / "meta.json"
    return json.loads(meta.read_text()).get("encoder") if meta.exists() else None


def idle_note(before: float, results: dict[str, Any]) -> str:
    """Whether the machine was idle: its 1-minute load average before the start, against the cores."""
    cores = os.cpu_count() or 1
    during = [r["load_avg"] for r in results.values() if isinstance(r, dict) and "load_avg" in r]
    seen = f"load average {before:.2f} before the start" + (
        f", {max(during):.2f} during it" if during else ""
    )
    if before < 0.5:
        return f"Measured on this machine idle apart from the benchmark itself ({seen}; {cores} cores)."
    return (
        f"NOT idle: {seen} on {cores} cores, other work shared the machine; the wall times are "
        "upper bounds (CPU s is the comparable number). Rerun on an idle machine for the README."
    )


def write(
    path: Path, results: dict[str, Any], took: float, date: str | None = None, notes: list[str] | None = None
) -> None:
    lines = [
        "# Start-up: time to ready of `cace serve` on the embedded defaults (CEBaB + tfidf-lr)",
        "",
        f"{os.cpu_count()} CPU cores ({platform.machine()}), shared with other work: the load average "
        "column is the machine's during the start (2.0 = both cores busy). CPU s is the server "
        "process's user + system time, which contention barely moves; on an idle 2-core machine the "
        "wall time is close to CPU s / 1.5-2 (the encoder keeps about two cores busy).",
        "",
        "| start | encoder backend | ready (wall s) | CPU s | load avg | stages (s) |",
        "|---|---|---:|---:|---:|---|",
    ]
    for name in ("cold", "warm", "resume"):
        r = results.get(name)
        if not r or "ready_s" not in r:
            continue
        comps = r["components"]
        stages = []
        for comp in ("classifier", "domain"):
            prog = (comps.get(comp) or {}).get("progress") or {}
            for s in prog.get("stages", []):
                if s["status"] == "reused":
                    stages.append(f"{s['name']} reused")
                else:
                    cpu = f" (CPU {s['cpu_s']})" if s.get("cpu_s") is not None else ""
                    stages.append(f"{s['name']} {s['seconds']}{cpu}")
        label = (
            name
            if name != "resume"
            else f"resume (cold start killed at {r['killed_in_stage']}, {r['killed_at_s']}s)"
        )
        backend = (r.get("encoder") or {}).get("backend") or "?"
        lines.append(
            f"| {label} | {backend} | {r['ready_s']} | {r['cpu_s']} | {r['load_avg']} | {', '.join(stages)} |"
        )
    lines += ["", "ETA shown against the real remaining time:", ""]
    for name in ("cold", "resume"):
        r = results.get(name)
        if r and "ready_s" in r:
            lines.append(f"- {name}: {eta_error(r['samples'], r['ready_s'])}")
    reqs = [(n, results[n]["requests"]) for n in ("cold", "warm") if results.get(n, {}).get("requests")]
    if reqs:
        lines += [
            "",
            "First and tenth `POST /v1/explanations` after ready (K=5, a new text each; client wall ms / "
            "the answer's `timings.total_ms`):",
            "",
            "| start | method | first | tenth |",
            "|---|---|---:|---:|",
        ]
        for name, by_method in reqs:
            for m, t in by_method.items():
                lines.append(
                    f"| {name} | {m} | {t['first_ms']} / {t['first_total_ms']} | {t['tenth_ms']} / {t['tenth_total_ms']} |"
                )
    lines += ["", f"Run took {took / 60:.1f} min on {date or time.strftime('%Y-%m-%d')}.", ""]
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    path.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
