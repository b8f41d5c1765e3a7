"""A test-only classifier server that misbehaves on purpose (run with uvicorn from .venv).

Real faults that a healthy MLServer or KServe will not produce on demand: slowness, a 500
before success, a 400 for texts carrying a mark, a 500 for large batches, 429 with Retry-After, non-JSON, the wrong number of rows, NaN, unknown
labels, top-1-only answers, a bearer-token check. Every route speaks Hugging Face text-classification JSON
(`{"inputs": [...]}` -> nested label/score rows) for labels neg/neu/pos, and records per
`key` how many requests arrived, their batch sizes, arrival times and peak concurrency,
so tests can check retries, Retry-After and batching from the server's side
(`GET /calls/{key}`).

    uvicorn tests.model_servers.misbehaving:app --port PORT
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import time
from collections import defaultdict
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

LABELS = ["neg", "neu", "pos"]


def logits(text: str) -> list[float]:
    """Deterministic per-text logits, so tests can recompute the expected probabilities."""
    return [float(len(text) % 5), float((len(text) // 2) % 3), float(text.count("a") % 4)]


def proba(text: str) -> list[float]:
    z = logits(text)
    m = max(z)
    e = [math.exp(v - m) for v in z]
    s = sum(e)
    return [v / s for v in e]


def hf_row(scores: list[float], labels: list[str] = LABELS) -> list[dict[str, Any]]:
    pairs = sorted(zip(labels, scores, strict=True), key=lambda p: -p[1])
    return [{"label": lab, "score": s} for lab, s in pairs]


CALLS: dict[str, dict[str, Any]] = defaultdict(
    lambda: {"count": 0, "batch_sizes": [], "times": [], "inflight": 0, "max_inflight": 0}
)


async def predict(request: Request) -> Response:
    mode = request.path_params["mode"]
    key = request.path_params["key"]
    q = request.query_params
    rec = CALLS[key]
    rec["count"] += 1
    rec["times"].append(time.time())
    body = await request.json()
    texts = body["inputs"] if isinstance(body["inputs"], list) else [body["inputs"]]
    rec["batch_sizes"].append(len(texts))
    rec["inflight"] += 1
    rec["max_inflight"] = max(rec["max_inflight"], rec["inflight"])
    try:
        n_fail = int(q.get("n", "1"))
        if mode == "slow":
            await asyncio.sleep(float(q.get("s", "1")))
        elif mode == "flaky" and rec["count"] <= n_fail:
            return PlainTextResponse("internal error, try again", status_code=int(q.get("status", "500")))
        elif mode == "ratelimit" and rec["count"] <= n_fail:
            after = float(q.get("after", "1"))
            value = (
                email.utils.formatdate(time.time() + after + 1, usegmt=True)
                if q.get("date")
                else str(int(after))
            )
            return PlainTextResponse("slow down", status_code=429, headers={"Retry-After": value})
        elif mode == "auth" and request.headers.get("authorization") != "Bearer t0ken":
            return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401)
        elif mode == "reject":
            return JSONResponse({"error": "inputs too long"}, status_code=400)
        elif mode == "rejectmarked" and any(q.get("mark", "FAIL") in t for t in texts):
            return JSONResponse({"error": "a text carries the mark"}, status_code=400)
        elif mode == "bigfail" and len(texts) > int(q.get("max", "8")):
            return PlainTextResponse("batch too large, try again", status_code=500)
        elif mode == "badjson":
            return PlainTextResponse(
                "<html>gateway says hi", status_code=200, headers={"content-type": "application/json"}
            )
        elif mode == "short":
            texts = texts[:-1]
        elif mode == "nan":
            return Response(
                '[[{"label": "neg", "score": NaN}, {"label": "neu", "score": 0.5},'
                ' {"label": "pos", "score": 0.5}]]',
                media_type="application/json",
            )
        elif mode == "unknown":
            return JSONResponse([hf_row(proba(t), ["neg", "neu", "bogus"]) for t in texts])
        elif mode == "top1":
            return JSONResponse([hf_row(proba(t))[0] for t in texts])
        elif mode == "logits":
            return JSONResponse([hf_row(logits(t)) for t in texts])
        rows = [hf_row(proba(t)) for t in texts]
        return JSONResponse(rows if isinstance(body["inputs"], list) else rows[0])
    finally:
        rec["inflight"] -= 1


async def calls(request: Request) -> Response:
    rec = CALLS[request.path_params["key"]]
    return JSONResponse({k: v for k, v in rec.items() if k != "inflight"})


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


app = Starlette(
    routes=[
        Route("/health", health),
        Route("/calls/{key}", calls),
        Route("/{mode}/{key}", predict, methods=["POST"]),
    ]
)
