"""Domain uploads against live servers (issue #20): names stay data, builds are bounded, cancellable,
exclusive and leave nothing half-built behind, also when the server is killed mid-build.

Every test talks HTTP to a real uvicorn process started with CACE_DEFAULT_DOMAIN=none (seconds to
start) in a data dir of its own; the default classifier is the tfidf-lr reference classifier of the
shared test data dir (linked in, never retrained), used only to explain against built domains.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.harness.servers import Server
from benchmarks.harness.service import drop_pg_prefix, service, store_env
from explainers.artifacts import META
from explainers.data.movies import movie_corpus

# The caps of the module's server, low so the cases stay small (the defaults are in the README).
CAPS = {
    "CACE_DOMAIN_MAX_GROUP_TEXTS": "20",
    "CACE_DOMAIN_MAX_PAIRS": "3000",
    "CACE_DOMAIN_MAX_CONCEPTS": "6",
    "CACE_DOMAIN_MAX_VALUES": "6",
}
# Up to / from any folder the old layout joined it under (heads/, index/), then into /tmp: where the
# issue's probe wrote x.npz and x/*.faiss. Within the 64 characters a label key may have.
ESCAPED_TO = Path("/tmp") / f"cace-escape-{uuid.uuid4().hex[:8]}"
ESCAPE = "../" * 12 + str(ESCAPED_TO).lstrip("/")
SLASHED = "sound/track"
BAD_VALUE = "../../bad"
_PORTS = iter(range(9200, 9300))


def port() -> int:
    """The next free port of this file's range (9200-9299)."""
    for p in _PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                continue
            return p
    raise RuntimeError("no free port left in 9200-9299")


def corpus_bytes(rows: list[dict[str, Any]]) -> bytes:
    return "\n".join(json.dumps({k: v for k, v in r.items() if k != "rating"}) for r in rows).encode()


def upload(
    base_url: str, domain_id: str, body: bytes | list[dict[str, Any]], **params: Any
) -> httpx.Response:
    raw = corpus_bytes(body) if isinstance(body, list) else body
    return httpx.post(
        base_url + "/v1/domains",
        files={"file": ("corpus.jsonl", raw, "application/x-ndjson")},
        data={"params": json.dumps({"id": domain_id, **params})},
        timeout=120,
    )


def wait_job(base_url: str, job_id: str, timeout: float = 900) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = httpx.get(f"{base_url}/v1/jobs/{job_id}", timeout=30).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    raise TimeoutError(f"job {job_id} not final: {job}")


def problem(r: httpx.Response, status: int) -> tuple[str, str]:
    """(field, message) of a problem+json answer with that status."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = r.json()
    errors = body.get("errors") or [{}]
    return errors[0].get("field", ""), errors[0].get("message", body.get("detail", ""))


def building(domains: Path, domain_id: str) -> list[Path]:
    """Folders of unfinished builds of `domain_id`: the staging area, and the old layout's siblings."""
    staging = domains / ".staging"
    found = sorted(staging.glob(f"{domain_id}-*")) if staging.is_dir() else []
    return found + sorted(domains.glob(f"{domain_id}.building-*"))


BUILD_WORK = ("embed", "taggers", "space")


def build_stage(base_url: str, job_id: str) -> str | None:
    """The stage a domain build job reports running now (None before its first or after its last)."""
    stages = httpx.get(f"{base_url}/v1/jobs/{job_id}", timeout=30).json().get("stages") or {}
    return stages.get("stage")


def wait_until(check: Any, timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.2)
    raise TimeoutError(f"{what} not within {timeout}s")


def rename(
    rows: list[dict[str, Any]], concepts: dict[str, str], values: dict[str, str]
) -> list[dict[str, Any]]:
    return [
        {**r, "labels": {concepts.get(c, c): values.get(v, v) for c, v in r["labels"].items()}} for r in rows
    ]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, tfidf_lr_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("hardening")
    (root / "data" / "classifiers").mkdir(parents=True)
    (root / "data" / "classifiers" / "tfidf-lr").symlink_to(tfidf_lr_dir.resolve())
    return root


