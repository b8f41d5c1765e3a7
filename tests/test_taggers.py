"""Concept taggers: fit on a small hand-made corpus, predict, save/load round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from explainers.artifacts import META
from explainers.concepts import ConceptSchema
from explainers.taggers import TaggerSet, main

SCHEMA = ConceptSchema.simple(["food", "service"], ["Positive", "Negative", "unknown"], domain="restaurant")

FOOD = {
    "Positive": [
        "the food was delicious",
        "tasty pasta and great pizza",
        "the steak was amazing and flavorful",
    ],
    "Negative": ["the food was bland and cold", "the soup tasted awful", "terrible greasy burger"],
    "unknown": ["", "we went on a tuesday", "the place is downtown"],
}
SERVICE = {
    "Positive": [
        "the waiter was friendly and attentive",
        "great service from the staff",
        "our server was lovely",
    ],
    "Negative": [
        "the waiter was rude",
        "slow service and ignored by staff",
        "our server was terrible and rude",
    ],
    "unknown": ["", "parking was easy", "it was raining outside"],
}


def corpus() -> tuple[list[str], list[dict[str, str]]]:
    """Every food sentence combined with every service sentence: 81 reviews with known labels."""
    texts, labels = [], []
    for fv, fs in FOOD.items():
        for sv, ss in SERVICE.items():
            for f in fs:
                for s in ss:
                    texts.append(". ".join(x for x in (f, s) if x) or "nothing to say")
                    labels.append({"food": fv, "service": sv})
    return texts, labels


@pytest.fixture(scope="module")
def tfidf_taggers() -> TaggerSet:
    texts, labels = corpus()
    return TaggerSet(SCHEMA, features=["tfidf"]).fit(texts, labels)


def test_predicts_each_concept_independently(tfidf_taggers: TaggerSet) -> None:
    preds = tfidf_taggers.predict(
        [
            "the food was delicious. the waiter was rude",
            "the soup tasted awful. great service from the staff",
            "we went on a tuesday. parking was easy",
        ]
    )
    assert preds == [
        {"food": "Positive", "service": "Negative"},
        {"food": "Negative", "service": "Positive"},
        {"food": "unknown", "service": "unknown"},
    ]


def test_predict_proba_columns_follow_values(tfidf_taggers: TaggerSet) -> None:
    proba = tfidf_taggers.predict_proba(["tasty pasta and great pizza", "the waiter was rude"])
    assert set(proba) == {"food", "service"}
    for concept, p in proba.items():
        assert p.shape == (2, 3)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-9)
        assert tfidf_taggers.values(concept) == ["Positive", "Negative", "unknown"]
    assert proba["food"][0].argmax() == 0  # Positive
    assert proba["service"][1].argmax() == 1  # Negative
    assert tfidf_taggers.predict([]) == []


def test_skips_unusable_labels_per_concept() -> None:
    texts, labels = corpus()
    # Blank out service labels on half the rows and mark some as "no majority": food still trains on all.
    noisy = [
        dict(lab, service="" if i % 2 else "no majority") if i % 3 == 0 else lab
        for i, lab in enumerate(labels)
    ]
    ts = TaggerSet(SCHEMA, features=["tfidf"]).fit(texts, noisy)
    acc = ts.accuracy(texts, noisy)
    assert acc["food"]["n"] == len(texts)
    assert acc["service"]["n"] == len(texts) - len(range(0, len(texts), 3))
    assert acc["food"]["accuracy"] > 0.95 and acc["service"]["accuracy"] > 0.95


def test_single_value_concept_always_predicts_it() -> None:
    texts, labels = corpus()
    only = [dict(lab, service="unknown") for lab in labels]
    ts = TaggerSet(SCHEMA, features=["tfidf"]).fit(texts, only)
    assert {p["service"] for p in ts.predict(["the waiter was rude", "the food was bland and cold"])} == {
        "unknown"
    }


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="features"):
        TaggerSet(SCHEMA, features=["bag-of-magic"])
    with pytest.raises(ValueError, match="label rows"):
        TaggerSet(SCHEMA, features=["tfidf"]).fit(["a", "b"], [{"food": "Positive"}])
    with pytest.raises(ValueError, match="no usable labels"):
        TaggerSet(SCHEMA, features=["tfidf"]).fit(
            ["good food", "bad food"], [{"food": "Positive"}, {"food": "Negative"}]
        )
    with pytest.raises(RuntimeError, match="not fitted"):
        TaggerSet(SCHEMA).predict(["x"])


@pytest.mark.slow  # trains MiniLM-feature taggers
def test_minilm_plus_tfidf_round_trip(tmp_path: Path) -> None:
    texts, labels = corpus()
    ts = TaggerSet(SCHEMA).fit(texts, labels)  # default features: MiniLM embedding + TF-IDF
    probe = ["the pizza was wonderful but the waiter was rude", "the soup tasted awful", "parking was easy"]
    before = ts.predict_proba(probe)
    assert ts.predict(probe)[0] == {"food": "Positive", "service": "Negative"}
    meta = ts.save(tmp_path / "tg", note="test")
    assert meta["kind"] == "taggers" and meta["features"] == ["minilm", "tfidf"]
    loaded = TaggerSet.load(tmp_path / "tg")
    assert loaded.schema == SCHEMA
    after = loaded.predict_proba(probe)
    for c in before:
        np.testing.assert_allclose(after[c], before[c], atol=1e-6)
    assert loaded.predict(probe) == ts.predict(probe)


def test_load_rejects_other_artifacts(tmp_path: Path) -> None:
    (tmp_path / META).write_text(json.dumps({"kind": "classifier"}))
    with pytest.raises(ValueError, match="not a 'taggers'"):
        TaggerSet.load(tmp_path)


def test_cli_train_and_eval_on_a_split_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`cace taggers train|eval` on a small CEBaB-layout directory (the split is a parameter)."""
    from explainers.data.cebab import CONCEPTS

    texts, labels = corpus()
    rows = [
        {
            "id": str(i),
            "original_id": str(i),
            "is_original": True,
            "edit_type": None,
            "description": t,
            "review_majority": "3",
            **{f"{c}_aspect_majority": lab.get(c, "unknown") for c in CONCEPTS},
        }
        for i, (t, lab) in enumerate(zip(texts, labels, strict=True))
    ]
    data = tmp_path / "cebab"
    data.mkdir()
    for split in ("train_inclusive", "dev"):
        (data / f"{split}.json").write_text(json.dumps(rows))
    root = tmp_path / "var"
    assert main(["train", "--root", str(root), "--data", str(data)]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert set(trained) == set(CONCEPTS) and trained["food"]["n"] == len(rows)
    assert trained["food"]["accuracy"] > 0.95
    assert main(["eval", "--root", str(root), "--data", str(data), "--split", str(data / "dev.json")]) == 0
    assert json.loads(capsys.readouterr().out) == trained
