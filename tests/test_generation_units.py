"""Generation pieces that need no LLM: prompts, output cleaning, verification, cache, specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from explainers.artifacts import META
from explainers.concepts import CEBAB_SCHEMA, Intervention
from explainers.data.cebab import load_split, split_path
from explainers.generation.backends import BackendSpec, Completion, OpenAIBackend, build_backend
from explainers.generation.cache import GenerationCache, cache_key
from explainers.generation.prompts import FewShot, PromptBuilder, clean_output, fewshot_from_cebab
from explainers.generation.verify import Verifier

TRAIN = split_path("train_inclusive")
SRC = "The food was great and the waiter was friendly."
NEG_FOOD = Intervention("food", "Negative", "Positive")


@pytest.fixture(scope="session")
def tfidf_taggers(test_data_dir: Path):
    """Real CEBaB concept taggers: tf-idf only, on a third of train_inclusive, kept on disk between runs."""
    from explainers.taggers import TaggerSet, cebab_corpus

    path = test_data_dir / "generation-taggers-tfidf"
    if (path / META).exists():
        return TaggerSet.load(path)
    texts, labels = cebab_corpus("train_inclusive")
    ts = TaggerSet(CEBAB_SCHEMA, features=("tfidf",)).fit(texts[::3], labels[::3])
    ts.save(path, name="generation-test-taggers")
    return ts


def test_prompt_names_target_and_keeps_confounders() -> None:
    msgs = PromptBuilder(CEBAB_SCHEMA).messages(SRC, NEG_FOOD, {"service": "Positive", "noise": "unknown"})
    assert [m["role"] for m in msgs] == ["system", "user"]
    user = msgs[-1]["content"]
    assert CEBAB_SCHEMA["food"].describe("Negative") in user
    assert CEBAB_SCHEMA["service"].describe("Positive") in user  # a confounder to keep
    assert CEBAB_SCHEMA["noise"].describe("unknown") in user
    assert user.endswith(SRC)
    assert "food: the quality" in msgs[0]["content"]  # concept descriptions come from the schema


def test_fewshot_examples_from_train_only_and_ranked() -> None:
    ex = fewshot_from_cebab(TRAIN, CEBAB_SCHEMA, per_concept=2, seed=1)
    assert {e.intervention.concept for e in ex} == set(CEBAB_SCHEMA.names)
    assert all(e.source != e.edited for e in ex)
    dev_texts = {r.text for r in load_split("dev")}
    assert not any(e.source in dev_texts or e.edited in dev_texts for e in ex)
    own = FewShot("Great pasta.", "Awful pasta.", Intervention("food", "Negative", "Positive"))
    other = FewShot("Loud room.", "Quiet room.", Intervention("noise", "Positive", "Negative"))
    pb = PromptBuilder(CEBAB_SCHEMA, [other, own], max_examples=1)
    msgs = pb.messages(SRC, NEG_FOOD)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[2]["content"] == "Awful pasta."  # the same concept and direction is preferred


@pytest.mark.parametrize(
    "raw, clean",
    [
        ('"The food was bad."', "The food was bad."),
        ("Edited review: The food was bad.", "The food was bad."),
        ("```\nThe food was bad.\n```", "The food was bad."),
        ("  The food was bad.  ", "The food was bad."),
        ("Here is the review: bad food.", "Here is the review: bad food."),  # chat stays for verification
    ],
)
def test_clean_output(raw: str, clean: str) -> None:
    assert clean_output(raw) == clean


def test_verifier_counts_each_text_reason() -> None:
    v = Verifier(CEBAB_SCHEMA)
    cands = [
        "",
        SRC.upper(),
        "The food was bland and the waiter was friendly.",
        "The food was bland and the waiter was friendly.",
        "Here is the edited review: the food was bland.",
        "As an AI, I cannot do that.",
        "The food was bland and the waiter was",
        "The food was bland. " * 20,
        "The food was awful and the waiter was friendly.",
    ]
    report = v.verify(SRC, cands, NEG_FOOD, finish_reasons=["stop"] * len(cands))
    assert [k.text for k in report.kept] == [cands[2], cands[8]]
    assert dict(report.rejections) == {
        "failed": 1, "identical": 1, "duplicate": 1, "meta_text": 2, "truncated": 1, "length": 1,
    }  # fmt: skip


def test_verifier_truncation_by_finish_reason_and_meta_in_source_allowed() -> None:
    v = Verifier(CEBAB_SCHEMA)
    src = "Here is my take: the food was great."
    r = v.verify(
        src,
        ["Here is my take: the food was bad.", "The food was bad."],
        NEG_FOOD,
        finish_reasons=["stop", "length"],
    )
    assert len(r.kept) == 1 and r.rejections == {"truncated": 1}


def test_verifier_uses_tagger_for_target_and_confounders(tfidf_taggers) -> None:
    src = "The food was delicious and the service was excellent."
    labels = {"food": "Positive", "service": "Positive", "ambiance": "unknown", "noise": "unknown"}
    good = "The food was terrible, bland and cold. The service was excellent and the staff were friendly."
    unchanged_food = "The food was delicious and the service was slow and rude."
    both = "The food was terrible and tasteless and the service was slow, rude and awful."
    strict = Verifier(CEBAB_SCHEMA, tfidf_taggers, check_confounders=True)
    r = strict.verify(src, [good, unchanged_food, both], NEG_FOOD, source_labels=labels)
    assert [k.text for k in r.kept] == [good]
    assert r.kept[0].tags["food"] == "Negative"
    assert r.rejections == {"concept_not_reached": 1, "confounder_changed": 1}
    lenient = Verifier(CEBAB_SCHEMA, tfidf_taggers)
    assert len(lenient.verify(src, [good, both], NEG_FOOD, source_labels=labels).kept) == 2


def test_cache_roundtrip_and_key_sensitivity(tmp_path: Path) -> None:
    msgs = [{"role": "user", "content": "hi"}]
    base = dict(n=2, temperature=0.7, max_tokens=64, seed=1)
    k = cache_key("openai", "m", msgs, **base)
    assert k == cache_key("openai", "m", [dict(m) for m in msgs], **base)
    variants = [
        cache_key("openai", "m2", msgs, **base),
        cache_key("llamacpp", "m", msgs, **base),
        cache_key("openai", "m", [{"role": "user", "content": "hi!"}], **base),
        cache_key("openai", "m", msgs, **{**base, "temperature": 0.8}),
        cache_key("openai", "m", msgs, **{**base, "seed": 2}),
        cache_key("openai", "m", msgs, **{**base, "n": 3}),
        cache_key("openai", "m", msgs, **{**base, "max_tokens": 65}),
    ]
    assert len({k, *variants}) == 8
    cache = GenerationCache(tmp_path / "c.sqlite")
    assert cache.get(k) is None
    comp = Completion(["a", "b"], 10, 5, ["stop", "length"], calls=2, wall_time_s=1.5)
    cache.put(k, "m", comp)
    again = GenerationCache(tmp_path / "c.sqlite")  # a new process would see the same file
    assert again.get(k) == comp and len(again) == 1


def test_build_backend_from_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_LLM_KEY", "sk-test")
    b = build_backend(
        {"kind": "openai", "base_url": "http://127.0.0.1:9/v1/", "model": "m", "api_key_env": "MY_LLM_KEY"}
    )
    assert isinstance(b, OpenAIBackend) and b.base_url == "http://127.0.0.1:9/v1"
    assert b._client.headers["authorization"] == "Bearer sk-test"
    with pytest.raises(ValueError, match="base_url"):
        build_backend(BackendSpec(kind="openai", model="m"))
    assert "sk-secret" not in repr(BackendSpec(model="m", api_key="sk-secret"))