def server_env(root: Path, **extra: str) -> dict[str, str]:
    return {
        **store_env("sqlite", root),
        "CACE_DATA_DIR": str(root / "data"),
        "CACE_DEFAULT_DOMAIN": "none",
        "CACE_DEFAULT_CLASSIFIER": "tfidf-lr",
        "CACE_JOB_WORKERS": "1",
        **CAPS,
        **extra,
    }


@pytest.fixture(scope="module")
def svc(data: Path) -> Iterator[Server]:
    with service(server_env(data), port=port()) as srv:
        yield srv


@pytest.fixture(scope="module")
def movies(svc: Server) -> str:
    """A benign domain built once for the tests that explain against one."""
    r = upload(svc.base_url, "movies", movie_corpus(14, seed=3))
    assert r.status_code == 202, r.text
    job = wait_job(svc.base_url, r.json()["id"])
    assert job["status"] == "succeeded", job
    return "movies"


def explain(base_url: str, domain: str, concept: str, target: str, source: str) -> httpx.Response:
    return httpx.post(
        base_url + "/v1/explanations",
        json={
            "text": "I went with two friends. The acting is wooden and flat. The story is gripping from "
            "start to finish. The score is beautiful and haunting.",
            "intervention": {"concept": concept, "target": target, "source": source},
            "domain": domain,
            "classifier": "tfidf-lr",
            "method": "match",
            "top_k": 2,
        },
        timeout=300,
    )


# -- 1. names are data, never paths --------------------------------------------------------------


def test_hostile_concept_and_value_names_never_become_paths(svc: Server, data: Path) -> None:
    """Before: `../../..` in a label key wrote x.npz and x/*.faiss outside the data dir, and a `/` in a
    concept failed the build leaving `<id>.building-*` behind. Now the build succeeds, every new file
    lies inside the domain's folder, the names come back verbatim and the domain explains."""
    rows = rename(movie_corpus(12, seed=1), {"plot": ESCAPE, "music": SLASHED}, {"bad": BAD_VALUE})
    before = {p for p in data.rglob("*") if p.is_file()}
    r = upload(svc.base_url, "names", rows)
    assert r.status_code == 202, r.text
    try:
        job = wait_job(svc.base_url, r.json()["id"])
        escaped = [p for p in (ESCAPED_TO, ESCAPED_TO.with_suffix(".npz")) if p.exists()]
    finally:
        shutil.rmtree(ESCAPED_TO, ignore_errors=True)
        ESCAPED_TO.with_suffix(".npz").unlink(missing_ok=True)
    assert not escaped, f"the build wrote outside the data dir: {escaped}"
    assert job["status"] == "succeeded", job
    domains = data / "data" / "domains"
    allowed = (domains / "names", domains / ".locks", data / "jobs.sqlite")
    new = [p for p in data.rglob("*") if p.is_file() and p not in before]
    outside = [
        p for p in new if not any(p == a or a in p.parents for a in allowed) and "jobs.sqlite" not in p.name
    ]
    assert not outside, outside
    assert building(domains, "names") == []
    described = httpx.get(svc.base_url + "/v1/domains/names", timeout=30).json()
    schema = {c["name"]: c["values"] for c in described["schema"]["concepts"]}
    assert set(schema) == {"acting", ESCAPE, SLASHED} and BAD_VALUE in schema["acting"]
    # Every file of the space is named by position, none after a name.
    space = domains / "names" / "spaces" / "default"
    assert sorted(p.name for p in (space / "index").iterdir()) == ["c0", "c1", "c2"]
    res = explain(svc.base_url, "names", ESCAPE, BAD_VALUE, "good")
    assert res.status_code == 200, res.text
    assert res.json()["counterfactuals"], res.json()
    res = explain(svc.base_url, "names", "acting", BAD_VALUE, "good")
    assert res.status_code == 200, res.text


