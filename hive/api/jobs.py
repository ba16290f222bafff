"""Job routes: submit, list, inspect, cancel, the live stream, and the log."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass

import trio
from quart import Blueprint, Response, jsonify, request, websocket

from hivewire.names import InvalidWorkerName
from hivewire.protocol import (
    ControlEvent,
    Stream,
    coalesce,
    encode_control,
    encode_output,
    encode_start,
    output_event_json,
)

from ..catalog import UnknownWorker
from ..install import OPERATION, InstallInProgress, MissingDependencies, RecipeBroken
from ..joblog import LogEntry, LogUnavailable, OutputEntry
from ..jobs import Job, JobAlreadyEnded, JobNotFound
from .context import pace, services
from .errors import (
    CLOSE_BASE,
    FOLLOWER_GONE,
    ApiError,
    close_reason,
    fail,
    log_refusal,
    one_line,
)
from .inputs import accepts, json_object, takes_body

blueprint = Blueprint("jobs", __name__)

JOB_ID = re.compile(r"^[0-9a-f]{12}\Z")  # \Z: "$" would accept a final "\n"
SUBMIT_FIELDS = frozenset({"operation", "worker", "force", "skip_check"})

#: The job's log cannot be read to its end (removed by retention, damaged).
CLOSE_LOG_GONE = 4410

#: After the ``end`` event, how long the client gets to close the websocket.
CLIENT_CLOSE_WAIT = 5.0

log = logging.getLogger("hive.api")


def find_job(job_id: str) -> Job:
    if not JOB_ID.match(job_id):
        fail(400, "bad_job_id", f"malformed job id {job_id!r}: expected 12 hex digits")
    try:
        return services().engine.get(job_id)
    except JobNotFound:
        fail(404, "unknown_job", f"no job {job_id}")


@blueprint.post("/v1/jobs")
@takes_body
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


@blueprint.get("/v1/jobs/<job_id>/log")
@accepts("stream")
async def job_log(job_id: str) -> Response:
    """The exact bytes the job wrote to stdout (or ``?stream=stderr``) so far,
    streamed from its log file."""
    name = request.args.get("stream", "stdout")
    if name not in ("stdout", "stderr"):
        fail(400, "bad_request", "stream must be stdout or stderr")
    job = find_job(job_id)
    response = Response(job.log.output(Stream[name.upper()]), mimetype="application/octet-stream")
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.websocket("/v1/jobs/<job_id>/stream")
@accepts("since", "format", "tail_lines")
async def stream(job_id: str) -> None:
    """Query: ``since=SEQ`` (default 0) or ``since=latest``, or ``tail_lines=N``;
    ``format=binary|json``. See :mod:`hivewire.protocol`."""
    await websocket.accept()
    try:
        fmt = websocket.args.get("format", "binary")
        if fmt not in ("binary", "json"):
            fail(400, "bad_request", "format must be binary or json")
        start = _start_query()
        job = find_job(job_id)
        since, skip, announce = await _stream_start(job, start)
    except ApiError as exc:
        log_refusal(exc.status, exc.code, str(exc))
        await websocket.close(CLOSE_BASE + exc.status, close_reason(str(exc)))
        return
    except LogUnavailable as exc:
        await websocket.close(CLOSE_LOG_GONE, close_reason(str(exc)))
        return
    try:
        if announce:
            await websocket.send(encode_start(since))
        try:
            ended = await _send_events(job, since, skip, json_output=fmt == "json")
        except LogUnavailable as exc:
            await websocket.close(CLOSE_LOG_GONE, close_reason(str(exc)))
            return
        if not ended:
            await websocket.close(CLOSE_LOG_GONE, "the job's log ends before its end event")
            return
        # Let the client close first: hypercorn answers a client's close frame
        # from its reading task, and a close of ours sent at the same moment
        # collides with it on the socket.
        await _client_close_or_shutdown()
        await websocket.close(1000, "end of job")
    except FOLLOWER_GONE:
        log.debug("follower of job %s went away", job.id)


async def _send_events(job: Job, since: int, skip: int, *, json_output: bool) -> bool:
    """Send the job's events after ``since`` (the first one without ``skip``
    bytes) until the log is closed; return whether the last was ``end``."""
    ended = False
    with pace().follower() as follower:
        async for batch in job.log.follow(since):
            if skip:
                first = batch[0]
                assert isinstance(first, OutputEntry)
                batch[0] = OutputEntry(first.seq, first.stream, first.data[skip:])
                skip = 0
            for frame in _frames(batch, json_output=json_output):
                await websocket.send(frame)
            last = batch[-1]
            ended = isinstance(last, ControlEvent) and last.type == "end"
            if not ended:
                await follower.sent()
    return ended


@dataclass(frozen=True)
class StartQuery:
    """Where the stream's query says to start: after ``since``, at the job's
    latest event, or ``tail_lines`` lines before the end of its stdout."""

    since: int = 0
    latest: bool = False
    tail_lines: int | None = None


async def _client_close_or_shutdown() -> None:
    """Wait up to CLIENT_CLOSE_WAIT for the client to close, but not once the
    hive is shutting down: then it closes at once, so that every follower
    gets a close frame before the server stops."""
    stopping = services().stopping
    with trio.move_on_after(CLIENT_CLOSE_WAIT):
        async with trio.open_nursery() as nursery:

            async def receive() -> None:
                await websocket.receive()
                nursery.cancel_scope.cancel()

            nursery.start_soon(receive)
            await stopping.wait()
            nursery.cancel_scope.cancel()


def _start_query() -> StartQuery:
    """Parse ``since``/``tail_lines``; checked before the job is looked up, so
    that a malformed query is a 400 whether or not the job exists."""
    since = websocket.args.get("since")
    tail_lines = websocket.args.get("tail_lines")
    if tail_lines is not None:
        if since is not None:
            fail(400, "bad_request", "give since or tail_lines, not both")
        return StartQuery(tail_lines=_int_arg(tail_lines, "tail_lines"))
    if since == "latest":
        return StartQuery(latest=True)
    return StartQuery(since=0 if since is None else _int_arg(since, "since"))


async def _stream_start(job: Job, start: StartQuery) -> tuple[int, int, bool]:
    """``(since, skip, announce)``: follow after ``since``, drop ``skip`` bytes
    of the first entry, and send a start frame first if the client could not
    know ``since``."""
    if start.tail_lines is not None:
        since, skip = await job.log.tail_start(start.tail_lines)
        return since, skip, True
    if start.latest:
        return await job.log.latest(), 0, True
    return start.since, 0, False


def _int_arg(value: str, name: str) -> int:
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        extra = ' or "latest"' if name == "since" else ""
        fail(400, "bad_request", f"{name} must be a non-negative integer{extra}")
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
