"""Generation end to end against a real OpenAI-compatible server: llama.cpp's, serving SmolLM2-135M.

`scripts/setup.sh test` (step setup.d/30-llama.sh) builds the server venv and extracts the
GGUF. Without that setup these tests skip locally, but fail under CI (CI=true), so CI
can never pass without running them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.harness.servers import free_port
from explainers.concepts import CEBAB_SCHEMA, Intervention
from explainers.generation.backends import LLMUnavailable, OpenAIBackend, build_backend
from explainers.generation.cache import GenerationCache
from explainers.generation.explainer import GenerationExplainer
from explainers.registry import MissingResource, Resources, UnknownOption, build_explainer
from tests.llama_setup import GGUF, llama_server, require_llama_setup
from tests.test_generation_units import tfidf_taggers  # noqa: F401  (shared fixture)

pytestmark = pytest.mark.llm

SRC = "The pasta was delicious and fresh. Our waiter was friendly and quick."
LABELS = {"food": "Positive", "service": "Positive", "ambiance": "unknown", "noise": "unknown"}
NEG_FOOD = Intervention("food", "Negative", "Positive")
MSGS = [{"role": "user", "content": "Say hello in one short sentence."}]


@pytest.fixture(scope="module")
def llama_url() -> Iterator[str]:
    with llama_server(free_port()) as url:
        yield url


def test_real_server_chat_with_n_and_usage(llama_url: str) -> None:
    b = OpenAIBackend(llama_url, "smollm2", timeout_s=120)
    comp = b.chat(MSGS, n=2, temperature=0.8, max_tokens=24, seed=7)
    assert len(comp.texts) == 2 and all(isinstance(t, str) for t in comp.texts)
    assert comp.prompt_tokens > 0 and comp.completion_tokens > 0
    assert set(comp.finish_reasons) <= {"stop", "length"}
    assert b.supports_n is not None  # learnt whether this server honours n
    again = b.chat(MSGS, n=1, temperature=0.0, max_tokens=16, seed=1)
    assert (
        again.texts[0] == b.chat(MSGS, n=1, temperature=0.0, max_tokens=16, seed=1).texts[0]
    )  # greedy is stable


def test_real_server_timeout_is_unavailable(llama_url: str) -> None:
    b = OpenAIBackend(llama_url, "smollm2", timeout_s=0.05, max_retries=0)
    with pytest.raises(LLMUnavailable, match="timed out"):
        # Few tokens: the server finishes the abandoned request anyway, and later tests wait for it.
        b.chat(MSGS, max_tokens=12)


def test_explain_end_to_end_with_verification_cost_and_cache(
    llama_url: str,
    tfidf_lr,
    tfidf_taggers,  # noqa: F811 (the imported fixture)
    tmp_path: Path,
) -> None:
    def make() -> GenerationExplainer:
        return GenerationExplainer(
            OpenAIBackend(llama_url, "smollm2", timeout_s=120), CEBAB_SCHEMA, taggers=tfidf_taggers,
            cache=GenerationCache(tmp_path / "gen.sqlite"), max_tokens=60, budget_factor=2, max_rounds=2,
            max_concurrency=2,
        )  # fmt: skip

    exp = make().explain(SRC, NEG_FOOD, tfidf_lr, top_k=2, base_labels=LABELS)
    d = exp.details
    # Accounting adds up: every generated sample was either kept or rejected for a named reason.
    assert d["generated"] == d["samples_asked"] <= 4
    assert d["kept"] + sum(d["rejections"].values()) == d["generated"]
    assert d["kept"] == len(exp.counterfactuals) <= 2
    assert exp.cost.llm_calls == d["samples_asked"] and exp.cost.prompt_tokens > 0
    assert exp.cost.classifier_calls == 1 and exp.cost.classifier_texts == 1 + d["kept"]
    for cf in exp.counterfactuals:  # what was kept passed the tagger
        assert cf.verification["tags"]["food"] == "Negative" and cf.text != SRC
        assert len(cf.prediction) == len(tfidf_lr.labels)
    assert exp.icace.shape == (len(tfidf_lr.labels),) and abs(exp.icace.sum()) < 1e-6
    # The same request again is served from the on-disk cache: no LLM call, same texts.
    again = make().explain(SRC, NEG_FOOD, tfidf_lr, top_k=2, base_labels=LABELS)
    assert again.cost.llm_calls == 0 and again.details["cache_hits"] == d["samples_asked"]
    assert [c.text for c in again.counterfactuals] == [c.text for c in exp.counterfactuals]
    assert again.details["cached_cost"]["prompt_tokens"] == exp.cost.prompt_tokens


def test_registry_builds_generate_from_resources(llama_url: str, tfidf_lr, tmp_path: Path) -> None:
    with pytest.raises(MissingResource, match="llm"):
        build_explainer("generate", Resources(schema=CEBAB_SCHEMA))
    llm = build_backend({"kind": "openai", "base_url": llama_url, "model": "smollm2", "timeout_s": 120})
    # Options are declared where a method is registered: one it does not take is an error, not ignored.
    with pytest.raises(UnknownOption, match="unrelated_option"):
        build_explainer("generate", Resources(schema=CEBAB_SCHEMA, llm=llm), unrelated_option=1)
    ex = build_explainer(
        "generate",
        Resources(schema=CEBAB_SCHEMA, llm=llm),
        max_tokens=30,
        sample_budget=2,
        cache_path=str(tmp_path / "c.sqlite"),
    )
    exp = ex.explain(SRC, Intervention("service", "Negative"), tfidf_lr, top_k=2, base_labels=LABELS)
    assert exp.method == "generate" and exp.details["intervention_source"] == "Positive"
    assert exp.details["samples_asked"] == 2 and exp.details["llm"]["model"] == "smollm2"


def test_in_process_llamacpp_backend() -> None:
    require_llama_setup()
    if not os.environ.get("CI"):
        pytest.importorskip("llama_cpp")
    b = build_backend({"kind": "llamacpp", "model": "smollm2", "model_path": str(GGUF), "n_threads": 1})
    comp = b.chat(MSGS, n=2, temperature=0.7, max_tokens=16, seed=3)
    assert len(comp.texts) == 2 and comp.calls == 2 and comp.completion_tokens > 0


# -- augmenting a corpus without human edits (the realistic setting for concept spaces) ------

_CORPUS = [
    ("The pasta was delicious and fresh. Our waiter was friendly and quick.", LABELS),
    ("Cold soup, rude staff, and it was far too loud to talk.",
     {"food": "Negative", "service": "Negative", "ambiance": "unknown", "noise": "Negative"}),
    ("Lovely candle-lit room and the steak was perfect.",
     {"food": "Positive", "service": "unknown", "ambiance": "Positive", "noise": "unknown"}),
]  # fmt: skip


def _corpus_pool():
    from explainers.data.pool import Pool

    return Pool(texts=[t for t, _ in _CORPUS], labels=[dict(lab) for _, lab in _CORPUS], schema=CEBAB_SCHEMA,
                ids=[f"r{i}" for i in range(3)], origins=[f"o{i}" for i in range(3)])  # fmt: skip


def test_augmented_pool_from_llm_edits_has_groups_and_resumes(llama_url: str, tmp_path: Path) -> None:
    from explainers.matching.augment import llm_augmenter
    from explainers.matching.groups import build_groups

    pool = _corpus_pool()
    augment = llm_augmenter(llama_url, "smollm2", concepts_per_source=2, cache=tmp_path / "gen.sqlite",
                            max_tokens=60)  # fmt: skip
    out, report = augment(pool)
    assert report["planned_edits"] == 6 and report["sources"] == 3 and report["errors"] == 0
    # Every planned edit is either kept or rejected for a named reason (one sample each).
    assert report["kept_edits"] + sum(report["rejections"].values()) == 6
    assert report["llm_calls"] == 6 and report["prompt_tokens"] > 0
    assert out.texts[:3] == pool.texts and len(out.pairs) == report["kept_edits"]
    for src, row, concept in out.pairs:
        assert out.origins[row] == out.origins[src]  # an edit shares its source's origin
        assert out.labels[row][concept] != out.labels[src][concept]  # labelled with the intended target
        assert {c: v for c, v in out.labels[row].items() if c != concept} == {
            c: v for c, v in out.labels[src].items() if c != concept
        }
        if row >= 3:  # a new text (not a duplicate of the corpus): the source now has a T group
            groups = {g.query: g for g in build_groups(out.labels, out.origins, concept, CEBAB_SCHEMA.names)}
            assert row in groups[src].T
    # Rerun over the same cache: nothing asked of the LLM, the same pool comes back.
    again, report2 = augment(pool)
    assert report2["cache_hits"] == 6 and again.texts == out.texts and again.pairs == out.pairs


def test_augmenting_with_llm_down_reports_errors_and_keeps_the_corpus(tmp_path: Path) -> None:
    from explainers.matching.augment import llm_augmenter

    pool = _corpus_pool()
    augment = llm_augmenter(
        f"http://127.0.0.1:{free_port()}/v1", "nobody", n_sources=2, concepts_per_source=1
    )
    out, report = augment(pool)
    assert (
        report["errors"] == 2
        and report["kept_edits"] == 0
        and report["rejections"] == {"error:LLMUnavailable": 2}
    )
    assert out.texts == pool.texts and out.pairs == []
