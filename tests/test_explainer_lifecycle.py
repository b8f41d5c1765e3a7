"""The service side of the explainer lifecycle: built and loaded into the cache, listed by `/readyz`
with their state, and closed when dropped (a domain forgotten, an LRU eviction), after any
explanation still running on them.

In process (TestClient), over the tiny movie domain as the default domain; the classifier is a
local scikit-learn model handed to the runtime, whose release after a close is what we observe.
"""

from __future__ import annotations

import gc
import json
import shutil
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.resources import MAX_EXPLAINERS, Runtime
from app.settings import Settings
from explainers.artifacts import META
from explainers.classifiers.local import SklearnClassifier
from explainers.concepts import Intervention
from explainers.data.movies import movie_corpus, train_rating_classifier
from tests.tiny_domain import TINY_ID, tiny_domain

IV = Intervention("plot", "bad", "good")
TEXT = "I went with two friends. The acting is wooden and flat. The story is gripping from start to finish."


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    data = tmp_path_factory.mktemp("lifecycle")
    settings = Settings(
        data_dir=data,
        database_url=f"sqlite:///{data / 'jobs.sqlite'}",
        default_domain=str(tiny_domain(data)),
        default_classifier="none",
        prewarm_methods=["match", "zero"],
        auto_calibrate=False,
        log_format="text",
    )
    with TestClient(create_app(settings)) as c:
        deadline = time.monotonic() + 300
        while c.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, c.get("/readyz").json()
            time.sleep(0.1)
        yield c


def runtime(client: TestClient) -> Runtime:
    rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    return rt


def states(client: TestClient) -> dict[str, dict[str, Any]]:
    return {e["method"]: e for e in client.get("/readyz").json()["explainers"]}


def classifier() -> SklearnClassifier:
    return SklearnClassifier(train_rating_classifier(movie_corpus(60, edits=False, seed=9)), name="rating")


