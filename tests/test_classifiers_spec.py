"""Classifier specs: clear validation errors, and specs that build working classifiers."""

from __future__ import annotations

import json
from email.utils import formatdate
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from explainers.classifiers.base import MalformedResponse
from explainers.classifiers.cache import CachingClassifier
from explainers.classifiers.http import LabelMapper, parse_retry_after
from explainers.classifiers.spec import (
    HFSpec,
    LocalClassifierRefused,
    V2Spec,
    build_classifier,
    parse_spec,
)
from explainers.classifiers.template import parse_path, select

BASE = {"url": "http://127.0.0.1:9", "labels": ["a", "b"]}


def error_of(data) -> str:
    with pytest.raises(ValidationError) as e:
        parse_spec(data)
    return str(e.value)


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({"protocol": "v2", **BASE}, "v2.model", "Field required"),
        ({"protocol": "v2", "model": "m", **BASE, "labels": ["a", "a"]}, "v2.labels", "repeated: ['a']"),
        ({"protocol": "hf", **BASE, "url": "file:///etc/passwd"}, "hf.url", "http:// or https://"),
        ({"protocol": "hf", **BASE, "batch_size": 0}, "hf.batch_size", "greater than or equal to 1"),
        ({"protocol": "hf", **BASE, "timeout_s": -1}, "hf.timeout_s", "greater than 0"),
        ({"protocol": "hf", **BASE, "labels": []}, "hf.labels", "at least 1"),
        ({"protocol": "kserve-v1", "model": "m", **BASE, "bogus": 1}, "kserve-v1.bogus", "Extra inputs"),
        (
            {"protocol": "grpc", **BASE},
            "protocol",
            "'v2', 'kserve-v1', 'hf', 'template', 'sklearn', 'transformers'",
        ),
        (
            {"protocol": "template", **BASE, "request_template": {"x": 1}, "scores_path": "a"},
            "template.request_template",
            "exactly one kind of placeholder",
        ),
        (
            {"protocol": "template", **BASE, "request_template": {"x": "{{texts}}"}, "scores_path": "a[*"},
            "template.scores_path",
            "bad JSON path",
        ),
        ({"protocol": "v2", "model": "m", **BASE, "endpoint_labels": ["a", "c"]}, "v2", "same classes"),
    ],
)
def test_validation_errors_name_the_field(data: dict, field: str, words: str) -> None:
    msg = error_of(data)
    assert field in msg and words in msg, msg


def test_examples_in_the_schema_are_valid() -> None:
    from explainers.classifiers import spec as mod

    for cls in (
        mod.V2Spec,
        mod.KServeV1Spec,
        mod.HFSpec,
        mod.TemplateSpec,
        mod.SklearnSpec,
        mod.TransformersSpec,
    ):
        for example in cls.model_json_schema()["examples"]:
            assert parse_spec(example).protocol == example["protocol"]


def test_secrets_are_masked_and_do_not_change_the_cache_key() -> None:
    a = parse_spec({"protocol": "hf", **BASE, "headers": {"Authorization": "Bearer s3cret"}})
    b = parse_spec({"protocol": "hf", **BASE, "headers": {"Authorization": "Bearer other"}})
    assert isinstance(a, HFSpec)
    assert "s3cret" not in json.dumps(a.redacted()) and "s3cret" not in repr(a)
    assert a.key() == b.key()
    assert a.key() != parse_spec({"protocol": "hf", **BASE, "url": "http://127.0.0.1:10"}).key()


def test_json_string_and_model_inputs() -> None:
    s = parse_spec(json.dumps({"protocol": "v2", "model": "m", **BASE}))
    assert isinstance(s, V2Spec) and s.shape == "n1" and parse_spec(s) is s


def test_build_sklearn_spec_and_local_refusal(tfidf_lr_dir: Path, tfidf_lr) -> None:
    clf = build_classifier({"protocol": "sklearn", "path": str(tfidf_lr_dir)})
    assert isinstance(clf, CachingClassifier) and clf.labels == ["1", "2", "3", "4", "5"]
    np.testing.assert_allclose(clf.predict_proba(["great food"]), tfidf_lr.predict_proba(["great food"]))
    with pytest.raises(LocalClassifierRefused, match="not allowed"):
        build_classifier({"protocol": "sklearn", "path": str(tfidf_lr_dir)}, allow_local=False)


def test_retry_after_parsing() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    import time

    wait = parse_retry_after(formatdate(time.time() + 10, usegmt=True))
    assert wait is not None and 8 <= wait <= 10.5
    assert parse_retry_after(formatdate(time.time() - 100, usegmt=True)) == 0.0


def test_json_paths() -> None:
    body = {"data": {"results": [{"probs": [0.1, 0.9]}, {"probs": [0.7, 0.3]}], "classes": ["a", "b"]}}
    assert select(body, parse_path("data.results[*].probs")) == [[0.1, 0.9], [0.7, 0.3]]
    assert select(body, parse_path("$.data.classes[-1]")) == "b"
    assert select(body, parse_path("data['classes']")) == ["a", "b"]
    assert select(body, parse_path("$")) == body
    with pytest.raises(MalformedResponse, match="key 'nope' not found"):
        select(body, parse_path("data.nope"), path="data.nope")
    with pytest.raises(MalformedResponse, match=r"index \[5\] not found"):
        select(body, parse_path("data.results[5]"))


def test_label_mapper_row_forms() -> None:
    m = LabelMapper(["x", "y", "z"], endpoint_labels=["z", "x", "y"], source="ep")
    np.testing.assert_allclose(m.row([0.5, 0.2, 0.3], 0), [0.2, 0.3, 0.5])
    np.testing.assert_allclose(m.row({"y": 0.1, "x": 0.6, "z": 0.3}, 0), [0.6, 0.1, 0.3])
    entries = [{"label": "z", "score": 0.7}, {"label": "x", "score": 0.2}, {"label": "y", "score": 0.1}]
    np.testing.assert_allclose(m.row(entries, 0), [0.2, 0.1, 0.7])
    with pytest.raises(MalformedResponse, match="repeats label 'x'"):
        m.row([{"label": "x", "score": 0.5}, {"label": "x", "score": 0.5}, {"label": "y", "score": 0}], 0)
    with pytest.raises(MalformedResponse, match="no score for labels \\['z'\\]"):
        m.row({"x": 0.5, "y": 0.5}, 0)
    with pytest.raises(MalformedResponse, match="row 3 score 1 is 'high', not a number"):
        m.row([0.1, "high", 0.2], 3)
    with pytest.raises(MalformedResponse, match="has 2 scores, expected 3"):
        m.row([0.5, 0.5], 0)
