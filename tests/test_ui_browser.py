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
        {
            "CACE_DATABASE_URL": f"sqlite:///{tmp / 'jobs.sqlite'}",
            "CACE_AUTO_CALIBRATE": "false",
            # The first splice/auto request builds its explainer: past 60 s on a loaded 2-core machine.
            "CACE_REQUEST_TIMEOUT_S": "300",
        }
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
    # Labels as the domain names them (CEBaB: star ratings).
    names = httpx.get(server + "/v1/domains/cebab").json()["label_names"]
    assert names["4"] == "4 stars"
    assert page.locator('#explain-numbers tr[data-label="4"] th').inner_text() == "4 (4 stars)"
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
    cost = page.locator('#explain-cost tr[data-key="classifier_texts"] td').inner_text()
    assert cost == str(api["cost"]["classifier_texts"])
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
        # What the calibration knows of the classifier's training texts is on the card too.
        assert cal["shift"]["trained_on_found"] in section.locator("p.calibration-shift").inner_text()
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
        assert err.is_hidden() and "accepts this key" in pg.inner_text("#key-status")
        assert "API keys are on" in pg.inner_text("#key-mode")
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
    from benchmarks.harness.servers import free_port
    from tests.llama_setup import llama_server

    env = {
        "CACE_DATABASE_URL": f"sqlite:///{tmp_path / 'jobs.sqlite'}",
        "CACE_REQUEST_TIMEOUT_S": "300",
        "CACE_AUTO_CALIBRATE": "false",
    }
    with llama_server(free_port(), n_threads=2) as llm_url, service(env) as srv:
        spec = {"kind": "openai", "base_url": llm_url, "model": "smollm2", "timeout_s": 120}
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
        cost_row = pg.locator('#explain-cost tr[data-key="llm_calls"]')
        assert (
            cost_row.locator("td").inner_text() == str(res["cost"]["llm_calls"])
            and res["cost"]["llm_calls"] > 0
        )
        shot(pg, "explain-generate")
        # The same answer on a phone: the README shows both widths.
        pg.set_viewport_size({"width": 390, "height": 844})
        pg.wait_for_function("document.documentElement.scrollWidth <= 390")
        shot(pg, "explain-generate-390")
        pg.context.close()


# ---- fits every screen, tells the truth --------------------------------------------------------

WIDTHS = (390, 768, 1280, 1920)
# Per visible element: line boxes of siblings that intersect (inline elements by their line fragments,
# so text that wraps is not mistaken for an overlap), content clipped sideways with no hint, and chart
# text smaller than 11 px on screen or drawn outside its chart.
LAYOUT_JS = """() => {
  const shown = (e) => {
    const cs = getComputedStyle(e);
    const r = e.getBoundingClientRect();
    return cs.display !== 'none' && cs.visibility !== 'hidden' && r.width > 0 && r.height > 0;
  };
  const kids = (p) => [...p.children].flatMap((e) =>
    getComputedStyle(e).display === 'contents' ? kids(e) : [e]);
  const skip = new Set(['OPTION', 'DATALIST', 'SCRIPT', 'STYLE', 'TITLE', 'BR']);
  const name = (e) => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') +
    (e.className && typeof e.className === 'string' ? '.' + e.className.trim().split(/\\s+/).join('.') : '');
  const overlaps = [];
  for (const parent of document.querySelectorAll('body, body *')) {
    if (parent.closest('svg') || skip.has(parent.tagName) || !shown(parent)) continue;
    const items = kids(parent).filter((e) => !skip.has(e.tagName) && shown(e));
    for (let i = 0; i < items.length; i++) {
      for (let j = i + 1; j < items.length; j++) {
        for (const a of items[i].getClientRects()) {
          for (const b of items[j].getClientRects()) {
            const w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
            const h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
            if (w > 1 && h > 1) overlaps.push(name(items[i]) + ' / ' + name(items[j]));
          }
        }
      }
    }
  }
  const clipped = [...document.querySelectorAll('main div, main section, main figure')].filter((e) => {
    if (!shown(e) || e.scrollWidth <= e.clientWidth + 1) return false;
    const hint = e.parentElement && e.parentElement.querySelector(':scope > .scroll-hint');
    return !(hint && shown(hint) && e.classList.contains('scroll'));
  }).map((e) => name(e) + ' ' + e.scrollWidth + '>' + e.clientWidth);
  const chartText = [];
  for (const svg of document.querySelectorAll('svg.chart')) {
    if (!shown(svg)) continue;
    const vb = svg.viewBox.baseVal;
    const scale = svg.getBoundingClientRect().width / vb.width;
    for (const t of svg.querySelectorAll('text')) {
      const px = parseFloat(getComputedStyle(t).fontSize) * scale;
      const box = t.getBBox();
      if (px < 10.99) chartText.push(`${t.textContent}: ${px.toFixed(1)} px`);
      if (box.x < -0.5 || box.x + box.width > vb.width + 0.5) chartText.push(`${t.textContent}: outside the chart`);
    }
  }
  const narrowCards = [...document.querySelectorAll('.cf-card')].filter(shown).flatMap((card) => {
    const diff = card.querySelector('.diff').getBoundingClientRect().width;
    return diff < 0.6 * (card.clientWidth - 30) ? [`diff ${Math.round(diff)} px of ${card.clientWidth}`] : [];
  });
  return {
    page: document.documentElement.scrollWidth, body: document.body.scrollWidth, viewport: window.innerWidth,
    overlaps: [...new Set(overlaps)], clipped, chartText, narrowCards,
  };
}"""


