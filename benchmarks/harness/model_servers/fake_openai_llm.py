"""A FAKE OpenAI-compatible LLM server that answers malformed completions on purpose (tests only).

llama.cpp's real server always answers well-formed JSON, so the faults an LLM classifier
must survive from other servers are produced here: an answer without logprobs (servers
that do not support them), top_logprobs that are not a list, a choice whose content is
not text, an empty choices list, and a non-JSON body. Route: POST /{mode}/chat/completions
(and /{mode}/completions); every answer carries a usage block so token counting is visible.

    uvicorn benchmarks.harness.model_servers.fake_openai_llm:app --port PORT
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

USAGE = {"prompt_tokens": 11, "completion_tokens": 1, "total_tokens": 12}


def _answer(mode: str) -> Any:
    if mode == "no-logprobs":
        return {
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "pos"},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": USAGE,
        }
    if mode == "bad-top-logprobs":
        return {
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "pos"},
                    "logprobs": {"content": [{"token": "pos", "logprob": -0.1, "top_logprobs": "oops"}]},
                    "finish_reason": "stop",
                }
            ],
            "usage": USAGE,
        }
    if mode == "content-not-text":
        return {
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": {"label": 1}},
                    "finish_reason": "stop",
                }
            ],
            "usage": USAGE,
        }
    if mode == "no-choices":
        return {"choices": [], "usage": USAGE}
    return None


async def complete(request: Request) -> Response:
    await request.body()
    mode = request.path_params["mode"]
    if mode == "non-json":
        return PlainTextResponse("<html>upstream error</html>", status_code=200)
    body = _answer(mode)
    if body is None:
        return JSONResponse({"error": f"unknown mode {mode}"}, status_code=404)
    return JSONResponse(body)


app = Starlette(
    routes=[
        Route("/{mode}/chat/completions", complete, methods=["POST"]),
        Route("/{mode}/completions", complete, methods=["POST"]),
        Route("/healthz", lambda r: PlainTextResponse("ok")),
    ]
)
