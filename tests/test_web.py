"""The web page in a real browser: Debian's Chromium driven by Playwright.

Playwright's sync API blocks, so each browser session runs in a worker thread
(`trio.to_thread`) while the real hive runs beside it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import trio
from playwright.sync_api import Page, sync_playwright

from .support import ROOT, Hive, job_processes

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 30_000


@contextmanager
def browser_page(hive: Hive, *, width: int = 1100, height: int = 800) -> Iterator[Page]:
    assert shutil.which(CHROMIUM), "browser tests need Debian's chromium: apt-get install chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(TIMEOUT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(hive.url + "/")
            # The documented browser way: the token is traded for an HttpOnly
            # cookie; it never appears in a URL.
            page.fill("input[name=token]", hive.token)
            page.click("form.login button[type=submit]")
            page.wait_for_selector("#jobs")
            assert hive.token not in page.url
            yield page
            assert not errors, errors
        finally:
            browser.close()


def install_and_cancel(hive: Hive, screenshot: Path) -> str:
    with browser_page(hive) as page:
        page.click("a[href='#/catalog']")
        page.click("button[data-install='tree']")
        page.wait_for_url("**/#/jobs/*")
        job_id = page.url.rsplit("/", 1)[1]
        page.wait_for_function(
            "window.hiveLog && window.hiveLog.lines.some(l => l.text === 'tree ready')"
        )
        page.click("#cancel")
        page.wait_for_selector("#report:has-text('teardown:')")
        report = page.inner_text("#report")
        assert report.startswith("cancelled"), report
        assert " 0 left" in report, report
        assert page.inner_text("[data-state]") == "cancelled"
        page.screenshot(path=str(screenshot), full_page=True)
        # The jobs list shows the same, live.
        page.click("a[href='#/']")
        page.wait_for_selector(f"tr[data-job='{job_id}'] [data-state='cancelled']")
        return job_id


async def test_install_watch_cancel_in_a_browser(hive: Hive) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "web-cancelled-job.png"
    job_id = await trio.to_thread.run_sync(install_and_cancel, hive, screenshot)
    assert job_processes(job_id) == []
    assert screenshot.stat().st_size > 0
    async with hive.client() as client:
        job = (await client.get(f"/v1/jobs/{job_id}")).json()
    assert job["state"] == "cancelled" and job["teardown"]["left"] == 0


def read_big_log(hive: Hive, job_id: str, screenshot: Path) -> tuple[int, int, int]:
    with browser_page(hive, width=390, height=844) as page:  # a phone
        page.goto(f"{hive.url}/#/jobs/{job_id}")
        page.wait_for_selector("#report:has-text('succeeded')")
        page.wait_for_function("window.hiveLog.lineCount >= 100000")
        lines = page.evaluate("window.hiveLog.lineCount")
        in_dom = page.evaluate("document.querySelectorAll('#log .line').length")
        overflow = page.evaluate("document.documentElement.scrollWidth")
        page.screenshot(path=str(screenshot))
        return lines, in_dom, overflow


async def test_big_log_is_windowed_and_fits_a_phone(hive: Hive) -> None:
    async with hive.client() as client:
        response = await client.post(
            "/v1/jobs", json={"operation": "worker_download", "worker": "bigout"}
        )
        job_id = response.json()["id"]
    ARTIFACTS.mkdir(exist_ok=True)
    lines, in_dom, page_width = await trio.to_thread.run_sync(
        read_big_log, hive, job_id, ARTIFACTS / "web-phone-big-log.png"
    )
    assert lines >= 100_000
    assert in_dom < 500  # only the visible window is in the DOM
    assert page_width <= 390  # nothing forces horizontal scrolling of the page
