"""`cace explain | effects | report | compare`: a client of the HTTP API (or of an in-process service).

Requests are built with the API's own models (`app.schemas`) and sent with httpx to `--url`
(env CACE_URL) with `--api-key` (env CACE_API_KEY) as a bearer token; `--in-process` starts the
service inside this process instead (settings from CACE_* variables) and talks to it through the
same client code. Jobs are followed with a progress bar on stderr; results are written to the
`-o` files, the format taken from each file's extension (.json, .csv, .md, .html; .jsonl for
effects rows). `cace compare --max-shift 0.05` (or `--thresholds FILE.json`, per concept) exits
1 when a cell's CaCE moved beyond the threshold: a gate a CI pipeline can run before promoting
a model. Exit codes: 0 ok, 1 gate failed, 2 usage, 3 the service answered with a problem.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError

from app.schemas import (
    ComparisonRequest,
    EffectsRequest,
    EffectText,
    ExplanationRequest,
    JobOut,
    ReportRequest,
    SampleSpec,
)
from explainers.progress import Progress

EXIT_OK, EXIT_GATE, EXIT_USAGE, EXIT_PROBLEM = 0, 1, 2, 3
REPORT_FORMATS = {".json": "json", ".csv": "csv", ".md": "md", ".html": "html", ".htm": "html"}


class ClientError(Exception):
    """The service answered with a problem (or could not be reached)."""

    def __init__(self, message: str, code: int = EXIT_PROBLEM) -> None:
        super().__init__(message)
        self.code = code


def _problem(r: httpx.Response) -> ClientError:
    try:
        body = r.json()
        fields = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in body.get("errors") or [])
        msg = f"{r.status_code} {body.get('title')}: {body.get('detail')}" + (
            f" ({fields})" if fields else ""
        )
    except ValueError:
        msg = f"{r.status_code}: {r.text[:500]}"
    return ClientError(msg)


def _check(r: httpx.Response) -> httpx.Response:
    if r.status_code >= 400:
        raise _problem(r)
    return r


@contextlib.contextmanager
def connect(args: argparse.Namespace) -> Iterator[httpx.Client]:
    """An httpx client of the running service, or of one started in this process (`--in-process`)."""
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    if args.in_process:
        from fastapi.testclient import TestClient

        from app.main import create_app

        with TestClient(create_app(), base_url="http://in-process", headers=headers) as client:
            client.timeout = httpx.Timeout(args.timeout)
            deadline = time.monotonic() + args.timeout
            while client.get("/readyz").status_code != 200:  # the defaults load in the background
                if time.monotonic() > deadline:
                    raise ClientError(f"the in-process service was not ready after {args.timeout}s")
                time.sleep(0.5)
            yield client
        return
    if not args.url:
        raise ClientError("no service URL: pass --url or set CACE_URL (or use --in-process)", EXIT_USAGE)
    with httpx.Client(base_url=args.url.rstrip("/"), headers=headers, timeout=args.timeout) as client:
        yield client


def follow(client: httpx.Client, location: str, what: str, timeout: float) -> dict[str, Any]:
    """Poll a job (a report, comparison or effects job) until it is final, with a progress bar on stderr."""
    deadline = time.monotonic() + timeout
    with Progress(None, what, unit="texts") as bar:
        done = 0
        while True:
            job = JobOut.model_validate(_check(client.get(location)).json())
            bar.total = job.total or None
            now = job.counts.get("done", 0) + job.counts.get("failed", 0)
            if now > done:
                bar.update(now - done, note=job.status)
                done = now
            if job.status in ("succeeded", "failed", "cancelled"):
                break
            if time.monotonic() > deadline:
                raise ClientError(f"{what} {job.id} not finished after {timeout}s (still {job.status})")
            time.sleep(0.5)
    if job.status != "succeeded":
        raise ClientError(f"{what} {job.id} {job.status}: {job.error or job.item_errors[:3]}")
    return job.model_dump(mode="json")


def _read_texts(path: str) -> list[str | EffectText]:
    """Texts from a file: JSONL (a JSON string or {text, id, labels} per line) or plain text (a line each)."""
    out: list[str | EffectText] = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        if line.lstrip().startswith(("{", '"')):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ClientError(f"{path}:{n}: not JSON: {e}", EXIT_USAGE) from e
            out.append(obj if isinstance(obj, str) else EffectText.model_validate(obj))
        else:
            out.append(line)
    if not out:
        raise ClientError(f"{path}: no texts", EXIT_USAGE)
    return out


def _write(path: str, body: str | bytes) -> None:
    Path(path).write_bytes(body.encode() if isinstance(body, str) else body)
    print(f"wrote {path}", file=sys.stderr)


def _classifier(ref: str | None) -> str | dict[str, Any] | None:
    """A name, or an inline spec given as JSON."""
    if ref is None or not ref.lstrip().startswith("{"):
        return ref
    return dict(json.loads(ref))


# ---- subcommands ---------------------------------------------------------------------------------
def cmd_explain(args: argparse.Namespace, client: httpx.Client) -> int:
    req = ExplanationRequest.model_validate(
        {
            "text": args.text,
            "intervention": {"concept": args.concept, "target": args.target, "source": args.source},
            "classifier": _classifier(args.classifier),
            "domain": args.domain,
            "method": args.method,
            "top_k": args.top_k,
        }
    )
    body = _check(client.post("/v1/explanations", json=req.model_dump(mode="json", exclude_none=True))).json()
    return _emit(args, body)


def cmd_effects(args: argparse.Namespace, client: httpx.Client) -> int:
    req = EffectsRequest.model_validate(
        {
            "texts": _read_texts(args.texts),
            "intervention": {"concept": args.concept, "target": args.target, "source": args.source},
            "classifier": _classifier(args.classifier),
            "domain": args.domain,
            "method": args.method,
            "top_k": args.top_k,
            "mode": "job",
        }
    )
    r = _check(client.post("/v1/effects", json=req.model_dump(mode="json", exclude_none=True)))
    job = follow(client, r.headers["Location"], "effects", args.wait)
    for out in args.output or []:
        if out.endswith(".jsonl"):
            _write(out, _check(client.get(f"/v1/jobs/{job['id']}/rows.jsonl")).content)
        elif out.endswith(".csv"):
            _write(out, _effects_csv(job["result"]))
        else:
            _write(out, json.dumps(job["result"], indent=2))
    if not args.output:
        print(json.dumps(job["result"], indent=2))
    return EXIT_OK


def _effects_csv(result: dict[str, Any]) -> str:
    lines = ["label,cace,ci_low,ci_high"]
    lines += [
        f"{lab},{result['cace'][lab]},{result['ci_low'][lab]},{result['ci_high'][lab]}"
        for lab in result["labels"]
    ]
    return "\n".join(lines) + "\n"


def _options(args: argparse.Namespace) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "domain": args.domain,
        "method": args.method,
        "top_k": args.top_k,
        "seed": args.seed,
        "concepts": args.concepts.split(",") if args.concepts else None,
    }
    if args.texts:
        opts["texts"] = _read_texts(args.texts)
    else:
        opts["sample"] = SampleSpec(size=args.sample, seed=args.sample_seed)
    return opts


def _downloads(client: httpx.Client, job: dict[str, Any], outputs: list[str]) -> None:
    for out in outputs:
        fmt = REPORT_FORMATS.get(Path(out).suffix.lower())
        if fmt is None:
            raise ClientError(f"{out}: unknown extension; use one of {sorted(REPORT_FORMATS)}", EXIT_USAGE)
        _write(out, _check(client.get(job["links"][fmt])).content)


def cmd_report(args: argparse.Namespace, client: httpx.Client) -> int:
    req = ReportRequest.model_validate(
        {**_options(args), "classifier": _classifier(args.classifier), "placebo": not args.no_placebo}
    )
    r = _check(client.post("/v1/reports", json=req.model_dump(mode="json", exclude_none=True)))
    job = follow(client, r.headers["Location"], "report", args.wait)
    _downloads(client, job, args.output or [])
    result = job["result"]
    for c in result["cells"][: args.show]:
        pl = c.get("placebo") or {}
        mark = " above noise" if pl.get("above_noise") else ""
        print(f"{c['rank']:>3} {c['key']:<40} effect {c['effect']:.3f} on {c['effect_label']}{mark}")
    return EXIT_OK


def cmd_compare(args: argparse.Namespace, client: httpx.Client) -> int:
    thresholds = None
    if args.thresholds:
        try:
            thresholds = json.loads(Path(args.thresholds).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ClientError(f"{args.thresholds}: {e}", EXIT_USAGE) from e
        if not isinstance(thresholds, dict):
            raise ClientError(f"{args.thresholds}: expected a JSON object {{concept: threshold}}", EXIT_USAGE)
    req = ComparisonRequest.model_validate(
        {
            **_options(args),
            "classifiers": [_classifier(args.baseline), _classifier(args.candidate)],
            "threshold": args.max_shift,
            "thresholds": thresholds,
        }
    )
    r = _check(client.post("/v1/comparisons", json=req.model_dump(mode="json", exclude_none=True)))
    job = follow(client, r.headers["Location"], "comparison", args.wait)
    _downloads(client, job, args.output or [])
    result = job["result"]
    flagged = [c for c in result["cells"] if c["flagged"]]
    for c in result["cells"][: args.show]:
        mark = f" FLAGGED (> {c['threshold']})" if c["flagged"] else ""
        print(f"{c['rank']:>3} {c['key']:<40} shift {c['shift']:.3f} on {c['shift_label']}{mark}")
    if flagged:
        print(
            f"{len(flagged)} cell(s) moved beyond the threshold: " + ", ".join(c["key"] for c in flagged),
            file=sys.stderr,
        )
        return EXIT_GATE
    return EXIT_OK


def _emit(args: argparse.Namespace, body: dict[str, Any]) -> int:
    text = json.dumps(body, indent=2)
    for out in args.output or []:
        _write(out, text)
    if not args.output:
        print(text)
    return EXIT_OK


# ---- argument parsing ----------------------------------------------------------------------------
def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=os.environ.get("CACE_URL"), help="service URL (env CACE_URL)")
    p.add_argument("--api-key", default=os.environ.get("CACE_API_KEY"), help="API key (env CACE_API_KEY)")
    p.add_argument(
        "--in-process", action="store_true", help="run the service in this process (CACE_* settings)"
    )
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per HTTP request")
    p.add_argument("--domain", default=None)
    p.add_argument("--method", default=None)
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("-o", "--output", action="append", help="output file (repeatable; format from extension)")


def _one_intervention(p: argparse.ArgumentParser) -> None:
    p.add_argument("--concept", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--source", default=None)
    p.add_argument("--classifier", default=None, help="a name, or an inline spec as JSON")


def _many(p: argparse.ArgumentParser) -> None:
    p.add_argument("--texts", help="JSONL ({text, id, labels} or a string per line) or one text per line")
    p.add_argument("--sample", type=int, default=200, help="without --texts: corpus texts to draw")
    p.add_argument("--sample-seed", type=int, default=0)
    p.add_argument("--seed", type=int, default=0, help="bootstrap and placebo seed")
    p.add_argument("--concepts", help="comma-separated concepts (default: all)")
    p.add_argument("--wait", type=float, default=3600.0, help="seconds to wait for the job")
    p.add_argument("--show", type=int, default=10, help="cells printed to stdout")


def parser(command: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"cace {command}")
    _common(p)
    if command == "explain":
        p.add_argument("--text", required=True)
        _one_intervention(p)
    elif command == "effects":
        p.add_argument("--texts", required=True, help="JSONL or one text per line")
        p.add_argument("--wait", type=float, default=3600.0)
        _one_intervention(p)
    elif command == "report":
        _many(p)
        p.add_argument("--classifier", default=None, help="a name, or an inline spec as JSON")
        p.add_argument("--no-placebo", action="store_true")
        p.set_defaults(method="match")
    else:
        _many(p)
        p.add_argument("--baseline", required=True, help="the classifier in use (name or JSON spec)")
        p.add_argument("--candidate", required=True, help="the classifier to promote (name or JSON spec)")
        p.add_argument("--max-shift", type=float, default=0.05, help="largest |CaCE change| allowed per cell")
        p.add_argument(
            "--thresholds", help="JSON file {concept: max shift} overriding --max-shift per concept"
        )
        p.set_defaults(method="match")
    return p


COMMANDS = {"explain": cmd_explain, "effects": cmd_effects, "report": cmd_report, "compare": cmd_compare}


def run(command: str, argv: list[str]) -> int:
    args = parser(command).parse_args(argv)
    try:
        with connect(args) as client:
            return COMMANDS[command](args, client)
    except ClientError as e:
        print(f"cace {command}: {e}", file=sys.stderr)
        return e.code
    except ValidationError as e:  # the API's own request models refused the arguments
        print(f"cace {command}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except httpx.HTTPError as e:
        print(f"cace {command}: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_PROBLEM


def explain_main(argv: list[str]) -> int:
    return run("explain", argv)


def effects_main(argv: list[str]) -> int:
    return run("effects", argv)


def report_main(argv: list[str]) -> int:
    return run("report", argv)


def compare_main(argv: list[str]) -> int:
    return run("compare", argv)
