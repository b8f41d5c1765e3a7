"""The first start shows itself and survives a kill: stages, percent and ETA in /readyz and the log;
a killed default-domain build resumes its finished stages; explainers are built before ready;
and background work (jobs the service queued itself included) is listed with real progress.

The service tests use a small domain (the movie corpus, as a folder holding `corpus.jsonl` that
the service builds in place on its first start, `CACE_DEFAULT_DOMAIN=<folder>`), so a cold
start takes seconds, not the minutes CEBaB takes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.harness.servers import python, running
from benchmarks.harness.service import TEST_DATA_DIR, wait_ready
from explainers.data.movies import movie_corpus
from explainers.progress import Progress, Stages

ROOT = Path(__file__).resolve().parents[1]
PORTS = iter(range(9720, 9760))  # this file's servers (ports 9700-9799 belong to these tests)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_stages_report_percent_eta_and_one_log_line_per_stage_and_ten_percent() -> None:
    clock, lines = FakeClock(), []
    st = Stages("build", [("embed", 6.0), ("taggers", 2.0), ("space", 2.0)], log=lines.append, clock=clock)
    assert st.snapshot()["percent"] == 0.0 and st.snapshot()["eta_s"] is None
    with st.stage("embed", "100 texts"):
        bar = Progress(100, "embed", active=False)  # a library loop's own bar feeds the stage
        for _ in range(50):
            clock.now += 0.2
            bar.update()
        snap = st.snapshot()
        assert snap["stage"] == "embed" and snap["stage_index"] == 1 and snap["stage_count"] == 3
        assert snap["stage_percent"] == 50.0 and snap["percent"] == 30.0 and snap["note"] == "50/100 it"
        # 3 of 10 weight units in 10 s: 7 left at that rate.
        assert snap["eta_s"] == pytest.approx(70 / 3, abs=0.1)
        for _ in range(50):
            clock.now += 0.2
            bar.update()
    with st.stage("taggers"):
        clock.now += 4
    snap = st.snapshot()
    assert snap["percent"] == 80.0 and snap["stage"] is None
    assert [s["status"] for s in snap["stages"]] == ["done", "done", "pending"]
    assert [s["seconds"] for s in snap["stages"][:2]] == [20.0, 4.0]
    starts = [line for line in lines if "started" in line]
    assert starts == ["build: stage 1/3 embed started (100 texts)", "build: stage 2/3 taggers started"]
    steps = [line for line in lines if "ETA" in line]
    assert [line.split("%")[0].split(": ")[1] for line in steps] == ["10", "20", "30", "40", "50", "60", "80"]


def test_stages_reused_from_an_earlier_run_do_not_make_the_eta_optimistic() -> None:
    clock = FakeClock()
    st = Stages("build", [("embed", 8.0), ("space", 2.0)], clock=clock)
    st.end("embed", reused=True)
    st.begin("space")
    clock.now = 10.0
    st.update(0.5)
    snap = st.snapshot()
    assert snap["percent"] == 90.0
    # 1 unit done here in 10 s: the 1 left takes 10 s more (not 10 * 10/90).
    assert snap["eta_s"] == pytest.approx(10.0)
    assert snap["stages"][0]["status"] == "reused"


def test_stages_added_by_the_library_go_before_the_callers_last_stage() -> None:
    st = Stages("start", [("explainers", 1.0)])
    st.expect([("embed", 6.0), ("load", 1.0)])
    assert [s["name"] for s in st.snapshot()["stages"]] == ["embed", "load", "explainers"]


def movies_folder(tmp: Path, originals: int = 150) -> Path:
    """A folder holding a movie corpus (CACE_DEFAULT_DOMAIN points at it; built in place)."""
    folder = tmp / "movies"
    folder.mkdir()
    rows = [{k: v for k, v in r.items() if k != "rating"} for r in movie_corpus(originals, seed=3)]
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return folder


BUILD_SCRIPT = """
import sys
from pathlib import Path
from explainers.domains import ensure_corpus_domain
from explainers.embeddings import Encoder
from explainers.progress import Stages
ensure_corpus_domain(Path(sys.argv[1]), encoder=Encoder(), stages=Stages("movies", log=print))
"""


def kill_after_stage(cmd: list[str], staging_parent: Path, stage: str, env: dict[str, str]) -> Path:
    """Run `cmd`, SIGKILL it as soon as a staging folder records `stage` as finished; that folder."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:
            if stage in finished_stages(staging_parent):
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                return next(p.parent for p in staging_parent.glob("movies.building-*/stages.json"))
            assert proc.poll() is None, "the build ended before it could be killed"
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    raise TimeoutError(f"stage {stage} never finished")