def check_layout(pg, where: str) -> list[str]:
    got = pg.evaluate(LAYOUT_JS)
    problems = []
    if max(got["page"], got["body"]) > got["viewport"]:
        problems.append(f"{where}: page {got['page']} px wide in a {got['viewport']} px viewport")
    for key in ("overlaps", "clipped", "chartText", "narrowCards"):
        if got[key]:
            problems.append(f"{where}: {key}: {got[key][:6]}")
    return problems


def test_every_page_fits_390_768_1280_and_1920_px(browser, server: str) -> None:
    """No sideways page scroll, no overlaps, wide tables scroll in their box with a hint, chart text >= 11 px."""
    texts = [" ".join(r.text.split()) for r in load_split("dev")][:8]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    pg.goto(server + "/ui")
    ready(pg)
    # An `auto` answer with its method details open (its JSON made the page 5,261 px wide).
    pg.fill("#explain-text", TEXT)
    fill_params(pg, "explain", "food", "Negative", "auto", 5)
    pg.click("#explain-submit")
    pg.wait_for_selector("#explain-numbers")
    pg.click("#explain-method-details summary")
    # A finished effects job with five labels' ICaCE columns.
    pg.click("#tab-effects")
    pg.fill("#effects-texts", "\n".join(texts))
    fill_params(pg, "effects", "service", "Positive", "match", 2)
    pg.click("#effects-submit")
    pg.wait_for_selector("#effects-rows tbody tr")
    # A CI from a handful of changed texts says so.
    n_changed = int(pg.inner_text("#effects-summary").split(" of ")[0])
    assert n_changed < 30 and f"rests on {n_changed} changed text" in pg.inner_text("#effects-small-n")
    pg.click("#tab-domains")
    pg.wait_for_selector('article.domain[data-id="cebab"]')
    problems: list[str] = []
    for width in WIDTHS:
        pg.set_viewport_size({"width": width, "height": 900})
        for tab in ("explain", "effects", "domains", "jobs", "keys"):
            pg.click(f"#tab-{tab}")
            pg.wait_for_timeout(150)  # one frame for the charts to redraw at the new width
            problems += check_layout(pg, f"{width} px, {tab}")
        if width == 390:
            pg.click("#tab-effects")
            # The ICaCE columns are off-screen at this width: the box scrolls, and says so.
            assert pg.locator("#rows-table .scroll-hint").is_visible()
            shot(pg, "effects-390")
            pg.click("#tab-explain")
            shot(pg, "explain-390")
    context.close()
    assert not problems, "\n".join(problems)


