"""Domains from raw texts and concept definitions: an LLM labels the texts and writes the pairs.

Three tiers:
* fast units of the prompt, answer-parsing, planning and checking logic (no LLM);
* the 4xx cases through the app in process (validation and status mapping only);
* end to end over HTTP: a real llama.cpp OpenAI-compatible server serving SmolLM2-135M and the
  service as a subprocess build a small unlabelled movie-review domain (labels -> taggers ->
  pairs -> space) and explain with splice, match and auto. A 135M model labels badly: these
  tests check the plumbing and that the reports are honest (counts add up, provenance says
  LLM), not quality. Without the llama.cpp setup they skip locally and fail under CI.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from explainers.concepts import ConceptSchema, Intervention
from explainers.data.movies import SCHEMA_DICT, movie_corpus
from explainers.domains.llm_labels import (
    Label,
    LabelExample,
    LabelPrompts,
    LabelRun,
    examples_from_rows,
    label_report,
)
from explainers.domains.llm_pairs import (
    RetrievalPrompts,
    changed_sentences,
    directions,
    plan_pair_edits,
)
from explainers.domains.zero_label import (
    BuildRates,
    LLMBuildOptions,
    LLMSpeed,
    PlanError,
    plan_build,
    record_rates,
    stage_plan,
    stored_rates,
    undefined_concepts,
)
from explainers.errors import UpstreamMalformed
from explainers.generation.cache import GenerationCache
from explainers.generation.prompts import FewShot
from explainers.llm_answers import answer_option, first_token_distribution
from tests.llama_setup import llama_server

SCHEMA = ConceptSchema.from_dict(SCHEMA_DICT)  # acting, plot, music: good / bad / unknown
CONCEPT_DICTS: list[dict] = list(SCHEMA_DICT["concepts"])  # type: ignore[arg-type]
TEXTS = [
    "The acting is superb. The plot drags.",
    "I went with two friends. The music is lovely.",
    "The story makes no sense at all.",
    "Wooden performances everywhere.",
]


# -- prompts and answers -------------------------------------------------------------------------


def test_label_prompts_share_their_prefix_and_put_the_text_last() -> None:
    examples = {"plot": [LabelExample("A gripping story.", "good")]}
    schema = ConceptSchema.from_dict(
        {
            **SCHEMA_DICT,
            "concepts": [{**CONCEPT_DICTS[1], "value_examples": {"bad": ["Dull plot."]}}],
        }
    )
    p = LabelPrompts(schema, examples)
    a, b = p.messages("plot", TEXTS[0]), p.messages("plot", TEXTS[2])
    assert a[0] == b[0]  # the system message (every concept's definition) is the same for every request
    assert a[1]["content"].endswith(f"Text: {TEXTS[0]}\nAnswer:")
    prefix = a[1]["content"][: -len(f"Text: {TEXTS[0]}\nAnswer:")]
    assert b[1]["content"].startswith(prefix)  # only the text differs: servers can cache the rest
    assert "1. bad: the review criticises the plot" in prefix and 'e.g. "Dull plot."' in prefix
    assert "Text: A gripping story.\nAnswer: 2" in prefix  # worked example answered with its option number
    assert LabelPrompts.names(schema["plot"]) == {"1": 0, "2": 1, "3": 2, "bad": 0, "good": 1, "unknown": 2}


def test_answer_position_scores_map_onto_the_options() -> None:
    names = LabelPrompts.names(SCHEMA["acting"])  # values: bad, good, unknown
    pairs = [(" 2", np.log(0.6)), ("1", np.log(0.2)), ("Good", np.log(0.1)), ("x", np.log(0.05))]
    dist = first_token_distribution(pairs, names, SCHEMA["acting"].values, "test")
    # "2" and "Good" both count for good; unknown is outside the top-k: at most the leftover mass.
    assert dist.argmax() == 1 and dist[1] == pytest.approx(0.7 / (0.2 + 0.7 + 0.05))
    with pytest.raises(UpstreamMalformed, match="no declared option"):
        first_token_distribution([("The", -0.1)], names, SCHEMA["acting"].values, "test")
    assert answer_option("3. unknown", names) == 2 and answer_option('{"label": "bad"}', names) == 0
    assert answer_option("I think so", names) is None


def test_worked_examples_come_from_human_rows_and_are_left_out_of_the_check() -> None:
    labels = [{"plot": "bad"}, {"plot": "good"}, {}, {"plot": "good"}]
    examples, used = examples_from_rows(TEXTS, labels, SCHEMA, per_value=1)
    assert {e.value for e in examples["plot"]} == {"bad", "good"} and "acting" not in examples
    assert used <= {0, 1, 3} and len(used) == 2
    run = LabelRun(
        labels=[
            {"plot": Label(v, c, {}, "logprobs")}
            for v, c in (("bad", 0.9), ("good", 0.5), ("good", 0.4), ("bad", 0.7))
        ]
    )
    rep = label_report(run, ConceptSchema.from_dict({**SCHEMA_DICT, "concepts": [CONCEPT_DICTS[1]]}),
                       labels, exclude=used)  # fmt: skip
    plot = rep["plot"]
    checked = [i for i in (0, 1, 3) if i not in used]
    assert plot["human_checked"] == len(checked) and plot["mean_confidence"] == pytest.approx(0.625)
    # One checked row: the LLM got it wrong (accuracy 0) and the majority rate is 1: unusable.
    assert plot["accuracy_vs_human"] == (1.0 if checked == [1] else 0.0)
    assert plot["usable_labels"] is (checked == [1] and False)


def test_concept_definitions_round_trip_and_undefined_concepts_are_named() -> None:
    raw = {"domain": "t", "concepts": [{"name": "tone", "values": ["calm", "angry"], "description": "",
                                        "value_examples": {"angry": ["I am furious."]}}]}  # fmt: skip
    schema = ConceptSchema.from_dict(raw)
    assert ConceptSchema.from_dict(schema.to_dict()) == schema
    assert schema["tone"].value_examples["angry"] == ("I am furious.",) and not schema["tone"].defined
    assert undefined_concepts([{"text": "x", "labels": {}}], schema) == ["tone"]
    assert undefined_concepts([{"text": "x", "labels": {"tone": "calm"}}], schema) == []
    assert undefined_concepts([{"text": "x", "labels": {}}], SCHEMA) == []


# -- edits ----------------------------------------------------------------------------------------


def test_changed_sentences_counts_replaced_added_and_removed_ones() -> None:
    src = "I went with friends. The acting is superb. The plot drags."
    assert changed_sentences(src, src) == 0
    assert changed_sentences(src, "I went with friends. The acting is wooden. The plot drags.") == 1
    assert changed_sentences(src, src + " The music is lovely.") == 1
    assert changed_sentences(src, "We went alone. The acting is wooden. The plot drags.") == 2


def test_edit_plan_covers_every_direction_from_texts_with_the_source_value() -> None:
    labels = [
        {"acting": a, "plot": p, "music": "unknown"}
        for a in ("good", "bad")
        for p in ("good", "bad", "unknown")
    ]
    plan = plan_pair_edits(labels, SCHEMA, per_direction=2, seed=1)
    assert len(directions(SCHEMA)) == 18
    for e in plan:
        assert labels[e.source][e.intervention.concept] == e.intervention.source != e.intervention.target
    per_concept = [(e.source, e.intervention.concept) for e in plan]
    assert len(per_concept) == len(set(per_concept))  # a text is edited at most once per concept
    cells = {(e.intervention.concept, e.intervention.source, e.intervention.target) for e in plan}
    assert ("acting", "good", "bad") in cells and ("music", "good", "bad") not in cells  # no music=good text


def test_retrieval_prompts_show_the_nearest_kept_edits_of_the_same_direction_only() -> None:
    p = RetrievalPrompts(SCHEMA)
    iv = Intervention("plot", "bad", "good")
    p.add(FewShot("The story is gripping. Great cast.", "The story is dull. Great cast.", iv))
    p.add(FewShot("Lovely music.", "Awful music.", Intervention("music", "bad", "good")))
    assert p.nearest("The story is gripping.", iv) == []  # not frozen yet: a batch never sees its own edits
    p.freeze()
    p.add(FewShot("The story is gripping!", "The story is boring!", iv))
    shown = p.nearest("The story is gripping and fun.", iv)
    assert [e.edited for e in shown] == ["The story is dull. Great cast."]
    msgs = p.messages("The story is gripping and fun.", iv, {"acting": "good"})
    assert msgs[1]["content"].startswith("Edit this movie review so that the review criticises the plot")
    assert "Rewrite only the one sentence about the plot" in msgs[-1]["content"]
    assert msgs[2] == {"role": "assistant", "content": "The story is dull. Great cast."}


# -- the plan -------------------------------------------------------------------------------------


def _rows(n: int) -> list[dict]:
    return [{"text": f"Review {i}. The acting is fine.", "labels": {}} for i in range(n)]


def test_plan_counts_calls_exactly_and_estimates_time_from_the_measured_speed() -> None:
    speed = LLMSpeed(prompt_s_per_token=0.001, completion_s_per_token=0.02, call_overhead_s=0.05)
    plan = plan_build(_rows(10), SCHEMA, LLMBuildOptions(edits_per_direction=2), budget=1000, speed=speed)
    assert plan["labelling"]["llm_calls"] == 30  # 10 texts x 3 concepts
    assert plan["pairs"]["planned_edits"] == 36 and plan["pairs"]["llm_calls"] == 36 * 3  # edit + 2 checks
    assert plan["llm_calls"] == 30 + 108 and plan["prompt_tokens"] > plan["completion_tokens"] > 0
    expected = 138 * 0.05 + plan["prompt_tokens"] * 0.001 + plan["completion_tokens"] * 0.02
    assert plan["estimated_seconds"] == pytest.approx(expected, abs=0.1)
    # Without a fixed number of edits, the budget decides (capped per direction).
    auto = plan_build(_rows(10), SCHEMA, LLMBuildOptions(), budget=30 + 18 * 3 * 4)
    assert auto["pairs"]["edits_per_direction"] == 4 and auto["estimated_seconds"] is None


class _Endpoint:
    """What the stored rates are keyed by (an LLM backend's identity; nothing is called)."""

    kind, model, base_url = "openai", "m", "http://127.0.0.1:1/v1"


def test_plan_time_comes_from_previous_builds_rates_stored_per_endpoint(tmp_path: Path) -> None:
    cache, llm = GenerationCache(tmp_path / "c.sqlite"), _Endpoint()
    assert stored_rates(cache, llm) is None  # type: ignore[arg-type]
    first = record_rates(cache, llm, BuildRates(0.01, 0.1, 2, 1, 0.5))  # type: ignore[arg-type]
    assert stored_rates(cache, llm) == first  # type: ignore[arg-type]
    # A second build folds in (an average weighted to the newest); a stage it did not measure keeps its rate.
    rates = record_rates(cache, llm, BuildRates(0.03, None, 2, 1, 1.0))  # type: ignore[arg-type]
    assert rates.label_s_per_token == pytest.approx(0.02) and rates.edit_s_per_token == 0.1
    assert rates.builds == 2 and rates.edit_fill == pytest.approx(0.75)
    plan = plan_build(_rows(10), SCHEMA, LLMBuildOptions(edits_per_direction=2), budget=1000, rates=rates)
    avg_text = -(-len(_rows(1)[0]["text"]) // 4)  # the plan's 4 characters per token, rounded up per text
    est = plan["estimated"]
    assert est["from"] == {"labels": "previous builds", "pairs": "previous builds"}
    assert est["labels_s"] == pytest.approx(plan["labelling"]["prompt_tokens"] * 0.02, abs=0.1)
    assert est["pairs_s"] == pytest.approx(36 * 0.75 * avg_text * 0.1, rel=0.05)
    assert plan["estimated_seconds"] == pytest.approx(est["labels_s"] + est["pairs_s"], abs=0.1)
    # Rates for the labels only: the probe's speed fills the pairs stage.
    speed = LLMSpeed(prompt_s_per_token=0.001, completion_s_per_token=0.02, call_overhead_s=0.05)
    mixed = plan_build(_rows(10), SCHEMA, LLMBuildOptions(edits_per_direction=2), budget=1000, speed=speed,
                       rates=BuildRates(0.02, None, 2))  # fmt: skip
    assert mixed["estimated"]["from"] == {"labels": "previous builds", "pairs": "probe"}


def test_stage_plan_puts_the_llm_stages_first_weighted_by_their_expected_time() -> None:
    speed = LLMSpeed(prompt_s_per_token=0.001, completion_s_per_token=0.02, call_overhead_s=0.05)
    plan = plan_build(_rows(10), SCHEMA, LLMBuildOptions(edits_per_direction=2), budget=1000, speed=speed)
    stages = stage_plan(plan, 10)
    assert [n for n, _ in stages] == [
        "labels",
        "llm_taggers",
        "pairs",
        "embed",
        "taggers",
        "space",
        "save",
        "load",
    ]
    w = dict(stages)  # in build.BUILD_STAGES' unit (20 CPU seconds), build stages scaled to the corpus
    assert w["labels"] == pytest.approx(plan["estimated"]["labels_s"] / 20, abs=0.01)
    assert w["pairs"] == pytest.approx(plan["estimated"]["pairs_s"] / 20, abs=0.01)
    assert w["embed"] < 0.1 < w["pairs"]


def test_plan_refuses_a_budget_that_gives_no_pairs_or_cannot_label() -> None:
    with pytest.raises(PlanError, match="too small to give any concept pairs") as e:
        plan_build(_rows(10), SCHEMA, LLMBuildOptions(), budget=30 + 18 * 3 - 1)
    assert e.value.where == "body.params.llm_build.max_llm_calls"
    with pytest.raises(PlanError, match="labelling 10 texts for 3 concepts takes 30 LLM calls"):
        plan_build(_rows(10), SCHEMA, LLMBuildOptions(max_llm_calls=20), budget=1000)


def test_a_default_domain_folder_without_labels_needs_an_llm(tmp_path: Path) -> None:
    from explainers.domains import DomainBuildError, ensure_corpus_domain

    folder = tmp_path / "reviews"
    folder.mkdir()
    (folder / "schema.json").write_text(json.dumps(SCHEMA_DICT))
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    with pytest.raises(DomainBuildError, match="an LLM must label them") as e:
        ensure_corpus_domain(folder, encoder=None)  # refused while reading: nothing is embedded
    assert e.value.where == "default_domain" and "CACE_LLM_BASE_URL" in e.value.message


# -- an endpoint without logprobs (a FAKE server: llama.cpp always sends them) ------------------


@pytest.mark.server  # starts servers (launchers imported inside the test)
def test_labels_fall_back_to_sampling_where_the_endpoint_has_no_logprobs(tmp_path: Path) -> None:
    from benchmarks.harness.servers import python, running
    from explainers.domains.llm_labels import LLMLabeller
    from explainers.generation.backends import OpenAIBackend
    from explainers.generation.cache import GenerationCache

    schema = ConceptSchema.from_dict(
        {
            "domain": "review",
            "concepts": [{"name": "tone", "values": ["neg", "pos"], "description": "the tone"}],
        }
    )
    cmd = [python(), "-m", "uvicorn", "benchmarks.harness.model_servers.fake_openai_llm:app", "--port", "9514",
           "--log-level", "warning"]  # fmt: skip
    with running(cmd, port=9514, health_path="/healthz", timeout=60) as srv:
        backend = OpenAIBackend(f"{srv.base_url}/no-logprobs", "fake", max_retries=0)
        cache = GenerationCache(tmp_path / "c.sqlite")
        labeller = LLMLabeller(backend, schema, cache=cache, samples=3, max_concurrency=2)
        run = labeller.label(TEXTS)
        assert labeller.logprobs is False and run.by_method == {"sampling": len(TEXTS)}
        assert all(row["tone"].value == "pos" and row["tone"].confidence == 1.0 for row in run.labels)
        assert run.cost.prompt_tokens > 0 and run.cost.llm_calls >= len(TEXTS)
        # The same texts again: every answer comes from the on-disk cache, nothing is asked.
        again = LLMLabeller(backend, schema, cache=cache, samples=3).label(TEXTS)
        assert again.cost.llm_calls == 0 and again.cache_hits == len(TEXTS)
        assert again.values() == run.values()


# -- 4xx through the app (in process) -------------------------------------------------------------


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    data = tmp_path_factory.mktemp("zero-label")
    settings = Settings(data_dir=Path(data), database_url=f"sqlite:///{data / 'jobs.sqlite'}",
                        default_domain="none", auto_calibrate=False, log_format="text")  # fmt: skip
    with TestClient(create_app(settings)) as c:
        yield c


def _post(c: TestClient | httpx.Client, rows: list[dict], **params: object) -> httpx.Response:
    body = "\n".join(json.dumps(r) for r in rows).encode()
    return c.post(
        "/v1/domains", files={"file": ("c.jsonl", body)}, data={"params": json.dumps({"id": "z", **params})}
    )


def _field(r: httpx.Response) -> tuple[str, str]:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    err = r.json()["errors"][0]
    return err["field"], err["message"]


def test_unlabelled_corpus_4xx_name_the_field(client: TestClient) -> None:
    rows = _rows(6)
    f, m = _field(_post(client, rows))
    assert f == "body.params.schema" and "no row carries labels" in m
    one_value = {"concepts": [{"name": "plot", "values": ["good"], "description": "the story"}]}
    assert _field(_post(client, rows, schema=one_value))[0] == "body.params.schema.concepts.0.values"
    bare = {"concepts": [{"name": "plot", "values": ["good", "bad"]}]}
    f, m = _field(_post(client, rows, schema=bare))
    assert f == "body.params.schema.concepts" and "['plot'] have no description" in m
    wrong_example = {
        "concepts": [{"name": "plot", "values": ["good", "bad"], "value_examples": {"meh": ["x"]}}]
    }
    assert (
        _field(_post(client, rows, schema=wrong_example))[0]
        == "body.params.schema.concepts.0.value_examples.meh"
    )
    f, m = _field(_post(client, rows, schema=SCHEMA_DICT))
    assert f == "body.params.llm_build.llm" and "CACE_LLM_BASE_URL" in m and "/v1/llms" in m
    assert (
        _field(_post(client, rows, schema=SCHEMA_DICT, llm_build={"llm": "nobody"}))[0]
        == "body.params.llm_build.llm"
    )
    assert _field(_post(client, rows, schema=SCHEMA_DICT, llm_build={"max_concurrency": 0}))[0].startswith(
        "body.params"
    )


def test_a_budget_too_small_is_refused_before_any_llm_call(tmp_path: Path) -> None:
    # The LLM's URL points at a closed port: the plan is refused before the speed probe calls it.
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'jobs.sqlite'}",
                        default_domain="none", auto_calibrate=False, log_format="text",
                        llm_base_url="http://127.0.0.1:9599/v1", llm_model="nobody", llm_build_max_calls=100,
                        outbound_allow=["127.0.0.1/32"])  # fmt: skip
    with TestClient(create_app(settings)) as c:
        f, m = _field(_post(c, _rows(6), schema=SCHEMA_DICT, llm_build={"max_llm_calls": 40}))
        assert f == "body.params.llm_build.max_llm_calls" and "too small to give any concept pairs" in m
        f, m = _field(_post(c, _rows(40), schema=SCHEMA_DICT))
        assert "takes 120 LLM calls" in m and "CACE_LLM_BUILD_MAX_CALLS=100" in m
        # Within the budget, the plan needs the LLM's speed: an unreachable LLM is a 502, not a 500.
        r = _post(c, _rows(6), schema=SCHEMA_DICT, dry_run=True)
        assert r.status_code == 502 and "speed probe" in r.json()["detail"], r.text