def _downgrade_to_old_layout(folder: Path, new_id: str) -> None:
    """Rewrite a built domain as the format-1 layout (files named after concepts and values)."""
    meta = json.loads((folder / META).read_text())
    (folder / META).write_text(json.dumps({**meta, "format_version": 1, "id": new_id}))
    space = folder / "spaces" / "default"
    smeta = json.loads((space / META).read_text())
    files = smeta.pop("files")
    smeta.pop("format_version")
    for concept, f in files.items():
        (space / "heads" / f"{f['slug']}.npz").rename(space / "heads" / f"{concept}.npz")
        index = space / "index" / f["slug"]
        for value, vslug in f["values"].items():
            for p in index.glob(f"{vslug}.*"):
                p.rename(index / (value + p.name[len(vslug) :]))
        index.rename(space / "index" / concept)
    (space / META).write_text(json.dumps(smeta))


def test_a_domain_in_the_old_layout_still_loads(svc: Server, data: Path, movies: str) -> None:
    """Domains on disk from before the format bump (var/domains/cebab, var/test) load as they are."""
    domains = data / "data" / "domains"
    shutil.copytree(domains / movies, domains / "movies-v1")
    _downgrade_to_old_layout(domains / "movies-v1", "movies-v1")
    assert (domains / "movies-v1" / "spaces" / "default" / "index" / "plot" / "good.faiss").exists()
    new = explain(svc.base_url, movies, "plot", "bad", "good")
    old = explain(svc.base_url, "movies-v1", "plot", "bad", "good")
    assert new.status_code == 200 and old.status_code == 200, (new.text, old.text)
    assert [c["text"] for c in old.json()["counterfactuals"]] == [
        c["text"] for c in new.json()["counterfactuals"]
    ]


# -- 3 and 5. caps a caller cannot exceed; lines that broke the parser -------------------------


def _alternating(n: int, origin: str) -> list[dict[str, Any]]:
    """n texts of one origin, concept `a` alternating x/y: n/2 * n/2 * 2 ordered pairs."""
    return [
        {"text": f"text {origin} {i}", "origin": origin, "labels": {"a": "x" if i % 2 else "y"}}
        for i in range(n)
    ]


def _case_group() -> bytes:
    return corpus_bytes(_alternating(21, "o1") + _alternating(4, "o2"))


def _case_pairs() -> bytes:
    # 16 origins of 20 texts, 10 against 10 on concept a: 200 ordered pairs each, 3200 in all.
    return corpus_bytes([r for g in range(16) for r in _alternating(20, f"g{g}")])


def _case_concepts() -> bytes:
    rows = [
        {"text": f"t{i}", "origin": f"o{i}", "labels": {f"c{i}": "x", f"c{i + 1}": "y"}} for i in range(7)
    ]
    return corpus_bytes(rows)


def _case_values() -> bytes:
    return corpus_bytes([{"text": f"t{i}", "origin": f"o{i}", "labels": {"a": f"v{i}"}} for i in range(8)])


def _case_concepts_per_line() -> bytes:
    wide = {"text": "wide", "labels": {f"k{i}": "v" for i in range(10_000)}}
    return corpus_bytes([{"text": "ok", "labels": {"a": "x"}}, wide])


def _case_repetitive() -> bytes:
    # The probe: 2,000 near-identical lines over 4 origins, ~220 KB (old code: ~10^6 pairs).
    rows = [
        {"text": f"The food was fine and the service slow, visit {i}.", "origin": f"o{i % 4}",
         "labels": {"food": "good" if i % 2 else "bad", "service": "bad" if i % 3 else "good"}}
        for i in range(2000)
    ]  # fmt: skip
    return corpus_bytes(rows)


@pytest.mark.parametrize(
    ("case", "field", "limit"),
    [
        (_case_group, "body.file", "CACE_DOMAIN_MAX_GROUP_TEXTS"),
        (_case_pairs, "body.file", "CACE_DOMAIN_MAX_PAIRS"),
        (_case_concepts, "body.file", "CACE_DOMAIN_MAX_CONCEPTS"),
        (_case_values, "body.file", "CACE_DOMAIN_MAX_VALUES"),
        (_case_concepts_per_line, "body.file.line2.labels", "at most 6"),
        (_case_repetitive, "body.file", "CACE_DOMAIN_MAX_GROUP_TEXTS"),
    ],
)
def test_uploads_past_a_cap_are_422_naming_it(svc: Server, case: Any, field: str, limit: str) -> None:
    """Before: each was accepted (202) and built, the repetitive one all-against-all (minutes, GBs)."""
    started = time.monotonic()
    domain_id = case.__name__.strip("_").replace("_", "-")  # one id per case: none blocks another
    f, message = problem(upload(svc.base_url, domain_id, case()), 422)
    assert f == field and limit in message, (f, message)
    assert time.monotonic() - started < 10
    assert not httpx.get(svc.base_url + "/v1/jobs", params={"kind": "domain", "status": "queued"}).json()[
        "jobs"
    ]


