"""Prompted-LLM classifiers (openai-chat / openai-completions) against llama.cpp's real server.

The server is llama-cpp-python's OpenAI-compatible server with SmolLM2-135M-Instruct (set up
by scripts/setup.d/30-llama.sh; these tests skip locally without it and fail under CI).
Faults llama.cpp cannot produce (an answer without logprobs, malformed choices, non-JSON)
come from the FAKE server benchmarks/harness/model_servers/fake_openai_llm.py.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
from pydantic import ValidationError

from benchmarks.harness.servers import Server, free_port, python, running
from explainers.classifiers.base import ClassifierUnavailable, MalformedResponse
from explainers.classifiers.openai_chat import OpenAIChatClassifier, render
from explainers.classifiers.spec import build_classifier, parse_spec
from explainers.classifiers.usage import metered
from explainers.concepts import Intervention
from explainers.types import Counterfactual, CounterfactualExplainer
from tests.llama_setup import llama_server

pytestmark = pytest.mark.llm

POS = "The pasta was delicious and the waiter was friendly. We loved it."
NEG = "The food was cold and the waiter was rude. Terrible evening."
SENTIMENT = (
    "Is the sentiment of this review positive or negative? Answer with one word: {labels}.\n\nReview: {text}"
)


@pytest.fixture(scope="module")
def llama() -> Iterator[str]:
    with llama_server(free_port()) as url:
        yield url


@pytest.fixture(scope="module")
def fake() -> Iterator[Server]:
    port = free_port()
    cmd = [
        python(),
        "-m",
        "uvicorn",
        "benchmarks.harness.model_servers.fake_openai_llm:app",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    with running(cmd, port=port, health_path="/healthz", timeout=60) as srv:
        yield srv


def chat(url: str, **kw: object) -> OpenAIChatClassifier:
    spec = {
        "protocol": "openai-chat",
        "url": url,
        "model": "smollm2",
        "labels": ["positive", "negative"],
        "prompt": SENTIMENT,
        "timeout_s": 120,
        **kw,
    }
    clf = build_classifier(spec, cache=False)
    assert isinstance(clf, OpenAIChatClassifier)
    return clf


# -- logprobs path ---------------------------------------------------------------------------
def test_logprobs_probabilities_are_deterministic_and_metered(llama: str) -> None:
    clf = chat(llama, max_concurrency=2)
    with metered() as usage:
        p = clf.predict_proba([POS, NEG, POS])
    assert p.shape == (3, 2) and np.allclose(p.sum(axis=1), 1.0)
    assert np.allclose(p[0], p[2])  # temperature 0 logprobs: the same text scores the same
    assert not np.allclose(p[0], p[1])  # the text reaches the model
    assert usage.calls == 3 and usage.prompt_tokens > 30 and usage.completion_tokens >= 3
    assert clf.stats().requests == 3 and clf.stats().texts == 3
    # Outside a meter nothing is recorded, and the numbers do not change.
    assert np.allclose(clf.predict_proba([POS])[0], p[0])


def test_cache_in_front_of_llm_costs_no_tokens(llama: str) -> None:
    clf = build_classifier(
        {
            "protocol": "openai-chat",
            "url": llama,
            "model": "smollm2",
            "prompt": SENTIMENT,
            "labels": ["positive", "negative"],
            "timeout_s": 120,
        }
    )
    with metered() as first:
        a = clf.predict_proba([POS])
    with metered() as second:
        b = clf.predict_proba([POS])
    assert first.calls == 1 and second.calls == 0 and np.array_equal(a, b)


def test_sequence_of_single_token_labels_is_the_answer_position_softmax(llama: str) -> None:
    prompt = "Review: {text}\nIs this review positive? Answer yes or no.\nAnswer:"
    clf = build_classifier(
        {
            "protocol": "openai-completions",
            "url": llama,
            "model": "smollm2",
            "labels": ["yes", "no"],
            "prompt": prompt,
            "scoring": "sequence",
            "timeout_s": 120,
        },
        cache=False,
    )
    with metered() as usage:
        p = clf.predict_proba([POS])[0]
    assert usage.calls == 1  # both labels continue from the same context: asked once
    top = dict(clf._answer_top(render(prompt, POS, ["yes", "no"])))
    assert " yes" in top and " no" in top, top
    z = np.exp([top[" yes"], top[" no"]])
    assert np.allclose(p, z / z.sum(), atol=1e-9)


def test_sequence_chains_multi_token_labels_sharing_a_first_token(llama: str) -> None:
    prompt = (
        "Review: Great food, lovely staff!\nAnswer: very good\nReview: Awful, cold and rude.\nAnswer: very bad\n"
        "Review: {text}\nAnswer:"
    )
    clf = build_classifier(
        {
            "protocol": "openai-completions",
            "url": llama,
            "model": "smollm2",
            "labels": ["very good", "very bad"],
            "prompt": prompt,
            "scoring": "sequence",
            "timeout_s": 120,
        },
        cache=False,
    )
    with metered() as usage:
        p = clf.predict_proba([NEG])[0]
    ctx = render(prompt, NEG, clf.labels)
    first = dict(clf._answer_top(ctx))
    assert " very" in first, first
    second = dict(clf._answer_top(ctx + " very"))
    assert usage.calls == 2  # " very" once, then " good" / " bad" from one shared context
    z = np.exp([second.get(" good", min(second.values())), second.get(" bad", min(second.values()))])
    assert np.allclose(p, z / z.sum(), atol=1e-9) and not np.allclose(p, 0.5)


# -- sampling path ---------------------------------------------------------------------------
def test_sampling_frequencies_with_standard_error_in_explanation(llama: str) -> None:
    clf = chat(llama, scoring="sampling", n=4, temperature=0.7, max_tokens=4, max_invalid_fraction=1.0)

    class TwoEdits(CounterfactualExplainer):
        """Real explanation path with fixed counterfactual texts (no pool needed)."""

        name = "two-edits"

        def counterfactuals(self, text, intervention, top_k, *, base_labels=None):
            return [Counterfactual(NEG), Counterfactual(NEG + " Never again.")], {}

    exp = TwoEdits().explain(POS, Intervention("food", "Negative", "Positive"), clf)
    assert clf.supports_n is False  # llama.cpp answers one choice per request: follow-ups were made
    # 3 texts x 4 samples, one request each; every sample either named a label or was counted invalid.
    assert exp.cost.classifier_llm_calls == 12 and exp.cost.classifier_prompt_tokens > 0
    assert exp.cost.llm_calls == 0  # the generator's counters stay apart
    s = exp.details["classifier_sampling"]
    assert s["n"] == 4 and s["samples"] == 12 and 0 <= s["invalid_samples"] < 12
    for row in [exp.base_prediction] + [c.prediction for c in exp.counterfactuals]:
        assert np.isclose(sum(row), 1) and all(abs(x * 4 - round(x * 4)) < 1e-9 or 0 < x < 1 for x in row)
    p = exp.base_prediction
    assert np.allclose(s["base_standard_error"], np.sqrt(p * (1 - p) / 4), atol=1e-6)
    assert all(i >= b for i, b in zip(s["icace_standard_error"], s["base_standard_error"], strict=True))


# -- answers outside the label set (real) -------------------------------------------------------
def test_label_outside_the_set_fails_with_the_answers(llama: str) -> None:
    off = "Write the word hello, then tell a story about: {text}"
    clf = chat(llama, labels=["zq7", "xv9"], prompt=off, scoring="sampling", n=3, max_tokens=6)
    with metered() as usage, pytest.raises(MalformedResponse, match="name no declared label"):
        clf.predict_proba([POS])
    assert usage.samples == 3 and usage.invalid_samples == 3
    lp = chat(llama, labels=["zq7", "xv9"], prompt=off)
    with pytest.raises(MalformedResponse, match="no declared label .* among the top 20 tokens"):
        lp.predict_proba([POS])


def test_timeout_is_unavailable(llama: str) -> None:
    clf = chat(llama, timeout_s=0.02, retries=1, backoff_s=0.01)
    with pytest.raises(ClassifierUnavailable, match="timed out"):
        clf.predict_proba([POS * 20])
    assert clf.stats().requests == 2 and clf.stats().failures == 1


# -- malformed answers (FAKE server) -----------------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "scoring", "message"),
    [
        ("no-logprobs", "logprobs", "no logprobs .* use scoring 'sampling'"),
        ("bad-top-logprobs", "logprobs", "top_logprobs is str"),
        ("content-not-text", "sampling", "no text answer"),
        ("no-choices", "logprobs", "no list of choices"),
        ("non-json", "logprobs", "non-JSON"),
    ],
)
def test_malformed_answers_name_the_defect(fake: Server, mode: str, scoring: str, message: str) -> None:
    clf = build_classifier(
        {
            "protocol": "openai-chat",
            "url": f"{fake.base_url}/{mode}",
            "model": "m",
            "labels": ["pos", "neg"],
            "scoring": scoring,
            "n": 2,
            "retries": 0,
        },
        cache=False,
    )
    with pytest.raises(MalformedResponse, match=message):
        clf.predict_proba(["a text"])


def test_no_logprobs_endpoint_works_by_sampling(fake: Server) -> None:
    # The fake answers "pos" without logprobs: the sampling path still classifies, and bills its tokens.
    clf = build_classifier(
        {
            "protocol": "openai-chat",
            "url": f"{fake.base_url}/no-logprobs",
            "model": "m",
            "labels": ["pos", "neg"],
            "scoring": "sampling",
            "n": 3,
        },
        cache=False,
    )
    with metered() as usage:
        p = clf.predict_proba(["x", "y"])
    assert np.array_equal(p, [[1, 0], [1, 0]])
    assert usage.calls == 6 and usage.prompt_tokens == 66 and usage.completion_tokens == 6


# -- specs ----------------------------------------------------------------------------------
def test_spec_validation_names_the_problem() -> None:
    ok = {"protocol": "openai-chat", "url": "http://127.0.0.1:9/v1", "model": "m", "labels": ["a", "b"]}
    assert parse_spec(ok).batch_size == 1
    for bad, field in [
        ({"scoring": "sequence"}, "openai-completions"),
        ({"prompt": "no placeholder"}, "{text}"),
        ({"label_map": {"yes": "c"}}, "not in labels"),
        ({"logits": True}, "do not apply"),
        ({"n": 0}, "n"),
        ({"top_logprobs": 50}, "top_logprobs"),
    ]:
        with pytest.raises(ValidationError, match=field):
            parse_spec({**ok, **bad})
    spec = parse_spec({**ok, "headers": {"Authorization": "Bearer s3cret"}})
    assert "s3cret" not in str(spec.redacted()) and spec.key() == parse_spec(ok).key()
    # Inline (allow_local=False) is allowed: it is a remote endpoint like the other HTTP protocols.
    assert build_classifier(ok, cache=False, allow_local=False).labels == ["a", "b"]


def test_prompt_rendering_keeps_hostile_braces_literal() -> None:
    out = render("T: {text} L: {labels}", "{labels} {text} {0}", ["1", "2"])
    assert out == "T: {labels} {text} {0} L: 1, 2"


def test_label_aliases_and_first_token_prefixes() -> None:
    clf = OpenAIChatClassifier(
        "http://127.0.0.1:9/v1", "m", ["positive", "negative"], label_map={"good": "positive"}
    )
    row = clf._first_token_row(
        [(" pos", math.log(0.5)), ("Good", math.log(0.2)), ("neg", math.log(0.1)), ("The", math.log(0.1))]
    )
    assert np.allclose(row, [0.7 / 0.8, 0.1 / 0.8])
    # A label missing from the top-k gets at most the leftover mass, never more than the least likely token.
    row = clf._first_token_row([("positive", math.log(0.6)), ("The", math.log(0.3))])
    assert np.allclose(row, [0.6 / 0.7, 0.1 / 0.7])
    assert clf._answer_label('{"label": "Negative"}') == 1 and clf._answer_label("Positive.") == 0
    assert clf._answer_label("good, I think") == 0 and clf._answer_label("maybe") is None


# -- the service ------------------------------------------------------------------------------
@pytest.mark.slow
def test_service_explains_a_registered_llm_classifier_with_its_token_cost(llama: str, tmp_path) -> None:
    import httpx

    from benchmarks.harness.service import service, store_env

    spec = {
        "protocol": "openai-chat",
        "url": llama,
        "model": "smollm2",
        "labels": ["1", "2", "3", "4", "5"],
        "prompt": "Rate this restaurant review from 1 to 5. Answer with one digit: {labels}.\n\n{text}",
        "timeout_s": 120,
    }
    text = "The food was delicious but the waiter ignored us for twenty minutes."
    iv = {"concept": "service", "target": "Positive"}
    with (
        service({**store_env("sqlite", tmp_path), "CACE_REQUEST_TIMEOUT_S": "300"}) as svc,
        httpx.Client(base_url=svc.base_url, timeout=300) as c,
    ):
        r = c.post("/v1/classifiers", json={"name": "smollm2-rating", "spec": spec})
        assert r.status_code == 201, r.text
        r = c.post(
            "/v1/explanations",
            json={
                "text": text,
                "intervention": iv,
                "method": "match",
                "top_k": 2,
                "classifier": "smollm2-rating",
            },
        )
        assert r.status_code == 200, r.text
        e = r.json()
        assert e["method"] == "match" and len(e["base_prediction"]) == 5
        cost = e["cost"]
        assert cost["classifier_llm_calls"] == 1 + len(e["counterfactuals"]) >= 2
        assert cost["classifier_prompt_tokens"] > 0 and cost["classifier_completion_tokens"] > 0
        assert cost["llm_calls"] == 0 and cost["prompt_tokens"] == 0  # no generator in match
        # Asked again: the service's prediction cache answers, and the bill says so.
        again = c.post(
            "/v1/explanations",
            json={
                "text": text,
                "intervention": iv,
                "method": "match",
                "top_k": 2,
                "classifier": "smollm2-rating",
            },
        ).json()
        assert again["cost"]["classifier_llm_calls"] == 0 and again["icace"] == e["icace"]
        # Inline, under the same rules as the other HTTP specs; a bad spec is a 422 naming the field.
        r = c.post(
            "/v1/explanations",
            json={"text": text, "intervention": iv, "method": "match", "top_k": 1, "classifier": spec},
        )
        assert r.status_code == 200, r.text
        bad = c.post(
            "/v1/explanations",
            json={
                "text": text,
                "intervention": iv,
                "method": "match",
                "classifier": {**spec, "scoring": "sequence"},
            },
        )
        assert bad.status_code == 422, bad.text
