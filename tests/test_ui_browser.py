"""The web UI end to end: headless Chromium (Debian's) driven by Playwright against a live service.

Each test works the page as a person would (types, picks, clicks) and checks what is drawn
against the service's own answer to the same request, made directly over HTTP. With
CACE_UI_SCREENSHOTS=<dir> the tests also save a PNG of each page there (docs/screenshots/).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from benchmarks.harness.service import service
from explainers.data.cebab import load_split

playwright_api = pytest.importorskip("playwright.sync_api", reason="the test extra installs playwright")
CHROMIUM = os.environ.get("CACE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if not CHROMIUM:
    pytest.skip(
        "no chromium binary (scripts/setup.d/40-chromium.sh installs Debian's)", allow_module_level=True
    )

SHOTS = Path(os.environ["CACE_UI_SCREENSHOTS"]) if os.environ.get("CACE_UI_SCREENSHOTS") else None
TEXT = "The food was delicious but the waiter ignored us for twenty minutes and never came back."
TIMEOUT_MS = 180_000


def fmt(x: float) -> str:
    return f"{x:.3f}"


def signed(x: float) -> str:
    """The page's signed format: +0.123, −0.123 (a true minus sign), ±0.000."""
    t = f"{abs(x):.3f}"
    if float(t) == 0:
        return "±" + t
    return ("−" if x < 0 else "+") + t


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("ui")
    # No calibration behind the tests' back: it would land in the shared test data dir's CEBaB domain.
    with service(
        {"CACE_DATABASE_URL": f"sqlite:///{tmp / 'jobs.sqlite'}", "CACE_AUTO_CALIBRATE": "false"}
    ) as srv:
        yield srv.base_url


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser, server: str):
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    # Chromium logs every 4xx fetch as "Failed to load resource"; the tests check how the page shows those.
    pg.on(
        "console",
        lambda m: (
            errors.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    pg.goto(server + "/ui")
    yield pg
    context.close()
    assert not errors, f"the page logged errors: {errors}"


def ready(pg) -> None:
    pg.wait_for_selector('#service-status[data-state="ready"]')


def shot(pg, name: str) -> None:
    if SHOTS is not None:
        from PIL import Image  # pillow comes with matplotlib (test extra)

        SHOTS.mkdir(parents=True, exist_ok=True)
        png = Image.open(io.BytesIO(pg.screenshot(full_page=True)))
        # A 256-colour palette keeps the committed screenshots small (flat UI colours survive it).
        png.convert("RGB").quantize(256).save(SHOTS / f"{name}.png", optimize=True)


def fill_params(pg, prefix: str, concept: str, target: str, method: str, k: int) -> None:
    pg.fill(f"#{prefix}-concept", concept)
    pg.fill(f"#{prefix}-target", target)
    pg.select_option(f"#{prefix}-method", method)
    pg.fill(f"#{prefix}-k", str(k))


def test_page_and_assets_are_local_and_public(server: str) -> None:
    r = httpx.get(server + "/ui")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assets = re.findall(r'(?:src|href)="(ui/static/[^"]+)"', r.text)
    assert assets and not re.search(r'(?:src|href)="(?:https?:)?//', r.text), (
        "every asset is served by the service"
    )
    for a in assets:
        got = httpx.get(f"{server}/{a}")
        assert got.status_code == 200 and got.content
        assert httpx.get(f"{server}/{a}", headers={"If-None-Match": got.headers["etag"]}).status_code == 304
    assert httpx.head(server + "/ui").status_code == 200
    moved = httpx.get(server + "/ui/")
    assert moved.status_code == 308 and httpx.get(server + "/ui/", follow_redirects=True).url.path == "/ui"
    for bad in ("/ui/static/..%2F__init__.py", "/ui/static/nothing.js"):
        r = httpx.get(server + bad)
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"


def test_explain_draws_the_services_numbers(page, server: str) -> None:
    ready(page)
    page.fill("#explain-text", TEXT)
    fill_params(page, "explain", "service", "Positive", "match", 4)
    with page.expect_request(lambda r: r.url.endswith("/v1/explanations")) as req:
        page.click("#explain-submit")
    page.wait_for_selector("#explain-numbers")
    sent = json.loads(req.value.post_data)
    assert sent["text"] == TEXT and sent["intervention"] == {"concept": "service", "target": "Positive"}
    assert sent["method"] == "match" and sent["top_k"] == 4 and sent["domain"] == "cebab"

    api = httpx.post(server + "/v1/explanations", json=sent, timeout=120).json()
    labels = api["labels"]
    # The table: every number as the service computed it.
    for lab in labels:
        row = page.locator(f'#explain-numbers tr[data-label="{lab}"]')
        base, icace = api["base_prediction"][lab], api["icace"][lab]
        assert row.locator("td.base").inner_text() == fmt(base)
        assert row.locator("td.cf").inner_text() == fmt(base + icace)
        assert row.locator("td.icace").inner_text() == signed(icace)
        assert row.locator("td.spread").inner_text() == fmt(api["uncertainty"]["spread"][lab])
    # The bars: one base and one counterfactual-mean bar per label, carrying the exact values and
    # taller when the value is larger.
    bars = page.eval_on_selector_all(
        "svg.dist rect.bar[data-label]",
        """els => els.map(e => ({
        label: e.dataset.label, series: e.dataset.series, value: Number(e.dataset.value),
        height: Number(e.getAttribute('height'))}))""",
    )
    assert len(bars) == 2 * len(labels)
    for b in bars:
        want = api["base_prediction"][b["label"]] + (api["icace"][b["label"]] if b["series"] == "cf" else 0.0)
        assert b["value"] == pytest.approx(want, abs=1e-12)
    ordered = sorted(bars, key=lambda b: b["value"])
    assert ordered[-1]["height"] > ordered[0]["height"]
    effect = page.eval_on_selector_all("svg.effect rect.bar", "els => els.map(e => Number(e.dataset.value))")
    assert effect == pytest.approx([api["icace"][lab] for lab in labels], abs=1e-12)
    # The inferred source value is shown as inferred.
    assert page.inner_text("#explain-inferred-source") == api["intervention"]["source"]
    assert api["intervention"]["source_inferred"] and "inferred" in page.inner_text("#explain-summary")
    # Each counterfactual: its word diff rebuilds both texts; its similarity is the service's.
    cards = page.locator("#explain-counterfactuals > li")
    assert cards.count() == len(api["counterfactuals"]) > 0
    for i, cf in enumerate(api["counterfactuals"]):
        card = cards.nth(i)
        rebuilt = card.locator(".diff").evaluate("""p => {
            const keep = (skip) => Array.from(p.childNodes).filter(n => n.nodeName !== skip)
                .map(n => n.textContent).join('').split(/\\s+/).filter(Boolean).join(' ');
            return {base: keep('INS'), cf: keep('DEL'), changed: p.querySelectorAll('ins, del').length};
        }""")
        assert rebuilt["base"] == " ".join(TEXT.split())
        assert rebuilt["cf"] == " ".join(cf["text"].split())
        assert rebuilt["changed"] > 0
        assert f"similarity {fmt(cf['similarity'])}" in card.inner_text()
    assert "classifier_texts" in page.inner_text("#explain-result")
    shot(page, "explain")


def test_unknown_concept_shows_the_problem(page) -> None:
    """Keyboard only: arrow keys move between tabs, Enter in a field submits; the 422 reads as a message."""
    ready(page)
    page.focus("#tab-explain")
    page.keyboard.press("ArrowRight")
    assert (
        page.evaluate("document.activeElement.id") == "tab-effects"
        and page.locator("#page-effects").is_visible()
    )
    page.keyboard.press("ArrowLeft")
    assert page.locator("#page-explain").is_visible() and page.locator("#page-effects").is_hidden()
    labelled = page.eval_on_selector_all(
        "#explain-form input, #explain-form select, #explain-form textarea",
        "els => els.every(e => e.labels && e.labels.length === 1)",
    )
    assert labelled, "every form control has its label"
    fill_params(page, "explain", "price", "Positive", "match", 3)
    page.focus("#explain-k")
    page.keyboard.press("Enter")
    box = page.locator("#explain-error")
    box.wait_for(state="visible")
    text = box.inner_text()
    assert "Request validation failed (422)" in text
    assert "intervention.concept" in text and "'price'" in text, text
    assert box.get_attribute("role") == "alert"
    assert page.locator("#explain-result").is_hidden()


def test_effects_job_runs_through_the_progress_bar(page, server: str, tmp_path: Path) -> None:
    texts = [" ".join(r.text.split()) for r in load_split("dev")][:40]  # one line each
    ready(page)
    page.click("#tab-effects")
    page.fill("#effects-texts", "\n".join(texts))
    fill_params(page, "effects", "food", "Negative", "match", 3)
    # Record every state the progress bar shows, from the first poll to the last.
    page.evaluate("""() => {
        window.__states = [];
        const bar = document.getElementById('effects-bar'), box = document.getElementById('effects-progress');
        new MutationObserver(() => window.__states.push([box.dataset.status, bar.value]))
            .observe(box, {attributes: true, subtree: true, attributeFilter: ['data-status', 'value']});
    }""")
    with page.expect_response(lambda r: r.url.endswith("/v1/effects")) as resp:
        page.click("#effects-submit")
    job_id = resp.value.json()["id"]
    assert resp.value.status == 202
    page.wait_for_selector('#effects-progress[data-status="succeeded"]')
    page.wait_for_selector("#effects-cace")
    states = page.evaluate("window.__states")
    values = [v for _, v in states]
    assert values == sorted(values) and values[-1] == 1.0, states
    assert any(s in ("queued", "running") for s, _ in states), "the bar showed the job before it finished"
    assert page.inner_text("#effects-bar-text").startswith("succeeded · 40/40 items")

    job = httpx.get(f"{server}/v1/jobs/{job_id}").json()
    res = job["result"]
    for lab in res["labels"]:
        assert page.inner_text(f'#effects-cace tr[data-label="{lab}"] td.cace') == signed(res["cace"][lab])
    plotted = page.eval_on_selector_all(
        "#effects-result svg.effect rect.bar", "els => els.map(e => Number(e.dataset.value))"
    )
    assert plotted == pytest.approx([res["cace"][lab] for lab in res["labels"]], abs=1e-12)
    assert f"{res['summary']['n_changed']} of 40 texts" in page.inner_text("#effects-summary")

    # The rows: all 40 loaded from the paginated rows API; sorting and filtering work on them.
    rows = httpx.get(f"{server}/v1/jobs/{job_id}/rows", params={"limit": 1000}).json()["rows"]
    assert "40 rows" in page.inner_text("#rows-count")
    lab = res["labels"][0]
    page.click(f'button.sort[data-key="icace:{lab}"]')
    page.click(f'button.sort[data-key="icace:{lab}"]')  # twice: descending
    shown = page.eval_on_selector_all(
        f'#effects-rows tbody td[data-label="{lab}"]', "els => els.map(e => e.textContent)"
    )
    want = sorted((r for r in rows if r["icace"]), key=lambda r: -r["icace"][lab])[: len(shown)]
    assert shown[: len(want)] == [signed(r["icace"][lab]) for r in want]
    word = max(texts[7].split(), key=len)  # a rare word: its rows fit on one page
    page.fill("#rows-filter", word)
    visible = page.eval_on_selector_all(
        "#effects-rows tbody tr", "els => els.map(e => Number(e.dataset.index))"
    )
    assert visible and sorted(visible) == [i for i, t in enumerate(texts) if word.lower() in t.lower()]
    page.fill("#rows-filter", "")

    # Downloads: JSONL is the service's file; CSV is built in the page from the same rows.
    with page.expect_download() as dl:
        page.click("#rows-jsonl")
    got = Path(dl.value.path()).read_text()
    assert got == httpx.get(f"{server}/v1/jobs/{job_id}/rows.jsonl").text
    with page.expect_download() as dl:
        page.click("#rows-csv")
    table = list(csv.DictReader(io.StringIO(Path(dl.value.path()).read_text())))
    assert len(table) == 40 and table[0]["text"] == texts[0]
    by_index = {r["index"]: r for r in rows}
    for r in table:
        api_row = by_index[int(r["index"])]
        if api_row["icace"]:
            assert float(r[f"icace_{lab}"]) == pytest.approx(api_row["icace"][lab], abs=1e-12)
    shot(page, "effects")

    # An uploaded JSONL file with ids goes through /v1/effects/upload.
    upload = tmp_path / "texts.jsonl"
    upload.write_text("\n".join(json.dumps({"text": t, "id": f"t{i}"}) for i, t in enumerate(texts[:3])))
    page.set_input_files("#effects-file", str(upload))
    with page.expect_response(lambda r: r.url.endswith("/v1/effects/upload")) as resp:
        page.click("#effects-submit")
    assert resp.value.status == 202
    playwright_api.expect(page.locator("#rows-count")).to_have_text(
        re.compile(r"^3 rows "), timeout=TIMEOUT_MS
    )
    ids = page.eval_on_selector_all(
        "#effects-rows tbody tr td:nth-child(2)", "els => els.map(e => e.textContent)"
    )
    assert ids == ["t0", "t1", "t2"]


def test_create_a_domain_from_a_file(page, server: str, tmp_path: Path) -> None:
    from explainers.data.movies import movie_corpus

    domain_id = f"ui-movies-{uuid.uuid4().hex[:6]}"  # domains live in the shared test data dir
    rows = movie_corpus(40, seed=3)
    corpus = tmp_path / "movies.jsonl"
    corpus.write_text("\n".join(json.dumps({k: r[k] for k in ("text", "labels", "origin")}) for r in rows))
    ready(page)
    page.click("#tab-domains")
    page.wait_for_selector('article.domain[data-id="cebab"]')
    page.fill("#domain-id", domain_id)
    page.set_input_files("#domain-file", str(corpus))
    try:
        with page.expect_response(
            lambda r: r.url.endswith("/v1/domains") and r.request.method == "POST"
        ) as resp:
            page.click("#domain-submit")
        assert resp.value.status == 202, resp.value.text()
        page.wait_for_selector(f'article.domain[data-id="{domain_id}"]')  # listed while it builds
        page.wait_for_selector('#domain-progress[data-status="succeeded"]', timeout=600_000)
        assert page.locator("#domain-create-error").is_hidden()
        card = page.locator(f'article.domain[data-id="{domain_id}"]')
        card.locator(".badge.domain-status.ready").wait_for()
        got = httpx.get(f"{server}/v1/domains/{domain_id}").json()
        shown = card.locator("table.schema tbody th").all_inner_texts()
        assert shown == [c["name"] for c in got["schema"]["concepts"]] == ["acting", "plot", "music"]
        assert card.locator("table.schema tbody tr").first.locator("td").first.inner_text() == ", ".join(
            got["schema"]["concepts"][0]["values"]
        )
        # Calibrate tfidf-lr on the new domain's held-out pairs; its error table appears on the card.
        card.locator(f"#calibrate-{domain_id}").select_option("tfidf-lr")
        card.locator("button.calibrate").click()
        section = page.locator(
            f'article.domain[data-id="{domain_id}"] details.calibration[data-classifier="tfidf-lr"]'
        )
        section.wait_for(timeout=600_000)
        section.locator("summary").click()
        cal = httpx.get(f"{server}/v1/domains/{domain_id}/calibrations").json()["tfidf-lr"]
        methods = section.locator("table.grid tbody tr td:first-child").all_inner_texts()
        assert [m.replace(" (default)", "") for m in methods if not m.startswith("auto")] == list(
            cal["table"]
        )
        assert section.locator("table.kv").inner_text().count(str(cal["default_estimator"])) == 1
        shot(page, "domains")
        # Calibrated: the server's default method is `auto`, whose conformal interval the ICaCE whiskers show.
        page.click("#tab-explain")
        page.select_option("#explain-domain", domain_id)
        page.fill(
            "#explain-text", "The acting is wooden and flat. The story is gripping from start to finish."
        )
        fill_params(page, "explain", "acting", "good", "", 3)
        with page.expect_response(lambda r: r.url.endswith("/v1/explanations")) as resp:
            page.click("#explain-submit")
        res = resp.value.json()
        assert resp.value.status == 200 and res["method"] == "auto" and res["domain"] == domain_id, res
        page.wait_for_selector("#explain-numbers")
        assert "conformal interval" in page.inner_text("#explain-result figure:nth-child(2) figcaption")
        whiskers = page.eval_on_selector_all(
            "svg.effect line.interval",
            """els => els.map(e => [e.dataset.label,
            Number(e.dataset.low), Number(e.dataset.high)])""",
        )
        interval = res["uncertainty"]["interval"]
        assert [w[0] for w in whiskers] == res["labels"]
        for lab, lo, hi in whiskers:
            assert (lo, hi) == pytest.approx(tuple(interval[lab]), abs=1e-12)
        # The new domain is offered in the Explain form, with its own concepts.
        page.click("#tab-explain")
        page.select_option("#explain-domain", domain_id)
        assert (
            page.input_value("#explain-concept") in ("acting", "plot", "music")
            or page.locator("#explain-concepts option").count() == 3
        )
        assert page.eval_on_selector_all("#explain-concepts option", "els => els.map(e => e.value)") == [
            "acting",
            "plot",
            "music",
        ]
    finally:
        httpx.delete(f"{server}/v1/domains/{domain_id}")


def test_with_api_keys_on_the_page_asks_for_a_key(browser, tmp_path: Path) -> None:
    """Auth on: the page loads without a key, shows 401 as a message, and works once a key is set."""
    import hashlib

    key = "cace_" + uuid.uuid4().hex + uuid.uuid4().hex
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(
        json.dumps(
            [{"name": "ui", "sha256": hashlib.sha256(key.encode()).hexdigest(), "scopes": ["explain"]}]
        )
    )
    env = {
        "CACE_DATABASE_URL": f"sqlite:///{tmp_path / 'jobs.sqlite'}",
        "CACE_API_KEYS_FILE": str(keys_file),
        "CACE_AUTO_CALIBRATE": "false",
    }
    with service(env) as srv:
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        pg = context.new_page()
        pg.set_default_timeout(TIMEOUT_MS)
        pg.goto(srv.base_url + "/ui")
        pg.wait_for_selector('#service-status[data-state="error"]')
        assert "needs an API key" in pg.inner_text("#service-status")
        pg.click("#tab-keys")
        pg.fill("#key-input", "cace_wrong")
        pg.click("#key-save")
        err = pg.locator("#key-error")
        err.wait_for(state="visible")
        assert "Unauthorized (401)" in err.inner_text() and "unknown or revoked API key" in err.inner_text()
        shot(pg, "keys")
        pg.fill("#key-input", key)
        pg.click("#key-save")
        pg.wait_for_selector('#service-status[data-state="ready"]')
        assert err.is_hidden() and "accepts it" in pg.inner_text("#key-status")
        assert pg.evaluate("sessionStorage.getItem('cace.apiKey')") == key
        pg.click("#tab-explain")
        fill_params(pg, "explain", "food", "Negative", "zero", 1)
        with pg.expect_request(lambda r: r.url.endswith("/v1/explanations")) as req:
            pg.click("#explain-submit")
        pg.wait_for_selector("#explain-numbers")
        assert req.value.headers["authorization"] == f"Bearer {key}"
        # Another browser session starts without the key.
        other = browser.new_context().new_page()
        other.goto(srv.base_url + "/ui")
        assert other.evaluate("sessionStorage.getItem('cace.apiKey')") is None
        other.context.close()
        context.close()


@pytest.mark.llm
def test_generate_shows_verification_and_rejections(browser, tmp_path: Path) -> None:
    """generate through llama.cpp (SmolLM2-135M, when set up): each kept rewrite's verdict and the rejection counts."""
    from benchmarks.harness.servers import free_port, running
    from tests.test_service_e2e import GGUF, LLAMA_PY

    if not (GGUF.exists() and LLAMA_PY.exists()):
        msg = "llama.cpp server not set up (scripts/setup.d/30-llama.sh)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    port = free_port()
    cmd = [
        str(LLAMA_PY),
        "-m",
        "llama_cpp.server",
        "--model",
        str(GGUF),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "2048",
        "--n_threads",
        "2",
    ]
    env = {
        "CACE_DATABASE_URL": f"sqlite:///{tmp_path / 'jobs.sqlite'}",
        "CACE_REQUEST_TIMEOUT_S": "300",
        "CACE_AUTO_CALIBRATE": "false",
    }
    with running(cmd, port=port, health_path="/v1/models", timeout=120) as llm, service(env) as srv:
        spec = {"kind": "openai", "base_url": llm.base_url + "/v1", "model": "smollm2", "timeout_s": 120}
        assert (
            httpx.post(srv.base_url + "/v1/llms", json={"name": "smollm2", "spec": spec}).status_code == 201
        )
        pg = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
        pg.set_default_timeout(300_000)
        pg.goto(srv.base_url + "/ui")
        ready(pg)
        pg.fill("#explain-text", "The pasta was delicious and fresh. Our waiter was friendly and quick.")
        fill_params(pg, "explain", "food", "Negative", "generate", 2)
        pg.select_option("#explain-llm", "smollm2")
        with pg.expect_response(lambda r: r.url.endswith("/v1/explanations")) as resp:
            pg.click("#explain-submit")
        assert resp.value.status == 200, resp.value.text()
        res = resp.value.json()
        pg.wait_for_selector("#explain-generation")
        d = res["details"]
        gen = pg.inner_text("#explain-generation")
        assert f"{d['generated']} generated, {d['kept']} kept of {d['requested']} wanted" in gen
        for reason, n in d["rejections"].items():
            row = pg.locator("#explain-generation table.kv tr", has=pg.locator(f'th:text-is("{reason}")'))
            assert row.locator("td").inner_text() == str(n)
        badges = pg.locator("#explain-counterfactuals .verification .badge")
        assert badges.count() == len(res["counterfactuals"])
        for i, cf in enumerate(res["counterfactuals"]):
            read = (cf["verification"] or {}).get("tags", {}).get("food")
            want = "verified" if read in (None, "Negative") else "kept, tagger disagrees"
            assert badges.nth(i).inner_text() == want
        cost_row = pg.locator("#explain-result table.kv tr", has=pg.locator('th:text-is("llm_calls")'))
        assert (
            cost_row.locator("td").inner_text() == str(res["cost"]["llm_calls"])
            and res["cost"]["llm_calls"] > 0
        )
        shot(pg, "explain-generate")
        pg.context.close()