def finished_stages(parent: Path) -> dict[str, Any]:
    """The stages a build under `parent` has recorded as finished so far."""
    for record in parent.glob("movies.building-*/stages.json"):
        try:
            return dict(json.loads(record.read_text())["done"])
        except (OSError, ValueError, KeyError):
            continue
    return {}


def child_env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "2",
    }


@pytest.mark.slow
def test_a_killed_build_resumes_its_finished_stages_and_leaves_no_staging_folder(tmp_path: Path) -> None:
    from explainers.domains import ensure_corpus_domain
    from explainers.embeddings import Encoder

    folder = movies_folder(tmp_path, originals=60)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    (tmp_path / f"movies.building-{dead.stdout.strip()}-abcdef").mkdir()  # an older version's killed build
    (tmp_path / f"movies.building-{os.getpid()}-abcdef").mkdir()  # an older version's build still running
    staging = kill_after_stage(
        [sys.executable, "-c", BUILD_SCRIPT, str(folder)], tmp_path, "embed", child_env()
    )
    assert (staging / "embeddings.npy").exists(), "the finished stage's output is kept"
    stages = Stages("movies")
    domain = ensure_corpus_domain(folder, encoder=Encoder(), stages=stages)
    status = {s["name"]: s["status"] for s in stages.snapshot()["stages"]}
    assert status["embed"] == "reused" and status["load"] == "done", status
    assert "embed" in domain.meta["resumed_stages"]
    assert len(domain.pool) == 240 and domain.meta["space"]["hit_rate"]["plot"] > 0.9
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["movies", f"movies.building-{os.getpid()}-abcdef"], "only a live build's folder is kept"
    assert not (folder / "stages.json").exists() and not (folder / ".lock").exists()


def test_batched_hit_rate_equals_the_per_pair_search(tmp_path: Path) -> None:
    """The hit-rate diagnostic searches groups of pairs at once; the hits are those of one search per pair."""
    from explainers.domains import ensure_corpus_domain
    from explainers.embeddings import Encoder

    folder = movies_folder(tmp_path, originals=20)
    space = ensure_corpus_domain(folder, encoder=Encoder()).space
    for concept in space.schema.names:
        pairs = [(b, c) for b, c, con in space.pool.pairs if con == concept]
        vecs = space.pool_vectors(concept)
        conf = space.schema.confounders(concept)
        hits = 0
        for b, cf in pairs:
            found = space.search(
                vecs[b],
                concept,
                space.pool.labels[cf][concept],
                1,
                confounders={c: space.pool.labels[b][c] for c in conf},
                exclude_text=space.pool.texts[b],
            )
            hits += bool(found) and space.pool.texts[found[0].row] == space.pool.texts[cf]
        assert space.nearest_counterfactual_hit_rate(concept) == round(hits / len(pairs), 4)


def serve(folder: Path, port: int, extra: dict[str, str] | None = None) -> Any:
    env = {
        **child_env(),
        "CACE_DATA_DIR": str(TEST_DATA_DIR),  # the reference tfidf-lr is there already
        "CACE_DATABASE_URL": f"sqlite:///{folder.parent / 'jobs.sqlite'}",
        "CACE_HOST": "127.0.0.1",
        "CACE_PORT": str(port),
        "CACE_DEFAULT_DOMAIN": str(folder),
        "CACE_DEFAULT_CLASSIFIER": "tfidf-lr",
        "CACE_AUTO_CALIBRATE": "false",
        "CACE_LOG_FORMAT": "text",
        **(extra or {}),
    }
    return running(
        [python(), "-m", "app.server", "--log-level", "info"],
        port=port,
        health_path="/healthz",
        env=env,
        timeout=120,
        log_dir=folder.parent / "logs",
    )


