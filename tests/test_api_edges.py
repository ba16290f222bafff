"""What docs/api.md promises at its edges: the job list's deltas, refresh's
``changed``, and a cancelled queued job's ``teardown: null``. Real hives."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import trio
from trio_websocket import open_websocket_url

from .support import TEST_RECIPES, Hive, running_hive


async def next_event(ws: Any) -> dict[str, Any]:
    with trio.fail_after(30):
        event: dict[str, Any] = json.loads(await ws.get_message())
    return event


async def wait_ended(client: Any, job_id: str) -> dict[str, Any]:
    with trio.fail_after(60):
        while True:
            job: dict[str, Any] = (await client.get(f"/v1/jobs/{job_id}")).json()
            if job["state"] in ("succeeded", "failed", "cancelled"):
                return job
            await trio.sleep(0.05)


async def test_events_are_a_snapshot_then_one_message_per_changed_job(hive: Hive) -> None:
    install = {"operation": "worker_download", "worker": "chatty", "force": True}
    async with hive.client() as client:
        first = (await client.post("/v1/jobs", json=install)).json()
        await wait_ended(client, first["id"])
        async with open_websocket_url(
            hive.ws_url("/v1/events"), extra_headers=hive.ws_headers()
        ) as ws:
            snapshot = await next_event(ws)
            assert snapshot["type"] == "snapshot"
            assert snapshot["jobs"] == [(await client.get(f"/v1/jobs/{first['id']}")).json()]
            second = (await client.post("/v1/jobs", json=install)).json()
            states: list[str] = []
            shown: list[dict[str, Any]] = []
            while not states or states[-1] != "succeeded":
                event = await next_event(ws)
                assert event["type"] == "job" and set(event) == {"type", "job"}, event
                assert event["job"] not in shown  # a message is a change
                shown.append(event["job"])
                if event["job"]["id"] == second["id"]:
                    states.append(event["job"]["state"])
            assert len(states) == len(set(states)) and states[0] in ("queued", "running"), states
        # A watcher that comes later gets the list as it is now.
        async with open_websocket_url(
            hive.ws_url("/v1/events"), extra_headers=hive.ws_headers()
        ) as ws:
            later = await next_event(ws)
        assert later["type"] == "snapshot"
        assert [job["id"] for job in later["jobs"]] == [first["id"], second["id"]]
        assert later["jobs"][1] == (await client.get(f"/v1/jobs/{second['id']}")).json()


async def test_retention_sends_removed(tmp_path: Path) -> None:
    async with (
        running_hive(tmp_path / "state", extra=["--keep-jobs", "1"]) as hive,
        hive.client() as client,
        open_websocket_url(hive.ws_url("/v1/events"), extra_headers=hive.ws_headers()) as ws,
    ):
        assert (await next_event(ws))["type"] == "snapshot"
        ids = []
        for worker, final in (("chatty", "succeeded"), ("fails", "failed")):
            body = {"operation": "worker_download", "worker": worker}
            ids.append((await client.post("/v1/jobs", json=body)).json()["id"])
            while True:
                event = await next_event(ws)
                job = event.get("job", {})
                if job.get("state") == final and job.get("id") == ids[-1]:
                    break
        while True:
            event = await next_event(ws)
            if event["type"] == "removed":
                break
        assert event["ids"] == [ids[0]]


async def test_refresh_says_whether_a_directory_catalog_changed(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    shutil.copytree(TEST_RECIPES / "chatty", catalog / "chatty")
    async with running_hive(tmp_path / "state", catalog=catalog) as hive, hive.client() as client:
        refresh = "/v1/catalog/refresh"
        assert (await client.post(refresh)).json()["changed"] is False
        shutil.copytree(TEST_RECIPES / "sleeper", catalog / "sleeper")
        answer = (await client.post(refresh, json={})).json()
        assert answer["changed"] is True and answer["workers"] == 2
        assert (await client.post(refresh)).json()["changed"] is False
        (catalog / "sleeper" / "PKGBUILD").write_text(
            (catalog / "sleeper" / "PKGBUILD").read_text() + "\n# edited\n"
        )
        assert (await client.post(refresh)).json()["changed"] is True
        refused = await client.post(refresh, json={"force": True})
        assert refused.status_code == 400 and refused.json()["error"] == "bad_request"


async def test_a_cancelled_queued_job_has_no_teardown(tmp_path: Path) -> None:
    async with (
        running_hive(tmp_path / "state", extra=["--max-parallel", "1"]) as hive,
        hive.client() as client,
    ):
        running = (
            await client.post(
                "/v1/jobs", json={"operation": "worker_download", "worker": "sleeper"}
            )
        ).json()
        queued = (
            await client.post("/v1/jobs", json={"operation": "worker_download", "worker": "chatty"})
        ).json()
        assert queued["state"] == "queued"
        done = await client.delete(f"/v1/jobs/{queued['id']}", params={"wait": "true"})
        assert done.status_code == 200
        job = done.json()
        assert job["state"] == "cancelled"
        assert job["teardown"] is None and job["pid"] is None and job["exit_code"] is None
        await client.delete(f"/v1/jobs/{running['id']}", params={"wait": "true"})
