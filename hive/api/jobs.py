"""Job routes: submit, list, inspect, cancel, and the live stream."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import trio
from quart import Blueprint, Response, jsonify, request, websocket

from ..catalog import InvalidWorkerName, UnknownWorker
from ..install import OPERATION, InstallInProgress, MissingDependencies, RecipeBroken
from ..joblog import LogEntry, OutputEntry
from ..jobs import Job, JobAlreadyEnded, JobNotFound
from ..protocol import coalesce, encode_control, encode_output, output_event_json
from .context import services
from .errors import ApiError, fail, log_refusal, one_line
from .inputs import accepts, json_object

blueprint = Blueprint("jobs", __name__)

JOB_ID = re.compile(r"^[0-9a-f]{12}\Z")  # \Z: "$" would accept a final "\n"
SUBMIT_FIELDS = frozenset({"operation", "worker", "force", "skip_check"})

#: Websocket close codes for a refused stream: 4000 + the HTTP status.
CLOSE_BASE = 4000

#: After the ``end`` event, how long the client gets to close the websocket.
CLIENT_CLOSE_WAIT = 5.0

#: What sending to a follower that went away raises. It ends that follower,
#: never the job.
FOLLOWER_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError)

log = logging.getLogger("hive.api")


def find_job(job_id: str) -> Job:
    if not JOB_ID.match(job_id):
        fail(400, "bad_job_id", f"malformed job id {job_id!r}: expected 12 hex digits")
    try:
        return services().engine.get(job_id)
    except JobNotFound:
        fail(404, "unknown_job", f"no job {job_id}")


@blueprint.post("/v1/jobs")
async def submit() -> tuple[Response, int]:
    body = await json_object(SUBMIT_FIELDS)
    if body.get("operation") != OPERATION:
        fail(400, "bad_request", f'"operation" must be "{OPERATION}"')
    worker = body.get("worker")
    if not isinstance(worker, str):
        fail(400, "bad_request", '"worker" must be a string')
    flags = {name: body.get(name, False) for name in ("force", "skip_check")}
    for name, value in flags.items():
        if not isinstance(value, bool):
            fail(400, "bad_request", f'"{name}" must be true or false')
    try:
        job = await services().installer.install(worker, **flags)
    except InvalidWorkerName as exc:
        fail(400, "bad_worker_name", str(exc))
    except UnknownWorker as exc:
        fail(404, "unknown_worker", str(exc))
    except InstallInProgress as exc:
        fail(409, "install_in_progress", str(exc), job_id=exc.job_id)
    except RecipeBroken as exc:
        fail(422, "broken_recipe", str(exc))
    except MissingDependencies as exc:
        fail(422, "missing_dependencies", str(exc), missing=exc.missing)
    return jsonify(job.to_json()), 201


@blueprint.get("/v1/jobs")
async def list_jobs() -> Response:
    return jsonify({"jobs": [job.to_json() for job in services().engine.jobs()]})


@blueprint.get("/v1/jobs/<job_id>")
async def get_job(job_id: str) -> Response:
    return jsonify(find_job(job_id).to_json())


@blueprint.delete("/v1/jobs/<job_id>")
@accepts("wait")
async def cancel_job(job_id: str) -> tuple[Response, int]:
    wait = request.args.get("wait", "false")
    if wait not in ("true", "false", "1", "0"):
        fail(400, "bad_request", "wait must be true or false")
    job = find_job(job_id)
    agent = one_line(request.headers.get("User-Agent", "?"), 80)
    who = f"DELETE from {request.remote_addr} ({agent})"
    try:
        services().engine.cancel(job.id, by=who)
    except JobAlreadyEnded:
        fail(409, "job_ended", f"job {job.id} already ended: {job.state}", state=job.state)
    if wait in ("true", "1"):
        await job.ended.wait()
        return jsonify(job.to_json()), 200
    return jsonify(job.to_json()), 202


@blueprint.websocket("/v1/jobs/<job_id>/stream")
@accepts("since", "format")
async def stream(job_id: str) -> None:
    await websocket.accept()
    try:
        since = _int_arg(websocket.args.get("since", "0"), "since")
        fmt = websocket.args.get("format", "binary")
        if fmt not in ("binary", "json"):
            fail(400, "bad_request", "format must be binary or json")
        job = find_job(job_id)
    except ApiError as exc:
        log_refusal(exc.status, exc.code, str(exc))
        await websocket.close(CLOSE_BASE + exc.status, close_reason(str(exc)))
        return
    try:
        async for batch in job.log.follow(since):
            for frame in _frames(batch, json_output=fmt == "json"):
                await websocket.send(frame)
        # Let the client close first: hypercorn answers a client's close frame
        # from its reading task, and a close of ours sent at the same moment
        # collides with it on the socket.
        with trio.move_on_after(CLIENT_CLOSE_WAIT):
            await websocket.receive()
        await websocket.close(1000, "end of job")
    except FOLLOWER_GONE:
        log.debug("follower of job %s went away", job.id)


def close_reason(text: str) -> str:
    """A websocket close reason: one line of ASCII within the protocol's 123 bytes."""
    return one_line(text.encode("ascii", "backslashreplace").decode("ascii"), 120)


def _int_arg(value: str, name: str) -> int:
    if not value.isdigit() or len(value) > 18:
        fail(400, "bad_request", f"{name} must be a non-negative integer")
    return int(value)


def _frames(batch: list[LogEntry], *, json_output: bool) -> Iterator[bytes | str]:
    """Websocket messages for a batch of log entries, output coalesced."""
    run: list[OutputEntry] = []
    for entry in [*batch, None]:
        if isinstance(entry, OutputEntry):
            run.append(entry)
            continue
        if run:
            if json_output:
                for out in run:
                    yield output_event_json(out.stream, out.seq, out.data)
            else:
                for chunk in coalesce((out.seq, out.stream, out.data) for out in run):
                    yield encode_output(chunk.stream, chunk.first, chunk.last, chunk.data)
            run = []
        if entry is not None:
            yield encode_control(entry.seq, entry.body)
