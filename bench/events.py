"""The live job list (``/v1/events``) with 1,000 jobs kept: bytes per change,
and what applying a change costs the web page.

The hive is started on a state dir holding 1,000 finished jobs: one real job
(``noop``) run first, its record and log copied under new ids (running 1,000
builds would measure makepkg, not the list). Then new ``noop`` jobs run while
a websocket client reads ``/v1/events``, and every message is counted.

The baseline is the protocol before deltas, which sent the whole list after
every change: its size per change is the JSON of the whole list at that
moment, encoded the same way. In the browser (Debian's Chromium, as in the
tests), the page records how long it spends on each message: the snapshot is a
render of every row, which is what the page used to do after every change;
a delta replaces one row. Script time only (layout and paint come after).
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import trio
from trio_websocket import open_websocket_url

from hive.store import JobStore

from .harness import Context, Figure, running_hive, wait_job_ended

RECIPE = "noop"
KEPT = 1000
CHANGES_JOBS = 10
CHROMIUM = "/usr/bin/chromium"


async def seed(ctx: Context) -> Path:
    """A state dir with KEPT finished jobs (copies of one real one)."""
    state = ctx.scratch("events-state")
    async with running_hive(state) as hive, hive.client() as client:
        job = await client.submit(RECIPE, force=True)
        await wait_job_ended(hive, job["id"])
    logs = state / "logs"
    async with JobStore.open(state / "jobs.db") as store:
        (record,) = [r for r in await store.load_all() if r.id == job["id"]]
        copies = []
        for _ in range(KEPT - 1):
            new_id = secrets.token_hex(6)
            shutil.copyfile(logs / f"{record.id}.log", logs / f"{new_id}.log")
            copies.append(replace(record, id=new_id))
        await store.save(*copies)
    return state


def whole_list(jobs: list[dict[str, Any]]) -> int:
    """Bytes of the message the hive used to send after every change."""
    return len(json.dumps({"type": "jobs", "jobs": jobs}, separators=(",", ":")).encode())


async def watch_bytes(
    url: str, token: str, client: httpx.AsyncClient
) -> tuple[int, list[int], list[int]]:
    """Snapshot size, delta sizes, and the whole list's size at each delta."""
    ws_url = url.replace("http://", "ws://") + "/v1/events"
    headers = [(b"authorization", f"Bearer {token}".encode())]
    deltas: list[int] = []
    before: list[int] = []
    async with open_websocket_url(ws_url, extra_headers=headers) as ws:
        snapshot = await ws.get_message()
        assert json.loads(snapshot)["type"] == "snapshot"
        for _ in range(CHANGES_JOBS):
            response = await client.post(
                "/v1/jobs", json={"operation": "worker_download", "worker": RECIPE, "force": True}
            )
            job_id = response.json()["id"]
            while True:
                with trio.fail_after(60):
                    message = await ws.get_message()
                event = json.loads(message)
                assert event["type"] == "job", event["type"]
                deltas.append(len(message.encode()))
                jobs = (await client.get("/v1/jobs")).json()["jobs"]
                before.append(whole_list(jobs))
                if event["job"]["id"] == job_id and event["job"]["state"] == "succeeded":
                    break
    return len(snapshot.encode()), deltas, before


def page_times(url: str, token: str, submit: Any) -> tuple[float, list[float]]:
    """In Chromium: the snapshot's time and each delta's (ms)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page()
            page.goto(url + "/")
            page.fill("input[name=token]", token)
            page.click("form.login button[type=submit]")
            page.wait_for_function(
                f"document.querySelectorAll('#jobs tr[data-job]').length >= {KEPT}"
            )
            page.wait_for_function("(window.hiveEventTimes || []).length >= 1")
            for _ in range(CHANGES_JOBS):
                job_id = submit()
                page.wait_for_selector(f"tr[data-job='{job_id}'] [data-state='succeeded']")
            times = page.evaluate("window.hiveEventTimes")
        finally:
            browser.close()
    snapshots = [t for kind, t in times if kind == "snapshot"]
    return snapshots[0], [t for kind, t in times if kind == "job"]


async def events(ctx: Context) -> list[Figure]:
    state = await seed(ctx)
    async with running_hive(state, extra=["--keep-jobs", str(KEPT * 2)]) as hive:
        headers = {"Authorization": f"Bearer {hive.token}"}
        async with httpx.AsyncClient(base_url=hive.url, headers=headers, timeout=60) as client:
            snapshot, deltas, before = await watch_bytes(hive.url, hive.token, client)

        def submit() -> str:
            with httpx.Client(base_url=hive.url, headers=headers, timeout=60) as sync_client:
                response = sync_client.post(
                    "/v1/jobs",
                    json={"operation": "worker_download", "worker": RECIPE, "force": True},
                )
                return str(response.json()["id"])

        started = time.perf_counter()
        full_render, delta_times = await trio.to_thread.run_sync(
            page_times, hive.url, hive.token, submit
        )
        ctx.log(f"events: browser part took {time.perf_counter() - started:.1f} s")
    old = Figure(
        "events", f"whole list per change ({KEPT}+ jobs; the old protocol)", "bytes", before
    )
    new = Figure("events", "one message per changed job (now)", "bytes", [float(d) for d in deltas])
    new.compare(old).judge("one job, not the list", new.median < old.median / 100)
    new.note = f"the snapshot, once per connection: {snapshot} bytes"
    render = Figure(
        "events", f"page: render of all {KEPT}+ rows (what every change cost)", "ms", [full_render]
    )
    apply = Figure("events", "page: apply one change (now)", "ms", delta_times)
    apply.compare(render)
    apply.note = "script time in Chromium, measured by the page (performance.now())"
    return [old, new, render, apply]