def test_a_given_schema_past_the_caps_is_422(svc: Server) -> None:
    concepts = [{"name": f"c{i}", "values": ["x", "y"]} for i in range(7)]
    f, message = problem(upload(svc.base_url, "capped", _case_values(), schema={"concepts": concepts}), 422)
    assert f == "body.params.schema.concepts" and "CACE_DOMAIN_MAX_CONCEPTS" in message


DEEP = "[" * 100_000 + "]" * 100_000
LONG_INT = '{"text": "x", "id": ' + "9" * 5000 + "}"


@pytest.mark.parametrize("line", [DEEP, LONG_INT], ids=["nested-100k", "int-5000-digits"])
def test_lines_the_json_parser_cannot_take_are_422_naming_the_line(svc: Server, line: str) -> None:
    """Before: RecursionError / ValueError escaped as 500 on both upload routes."""
    body = '{"text": "fine", "labels": {"a": "x"}}\n' + line + "\n"
    f, message = problem(upload(svc.base_url, "deep", body.encode()), 422)
    assert f == "body.file.line2" and "invalid JSON" in message
    params = json.dumps(
        {"intervention": {"concept": "plot", "target": "bad"}, "domain": "movies", "method": "zero"}
    )
    r = httpx.post(
        svc.base_url + "/v1/effects/upload",
        files={"file": ("t.jsonl", '"fine text"\n' + line + "\n")},
        data={"params": params},
        timeout=60,
    )
    assert problem(r, 422)[0] == "file.line2"


def test_a_trained_flag_that_is_not_a_boolean_is_422_naming_it(svc: Server) -> None:
    body = '{"text": "fine", "labels": {"a": "x"}}\n{"text": "bad", "labels": {"a": "y"}, "trained": "yes"}\n'
    f, message = problem(upload(svc.base_url, "flags", body.encode()), 422)
    assert f == "body.file.line2.trained" and "true or false" in message


def test_a_line_separator_inside_a_text_is_not_a_line_break(svc: Server) -> None:
    """Before: splitlines() cut line 1 at U+2028 and blamed it; now line 1 parses and line 3 is the bad one."""
    first = json.dumps({"text": "one\u2028two\u0085three", "labels": {"a": "x"}}, ensure_ascii=False)
    body = first + '\n{"text": "fine", "labels": {"a": "y"}}\n{"text": 5}\n'
    f, _ = problem(upload(svc.base_url, "seps", body.encode()), 422)
    assert f == "body.file.line3"


def test_built_in_domain_ids_are_reserved(svc: Server) -> None:
    """Before: a server without CEBaB accepted an upload named `cebab`, later served as CEBaB."""
    f, message = problem(upload(svc.base_url, "cebab", movie_corpus(3, seed=0)), 422)
    assert f == "body.params.id" and "reserved" in message


# -- 4. cancel stops a build ----------------------------------------------------------------------


def test_cancel_stops_a_domain_build_within_seconds(svc: Server, data: Path, movies: str) -> None:
    """Before: the cancelled job's build thread ran on to the end and the domain then appeared.
    (`movies` first: the server's encoder is loaded, as on any server that has built a domain.)"""
    domains = data / "data" / "domains"
    r = upload(svc.base_url, "slow", movie_corpus(300, seed=5))
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    wait_until(lambda: building(domains, "slow"), 300, "the build's folder")
    # Into the build (its embedding, tagger fitting or head training), by what the job reports: a
    # fixed sleep raced the build once bf16 embedding made it 2-3x faster.
    wait_until(lambda: build_stage(svc.base_url, job_id) in BUILD_WORK, 120, "the build's work")
    assert httpx.post(f"{svc.base_url}/v1/jobs/{job_id}/cancel", timeout=30).status_code == 200
    stopped_s = wait_until(lambda: not building(domains, "slow"), 20, "the build to stop")
    print(f"cancelled build stopped {stopped_s:.1f}s after the cancel")
    time.sleep(3.0)
    assert not (domains / "slow").exists()
    assert httpx.get(svc.base_url + "/v1/domains/slow", timeout=30).status_code == 404
    assert "cancelled" in svc.log_text() or wait_job(svc.base_url, job_id)["status"] == "cancelled"
    # The id is free again: a new upload is accepted (and cancelled at once).
    again = upload(svc.base_url, "slow", movie_corpus(4, seed=5))
    assert again.status_code == 202, again.text
    httpx.post(f"{svc.base_url}/v1/jobs/{again.json()['id']}/cancel", timeout=30)
    wait_until(lambda: not building(domains, "slow"), 60, "the second build to stop")


