"""Job routes: submit, list, inspect, cancel, the live stream, and the log."""

from __future__ import annotations

import logging
import re

import trio
from quart import Blueprint, Response, jsonify, request, websocket

from hivewire.names import InvalidWorkerName
from hivewire.protocol import Stream
from hivewire.stream import (
    CLOSE_BASE,
    LOG_GONE,
    Close,
    StreamRefused,
    StreamSender,
    close_reason,
    parse_query,
)

from ..catalog import UnknownWorker
from ..install import OPERATION, InstallInProgress, MissingDependencies, RecipeBroken
from ..joblog import LogUnavailable
from ..jobs import Job, JobAlreadyEnded, JobNotFound
from ..pkgbuild import ReaderUnavailable
from .context import followers, pace, services
from .errors import FOLLOWER_GONE, ApiError, fail, log_refusal, one_line
from .inputs import accepts, json_object, takes_body
from .pace import Follower

blueprint = Blueprint("jobs", __name__)

JOB_ID = re.compile(r"^[0-9a-f]{12}\Z")  # \Z: "$" would accept a final "\n"
SUBMIT_FIELDS = frozenset({"operation", "worker", "force", "skip_check"})

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
    except ReaderUnavailable as exc:
        # The request was fine; the machine cannot read recipes (sealed) now.
        fail(503, "reader_unavailable", f"cannot read the recipe of {worker!r} here now: {exc}")
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
        # Once the end event is written: its fsync, the record and what an
        # install settles then follow, and the answer need not wait for them.
        await job.concluded.wait()
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
    ``format=binary|json``. The rules are :class:`hivewire.stream.StreamSender`'s;
    this shell reads the job's log and moves its messages."""
    await websocket.accept()
    try:
        try:
            query = parse_query(websocket.args)
        except StreamRefused as exc:
            log_refusal(exc.code - CLOSE_BASE, "bad_request", exc.reason)
            raise
        try:
            job = find_job(job_id)
        except ApiError as exc:
            log_refusal(exc.status, exc.code, str(exc))
            raise StreamRefused(CLOSE_BASE + exc.status, str(exc)) from None
        sender = StreamSender(query)
        try:
            close = await _serve(job, sender)
        except LogUnavailable as exc:
            close = Close(LOG_GONE, str(exc))
        if close.client_first:
            # Let the client close first: hypercorn answers a client's close frame
            # from its reading task, and a close of ours sent at the same moment
            # collides with it on the socket.
            await _client_close_or_shutdown()
        await websocket.close(close.code, close_reason(close.reason))
    except StreamRefused as exc:
        await websocket.close(exc.code, close_reason(exc.reason))
    except FOLLOWER_GONE:
        log.debug("follower of job %s went away", job_id)


async def _serve(job: Job, sender: StreamSender) -> Close:
    """Send the job's events to the follower until the log has no more."""
    query, skip = sender.query, 0
    if query.tail_lines is not None:
        since, skip = await job.log.tail_start(query.tail_lines)
    elif query.latest:
        since = await job.log.latest()
    else:
        since = query.since
    last_seq, ends = await job.log.shown()
    first, close = sender.start(since=since, last_seq=last_seq, ends=ends, skip=skip)
    for message in first:
        await websocket.send(message)
    if close is not None:
        return close
    with followers().attach(job.id, job.log) as shared:
        sender.shared = shared.shared
        with pace().follower(shared.feed) as follower:
            await _follow(job, sender, follower)
    return sender.finish()


async def _follow(job: Job, sender: StreamSender, follower: Follower) -> None:
    """Send what the log holds and will hold after ``sender.position``, at most
    one batch per turn of the follower (see :mod:`hive.api.pace`).

    The turn comes *before* a send, and a follower that has read everything
    waits for the job's next write on its feed, which wakes it at its turn: so
    a line the job writes reaches a crowd of followers group by group over a
    round, not as a thousand wake-ups and sends at once. One that has output
    waiting reads it after its turn, so that what the job wrote meanwhile goes
    out in the same message.
    """
    log = job.log
    turn_due = False
    batches = log.follow(sender.position)
    while True:
        if log.last_seq == sender.position and not log.closed:
            await follower.news()  # at this follower's turn (at once if not crowded)
            turn_due = False
        elif turn_due:
            await follower.turn()
        batch = await anext(batches, None)
        if batch is None:
            return
        for message in sender.messages(batch):
            await websocket.send(message)
        turn_due = True


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
