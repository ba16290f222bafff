"""Who may talk to the hive: every access check of the API, in one place.

Every request and every websocket handshake passes three checks, in
``before_request``/``before_websocket`` hooks, before any route runs:

1. ``Host`` names this hive: ``localhost``, an IP address, or a name given
   with ``--allow-host``. A page on ``evil.example`` whose DNS name was rebound
   to 127.0.0.1 sends ``Host: evil.example`` and is refused (DNS rebinding).
   An IP literal cannot be rebound, so it is always accepted.
2. ``Origin``, when present (browsers send it; the keeper does not), is the
   origin of the request itself or one given with ``--allow-origin``. This
   stops cross-site websockets (browsers apply no same-origin policy to them)
   and cross-origin requests from another port of the same host, which share
   the browser's cookies.
3. Credentials: ``Authorization: Bearer TOKEN``, or the session cookie a
   browser gets from ``POST /v1/session``. Tokens are compared in constant
   time. A failure says only ``unauthorized``.

The hive sends no CORS headers at all, so no other origin can read a response.
Routes know nothing of this; a route that must be reachable without
credentials (a login page) is marked with :func:`public`.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from quart import Blueprint, Response, current_app, has_websocket_context, jsonify, request
from quart import websocket as ws_context
from quart_trio import QuartTrio

from .errors import fail
from .inputs import accepts, json_object, takes_body

log = logging.getLogger("hive.api")

COOKIE = "hive_session"
LOCAL_NAMES = frozenset({"localhost"})
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Access:
    """The hive's access policy: its token and the extra hosts and origins it trusts."""

    token: str
    allowed_hosts: frozenset[str] = frozenset()
    allowed_origins: frozenset[str] = frozenset()
    #: Served over TLS: the session cookie gets the ``Secure`` attribute.
    tls: bool = False

    @classmethod
    def build(
        cls,
        token: str,
        *,
        hosts: Iterable[str] = (),
        origins: Iterable[str] = (),
        tls: bool = False,
    ) -> Access:
        """Normalise ``--allow-host``/``--allow-origin`` values; ValueError if malformed."""
        return cls(
            token,
            frozenset(normalise_host(h) for h in hosts),
            frozenset(normalise_origin(o) for o in origins),
            tls,
        )

    def session_value(self) -> str:
        """The session cookie's value: derived from the token, so it survives
        restarts, dies with the token, and does not reveal it."""
        return hmac.new(self.token.encode(), b"hive-session-v1", hashlib.sha256).hexdigest()


def normalise_host(host: str) -> str:
    """``--allow-host`` value → lowercase host name without port."""
    name = (urlsplit("//" + host.strip()).hostname or "").lower()
    if not name or "/" in host:
        raise ValueError(f"not a host name: {host!r}")
    return name


def normalise_origin(origin: str) -> str:
    """``scheme://host[:port]`` with the default port made explicit; ValueError otherwise."""
    parts = urlsplit(origin.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an origin (scheme://host[:port]): {origin!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"an origin has no path, query or user: {origin!r}")
    port = parts.port or DEFAULT_PORTS[parts.scheme]
    return f"{parts.scheme}://{parts.hostname.lower()}:{port}"


def host_allowed(host_header: str, allowed: frozenset[str]) -> bool:
    """Whether a ``Host`` header names this hive (see the module docstring)."""
    try:
        name = (urlsplit("//" + host_header).hostname or "").lower()
        _ = urlsplit("//" + host_header).port  # ValueError for a bad port
    except ValueError:
        return False
    if not name or any(c in host_header for c in "/?#@\\"):
        return False
    if name in LOCAL_NAMES or name in allowed:
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def origin_allowed(origin: str, scheme: str, host_header: str, allowed: frozenset[str]) -> bool:
    """Whether a browser ``Origin`` may talk to this hive: its own or an allowed one."""
    try:
        normal = normalise_origin(origin)
    except (ValueError, KeyError):
        return False  # includes "null" (sandboxed frames, file: pages)
    if normal in allowed:
        return True
    own_scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    try:
        own = normalise_origin(f"{own_scheme}://{host_header}")
    except (ValueError, KeyError):
        return False
    return hmac.compare_digest(normal, own)


def public(view: F) -> F:
    """Mark a route as reachable without credentials (Host/Origin checks still apply)."""
    view.hive_public = True  # type: ignore[attr-defined]
    return view


def _token_ok(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode())


def _bearer(header: str | None) -> str | None:
    scheme, _, value = (header or "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _unauthorized() -> None:
    fail(401, "unauthorized", "missing or invalid token")


def _check(access: Access) -> None:
    """The checks shared by HTTP requests and websocket handshakes."""
    current = ws_context if has_websocket_context() else request
    host = current.headers.get("Host", "")
    if not host_allowed(host, access.allowed_hosts):
        fail(403, "forbidden_host", "this hive does not answer to that Host (see --allow-host)")
    origin = current.headers.get("Origin")
    if origin is not None and not origin_allowed(
        origin, current.scheme, host, access.allowed_origins
    ):
        fail(403, "forbidden_origin", "cross-origin requests are refused (see --allow-origin)")
    view = current_app.view_functions.get(current.endpoint or "")
    if not getattr(view, "hive_public", False):
        token = _bearer(current.headers.get("Authorization"))
        if token is not None:
            if not _token_ok(token, access.token):
                _unauthorized()
        else:
            cookie = current.cookies.get(COOKIE)
            if cookie is None or not _token_ok(cookie, access.session_value()):
                _unauthorized()


def install(app: QuartTrio, access: Access) -> None:
    """Guard every route of ``app`` with ``access``; add the browser session routes."""

    async def guard() -> None:
        _check(access)

    app.before_request(guard)
    app.before_websocket(guard)
    app.register_blueprint(_session_blueprint(access))


def _session_blueprint(access: Access) -> Blueprint:
    blueprint = Blueprint("session", __name__)

    @blueprint.post("/v1/session")
    @public
    @accepts()
    @takes_body
    async def login() -> Response:
        """Trade the token (JSON ``{"token": ...}`` or a Bearer header; if both,
        both must be right) for an HttpOnly cookie, so that a browser page never
        keeps the token in a URL, in history or in storage that scripts can read."""
        given = [_bearer(request.headers.get("Authorization"))]
        if await request.get_data():
            body = await json_object(frozenset({"token"}))
            if not isinstance(body.get("token", ""), str):
                fail(400, "bad_request", '"token" must be a string')
            given.append(body.get("token"))
        tokens = [token for token in given if token is not None]
        if not tokens or not all(_token_ok(token, access.token) for token in tokens):
            _unauthorized()
        response = jsonify({"status": "ok"})
        response.set_cookie(
            COOKIE,
            access.session_value(),
            httponly=True,
            samesite="Strict",
            secure=access.tls,
            path="/",
        )
        return response

    @blueprint.delete("/v1/session")
    @public
    @accepts()
    async def logout() -> Response:
        response = jsonify({"status": "ok"})
        response.delete_cookie(
            COOKIE, httponly=True, samesite="Strict", secure=access.tls, path="/"
        )
        return response

    return blueprint