# -- end to end: a real llama.cpp server (SmolLM2-135M) and the service over HTTP -----------------

LLAMA_PORT, SERVICE_PORT, RATING_PORT = 9511, 9512, 9513


@pytest.fixture(scope="module")
def llama_url() -> Iterator[str]:
    with llama_server(LLAMA_PORT, n_ctx=4096) as url:
        yield url


@pytest.fixture(scope="module")
def rating_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The black box: a movie rating model trained on reviews without edits, served over HTTP."""
    import joblib

    from benchmarks.harness.servers import python, running
    from explainers.data.movies import train_rating_classifier

    path = tmp_path_factory.mktemp("clf") / "movie-rating.joblib"
    joblib.dump(train_rating_classifier(movie_corpus(300, edits=False, seed=7)), path)
    cmd = [python(), "-m", "explainers.serving", str(path), "--port", str(RATING_PORT)]
    with running(cmd, port=RATING_PORT, health_path="/health", timeout=120) as srv:
        yield srv.base_url + "/predict"


def _wait(c: httpx.Client, job_id: str, timeout: float = 1500) -> dict:
    """Poll a job to its end, recording the stages it showed; GET /v1/jobs/{id} and GET /v1/jobs
    must show the same numbers (a sample where both read the same stored snapshot must agree)."""
    deadline = time.monotonic() + timeout
    seen: dict = {"stages": [], "agreed": 0, "domain_progress": None}
    while time.monotonic() < deadline:
        job = c.get(f"/v1/jobs/{job_id}").json()
        listed = next(j for j in c.get("/v1/jobs").json()["jobs"] if j["id"] == job_id)
        snap = job.get("stages")
        if snap and snap.get("stage") and (not seen["stages"] or seen["stages"][-1] != snap["stage"]):
            seen["stages"].append(snap["stage"])
        # Read at two moments: compare only when both saw the same stored state (stages and item counts).
        same = listed["status"] == job["status"] and listed.get("counts") == job.get("counts")
        if snap and listed.get("stages") == snap and same:
            assert listed["progress"] == job["progress"], (listed, job)
            seen["agreed"] += 1
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return {**job, "seen": seen, "listed": listed}
        building = [d for d in c.get("/v1/domains").json()["domains"] if d["status"] == "building"]
        if building and building[0].get("progress"):
            seen["domain_progress"] = building[0]["progress"]
        time.sleep(0.5)
    raise TimeoutError(job_id)


LLM_BUILD_STAGES = ["labels", "llm_taggers", "pairs", "embed", "taggers", "space", "save", "load"]


def _check_build_stages(snap: dict) -> None:
    """A finished LLM build's stages: every LLM stage then every build stage, each done, at 100%."""
    assert [st["name"] for st in snap["stages"]] == LLM_BUILD_STAGES, snap
    assert all(st["status"] == "done" for st in snap["stages"]) and snap["percent"] == 100.0, snap


