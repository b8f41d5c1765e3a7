"""A domain that is not CEBaB, end to end over HTTP on a live server started without CEBaB.

Movie reviews with three concepts (acting, plot, music; explainers.data.movies), a rating
classifier served over HTTP by the project's classifier server, and the service started with
CACE_DEFAULT_DOMAIN=none in an empty data dir: create the domain from a JSONL upload, register
the classifier, explain with every method, check the per-domain 422s, the no-pairs domain, the
no-usable-tagger concept, and that domains survive a restart.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import joblib
import pytest

from benchmarks.harness.servers import free_port, python, running
from benchmarks.harness.service import service, store_env
from explainers.data.movies import movie_corpus, train_rating_classifier

METHODS_WITHOUT_LLM = (
    "match",
    "match_dr",
    "pair_transfer",
    "stacked",
    "zero",
    "random",
    "random_proba",
    "random_matching",
    "conexp",
    "approx",
    "approx_match",
    "s_learner",
    "pt_match",
)
QUERY = {
    "text": "I went with two friends. The acting is wooden and flat. The story is gripping from start to "
    "finish. The score is beautiful and haunting.",
    "intervention": {"concept": "plot", "target": "bad"},
    "classifier": "movie-rating",
    "domain": "movies",
}


def upload(c: httpx.Client, domain_id: str, rows: list[dict], **params: object) -> httpx.Response:
    body = "\n".join(json.dumps({k: v for k, v in r.items() if k != "rating"}) for r in rows).encode()
    return c.post(
        "/v1/domains",
        files={"file": ("corpus.jsonl", body, "application/x-ndjson")},
        data={"params": json.dumps({"id": domain_id, **params})},
    )


def wait_job(c: httpx.Client, job_id: str, timeout: float = 900) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = c.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    raise TimeoutError(job_id)


def field(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    return r.json()["errors"][0]["field"] if r.json().get("errors") else ""


@pytest.fixture(scope="module")
def rating_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The black-box classifier: a rating model trained on reviews without edits, served over HTTP (HF JSON)."""
    path = tmp_path_factory.mktemp("clf") / "movie-rating.joblib"
    joblib.dump(train_rating_classifier(movie_corpus(300, edits=False, seed=7)), path)
    port = free_port()
    cmd = [python(), "-m", "explainers.serving", str(path), "--port", str(port)]
    with running(cmd, port=port, health_path="/health", timeout=120) as srv:
        yield srv.base_url + "/predict"


