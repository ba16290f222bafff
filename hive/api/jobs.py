"""HTTP and websocket routes. Thin: parse, call the engine, shape JSON.

Every error is a JSON object ``{"error": CODE, "message": ONE_LINE}`` with a
4xx/5xx status; see ``docs/api.md``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any, NoReturn

from quart import Response, jsonify, request, websocket
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from . import __version__
from .catalog import InvalidWorkerName, UnknownWorker
from .install import OPERATION, Installer, RecipeBroken
from .joblog import LogEntry, OutputEntry
from .jobs import Job, JobAlreadyEnded, JobEngine, JobNotFound
from .protocol import coalesce, encode_control, encode_output, output_event_json

log = logging.getLogger("hive.api")

MAX_BODY = 64 * 1024
JOB_ID = re.compile(r"^[0-9a-f]{12}$")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.extra = status, code, extra


def _fail(status: int, code: str, message: str, **extra: Any) -> NoReturn:
    raise ApiError(status, code, message, **extra)


def _error_response(status: int, code: str, message: str, **extra: Any) -> Response:
    response = jsonify({"error": code, "message": message, **extra})
    response.status_code = status
    return response


def create_app(engine: JobEngine, installer: Installer, *, layers: list[str]) -> QuartTrio:
    app = QuartTrio("hive")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.config["RESPONSE_TIMEOUT"] = None  # ?wait=true may outlast Quart's 60 s default

    @app.errorhandler(ApiError)
    async def api_error(exc: ApiError) -> Response:
        log.info("%s %s -> %d %s", request.method, request.path, exc.status, exc)
        return _error_response(exc.status, exc.code, str(exc), **exc.extra)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        return _error_response(exc.code or 500, code, exc.description or code)

    @app.errorhandler(Exception)
    async def internal_error(exc: Exception) -> Response:
        log.exception("internal error on %s %s", request.method, request.path)
        return _error_response(500, "internal_error", "internal error; see the hive's log")

    def find_job(job_id: str) -> Job:
        if not JOB_ID.match(job_id):
            _fail(400, "bad_job_id", f"malformed job id {job_id!r}: expected 12 hex digits")
        try:
            return engine.get(job_id)
        except JobNotFound:
            _fail(404, "unknown_job", f"no job {job_id}")

    @app.get("/v1/health")
    async def health() -> Response:
        jobs = engine.jobs()
        return jsonify(
            {
                "status": "ok",
                "version": __version__,
                "grace": engine.grace,
                "teardown_layers": layers,
                "jobs": {
                    "total": len(jobs),
                    "active": sum(not job.state.final for job in jobs),
                },
            }
        )

    @app.post("/v1/jobs")
    async def submit() -> tuple[Response, int]:
        body = await request.get_json(force=True, silent=True)
        if not isinstance(body, dict):
            _fail(400, "bad_request", "the body must be a JSON object")
        unknown = set(body) - {"operation", "worker"}
        if unknown:
            _fail(400, "bad_request", f"unknown field(s): {', '.join(sorted(unknown))}")
        if body.get("operation") != OPERATION:
            _fail(400, "bad_request", f'"operation" must be "{OPERATION}"')
        worker = body.get("worker")
        if not isinstance(worker, str):
            _fail(400, "bad_request", '"worker" must be a string')
        try:
            spec = await installer.plan(worker)
        except InvalidWorkerName as exc:
            _fail(400, "bad_worker_name", str(exc))
        except UnknownWorker as exc:
            _fail(404, "unknown_worker", str(exc))
        except RecipeBroken as exc:
            _fail(422, "broken_recipe", str(exc))
        job = engine.submit(spec)
        return jsonify(job.to_json()), 201

    @app.get("/v1/jobs")
    async def list_jobs() -> Response:
        return jsonify({"jobs": [job.to_json() for job in engine.jobs()]})

    @app.get("/v1/jobs/<job_id>")
    async def get_job(job_id: str) -> Response:
        return jsonify(find_job(job_id).to_json())

    @app.delete("/v1/jobs/<job_id>")
    async def cancel_job(job_id: str) -> tuple[Response, int]:
        job = find_job(job_id)
        wait = request.args.get("wait", "false").lower()
        if wait not in ("true", "false", "1", "0"):
            _fail(400, "bad_request", "wait must be true or false")
        who = f"DELETE from {request.remote_addr} ({request.headers.get('User-Agent', '?')})"
        try:
            engine.cancel(job.id, by=who)
        except JobAlreadyEnded:
            _fail(409, "job_ended", f"job {job.id} already ended: {job.state}", state=job.state)
        if wait in ("true", "1"):
            await job.ended.wait()
            return jsonify(job.to_json()), 200
        return jsonify(job.to_json()), 202

    @app.websocket("/v1/jobs/<job_id>/stream")
    async def stream(job_id: str) -> None:
        await websocket.accept()
        try:
            job = find_job(job_id)
            since = _int_arg(websocket.args.get("since", "0"), "since")
            fmt = websocket.args.get("format", "binary")
            if fmt not in ("binary", "json"):
                _fail(400, "bad_request", "format must be binary or json")
        except ApiError as exc:
            await websocket.close(4000 + exc.status, str(exc))
            return
        async for batch in job.log.follow(since):
            for frame in _frames(batch, json_output=fmt == "json"):
                await websocket.send(frame)
        await websocket.close(1000, "end of job")

    return app


def _int_arg(value: str, name: str) -> int:
    if not value.isdigit() or len(value) > 18:
        _fail(400, "bad_request", f"{name} must be a non-negative integer")
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