# -- 5. one build per id, across replicas ------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def two_replicas(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Server, Server, Path]]:
    """Two servers sharing one data dir and one job store (SQLite file or PostgreSQL prefix)."""
    env = {
        **store_env(request.param, tmp_path),
        "CACE_DATA_DIR": str(tmp_path / "data"),
        "CACE_DEFAULT_DOMAIN": "none",
        "CACE_JOB_WORKERS": "1",
    }
    try:
        with service(env, port=port()) as a, service(env, port=port()) as b:
            yield a, b, tmp_path / "data" / "domains"
    finally:
        if "CACE_TABLE_PREFIX" in env:
            drop_pg_prefix(env["CACE_TABLE_PREFIX"])


def test_concurrent_builds_of_one_id_admit_one(two_replicas: tuple[Server, Server, Path]) -> None:
    """Before: three concurrent uploads of one id were all accepted and all "succeeded" (last writer wins)."""
    a, b, domains = two_replicas
    # 1,200 lines: reading and checking them takes long enough for the three requests to overlap
    # (the old code checked the id before reading the corpus and queued the job after).
    body = corpus_bytes(movie_corpus(300, seed=2))
    answers: list[httpx.Response] = []
    lock = threading.Lock()
    go = threading.Barrier(3)

    def send(srv: Server) -> None:
        go.wait()
        r = upload(srv.base_url, "same", body)
        with lock:
            answers.append(r)

    threads = [threading.Thread(target=send, args=(s,)) for s in (a, b, a)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in answers)
    assert codes == [202, 409, 409], [r.text for r in answers]
    accepted = next(r for r in answers if r.status_code == 202).json()["id"]
    for r in answers:
        if r.status_code == 409:
            assert r.headers["content-type"].startswith("application/problem+json")
    # Cancelled, the build stops and the id is free again on either replica.
    assert httpx.post(f"{a.base_url}/v1/jobs/{accepted}/cancel", timeout=30).status_code == 200
    wait_until(lambda: not building(domains, "same"), 60, "the build to stop")
    again = upload(b.base_url, "same", movie_corpus(10, seed=2))
    assert again.status_code == 202, again.text
    httpx.post(f"{b.base_url}/v1/jobs/{again.json()['id']}/cancel", timeout=30)
    wait_until(lambda: not building(domains, "same"), 60, "the second build to stop")


# -- 2. build folders of dead builds -------------------------------------------------------------


def test_start_up_removes_the_folders_of_dead_builds_only(tmp_path: Path) -> None:
    """Before: `<id>.building-*` folders of failed or killed builds stayed for good (the shared test
    data dir had ten of CEBaB's). At start-up, a folder whose owner process is dead goes (both
    layouts); one whose owner is alive (a build in progress on this host) stays."""
    import subprocess
    import sys

    domains = tmp_path / "data" / "domains"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that is surely dead
    old_style = domains / f"dead.building-{gone.pid}-abc123"
    dead = domains / ".staging" / "dead2-0123456789ab"
    live = domains / ".staging" / "live-0123456789ab"
    for folder, pid in ((dead, gone.pid), (live, os.getpid())):
        (folder / "spaces").mkdir(parents=True)
        (folder / "owner.json").write_text(
            json.dumps({"host": socket.gethostname(), "pid": pid, "process_start": _start(pid)})
        )
    (old_style / "taggers").mkdir(parents=True)
    env = {
        **store_env("sqlite", tmp_path),
        "CACE_DATA_DIR": str(tmp_path / "data"),
        "CACE_DEFAULT_DOMAIN": "none",
    }
    with service(env, port=port()) as srv:
        assert not old_style.exists() and not dead.exists()
        assert live.exists()
        listed = httpx.get(srv.base_url + "/v1/domains", timeout=30).json()["domains"]
        assert listed == [], listed


