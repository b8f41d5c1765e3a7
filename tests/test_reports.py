"""Model reports and comparisons against a real service (uvicorn on 127.0.0.1, the warm CEBaB test data).

One service with API keys serves a report and a comparison end to end (formats, ownership,
problems for bad input); a second pair of servers shows a queued report surviving a restart.
The library's statistics (Holm, the sign-flip test, the placebo) are checked without a server.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from explainers.reports.report import Cell, holm, sign_flip_p, summarize_report
from tests.servers import Server
from tests.service_server import service, store_env

pytest_plugins = ["tests.report_fixtures"]  # other_model: a second classifier served over HTTP

ADMIN = "cace_reports-test-admin-key"
PORTS = iter(range(9610, 9660))
DEV = Path("/work/shared/data/cebab/dev.json")


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def wait(c: httpx.Client, location: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = c.get(location).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.3)
    raise TimeoutError(job)


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("reports")
    env = {**store_env("sqlite", tmp), "CACE_ADMIN_KEY": ADMIN, "CACE_MAX_REPORT_TEXTS": "300"}
    with service(env, port=next(PORTS)) as srv:
        yield srv


@pytest.fixture(scope="module")
def keys(svc: Server) -> dict[str, str]:
    out = {}
    with httpx.Client(base_url=svc.base_url, timeout=30) as c:
        for name in ("alice", "bob"):
            r = c.post("/v1/keys", json={"name": name, "scopes": ["explain"]}, headers=_bearer(ADMIN))
            assert r.status_code == 201, r.text
            out[name] = r.json()["key"]
    return out


REPORT = {"classifier": "tfidf-lr", "sample": {"size": 100, "seed": 3}, "top_k": 5, "seed": 1}


def test_report_end_to_end_formats_and_ownership(svc: Server, keys: dict[str, str]) -> None:
    with httpx.Client(base_url=svc.base_url, timeout=120, headers=_bearer(keys["alice"])) as c:
        r = c.post("/v1/reports", json=REPORT)
        assert r.status_code == 202, r.text
        job = wait(c, r.headers["Location"])
        assert job["status"] == "succeeded", job
        rep = job["result"]
        labels = rep["labels"]
        assert labels == ["1", "2", "3", "4", "5"] and rep["classifier"] == "tfidf-lr"
        cells = rep["cells"]
        # CEBaB: 4 concepts x 3 values x 2 targets; every cell a 100-text sample reaches is estimated.
        assert 12 <= len(cells) + len(rep["skipped"]) == 24, rep["skipped"]
        assert [c_["rank"] for c_ in cells] == list(range(1, len(cells) + 1))
        assert [c_["effect"] for c_ in cells] == sorted((c_["effect"] for c_ in cells), reverse=True)
        for cell in cells:
            assert abs(sum(cell["cace"].values())) < 1e-5  # probabilities move, they are not created
            for lab in labels:
                assert cell["ci_low"][lab] - 1e-9 <= cell["cace"][lab] <= cell["ci_high"][lab] + 1e-9
            assert 0 < cell["placebo"]["p_value"] <= cell["placebo"]["p_holm"] <= 1
            assert cell["n_changed"] <= cell["n_texts"] and cell["top_texts"]
            assert cell["top_texts"][0]["counterfactuals"], cell["key"]
        # One search per (text, concept, target): each text reaches 2 targets of each of 4 concepts.
        assert rep["cost"]["searches"] == 100 * 8 and rep["cost"]["placebo_searches"] == 100 * 8
        # The strongest cells of a star-rating model are food and service going to or from Negative/Positive.
        assert cells[0]["concept"] in ("food", "service"), cells[0]
        assert any(c_["placebo"]["above_noise"] for c_ in cells[:3]), cells[:3]

        links = job["links"]
        csv_text = c.get(links["csv"]).text
        table = list(csv.DictReader(io.StringIO(csv_text)))
        assert len(table) == len(cells) * len(labels) and table[0]["concept"] == cells[0]["concept"]
        md = c.get(links["md"])
        assert md.headers["content-type"].startswith("text/markdown") and cells[0]["key"] in md.text
        page = c.get(links["html"])
        assert page.headers["content-type"].startswith("text/html")
        assert page.text.count("<svg") == 2 and "<script" not in page.text
        assert not re.search(r"(?:src|href)=[\"']?(?:https?:)?//", page.text)  # nothing fetched
        assert json.loads(c.get(links["json"]).text) == rep

        # Listed for its owner, invisible to another key, visible to admin.
        listed = c.get("/v1/reports").json()
        assert job["id"] in [j["id"] for j in listed["jobs"]]
        bob = _bearer(keys["bob"])
        assert c.get(f"/v1/reports/{job['id']}", headers=bob).status_code == 404
        assert c.get(links["html"], headers=bob).status_code == 404
        assert job["id"] not in [j["id"] for j in c.get("/v1/reports", headers=bob).json()["jobs"]]
        assert c.get(f"/v1/reports/{job['id']}", headers=_bearer(ADMIN)).status_code == 200
        # A report is not a comparison.
        assert c.get(f"/v1/comparisons/{job['id']}").status_code == 404


def test_comparison_same_counterfactuals_and_flags(
    svc: Server, keys: dict[str, str], other_model: str
) -> None:
    with httpx.Client(base_url=svc.base_url, timeout=120, headers=_bearer(ADMIN)) as c:
        spec = {"protocol": "hf", "url": other_model, "labels": ["1", "2", "3", "4", "5"]}
        r = c.post("/v1/classifiers", json={"name": "bow-lr", "spec": spec})
        assert r.status_code in (201, 200), r.text
    with httpx.Client(base_url=svc.base_url, timeout=120, headers=_bearer(keys["alice"])) as c:
        body = {
            "classifiers": ["tfidf-lr", "bow-lr"],
            "sample": {"size": 100, "seed": 3},
            "seed": 1,
            "threshold": 0.05,
        }
        r = c.post("/v1/comparisons", json=body)
        assert r.status_code == 202, r.text
        job = wait(c, r.headers["Location"])
        assert job["status"] == "succeeded", job
        cmp_ = job["result"]
        assert cmp_["classifiers"] == ["tfidf-lr", "bow-lr"]
        # One search per (text, concept, target), no placebo, every distinct text scored once per classifier.
        assert cmp_["cost"]["searches"] == 100 * 8 and cmp_["cost"].get("placebo_searches", 0) == 0
        for cell in cmp_["cells"]:
            for lab in cmp_["labels"]:
                d = cell["cace"]["bow-lr"][lab] - cell["cace"]["tfidf-lr"][lab]
                assert abs(cell["diff"][lab] - d) < 1e-5
                assert cell["ci_low"][lab] - 1e-9 <= cell["diff"][lab] <= cell["ci_high"][lab] + 1e-9
            assert cell["flagged"] == (cell["shift"] > 0.05)
        assert cmp_["n_flagged"] == sum(c_["flagged"] for c_ in cmp_["cells"]) > 0
        # The report of tfidf-lr on the same sample and seed found the same CaCEs (same counterfactuals).
        rep = wait(c, c.post("/v1/reports", json=REPORT).headers["Location"])["result"]
        by_key = {x["key"]: x for x in rep["cells"]}
        for cell in cmp_["cells"]:
            for lab in cmp_["labels"]:
                assert abs(cell["cace"]["tfidf-lr"][lab] - by_key[cell["key"]]["cace"][lab]) < 1e-5
        page = c.get(job["links"]["html"]).text
        assert page.count("<svg") == 2 and "bow-lr" in page
        assert len(list(csv.DictReader(io.StringIO(c.get(job["links"]["csv"]).text)))) == 5 * len(
            cmp_["cells"]
        )


def field(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    errors = r.json().get("errors") or [{}]
    return errors[0].get("field", "")


def test_bad_input_is_a_problem_naming_the_field(svc: Server, keys: dict[str, str]) -> None:
    with httpx.Client(base_url=svc.base_url, timeout=60, headers=_bearer(keys["alice"])) as c:
        assert field(c.post("/v1/reports", json={**REPORT, "classifier": "nope"}), 422) == "body.classifier"
        assert field(c.post("/v1/reports", json={**REPORT, "concepts": ["taste"]}), 422) == "body.concepts.0"
        assert field(c.post("/v1/reports", json={**REPORT, "method": "conexp"}), 422) == "body.method"
        assert field(c.post("/v1/reports", json={**REPORT, "method": "../../x"}), 422) == "body.method"
        assert (
            field(c.post("/v1/reports", json={**REPORT, "sample": {"size": 301}}), 413) == "body.sample.size"
        )
        r = c.post("/v1/reports", json={**REPORT, "texts": ["Great food."]})
        assert r.status_code == 422 and "either texts or sample" in r.text
        bad_label = {"classifier": "tfidf-lr", "texts": [{"text": "Nice.", "labels": {"food": "Tasty"}}]}
        assert field(c.post("/v1/reports", json=bad_label), 422) == "body.texts.0.labels.food"
        same = {"classifiers": ["tfidf-lr", "tfidf-lr"], "sample": {"size": 5}}
        assert field(c.post("/v1/comparisons", json=same), 422) == "body.classifiers"
        one = {"classifiers": ["tfidf-lr"], "sample": {"size": 5}}
        assert c.post("/v1/comparisons", json=one).status_code == 422
        thr = {"classifiers": ["tfidf-lr", "x"], "thresholds": {"taste": 0.1}}
        assert field(c.post("/v1/comparisons", json=thr), 422) == "body.thresholds.taste"
        r = c.get("/v1/reports/nope/download", params={"format": "exe"})
        assert r.status_code == 422
        assert c.get("/v1/reports/0123/download").status_code == 404


def test_uploaded_texts_skip_cells_no_text_reaches(svc: Server, keys: dict[str, str]) -> None:
    texts = [
        {
            "text": "The pasta was superb and the staff were lovely.",
            "labels": {"food": "Positive", "service": "Positive"},
        },
        {"text": "Dreadful soup, rude waiter.", "labels": {"food": "Negative", "service": "Negative"}},
        "The steak was fine.",
    ]
    with httpx.Client(base_url=svc.base_url, timeout=120, headers=_bearer(keys["alice"])) as c:
        r = c.post(
            "/v1/reports", json={"classifier": "tfidf-lr", "texts": texts, "concepts": ["food"], "seed": 2}
        )
        assert r.status_code == 202, r.text
        rep = wait(c, r.headers["Location"])["result"]
        keys_done = {x["key"] for x in rep["cells"]}
        assert "food:Positive->Negative" in keys_done and "food:Negative->Positive" in keys_done
        assert all(x["concept"] == "food" for x in rep["cells"] + rep["skipped"])
        for s in rep["skipped"]:
            assert s["key"] not in keys_done and "no text of the sample" in s["reason"]


def test_a_queued_report_survives_a_restart(tmp_path: Path) -> None:
    env = {**store_env("sqlite", tmp_path), "CACE_JOB_WORKERS": "0"}
    body = {"classifier": "tfidf-lr", "sample": {"size": 20, "seed": 5}, "concepts": ["service"]}
    with service(env, port=next(PORTS)) as srv, httpx.Client(base_url=srv.base_url, timeout=60) as c:
        r = c.post("/v1/reports", json=body)
        assert r.status_code == 202, r.text
        location = r.headers["Location"]
        time.sleep(1.0)
        assert c.get(location).json()["status"] == "queued"  # no worker in this replica
    env["CACE_JOB_WORKERS"] = "2"
    with service(env, port=next(PORTS)) as srv, httpx.Client(base_url=srv.base_url, timeout=60) as c:
        job = wait(c, location)
        assert job["status"] == "succeeded", job
        assert {x["concept"] for x in job["result"]["cells"]} == {"service"}
        assert c.get(job["links"]["md"]).status_code == 200


def test_holm_and_sign_flip() -> None:
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.1, size=(200, 3))
    shifted = noise + np.array([0.05, -0.05, 0.0])
    assert sign_flip_p(shifted, n_flips=500) < 0.01
    # Under the null the p-values are roughly uniform: few fall below 0.05.
    ps = [sign_flip_p(rng.normal(0, 0.1, size=(60, 3)), n_flips=200, seed=i) for i in range(100)]
    assert sum(p < 0.05 for p in ps) <= 12


def test_summarize_ranks_by_effect_and_skips_empty_cells() -> None:
    cells = [Cell("a", "x", "y"), Cell("a", "y", "x"), Cell("b", "x", "y")]
    rows = []
    for i in range(30):
        big = [0.3 + 0.01 * (i % 3), -0.3 - 0.01 * (i % 3)]
        small = [0.01 * ((i % 5) - 2), -0.01 * ((i % 5) - 2)]
        res = {
            "base": [[0.5, 0.5]],
            "cells": {
                "a:x->y": {"n": 3, "icace": [small], "placebo": [[0.0, 0.0]]},
                "b:x->y": {"n": 3, "icace": [big], "placebo": [[0.0, 0.0]]},
            },
        }
        rows.append({"index": i, "status": "done", "payload": {"text": f"t{i}"}, "result": res})
    rep = summarize_report(rows, labels=["n", "p"], cells=cells, n_boot=200)
    assert [c["key"] for c in rep["cells"]] == ["b:x->y", "a:x->y"]
    assert rep["cells"][0]["placebo"]["above_noise"] and not rep["cells"][1]["placebo"]["above_noise"]
    assert [s["key"] for s in rep["skipped"]] == ["a:y->x"]