def test_states_tell_the_truth(browser, server: str) -> None:
    """Disabled with the reason while loading; keys off said as such; spread only where measured; no
    verified badge without a check; generate only with an LLM."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    # A fake for a state a test cannot wait for: the service still loading its domain (minutes on a
    # fresh machine). /readyz answers 503 "loading" until the test lets it through.
    loading = {"on": True}

    def readyz(route) -> None:
        if loading["on"]:
            body = {
                "status": "loading",
                "ready": False,
                "components": {"domain": {"status": "loading", "detail": "space"}},
            }
            route.fulfill(status=503, content_type="application/json", body=json.dumps(body))
        else:
            route.continue_()

    pg.route("**/readyz", readyz)
    sent: list[str] = []
    pg.on("request", lambda r: sent.append(r.url) if r.url.endswith("/v1/explanations") else None)
    pg.goto(server + "/ui")
    pg.wait_for_selector('#service-status[data-state="loading"]')
    assert pg.locator("#explain-submit").is_disabled()
    assert "Waiting for the service" in pg.inner_text("#explain-submit-why")
    pg.locator("#explain-k").press("Enter")  # no way around the disabled button
    pg.wait_for_timeout(300)
    assert not sent and pg.locator("#explain-error").is_hidden()
    loading["on"] = False
    ready(pg)
    assert pg.locator("#explain-submit").is_enabled() and pg.locator("#explain-submit-why").is_hidden()

    # generate: listed, not offered, while the server has no LLM (the API says why).
    methods = httpx.get(server + "/v1/methods").json()
    assert "generate" in methods["unavailable"]
    gen = pg.locator('#explain-method option[value="generate"]')
    assert gen.is_disabled() and "LLM" in (gen.get_attribute("title") or "")
    assert pg.locator("#explain-llm-field").is_hidden()

    # Keys off: a made-up key is not "accepted"; the page says keys are off and it was not checked.
    pg.click("#tab-keys")
    pg.fill("#key-input", "cace_made_up")
    pg.click("#key-save")
    playwright_api.expect(pg.locator("#key-mode")).to_contain_text("API keys are off")
    playwright_api.expect(pg.locator("#key-status")).to_contain_text("cannot be checked")
    assert "accept" not in pg.inner_text("#key-status")
    pg.click("#key-clear")

    # One counterfactual: no spread was measured, so none is shown and no whisker drawn.
    pg.click("#tab-explain")
    pg.fill("#explain-text", TEXT)
    fill_params(pg, "explain", "service", "Positive", "match", 1)
    with pg.expect_response(lambda r: r.url.endswith("/v1/explanations")) as resp:
        pg.click("#explain-submit")
    assert resp.value.json()["uncertainty"]["n_counterfactuals"] == 1
    pg.wait_for_selector("#explain-numbers")
    assert set(pg.locator("#explain-numbers td.spread").all_inner_texts()) == {"not measured"}
    assert pg.locator("svg.effect line.interval").count() == 0
    assert "no spread was measured" in pg.inner_text("#explain-whiskers")

    # Uncalibrated auto: the spread its counterfactuals measured (it showed 0.000 everywhere).
    fill_params(pg, "explain", "food", "Negative", "auto", 5)
    with pg.expect_response(lambda r: r.url.endswith("/v1/explanations")) as resp:
        pg.click("#explain-submit")
    res = resp.value.json()
    pg.wait_for_selector("#explain-numbers")
    playwright_api.expect(pg.locator("#explain-summary")).to_contain_text(" · auto · ")
    spread = res["uncertainty"]["spread"]
    assert max(spread.values()) > 0.001
    shown_spread = pg.locator("#explain-numbers td.spread").all_inner_texts()
    assert shown_spread == [fmt(spread[lab]) for lab in res["labels"]]

    # Pool counterfactuals (approx: found by matching confounders) carry facts, not a "verified" badge.
    fill_params(pg, "explain", "service", "Positive", "approx", 3)
    with pg.expect_response(lambda r: r.url.endswith("/v1/explanations")) as resp:
        pg.click("#explain-submit")
    res = resp.value.json()
    pg.wait_for_selector("#explain-numbers")
    playwright_api.expect(pg.locator("#explain-summary")).to_contain_text(" · approx · ")
    assert res["counterfactuals"] and all(cf["verification"] for cf in res["counterfactuals"])
    assert pg.locator("#explain-counterfactuals .verification .badge").count() == 0
    assert "confounders matched" in pg.locator("#explain-counterfactuals .verification").first.inner_text()
    context.close()


def test_counterfactuals_show_every_concept_before_and_after(page, server: str) -> None:
    """The taggers' reading of each concept on the text and on each counterfactual; a warning where a
    concept other than the target changed."""
    ready(page)
    page.fill("#explain-text", "The food was bland and cold. Our waiter was friendly and quick.")
    fill_params(page, "explain", "food", "Positive", "splice", 6)
    page.fill("#explain-source", "Negative")
    with page.expect_response(lambda r: r.url.endswith("/v1/explanations")) as resp:
        page.click("#explain-submit")
    res = resp.value.json()
    page.wait_for_selector("#explain-numbers")
    base = res["base_concepts"]
    assert base and res["counterfactuals"]
    cards = page.locator("#explain-counterfactuals > li")
    for i, cf in enumerate(res["counterfactuals"]):
        card = cards.nth(i)
        readings = card.locator(".concept-check .reading").evaluate_all(
            "els => els.map(e => [e.dataset.concept, e.dataset.before, e.dataset.after])"
        )
        assert readings == [[c, base[c], cf["concepts"][c]] for c in base]
        others = [c for c in base if c != "food" and cf["concepts"][c] != base[c]]
        warning = card.locator(".other-warning")
        if others:
            assert warning.inner_text() == "also changed: " + ", ".join(others)
        else:
            assert warning.count() == 0
        target = card.locator(".target-check")
        assert ("tagger reads food = Positive" == target.inner_text()) == (
            cf["concepts"]["food"] == "Positive"
        )


def test_a_result_is_a_url_and_back_works(page, server: str) -> None:
    ready(page)
    page.fill("#explain-text", TEXT)
    fill_params(page, "explain", "ambiance", "Positive", "match", 2)
    page.click("#explain-submit")
    page.wait_for_selector("#explain-numbers")
    url = page.url
    assert "#explain?" in url and "concept=ambiance" in url and "k=2" in url
    page.click("#tab-domains")
    assert page.url.endswith("#domains") and page.locator("#page-domains").is_visible()
    page.click("#tab-jobs")
    page.go_back()
    playwright_api.expect(page.locator("#page-domains")).to_be_visible()
    page.go_back()
    playwright_api.expect(page.locator("#page-explain")).to_be_visible()
    assert page.url == url
    # The URL alone, in a fresh page, restores the form and reruns the explanation.
    other = page.context.new_page()
    with other.expect_request(lambda r: r.url.endswith("/v1/explanations")) as req:
        other.goto(url)
    sent = json.loads(req.value.post_data)
    assert sent["text"] == TEXT and sent["intervention"] == {"concept": "ambiance", "target": "Positive"}
    assert sent["method"] == "match" and sent["top_k"] == 2 and sent["domain"] == "cebab"
    other.wait_for_selector("#explain-numbers")
    assert other.input_value("#explain-text") == TEXT and other.input_value("#explain-concept") == "ambiance"
    # A tab in the URL opens that tab.
    other.goto(server + "/ui#jobs")
    playwright_api.expect(other.locator("#page-jobs")).to_be_visible()
    other.close()


def test_jobs_tab_lists_background_work_with_progress(page, server: str) -> None:
    """A job started elsewhere (here: straight through the API) shows up, live, with the API's progress."""
    texts = [" ".join(r.text.split()) for r in load_split("dev")][:4]
    ready(page)
    page.click("#tab-jobs")
    body = {
        "texts": texts,
        "intervention": {"concept": "food", "target": "Negative"},
        "method": "match",
        "top_k": 2,
        "mode": "job",
    }
    job_id = httpx.post(server + "/v1/effects", json=body, timeout=60).json()["id"]
    row = page.locator(f'#jobs-table tr[data-id="{job_id}"]')
    row.wait_for()  # listed without a reload
    playwright_api.expect(row).to_have_attribute("data-status", "succeeded", timeout=TIMEOUT_MS)
    job = httpx.get(f"{server}/v1/jobs/{job_id}").json()
    assert row.locator("progress").evaluate("e => e.value") == job["progress"] == 1.0
    assert (
        row.locator("td.counts").inner_text()
        == f"{job['counts'].get('done', 0) + job['counts'].get('failed', 0)}/4"
    )
    assert row.get_attribute("data-kind") == job["kind"]


def test_csv_export_escapes_formulas(page) -> None:
    """OWASP CSV injection: a cell that starts with = + - @ tab or CR is written with a leading quote."""
    ready(page)
    hostile = [
        "-1+cmd|' /C calc'!A0",
        '=HYPERLINK("http://x")',
        "+1",
        "@SUM(A1)",
        "\tx",
        "\rx",
        "-0.5",
        "plain",
    ]
    csv_text = page.evaluate(
        """async (texts) => {
        const m = await import('./ui/static/effects.js');
        const rows = texts.map((t, i) => ({index: i, id: t, status: 'done', source: t, n_counterfactuals: 2,
            icace: {a: -0.25}, base_prediction: {a: 0.5}, error: null}));
        return m.rowsCsv(rows, ['a'], texts);
    }""",
        hostile,
    )
    table = list(csv.DictReader(io.StringIO(csv_text, newline="")))
    assert [r["text"] for r in table] == [("'" + t if t[0] in "=+-@\t\r" else t) for t in hostile]
    assert [r["id"] for r in table] == [r["text"] for r in table]
    assert all(r["icace_a"] == "-0.25" and r["n_counterfactuals"] == "2" for r in table)
