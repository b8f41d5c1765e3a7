"""LLM faults: server down, timeouts, retries, malformed answers, servers that ignore n, garbage text.

"LLM down" is a real closed port. Malformed JSON, 5xx bursts, missing `choices` and a
server that ignores `n` cannot be provoked from a real llama.cpp server on demand, so
this module doubles as a TEST-ONLY MISBEHAVING SERVER (run as `python this_file PORT`):
a stdlib HTTP server on 127.0.0.1 whose URL prefix picks the fault. It is named as a
fake and used only for those faults; everything else runs against llama.cpp's server
(tests/test_generation_llama.py).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import numpy as np
import pytest

from benchmarks.harness.servers import ROOT, free_port, python, running
from explainers.concepts import CEBAB_SCHEMA, Intervention
from explainers.generation.backends import LLMBadResponse, LLMUnavailable, OpenAIBackend
from explainers.generation.explainer import GenerationExplainer

SRC = "The food was great and the waiter was friendly."
NEG_FOOD = Intervention("food", "Negative", "Positive")

# -- the misbehaving server ---------------------------------------------------------------------
GARBAGE = [
    "Here is the rewritten review: The food was bad.",
    "The food was bad and the waiter was friendly.",
    "The food was bad and the waiter was friendly.",
    SRC,
    "",
    "The food was cold and the waiter was",
    "As an AI language model I cannot rewrite reviews.",
    "The food was awful and the waiter was friendly.",
]


class _State:
    lock = threading.Lock()
    counts: dict[str, int] = {}
    in_flight = 0
    max_in_flight = 0


class FaultHandler(BaseHTTPRequestHandler):
    """Fault picked by the first path segment: /<mode>/v1/chat/completions."""

    def log_message(self, *args: object) -> None:  # keep test logs quiet
        pass

    def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, b"{}")
        elif self.path.startswith("/stats"):
            self._send(200, json.dumps(_State.counts).encode())
        else:
            self._send(404, b"{}")

    def do_POST(self) -> None:
        mode = self.path.strip("/").split("/")[0]
        req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        with _State.lock:
            _State.counts[mode] = seen = _State.counts.get(mode, 0) + 1
        n = int(req.get("n", 1))
        seed = int(req.get("seed") or 0)

        def choices(texts: list[str], reasons: list[str] | None = None) -> bytes:
            reasons = reasons or ["stop"] * len(texts)
            return json.dumps({
                "choices": [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": r}
                            for i, (t, r) in enumerate(zip(texts, reasons, strict=True))],
                "usage": {"prompt_tokens": 50, "completion_tokens": 10 * len(texts)},
            }).encode()  # fmt: skip

        if mode == "nonjson":
            self._send(200, b"<html>proxy error</html>", "text/html")
        elif mode == "nochoices":
            self._send(200, json.dumps({"object": "error", "message": "model not loaded"}).encode())
        elif mode == "badrequest":
            self._send(400, b'{"error": "bad model"}')
        elif mode == "flaky":  # two 503s, then fine: retries must get through
            if seen <= 2:
                self._send(503, b'{"error": "overloaded"}')
            else:
                self._send(200, choices([f"The food was bad, take {seed}." for _ in range(n)]))
        elif mode == "down503":
            self._send(503, b'{"error": "overloaded"}')
        elif mode == "slow":
            time.sleep(3)
            self._send(200, choices(["The food was bad."]))
        elif mode == "track":  # instrumentation a real server lacks: how many requests overlap
            with _State.lock:
                _State.in_flight += 1
                _State.max_in_flight = max(_State.max_in_flight, _State.in_flight)
            time.sleep(0.3)
            with _State.lock:
                _State.in_flight -= 1
                _State.counts["max_in_flight"] = _State.max_in_flight
            self._send(200, choices([f"The food was bad, take {seed}."]))
        elif mode == "ignoren":  # like llama.cpp: one choice whatever n says
            self._send(200, choices([f"The food was bad, take {seed}."]))
        elif mode == "garbage":  # sample `seed` of a round gets GARBAGE[seed % len]
            text = GARBAGE[seed % len(GARBAGE)]
            self._send(200, choices([text], ["length" if text.endswith("was") else "stop"]))
        else:
            self._send(404, b"{}")


def serve(port: int) -> None:
    ThreadingHTTPServer(("127.0.0.1", port), FaultHandler).serve_forever()


if __name__ == "__main__":
    serve(int(sys.argv[1]))


# -- the tests ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def faulty() -> str:
    port = free_port()
    env = {"PYTHONPATH": str(ROOT)}
    with running(
        [python(), __file__, str(port)], port=port, health_path="/health", env=env, timeout=30
    ) as srv:
        yield srv.base_url


def backend(url: str, mode: str, **kw: object) -> OpenAIBackend:
    kw.setdefault("backoff_s", 0.05)
    return OpenAIBackend(f"{url}/{mode}/v1", "fault-model", **kw)  # type: ignore[arg-type]


def test_llm_down_is_unavailable_and_explainer_raises() -> None:
    port = free_port()  # nothing listens here
    b = OpenAIBackend(f"http://127.0.0.1:{port}/v1", "m", max_retries=1, backoff_s=0.05)
    with pytest.raises(LLMUnavailable, match="cannot reach"):
        b.chat([{"role": "user", "content": "hi"}])
    ex = GenerationExplainer(b, CEBAB_SCHEMA, max_concurrency=2)
    with pytest.raises(LLMUnavailable):
        ex.counterfactuals(SRC, NEG_FOOD, 2)


def test_timeout_is_unavailable_quickly(faulty: str) -> None:
    b = backend(faulty, "slow", timeout_s=0.5, max_retries=0)
    t0 = time.perf_counter()
    with pytest.raises(LLMUnavailable, match="timed out"):
        b.chat([{"role": "user", "content": "hi"}])
    assert time.perf_counter() - t0 < 2.5


def test_retries_through_503s(faulty: str) -> None:
    comp = backend(faulty, "flaky", max_retries=2).chat([{"role": "user", "content": "hi"}], n=2, seed=3)
    assert len(comp.texts) == 2 and comp.prompt_tokens == 50
    with pytest.raises(LLMUnavailable, match="HTTP 503"):
        backend(faulty, "down503", max_retries=1).chat([{"role": "user", "content": "hi"}])
    stats = httpx.get(f"{faulty}/stats").json()
    assert stats["flaky"] == 3 and stats["down503"] == 2  # retried exactly max_retries times


@pytest.mark.parametrize(
    "mode, match", [("nonjson", "non-JSON"), ("nochoices", "choices"), ("badrequest", "HTTP 400")]
)
def test_malformed_answers_are_bad_response_without_retry(faulty: str, mode: str, match: str) -> None:
    with pytest.raises(LLMBadResponse, match=match):
        backend(faulty, mode, max_retries=3).chat([{"role": "user", "content": "hi"}])


def test_server_ignoring_n_gets_repeated_calls(faulty: str) -> None:
    b = backend(faulty, "ignoren")
    comp = b.chat([{"role": "user", "content": "hi"}], n=3, seed=10)
    assert comp.calls == 3 and b.supports_n is False
    assert comp.texts == [f"The food was bad, take {s}." for s in (10, 11, 12)]  # distinct seeds per call


def test_garbage_is_filtered_counted_and_regenerated(faulty: str) -> None:
    """Every rejection reason shows up in details; regeneration stops at the sample budget."""
    ex = GenerationExplainer(
        backend(faulty, "garbage"), CEBAB_SCHEMA, sample_budget=8, max_rounds=1, max_concurrency=3
    )
    cfs, details = ex.counterfactuals(SRC, NEG_FOOD, 8)
    texts = [c.text for c in cfs]
    assert texts == [
        "The food was bad and the waiter was friendly.",
        "The food was awful and the waiter was friendly.",
    ]
    assert details["rejections"] == {
        "meta_text": 2,
        "duplicate": 1,
        "identical": 1,
        "failed": 1,
        "truncated": 1,
    }
    assert details["kept"] == 2 and details["requested"] == 8 and details["generated"] == 8
    assert details["cost"].llm_calls == 8 and details["cost"].prompt_tokens == 400


def test_explain_reports_cost_and_zero_effect_when_nothing_kept(faulty: str, tfidf_lr) -> None:
    ex = GenerationExplainer(backend(faulty, "garbage"), CEBAB_SCHEMA, sample_budget=4, max_rounds=2)
    exp = ex.explain(SRC, NEG_FOOD, tfidf_lr, top_k=2)
    assert exp.cost.llm_calls >= 2 and exp.cost.classifier_calls == 1
    assert exp.details["kept"] == len(exp.counterfactuals) <= 2
    if not exp.counterfactuals:
        assert np.allclose(exp.icace, 0)
    d = exp.to_dict()
    assert d["details"]["rejections"] and d["cost"]["llm_calls"] == exp.cost.llm_calls


def test_concurrency_is_bounded(faulty: str) -> None:
    ex = GenerationExplainer(backend(faulty, "track"), CEBAB_SCHEMA, max_concurrency=2, sampling="calls")
    t0 = time.perf_counter()
    cfs, details = ex.counterfactuals(SRC, NEG_FOOD, 6)
    wall = time.perf_counter() - t0
    assert len(cfs) == 6 and details["cost"].llm_calls == 6
    assert httpx.get(f"{faulty}/stats").json()["max_in_flight"] == 2
    assert 0.85 < wall < 6 * 0.3  # three waves of two, not six in a row