def test_readyz_lists_the_prebuilt_explainers_ready_and_a_failed_build_with_why(client: TestClient) -> None:
    listed = states(client)
    for method in ("match", "zero"):
        assert listed[method]["status"] == "ready", listed
        assert listed[method]["seconds"] is not None and listed[method]["seconds"] >= 0
    rt = runtime(client)
    domain = rt.domain(None)
    assert domain.id == TINY_ID
    explainer, _, _ = rt.explainer("match", domain)
    assert explainer.ready  # the cache loads what it builds
    # A build that fails is listed as failed, with the library's reason, and is not cached.
    with pytest.raises(ValueError, match="confounders must be one of"):
        rt.explainer("match", domain, options={"confounders": "sometimes"})
    failed = [e for e in client.get("/readyz").json()["explainers"] if e["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["method"] == "match", failed
    assert failed[0]["options"] == ["confounders"]  # names only: /readyz is public
    assert failed[0]["detail"].startswith("ValueError: confounders must be one of"), failed
    assert client.get("/readyz").status_code == 200  # a method that cannot build is not unreadiness


def test_forgetting_a_domain_closes_its_explainers_and_releases_the_classifier(client: TestClient) -> None:
    rt = runtime(client)
    domain = rt.domain(None)
    clf = classifier()
    explainer, lock, _ = rt.explainer("conexp", domain)
    with lock:
        explainer.explain(TEXT, IV, clf, 3, base_labels={"plot": "good"})
    held = weakref.ref(clf)
    del clf
    gc.collect()
    assert held() is not None, "the explainer's pool scores hold the classifier they scored"

    rt.forget_domain(domain.id)  # what DELETE /v1/domains/{id}, a rebuild or a new calibration do
    assert explainer.state == "closed"
    gc.collect()
    assert held() is None, "closing dropped the cached scores, and with them the classifier"
    assert states(client) == {}, "the dropped explainers are no longer listed"
    again, _, _ = rt.explainer("conexp", domain)  # the next request builds a fresh one
    assert again is not explainer and again.ready
    assert states(client)["conexp"]["status"] == "ready"


def test_an_explainer_in_use_is_closed_once_its_explanation_ends(client: TestClient) -> None:
    rt = runtime(client)
    domain = rt.domain(None)
    explainer, lock, _ = rt.explainer("zero", domain)
    with lock:  # an explanation in flight
        rt.forget_domain(domain.id)
        time.sleep(0.2)
        assert explainer.state == "ready", "not closed under a running explanation"
        with lock.paused():  # its classifier call lets the mutex go: it is still in flight
            time.sleep(0.2)
            assert explainer.state == "ready", "not closed while the explanation waits on its classifier"
    deadline = time.monotonic() + 10
    while explainer.state != "closed":
        assert time.monotonic() < deadline, explainer.state
        time.sleep(0.02)


def test_the_least_recently_used_explainer_is_closed_when_the_cache_is_full(client: TestClient) -> None:
    rt = runtime(client)
    domain = rt.domain(None)
    rt.forget_domain(domain.id)
    first, _, _ = rt.explainer("random", domain, options={"similarity_threshold": 0.0})
    built = [
        rt.explainer("random", domain, options={"similarity_threshold": (i + 1) / 100})[0]
        for i in range(MAX_EXPLAINERS - 1)
    ]
    assert first.ready and all(e.ready for e in built)
    rt.explainer("zero", domain)  # one more than the cache keeps: the oldest goes, closed
    assert first.state == "closed"
    assert all(e.ready for e in built)
    assert len(states(client)) == 2 and len(client.get("/readyz").json()["explainers"]) == MAX_EXPLAINERS


def test_the_service_closes_its_explainers_when_it_stops(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'jobs.sqlite'}",
        default_domain=str(tiny_domain(tmp_path)),
        default_classifier="none",
        prewarm_methods=["zero"],
        auto_calibrate=False,
        log_format="text",
    )
    with TestClient(create_app(settings)) as c:
        deadline = time.monotonic() + 300
        while c.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, c.get("/readyz").json()
            time.sleep(0.1)
        rt = runtime(c)
        explainer, _, _ = rt.explainer("zero", rt.domain(None))
        assert explainer.ready
    assert explainer.state == "closed"
    assert not [t for t in threading.enumerate() if t.name.startswith("cace-close-")]


def test_a_domain_dropped_from_memory_has_its_explainers_closed(client: TestClient) -> None:
    """The catalog keeps a few uploaded domains loaded; one it evicts takes its explainers with it."""
    rt = runtime(client)
    for name in ("evict-a", "evict-b"):  # two uploaded domains (copies of the tiny one, renamed)
        folder = rt.domains.root / name
        shutil.copytree(rt.domain(None).directory, folder)
        meta = json.loads((folder / META).read_text())
        (folder / META).write_text(json.dumps({**meta, "id": name}))
    rt.domains.keep = 1
    first = rt.domain("evict-a")
    assert first.id == "evict-a"
    explainer, _, _ = rt.explainer("zero", first)
    assert explainer.ready
    rt.domain("evict-b")  # loading a second evicts the first
    assert explainer.state == "closed"


def test_replacing_a_classifier_registration_closes_its_fitted_explainers(client: TestClient) -> None:
    """`auto` is built per classifier (its calibration); a re-registered classifier gets a fresh one,
    and closing the composite closes the components it built."""
    rt = runtime(client)
    domain = rt.domain(None)
    auto, _, _ = rt.explainer("auto", domain, classifier_name="rating")
    other, _, _ = rt.explainer("auto", domain, classifier_name="another")
    components = list(auto._explainers.values())
    assert auto.ready and components and all(c.ready for c in components)
    rt.forget("classifier", "rating")  # what DELETE /v1/classifiers/rating does (replacing is DELETE + POST)
    assert auto.state == "closed" and all(c.state == "closed" for c in components)
    assert other.ready
