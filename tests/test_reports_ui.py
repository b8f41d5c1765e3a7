"""The Report page in headless Chromium against a live service: heatmap -> a cell -> its texts -> one
text's full explanation, and the same state reached again from its shareable URL."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.service_server import service, store_env

playwright_api = pytest.importorskip("playwright.sync_api", reason="the test extra installs playwright")
CHROMIUM = os.environ.get("CACE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if not CHROMIUM:
    pytest.skip(
        "no chromium binary (scripts/setup.d/40-chromium.sh installs Debian's)", allow_module_level=True
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict]]:
    env = {**store_env("sqlite", tmp_path_factory.mktemp("ui-reports")), "CACE_AUTO_CALIBRATE": "false"}
    with service(env, port=9695) as srv, httpx.Client(base_url=srv.base_url, timeout=60) as c:
        body = {"classifier": "tfidf-lr", "sample": {"size": 40, "seed": 2}, "concepts": ["food"]}
        r = c.post("/v1/reports", json=body)
        assert r.status_code == 202, r.text
        deadline = time.monotonic() + 300
        while (job := c.get(r.headers["Location"]).json())["status"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.3)
        assert job["status"] == "succeeded", job
        yield srv.base_url, job


def test_report_page_heatmap_cell_text_explanation(report: tuple[str, dict]) -> None:
    base, job = report
    cell = job["result"]["cells"][0]
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        pg = browser.new_page(viewport={"width": 1280, "height": 900})
        pg.set_default_timeout(120_000)
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(f"{base}/ui#report/{job['id']}")
        pg.wait_for_selector("#page-report .rp-heatmap")
        assert pg.is_visible("#page-report") and not pg.is_visible("#page-explain")
        pg.click(f'#page-report .rp-heatmap a[aria-label="cell {cell["key"]}"]')
        pg.wait_for_selector("#page-report .rp-cell h3")
        assert pg.inner_text("#page-report .rp-cell h3") == cell["key"]
        pg.click("#page-report .rp-cell ol li a")
        pg.wait_for_selector("#page-report .rp-explanation table")
        assert "Explanation (match, tfidf-lr)" in pg.inner_text("#page-report .rp-explanation")
        shared = pg.url
        assert shared.endswith("/0") and "#report/" in shared
        # The same state from its URL alone, in a fresh page.
        fresh = browser.new_page()
        fresh.set_default_timeout(120_000)
        fresh.goto(shared)
        fresh.wait_for_selector("#page-report .rp-explanation table")
        assert fresh.inner_text("#page-report .rp-cell h3") == cell["key"]
        browser.close()
    assert not errors, errors