@pytest.mark.server  # starts servers (launchers imported inside the test)
def test_an_unlabelled_domain_end_to_end_through_the_api(
    tmp_path: Path, llama_url: str, rating_url: str
) -> None:
    from benchmarks.harness.service import service, store_env

    # 12 movie reviews, no edits; three keep their human labels (worked examples and a check).
    corpus = movie_corpus(12, edits=False, seed=3)
    rows = [
        {"text": r["text"], "labels": r["labels"] if i < 3 else {}, "id": f"t{i}"}
        for i, r in enumerate(corpus)
    ]
    env = {**store_env("sqlite", tmp_path), "CACE_DATA_DIR": str(tmp_path / "data"), "CACE_DEFAULT_DOMAIN": "none",
           "CACE_LLM_BASE_URL": llama_url, "CACE_LLM_MODEL": "smollm2", "CACE_CALIBRATION_MAX_PAIRS": "50"}  # fmt: skip
    build = {"edits_per_direction": 2, "max_concurrency": 2, "max_tokens": 120, "max_llm_calls": 500}
    with service(env, port=SERVICE_PORT) as svc, httpx.Client(base_url=svc.base_url, timeout=600) as c:
        dry = _post(c, rows, schema=SCHEMA_DICT, llm_build=build, dry_run=True)
        assert dry.status_code == 200, dry.text
        plan = dry.json()["plan"]
        assert plan["labelling"]["llm_calls"] == 12 * 3 and plan["pairs"]["planned_edits"] == 36
        assert plan["llm_calls"] == 36 + 36 * 3 and plan["estimated_seconds"] > 0
        assert plan["speed"]["measured"] is True
        assert c.get("/v1/jobs").json()["jobs"] == []  # a dry run builds nothing

        r = _post(c, rows, schema=SCHEMA_DICT, llm_build=build)
        assert r.status_code == 202 and r.headers["location"].startswith("/v1/jobs/"), r.text
        assert r.json()["plan"]["llm_calls"] == plan["llm_calls"]
        job = _wait(c, r.json()["id"])
        assert job["status"] == "succeeded", job
        # Progress: the job's stages (LLM stages, then the build's), the same in the job and the list.
        seen = job["seen"]
        assert seen["agreed"] > 0 and seen["stages"][0] == "labels" and "pairs" in seen["stages"], seen
        assert seen["stages"] == [n for n in LLM_BUILD_STAGES if n in seen["stages"]]  # in order
        _check_build_stages(job["stages"])
        assert (
            job["listed"]["stages"] == job["stages"] and job["listed"]["progress"] == job["progress"] == 1.0
        )
        if seen["domain_progress"] is not None:  # GET /v1/domains shows a building domain's same stages
            assert {st["name"] for st in seen["domain_progress"]["stages"]} == set(LLM_BUILD_STAGES)
        d = c.get("/v1/domains/z").json()
        prov, report = d["provenance"], d["llm_build"]
        # The plan's time beside the real one, and the rates this build measured (stored for the next plan).
        est = report["estimate"]
        assert est["estimated_seconds"] == plan["estimated_seconds"] and est["actual_seconds"] > 0
        assert (
            est["from"] == {"labels": "probe", "pairs": "probe"} and est["rates_now"]["label_s_per_token"] > 0
        )
        # Provenance: 3 rows x 3 concepts of human labels, the rest the LLM's; every pair LLM-made.
        assert prov["labels"] == {"human": 9, "llm": 9 * 3}
        assert prov["pairs"]["human"] == 0 and prov["pairs_origin"] == (
            "llm" if prov["pairs"]["llm"] else "none"
        )
        lab = report["labelling"]
        assert lab["llm_calls"] + lab["cached_llm_calls"] >= 36 and sum(lab["scored_by"].values()) == 36
        for t in d["taggers"].values():  # the honest report per concept
            llm = t["llm_labels"]
            assert 0 < (llm["mean_confidence"] or 0) <= 1 and sum(llm["values"].values()) == 12
            assert llm["human_checked"] <= 3 and t["agreement_with_llm"] == t["accuracy"]
            if llm["usable_labels"] is False:
                assert t["usable"] is False and "majority rate" in t["why_unusable"]
        pr = report["pairs"]
        # Every planned edit is kept or rejected for a named reason; the plan bounds what was spent.
        assert pr["kept_edits"] + sum(pr["rejections"].values()) == pr["planned_edits"] <= 36
        assert prov["pairs"]["llm"] == pr["kept_edits"] == sum(d["stats"]["pairs"].values())
        assert report["llm_calls"] <= plan["llm_calls"]
        assert pr["kept_edits"] > 0, pr  # the downstream methods below need pairs

        spec = {"protocol": "hf", "url": rating_url, "labels": ["neg", "pos"]}
        assert c.post("/v1/classifiers", json={"name": "movie-rating", "spec": spec}).status_code == 201
        q = {"domain": "z", "classifier": "movie-rating", "top_k": 3, "text": rows[5]["text"]}
        concept, direction = next(iter(pr["kept_by_direction"])).split(":")
        source, target = direction.split("->")
        q["intervention"] = {"concept": concept, "target": target, "source": source}
        for method in ("match", "splice"):
            e = c.post("/v1/explanations", json={**q, "method": method})
            assert e.status_code == 200, (method, e.text)
            assert abs(sum(e.json()["icace"].values())) < 1e-6
        cal = c.post("/v1/domains/z/calibrations", json={"classifier": "movie-rating"})
        assert cal.status_code == 202, cal.text
        assert _wait(c, cal.json()["id"])["status"] == "succeeded"
        assert c.get("/v1/domains/z/calibrations").json()["movie-rating"]["pairs_origin"] == "llm"
        auto = c.post("/v1/explanations", json={**q, "method": "auto"}).json()
        assert auto["details"]["calibrated"] is True and auto["uncertainty"]["pairs_origin"] == "llm", auto

        # A second build of the same texts asks the LLM nothing new: every answer is on disk.
        again = _post(c, rows, schema=SCHEMA_DICT, llm_build=build)
        assert again.status_code == 409  # the id exists
        r2 = c.post("/v1/domains", files={"file": ("c.jsonl", "\n".join(json.dumps(x) for x in rows).encode())},
                    data={"params": json.dumps({"id": "z2", "schema": SCHEMA_DICT, "llm_build": build})})  # fmt: skip
        assert _wait(c, r2.json()["id"])["status"] == "succeeded"
        d2 = c.get("/v1/domains/z2").json()
        assert d2["llm_build"]["llm_calls"] == 0 and d2["llm_build"]["labelling"]["cache_hits"] == 36
        assert d2["provenance"] == prov
        # Its plan's time came from the first build's measured rates, not from a new probe.
        assert d2["llm_build"]["plan"]["estimated"]["from"] == {
            "labels": "previous builds",
            "pairs": "previous builds",
        }