@pytest.mark.slow
def test_readyz_reports_the_first_start_and_a_killed_start_resumes(tmp_path: Path) -> None:
    folder = movies_folder(tmp_path)
    port = next(PORTS)
    samples: list[dict[str, Any]] = []
    with serve(folder, port) as srv:
        base = srv.base_url
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            body = httpx.get(base + "/readyz", timeout=10).json()
            dom = body["components"]["domain"]
            samples.append(dom)
            if "taggers" in finished_stages(tmp_path):
                break
            time.sleep(0.2)
        srv.stop(signal.SIGKILL)
        log = srv.log_text()
    loading = [s for s in samples if s["status"] == "loading" and s["progress"]["stage"]]
    assert loading, samples[:3]
    first = loading[0]
    names = [s["name"] for s in first["progress"]["stages"]]
    assert names == ["read", "embed", "taggers", "space", "save", "load", "explainers"], names
    assert first["detail"].startswith(first["progress"]["stage"]), first["detail"]
    percents = [s["progress"]["percent"] for s in loading]
    assert percents == sorted(percents) and 0 <= percents[0] < percents[-1] < 100
    assert any(s["progress"]["eta_s"] is not None for s in loading), "an ETA once a rate is measured"
    assert "stage 2/7 embed started" in log and "stage embed done in" in log, log[-2000:]
    staging = list(tmp_path.glob("movies.building-*"))
    assert len(staging) == 1, "the killed build's finished stages are kept"

    with serve(folder, next(PORTS)) as srv:
        ready = wait_ready(srv.base_url, timeout=600, server=srv)
        dom = ready["components"]["domain"]
        status = {s["name"]: s["status"] for s in dom["progress"]["stages"]}
        assert status["embed"] == "reused" and status["taggers"] == "reused", status
        assert (
            dom["progress"]["percent"] == 100.0 and "explainers ready: match, splice, auto" in dom["detail"]
        )
        assert not list(tmp_path.glob("movies.building-*")), "no staging folder is left behind"
        assert (folder / "meta.json").exists()
        assert "reused from an interrupted build" in srv.log_text()


@pytest.mark.slow
def test_first_request_is_prebuilt_and_background_jobs_are_listed_with_progress(tmp_path: Path) -> None:
    folder = movies_folder(tmp_path, originals=60)
    with serve(folder, next(PORTS), {"CACE_AUTO_CALIBRATE": "true"}) as srv:
        wait_ready(srv.base_url, timeout=600, server=srv)
        with httpx.Client(base_url=srv.base_url, timeout=300) as c:
            # The first `splice` request finds its explainer built; its timings count the whole wait.
            body = {
                "text": "I went with two friends. The acting is wooden and flat. The story is gripping.",
                "intervention": {"concept": "plot", "target": "bad"},
                "method": "splice",
                "top_k": 3,
            }
            t = time.perf_counter()
            r = c.post("/v1/explanations", json=body)
            wall_ms = (time.perf_counter() - t) * 1000
            assert r.status_code == 200, r.text
            timings = r.json()["timings"]
            assert set(timings) >= {"total_ms", "waited_ms", "resolve_ms", "lock_wait_ms", "explain_ms"}
            parts = timings["waited_ms"] + timings["resolve_ms"] + timings["source_inference_ms"]
            assert timings["total_ms"] >= parts + timings["lock_wait_ms"] + timings["explain_ms"] - 1
            assert timings["total_ms"] <= wall_ms and timings["resolve_ms"] < 1000, timings

            # That first explanation queued a calibration: listed, with its kind and what queued it.
            calib = c.get("/v1/jobs", params={"kind": "calibration"}).json()["jobs"]
            assert len(calib) == 1, calib
            assert "first explanation of classifier 'tfidf-lr' on domain 'movies'" in calib[0]["queued_by"]
            job_id = calib[0]["id"]
            seen: list[dict[str, Any]] = []
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                job = c.get(f"/v1/jobs/{job_id}").json()
                seen.append(job)
                if job["status"] in ("succeeded", "failed", "cancelled"):
                    break
                time.sleep(0.3)
            assert job["status"] == "succeeded", job
            assert job["result"]["kind"] == "calibration" and job["result"]["classifier"] == "tfidf-lr"
            stage_names = [s["name"] for s in job["stages"]["stages"]]
            assert stage_names == ["classify", "score", "fit"], job["stages"]
            running_ = [j for j in seen if j["status"] == "running" and j["stages"]]
            assert all(0 <= j["progress"] < 1 for j in running_), [j["progress"] for j in running_]

            # An effects job: listed with the same progress and counts as GET gives.
            eff = c.post(
                "/v1/effects",
                json={
                    "texts": [r["text"] for r in movie_corpus(3, edits=False, seed=9)],
                    "intervention": {"concept": "plot", "target": "bad"},
                    "method": "match",
                    "top_k": 2,
                    "mode": "job",
                },
            )
            assert eff.status_code == 202, eff.text
            eff_id = eff.json()["id"]
            while c.get(f"/v1/jobs/{eff_id}").json()["status"] not in ("succeeded", "failed"):
                assert time.monotonic() < deadline
                time.sleep(0.2)
            listed = {j["id"]: j for j in c.get("/v1/jobs").json()["jobs"]}
            for jid in (job_id, eff_id):
                one = c.get(f"/v1/jobs/{jid}").json()
                for field in ("status", "progress", "counts", "total", "queued_by", "kind"):
                    assert listed[jid][field] == one[field], (field, listed[jid][field], one[field])
            assert listed[eff_id]["progress"] == 1.0 and listed[eff_id]["counts"]["done"] == 3
            assert listed[eff_id]["queued_by"] is None
            effects_result = c.get(f"/v1/jobs/{eff_id}").json()["result"]
            assert effects_result["kind"] == "effects" and set(effects_result["cace"]) == {
                "1",
                "2",
                "3",
                "4",
                "5",
            }