def _start(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[19]
    except OSError:
        return None


# -- 6. kill -9 mid-build --------------------------------------------------------------------------


@pytest.mark.chaos
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_server_killed_mid_build_serves_nothing_half_built_and_resumes(
    tmp_path: Path, backend: str
) -> None:
    """SIGKILL during a domain build, then a restart on the same data dir and store: the dead build's
    folder is removed at start-up, the domain is never listed as ready before it is complete, and the
    job is resumed (its lease lapses) to a domain that loads, or fails with a reason."""
    env = {
        **store_env(backend, tmp_path),
        "CACE_DATA_DIR": str(tmp_path / "data"),
        "CACE_DEFAULT_DOMAIN": "none",
        "CACE_JOB_LEASE_S": "3",
        "CACE_JOB_WORKERS": "1",
    }
    domains = tmp_path / "data" / "domains"
    try:
        with service(env, port=port()) as first:
            r = upload(first.base_url, "killed", movie_corpus(60, seed=4))
            assert r.status_code == 202, r.text
            job_id = r.json()["id"]
            wait_until(lambda: building(domains, "killed"), 300, "the build's folder")
            time.sleep(1.0)
            first.kill()
        leftovers = building(domains, "killed")
        assert leftovers and not (domains / "killed").exists()  # killed mid-build indeed
        with service(env, port=port()) as second:
            assert all(not p.exists() for p in leftovers), leftovers  # removed at start-up
            listed = httpx.get(second.base_url + "/v1/domains", timeout=30).json()["domains"]
            assert all(d["status"] != "ready" for d in listed if d["id"] == "killed"), listed
            got = httpx.get(second.base_url + "/v1/domains/killed", timeout=30)
            assert got.status_code == 404 or got.json()["status"] == "building", got.text
            started = time.monotonic()
            job = wait_job(second.base_url, job_id, timeout=900)
            recovered_s = time.monotonic() - started
            if job["status"] == "succeeded":
                d = httpx.get(second.base_url + "/v1/domains/killed", timeout=30).json()
                assert d["status"] == "ready" and d["stats"]["texts"] > 0, d
                assert (domains / "killed" / "spaces" / "default" / META).exists()
            else:
                assert job["status"] == "failed" and job.get("error"), job
                assert not (domains / "killed").exists()
            assert building(domains, "killed") == []
            print(f"kill -9 mid-build ({backend}): job {job['status']} {recovered_s:.1f}s after the restart")
    finally:
        if "CACE_TABLE_PREFIX" in env:
            drop_pg_prefix(env["CACE_TABLE_PREFIX"])


def test_pairs_are_counted_as_the_build_makes_them() -> None:
    """The cap counts pairs without building them; the count must equal what pool_from_rows makes."""
    import random

    from explainers.domains import infer_schema, pool_from_rows, validate_rows
    from explainers.domains.limits import count_pairs

    rng = random.Random(0)
    corpora = [movie_corpus(20, seed=9)]
    for _ in range(5):
        corpora.append(
            [
                {
                    "text": f"t{i} {rng.random()}" if rng.random() < 0.9 else "dup",
                    "origin": f"o{rng.randrange(6)}",
                    "labels": {c: rng.choice("xyz") for c in "abc" if rng.random() < 0.8},
                }
                for i in range(80)
            ]  # fmt: skip
        )
    for rows in corpora:
        checked = validate_rows([json.dumps({k: v for k, v in r.items() if k != "rating"}) for r in rows])
        schema = infer_schema(checked)
        pool = pool_from_rows(checked, schema)
        counted = count_pairs(checked, schema)
        assert sum(counted.values()) == len(pool.pairs)
        assert all(counted[c] == sum(1 for p in pool.pairs if p[2] == c) for c in schema.names)