def test_a_movie_domain_end_to_end_without_cebab(tmp_path: Path, rating_server: str) -> None:
    env = {
        **store_env("sqlite", tmp_path),
        "CACE_DATA_DIR": str(tmp_path / "data"),
        "CACE_DEFAULT_DOMAIN": "none",
        "CACE_AUTO_CALIBRATE": "true",
        "CACE_CALIBRATION_MAX_PAIRS": "60",
    }
    started = time.monotonic()
    with service(env) as svc, httpx.Client(base_url=svc.base_url, timeout=300) as c:
        startup_s = time.monotonic() - started
        ready = c.get("/readyz").json()
        assert not {"domain", "classifier"} & set(ready["components"]), (
            ready
        )  # nothing of CEBaB is loaded or built
        assert startup_s < 60, startup_s
        assert not (tmp_path / "data" / "domains" / "cebab").exists()
        # No default domain, no default classifier: a request must name both.
        assert field(c.post("/v1/explanations", json={**QUERY, "domain": None}), 409) == ""
        spec = {"protocol": "hf", "url": rating_server, "labels": ["neg", "pos"]}
        assert c.post("/v1/classifiers", json={"name": "movie-rating", "spec": spec}).status_code == 201

        r = upload(c, "movies", movie_corpus(70, seed=0), description="movie reviews")
        assert r.status_code == 202, r.text
        job = wait_job(c, r.json()["id"])
        assert job["status"] == "succeeded", job
        d = c.get("/v1/domains/movies").json()
        assert [x["name"] for x in d["schema"]["concepts"]] == ["acting", "plot", "music"]
        assert d["stats"]["pairs"]["plot"] > 0 and d["taggers"]["plot"]["usable"] is True
        assert d["methods"]["plot"]["pair_transfer"] is None

        # Not calibrated yet: auto says so and uses the measured default; the first explanation
        # of this classifier on this domain queued its calibration.
        first = c.post("/v1/explanations", json={**QUERY, "method": "auto", "top_k": 3}).json()
        assert first["details"]["calibrated"] is False and first["uncertainty"]["interval"] is None
        jobs = c.get("/v1/jobs", params={"kind": "calibration"}).json()["jobs"]
        assert len(jobs) == 1, jobs
        cal_job = wait_job(c, jobs[0]["id"])
        assert cal_job["status"] == "succeeded", cal_job
        cal = c.get("/v1/domains/movies/calibrations").json()["movie-rating"]
        assert cal["auto"]["l2"] < cal["zero"]["l2"] and cal["cost"]["classifier_texts"] > 0
        auto = c.post("/v1/explanations", json={**QUERY, "method": "auto", "top_k": 3}).json()
        assert auto["details"]["calibrated"] is True, auto["details"]
        lo, hi = auto["uncertainty"]["interval"]["pos"]
        assert lo <= auto["icace"]["pos"] <= hi and auto["uncertainty"]["coverage"] == 0.9
        assert "l2" in auto["uncertainty"]["expected_error"]
        # A calibrated answer says whether its calibration describes this text, and on how many pairs.
        assert isinstance(auto["uncertainty"]["valid"], bool)
        assert auto["uncertainty"]["situation"]["effective_pairs"] > 0

        # The texts the classifier was trained on: ids of the domain's texts, else a 422 naming them.
        body = {"classifier": "movie-rating", "trained_on": ["m0-0-0", "no-such-id"]}
        bad = c.post("/v1/domains/movies/calibrations", json=body)
        assert field(bad, 422) == "body.trained_on" and "'no-such-id'" in bad.json()["detail"]
        originals = [r["id"] for r in movie_corpus(70, seed=0) if r["id"].endswith("-0")]
        r = c.post(
            "/v1/domains/movies/calibrations", json={"classifier": "movie-rating", "trained_on": originals}
        )
        assert r.status_code == 202, r.text
        assert wait_job(c, r.json()["id"])["status"] == "succeeded"
        shift = c.get("/v1/domains/movies/calibrations").json()["movie-rating"]["shift"]
        assert shift["trained_on_declared"] is True and shift["trained_texts"] == 70, shift
        assert shift["memorisation"]["measured"] is True

        for method in METHODS_WITHOUT_LLM:
            r = c.post("/v1/explanations", json={**QUERY, "method": method, "top_k": 3})
            assert r.status_code == 200, (method, r.text)
            e = r.json()
            assert e["domain"] == "movies" and e["labels"] == ["neg", "pos"], e
            assert e["intervention"]["source"] == "good" and e["intervention"]["source_inferred"] is True
            assert abs(sum(e["icace"].values())) < 1e-6
            for cf in e["counterfactuals"]:  # every counterfactual comes from this domain's corpus
                assert "food" not in cf["text"].lower() and cf["text"].endswith(".")
        # Making the plot bad lowers the rating for the methods that look at real edits.
        assert (
            c.post("/v1/explanations", json={**QUERY, "method": "match", "top_k": 5}).json()["icace"]["pos"]
            < 0
        )

        # Checked against this domain's schema, naming the field and the allowed values.
        bad = c.post(
            "/v1/explanations", json={**QUERY, "intervention": {"concept": "food", "target": "Positive"}}
        )
        assert field(bad, 422) == "body.intervention.concept" and "acting" in bad.json()["detail"]
        bad = c.post(
            "/v1/explanations", json={**QUERY, "intervention": {"concept": "plot", "target": "Positive"}}
        )
        assert field(bad, 422) == "body.intervention.target" and "'good'" in bad.json()["detail"]
        bad = c.post("/v1/explanations", json={**QUERY, "base_labels": {"music": "Bogus"}})
        assert field(bad, 422) == "body.base_labels.music"
        assert field(c.post("/v1/explanations", json={**QUERY, "domain": "nope"}), 422) == "body.domain"

        eff = c.post(
            "/v1/effects",
            json={
                **{k: v for k, v in QUERY.items() if k != "text"},
                "method": "pt_match",
                "texts": [r["text"] for r in movie_corpus(8, edits=False, seed=3)],
            },
        )
        assert eff.status_code == 200, eff.text
        assert eff.json()["result"]["labels"] == ["neg", "pos"]
        bad = c.post(
            "/v1/effects",
            json={
                **{k: v for k, v in QUERY.items() if k != "text"},
                "texts": [{"text": "The plot is dull.", "labels": {"plot": "meh"}}],
            },
        )
        assert field(bad, 422) == "body.texts.0.labels.plot"

        # A corpus without edits builds, and says which methods it cannot run (never a silent zero).
        r = upload(c, "movies-flat", movie_corpus(40, edits=False, seed=1))
        assert wait_job(c, r.json()["id"])["status"] == "succeeded"
        flat = c.get("/v1/domains/movies-flat").json()
        assert sum(flat["stats"]["pairs"].values()) == 0
        assert "no counterfactual pairs" in flat["methods"]["plot"]["pair_transfer"]
        assert flat["methods"]["plot"]["match"] is None
        bad = c.post("/v1/explanations", json={**QUERY, "domain": "movies-flat", "method": "pair_transfer"})
        assert field(bad, 422) == "body.method" and "no counterfactual pairs" in bad.json()["detail"]
        assert (
            c.post("/v1/explanations", json={**QUERY, "domain": "movies-flat", "method": "match"}).status_code
            == 200
        )

        # A concept whose tagger cannot beat the majority value needs the caller's label.
        rows = [{**r, "labels": {**r["labels"], "format": "dvd"}} for r in movie_corpus(20, seed=2)]
        schema = {
            "concepts": [
                {"name": c_, "values": ["bad", "good", "unknown"]} for c_ in ("acting", "plot", "music")
            ]
            + [{"name": "format", "values": ["dvd", "stream"]}]
        }
        r = upload(c, "movies-format", rows, schema=schema)
        assert wait_job(c, r.json()["id"])["status"] == "succeeded"
        assert c.get("/v1/domains/movies-format").json()["taggers"]["format"]["usable"] is False
        q = {**QUERY, "domain": "movies-format", "intervention": {"concept": "format", "target": "stream"}}
        assert field(c.post("/v1/explanations", json=q), 422) == "body.intervention.source"
        q["intervention"]["source"] = "dvd"
        bad = c.post("/v1/explanations", json=q)  # no text of the corpus is on "stream"
        assert field(bad, 422) == "body.method" and "format='stream'" in bad.json()["detail"]

    # Domains are folders: a restarted server lists them with schema and status, and explains.
    with service(env) as svc, httpx.Client(base_url=svc.base_url, timeout=300) as c:
        listed = {d["id"]: d for d in c.get("/v1/domains").json()["domains"]}
        assert {"movies", "movies-flat", "movies-format"} <= set(listed)
        assert (
            listed["movies"]["status"] == "ready"
            and listed["movies"]["schema"]["concepts"][1]["name"] == "plot"
        )
        assert c.post("/v1/explanations", json={**QUERY, "method": "match"}).status_code == 200
        assert c.delete("/v1/domains/movies-flat").status_code == 204
