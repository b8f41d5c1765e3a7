"""Reference classifiers: minilm-ft training (on a tiny CEBaB-layout corpus), the in-process
transformers adapter, `cace classifiers eval|serve`, and serving a transformers folder over HTTP.

The real minilm-ft takes minutes to train, so the test trains the same code path on 40
reviews for a few steps; what is checked is the artifact's shape and behaviour, not its accuracy.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmarks.harness.servers import free_port, python, running
from explainers.artifacts import META, read_meta
from explainers.classifiers.base import Classifier
from explainers.classifiers.hf import HFClassifier
from explainers.classifiers.transformers_local import TransformersClassifier
from explainers.data.cebab import CONCEPTS
from explainers.reference import LABELS, evaluate, load_reference
from explainers.reference.cli import main

GOOD = [
    "the food was wonderful and the staff lovely",
    "great meal, we will be back",
    "best pasta in town, amazing",
]
BAD = ["the food was awful and the waiter rude", "terrible meal, never again", "cold soup and a dirty table"]
MEH = ["it was okay, nothing special", "average food, decent service", "fine but a bit pricey"]


def _rows(n_each: int) -> list[dict]:
    rows = []
    for rating, texts in (("5", GOOD), ("1", BAD), ("3", MEH)):
        for i in range(n_each):
            t = texts[i % len(texts)] + ("" if i < len(texts) else f" (visit {i})")
            rows.append(
                {
                    "id": f"{rating}-{i}",
                    "original_id": f"{rating}-{i}",
                    "is_original": True,
                    "edit_type": None,
                    "description": t,
                    "review_majority": rating,
                    **{f"{c}_aspect_majority": "unknown" for c in CONCEPTS},
                }
            )
    rows.append({**rows[0], "id": "nm", "original_id": "nm", "review_majority": "no majority"})
    return rows


@pytest.fixture(scope="module")
def tiny_cebab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("cebab")
    (data / "train_exclusive.json").write_text(json.dumps(_rows(8)))
    (data / "dev.json").write_text(json.dumps(_rows(3)))
    return data


@pytest.fixture(scope="module")
def tiny_minilm(tiny_cebab: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from explainers.reference.minilm import train_minilm_ft

    out = tmp_path_factory.mktemp("minilm-ft")
    train_minilm_ft(out, tiny_cebab, epochs=3, batch_size=8, lr=1e-4)
    return out


def test_minilm_ft_artifact_is_a_transformers_folder(tiny_minilm: Path) -> None:
    meta = read_meta(tiny_minilm, "classifier")
    assert meta["name"] == "minilm-ft" and meta["format"] == "transformers" and meta["labels"] == LABELS
    assert meta["n_train"] == 24  # the "no majority" row is dropped
    assert meta["steps"] == 9 and 0.0 <= meta["dev_accuracy"] <= 1.0 and meta["train_seconds"] > 0
    assert (tiny_minilm / "config.json").exists() and (tiny_minilm / "tokenizer.json").exists()
    config = json.loads((tiny_minilm / "config.json").read_text())
    assert config["id2label"] == {str(i): lab for i, lab in enumerate(LABELS)}
    assert meta["final_epoch_loss"] < np.log(5)  # it learned something about three well separated classes


def test_transformers_classifier_probabilities(tiny_minilm: Path) -> None:
    clf = load_reference(tiny_minilm)
    assert isinstance(clf, TransformersClassifier) and isinstance(clf, Classifier)
    assert clf.labels == LABELS
    texts = GOOD + BAD + ["", "ünïcödé ☕ " * 200]  # empty and over-long (truncated) texts too
    p = clf.predict_proba(texts)
    assert p.shape == (len(texts), 5)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-9)
    assert clf.predict_proba([]).shape == (0, 5)
    # Batching and length-sorting must not change any row.
    small = TransformersClassifier.load(tiny_minilm, batch_size=2)
    np.testing.assert_allclose(small.predict_proba(texts), p, atol=1e-5)
    np.testing.assert_allclose(clf.predict_proba(texts[::-1]), p[::-1], atol=1e-5)


def test_label_order_follows_meta_then_config(tiny_minilm: Path, tmp_path: Path) -> None:
    base = TransformersClassifier.load(tiny_minilm)
    p = base.predict_proba(GOOD)
    rev = TransformersClassifier.load(tiny_minilm, labels=LABELS[::-1])
    assert rev.labels == LABELS[::-1]
    np.testing.assert_allclose(rev.predict_proba(GOOD), p[:, ::-1], atol=1e-6)
    # Without meta.json the labels come from config.id2label.
    bare = tmp_path / "bare"
    shutil.copytree(tiny_minilm, bare)
    (bare / META).unlink()
    plain = TransformersClassifier.load(bare)
    assert plain.labels == LABELS
    np.testing.assert_allclose(plain.predict_proba(GOOD), p, atol=1e-6)
    with pytest.raises(ValueError, match="labels declared"):
        TransformersClassifier.load(bare, labels=["neg", "pos"])


def test_eval_matches_training_meta(tfidf_lr_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    meta = read_meta(tfidf_lr_dir)
    result = evaluate(load_reference(tfidf_lr_dir), "dev")
    assert result["accuracy"] == meta["dev_accuracy"] and result["n"] == 1673
    assert 0.0 < result["macro_f1"] <= result["accuracy"] + 0.2 and result["mae"] > 0
    assert main(["eval", str(tfidf_lr_dir)]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == meta["dev_accuracy"]


def test_eval_cli_on_a_split_file(
    tiny_minilm: Path, tiny_cebab: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["eval", str(tiny_minilm), "--split", str(tiny_cebab / "dev.json")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 9 and out["accuracy"] == read_meta(tiny_minilm)["dev_accuracy"]


def test_serve_transformers_folder_over_http(tiny_minilm: Path) -> None:
    """`cace classifiers serve DIR` in a subprocess; the HF adapter gets the in-process probabilities."""
    port = free_port()
    cmd = [
        python(),
        "-m",
        "app.cli",
        "classifiers",
        "serve",
        str(tiny_minilm),
        "--port",
        str(port),
        "--name",
        "minilm-tiny",
    ]
    texts = GOOD + BAD + MEH
    truth = TransformersClassifier.load(tiny_minilm).predict_proba(texts)
    with running(cmd, port=port, health_path="/health", env={"OMP_NUM_THREADS": "1"}, timeout=180) as server:
        clf = HFClassifier(server.base_url + "/predict", LABELS)
        np.testing.assert_allclose(clf.predict_proba(texts), truth, atol=1e-6)
        reversed_clf = HFClassifier(server.base_url + "/predict", LABELS[::-1])
        np.testing.assert_allclose(reversed_clf.predict_proba(texts[:2]), truth[:2, ::-1], atol=1e-6)