@pytest.mark.server  # starts servers (launchers imported inside the test)
def test_a_default_domain_from_raw_texts_shows_its_llm_stages_in_readyz(
    tmp_path: Path, llama_url: str
) -> None:
    """CACE_DEFAULT_DOMAIN = a folder with corpus.jsonl (no labels) and schema.json (definitions):
    the first start labels and pairs it with the LLM, and /readyz shows those stages as it does
    a CEBaB build's."""
    from benchmarks.harness.service import service, store_env

    folder = tmp_path / "reviews"
    folder.mkdir()
    plot = {**CONCEPT_DICTS[1], "values": ["bad", "good"]}  # one concept, two directions: a short build
    plot["value_descriptions"] = {v: plot["value_descriptions"][v] for v in ("bad", "good")}
    (folder / "schema.json").write_text(json.dumps({"domain": "movie review", "concepts": [plot]}))
    rows = [{"text": r["text"], "id": f"r{i}"} for i, r in enumerate(movie_corpus(8, edits=False, seed=5))]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = {**store_env("sqlite", tmp_path), "CACE_DATA_DIR": str(tmp_path / "data"),
           "CACE_DEFAULT_DOMAIN": str(folder), "CACE_LLM_BASE_URL": llama_url, "CACE_LLM_MODEL": "smollm2",
           "CACE_LLM_BUILD_MAX_CALLS": "10"}  # 8 labels + 1 edit per direction  # fmt: skip
    seen: list[str] = []
    with (
        service(env, port=SERVICE_PORT, ready=False) as svc,
        httpx.Client(base_url=svc.base_url, timeout=60) as c,
    ):
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            r = c.get("/readyz")
            domain = r.json()["components"]["domain"]
            stage = (domain.get("progress") or {}).get("stage")
            if stage and (not seen or seen[-1] != stage):
                seen.append(stage)
            if domain["status"] in ("ready", "failed"):
                break
            time.sleep(0.5)
        assert domain["status"] == "ready", domain
        assert r.status_code == 200
        assert "labels" in seen and seen == [
            n for n in ["read", *LLM_BUILD_STAGES, "explainers"] if n in seen
        ]
        names = [st["name"] for st in domain["progress"]["stages"]]
        assert names[:1] == ["read"] and names[1:9] == LLM_BUILD_STAGES, names
        d = c.get("/v1/domains/reviews").json()
        assert d["default"] is True and d["provenance"]["labels"] == {"human": 0, "llm": 8}
        assert d["llm_build"]["plan"]["budget"] == 10 and d["llm_build"]["estimate"]["actual_seconds"] > 0