def test_every_job_kind_the_app_runs_has_a_typed_result(tmp_path: Path) -> None:
    from app.main import create_app
    from app.schemas import JOB_RESULT_KINDS
    from app.settings import Settings

    app = create_app(Settings(default_domain="none", data_dir=tmp_path))
    assert set(app.state.runtime.handlers) <= set(JOB_RESULT_KINDS)


def test_cace_domains_list_reads_the_settings_and_says_when_there_is_nothing(tmp_path: Path) -> None:
    from explainers.artifacts import write_meta

    def domains_list(data_dir: Path) -> subprocess.CompletedProcess[str]:
        env = {**child_env(), "CACE_DATA_DIR": str(data_dir)}
        return subprocess.run(
            [sys.executable, "-m", "app.cli", "domains", "list"],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,  # no var/ here: the folder must come from CACE_DATA_DIR
            timeout=120,
        )

    empty = domains_list(tmp_path / "fresh")
    assert empty.returncode == 0 and empty.stdout == ""
    assert "no domains" in empty.stderr and str(tmp_path / "fresh" / "domains") in empty.stderr
    folder = tmp_path / "data" / "domains" / "reviews"
    folder.mkdir(parents=True)
    write_meta(
        folder,
        "domain",
        schema={"concepts": [{"name": "food", "values": ["bad", "good"]}]},
        stats={"texts": 12},
    )
    listed = domains_list(tmp_path / "data")
    assert listed.returncode == 0 and listed.stdout.split()[:2] == ["reviews", "12"], listed


def test_taggers_fitted_side_by_side_equal_those_fitted_one_by_one() -> None:
    import numpy as np

    from explainers.domains import infer_schema, pool_from_rows, validate_rows
    from explainers.taggers import TaggerSet

    rows = validate_rows([{k: v for k, v in r.items() if k != "rating"} for r in movie_corpus(30, seed=2)])
    pool = pool_from_rows(rows, infer_schema(rows, name="movies"))
    one = TaggerSet(pool.schema).fit(pool.texts, pool.labels)
    two = TaggerSet(pool.schema).fit(pool.texts, pool.labels, workers=2)
    assert list(one.taggers) == list(two.taggers) == pool.schema.names
    probe = pool.texts[:40]
    for concept, p in one.predict_proba(probe).items():
        assert np.allclose(p, two.predict_proba(probe)[concept], atol=1e-6), concept
