"""Every HTTP adapter against a real model server on 127.0.0.1 serving the tfidf-lr pipeline.

- Hugging Face JSON, V2, V1 and the template adapter: the project's own classifier server
  (explainers.serving, a uvicorn subprocess);
- Open Inference Protocol V2: MLServer's scikit-learn runtime (own venv);
- KServe V1: the kserve Python model server with a small sklearn model (own venv).
Each must return exactly what the pipeline returns in-process, in the declared label order.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from benchmarks.harness.model_servers.launch import kserve_server, mlserver, own_server
from benchmarks.harness.servers import Server
from explainers.classifiers.hf import HFClassifier
from explainers.classifiers.http import HttpOptions
from explainers.classifiers.kserve_v1 import KServeV1Classifier
from explainers.classifiers.spec import build_classifier
from explainers.classifiers.template import TemplateClassifier
from explainers.classifiers.v2 import V2Classifier
from explainers.data.cebab import load_split

LABELS = ["1", "2", "3", "4", "5"]
REVERSED = LABELS[::-1]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    reviews = load_split("dev")
    return [r.text for r in reviews[:23]] + ["", 'ünïcödé ☕ "quoted" \n newline']


@pytest.fixture(scope="module")
def truth(tfidf_lr, texts: list[str]) -> np.ndarray:
    return tfidf_lr.predict_proba(texts)


@pytest.fixture(scope="module")
def own(tfidf_lr_dir: Path) -> Iterator[Server]:
    with own_server(tfidf_lr_dir) as s:
        yield s


@pytest.fixture(scope="module")
def ml(tfidf_lr_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with mlserver(tfidf_lr_dir, tmp_path_factory.mktemp("mlserver")) as s:
        yield s


@pytest.fixture(scope="module")
def ks(tfidf_lr_dir: Path) -> Iterator[Server]:
    with kserve_server(tfidf_lr_dir) as s:
        yield s


def server_stats(server: Server) -> dict:
    return httpx.get(server.base_url + "/stats").json()


# -- the project's own server -------------------------------------------------------


def test_hf_batches_match_in_process(own: Server, texts: list[str], truth: np.ndarray) -> None:
    before = server_stats(own)["requests"]
    clf = HFClassifier(
        own.base_url + "/predict", LABELS, options=HttpOptions(batch_size=10, max_concurrency=2)
    )
    np.testing.assert_allclose(clf.predict_proba(texts), truth, atol=1e-12)
    after = server_stats(own)
    assert after["requests"] - before == 3
    assert sorted(after["batch_sizes"][-3:]) == [5, 10, 10]


def test_hf_single_string_and_root_route(own: Server, texts: list[str], truth: np.ndarray) -> None:
    clf = HFClassifier(own.base_url + "/", LABELS, batch=False)
    np.testing.assert_allclose(clf.predict_proba(texts[:3]), truth[:3], atol=1e-12)
    flat = httpx.post(own.base_url + "/predict", json={"inputs": texts[0]}).json()
    assert isinstance(flat, list) and isinstance(flat[0], dict) and len(flat) == 5
    assert [e["score"] for e in flat] == sorted((e["score"] for e in flat), reverse=True)


def test_hf_label_order_normalised(own: Server, texts: list[str], truth: np.ndarray) -> None:
    clf = HFClassifier(own.base_url + "/predict", REVERSED)
    np.testing.assert_allclose(clf.predict_proba(texts), truth[:, ::-1], atol=1e-12)


def test_v2_against_own_server(own: Server, texts: list[str], truth: np.ndarray) -> None:
    for shape in ("n1", "n"):
        clf = V2Classifier(own.base_url, "tfidf-lr", LABELS, shape=shape, output_name="probabilities")
        np.testing.assert_allclose(clf.predict_proba(texts), truth, atol=1e-12)


def test_v1_against_own_server(own: Server, texts: list[str], truth: np.ndarray) -> None:
    clf = KServeV1Classifier(own.base_url, "tfidf-lr", REVERSED, endpoint_labels=LABELS)
    np.testing.assert_allclose(clf.predict_proba(texts), truth[:, ::-1], atol=1e-12)


def test_wrong_model_name_is_rejected_with_the_servers_message(own: Server) -> None:
    from explainers.classifiers.http import EndpointRejected

    clf = V2Classifier(own.base_url, "no-such-model", LABELS)
    with pytest.raises(EndpointRejected, match="HTTP 404.*no-such-model"):
        clf.predict_proba(["x"])


def test_template_speaks_v2_json(own: Server, texts: list[str], truth: np.ndarray) -> None:
    template = {"inputs": [{"name": "text", "shape": [-1], "datatype": "BYTES", "data": "{{texts}}"}]}
    clf = TemplateClassifier(
        own.base_url + "/v2/models/tfidf-lr/infer",
        REVERSED,
        request_template=template,
        scores_path="outputs[0].data",
        labels_path="outputs[0].parameters.labels",
        options=HttpOptions(batch_size=8),
    )
    np.testing.assert_allclose(clf.predict_proba(texts), truth[:, ::-1], atol=1e-12)


def test_template_per_text_with_label_entries(own: Server, texts: list[str], truth: np.ndarray) -> None:
    clf = build_classifier(
        {
            "protocol": "template",
            "url": own.base_url + "/predict",
            "labels": LABELS,
            "request_template": {"inputs": "{{text}}"},
            "scores_path": "$",
        },
        cache=False,
    )
    np.testing.assert_allclose(clf.predict_proba(texts[:4]), truth[:4], atol=1e-12)


def test_template_rows_by_index_path(own: Server, texts: list[str], truth: np.ndarray) -> None:
    clf = TemplateClassifier(
        own.base_url + "/v1/models/tfidf-lr:predict",
        LABELS,
        request_template={"instances": "{{texts}}"},
        scores_path="predictions[*]",
    )
    np.testing.assert_allclose(clf.predict_proba(texts), truth, atol=1e-12)


# -- MLServer (Open Inference Protocol V2) -------------------------------------------


def test_mlserver_v2(ml: Server, texts: list[str], truth: np.ndarray) -> None:
    spec = {
        "protocol": "v2",
        "url": ml.base_url,
        "model": "tfidf-lr",
        "labels": LABELS,
        "input_parameters": {"content_type": "str"},
        "request_outputs": ["predict_proba"],
        "output_name": "predict_proba",
        "batch_size": 8,
        "max_concurrency": 2,
    }
    clf = build_classifier(spec)
    np.testing.assert_allclose(clf.predict_proba(texts), truth, atol=1e-9)
    np.testing.assert_allclose(clf.predict_proba(texts[:5]), truth[:5], atol=1e-9)
    assert clf.stats().hits == 5


def test_mlserver_v2_label_order_and_flat_shape(ml: Server, texts: list[str], truth: np.ndarray) -> None:
    clf = V2Classifier(
        ml.base_url,
        "tfidf-lr",
        REVERSED,
        shape="n",
        endpoint_labels=LABELS,
        request_outputs=["predict_proba"],
    )
    np.testing.assert_allclose(clf.predict_proba(texts), truth[:, ::-1], atol=1e-9)


def test_mlserver_without_predict_proba_is_a_clear_error(ml: Server) -> None:
    from explainers.classifiers.base import MalformedResponse

    # MLServer's default output is predict() (one class per text): the adapter must say so, not guess.
    clf = V2Classifier(ml.base_url, "tfidf-lr", LABELS, input_parameters={"content_type": "str"})
    with pytest.raises(MalformedResponse, match="expected 10 scores"):
        clf.predict_proba(["good", "bad"])


# -- KServe model server (V1) --------------------------------------------------------------


def test_kserve_v1_lists(ks: Server, texts: list[str], truth: np.ndarray) -> None:
    clf = build_classifier(
        {"protocol": "kserve-v1", "url": ks.base_url, "model": "tfidf-lr", "labels": LABELS, "batch_size": 10}
    )
    np.testing.assert_allclose(clf.predict_proba(texts), truth, atol=1e-9)


def test_kserve_v1_label_dicts_in_declared_order(ks: Server, texts: list[str], truth: np.ndarray) -> None:
    clf = KServeV1Classifier(ks.base_url, "tfidf-lr-dict", REVERSED)
    np.testing.assert_allclose(clf.predict_proba(texts), truth[:, ::-1], atol=1e-9)


def test_own_server_rejects_bad_input_with_4xx(own: Server) -> None:
    post = lambda path, body: httpx.post(own.base_url + path, json=body)  # noqa: E731
    r = post("/predict", {"inputs": [1, 2]})
    assert r.status_code == 422 and "list of strings" in r.json()["error"]
    assert post("/predict", {"text": "x"}).status_code == 422
    assert post("/predict", {"inputs": []}).status_code == 422
    r = post(
        "/v2/models/tfidf-lr/infer",
        {"inputs": [{"name": "t", "datatype": "FP32", "shape": [1], "data": [1]}]},
    )
    assert r.status_code == 422 and "BYTES" in r.json()["error"]
    assert post("/v1/models/other:predict", {"instances": ["x"]}).status_code == 404
    r = post("/predict", {"inputs": ["x"] * 5000})
    assert r.status_code == 413
    assert httpx.get(own.base_url + "/v2/health/ready").json() == {"ready": True}
    assert httpx.get(own.base_url + "/info").json()["labels"] == LABELS
