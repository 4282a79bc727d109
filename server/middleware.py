"""ASGI middleware: telemetry of every API request, request ids, API keys, body-size limit.

Pure ASGI, so streams pass through untouched.
"""

from __future__ import annotations

import hmac
import re
import time
import uuid
from collections.abc import Iterable
from http import HTTPStatus

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import APIError
from server.telemetry import RequestRecord, Telemetry, record_of

REQUEST_ID_HEADER = "x-request-id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Routes anyone may call, whatever the keys. vllm-router 0.1.17 polls /get_load (a count of
# requests in flight) with no Authorization header, even when given --api-key (checked).
_OPEN_PATHS = frozenset({"/health", "/get_load"})


async def _send_error(scope: Scope, send: Send, error: APIError,
                      extra_headers: Iterable = ()) -> None:
    record = record_of(scope)
    if record is not None:
        record.error_code = error.code
    body = error.json()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    headers += list(extra_headers)
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def is_api_path(path: str) -> bool:
    """The requests telemetry counts: the API, not health checks, metrics, documentation, or
    the render calls a prefix-aware router makes to every replica for every request."""
    return path.startswith("/v1/") and not path.endswith("/render")


class TelemetryMiddleware:
    """Every API request is recorded once, whatever answers it: a route, validation, a refused
    key, a body over the limit. Routes fill in what they know (model, tokens, error code)."""

    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_api_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        record = RequestRecord(request_id="", endpoint=scope["path"], model="unknown")
        scope.setdefault("state", {})["record"] = record

        async def send_observed(message: Message) -> None:
            if message["type"] == "http.response.start" and not record.client_disconnected:
                record.status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            record.request_id = scope["state"].get("request_id", "")
            record.duration = time.perf_counter() - record.started
            self.telemetry.finish(record)


class RequestIdMiddleware:
    """Accept a valid X-Request-Id or make one; echo it on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, REQUEST_ID_HEADER.encode())
        if given is not None and not _VALID_REQUEST_ID.match(given):
            await _send_error(scope, send, APIError(
                HTTPStatus.BAD_REQUEST,
                "X-Request-Id must be 1-128 characters of letters, digits, '.', '_', ':', '-'.",
                param="X-Request-Id", code="invalid_request_id"))
            return
        request_id = given or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        raw = (REQUEST_ID_HEADER.encode(), request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), raw]
            await send(message)

        await self.app(scope, receive, send_with_id)


class ApiKeyMiddleware:
    """Require `Authorization: Bearer <key>` on every route but /health (and maybe /metrics).

    Admin routes (runtime adapter loading) take the admin keys instead, and only them: an API
    key handed to an app must not be able to change what the server serves."""

    def __init__(self, app: ASGIApp, keys: list[str], public_metrics: bool,
                 public_paths: Iterable[str] = (), admin_keys: Iterable[str] = (),
                 admin_paths: Iterable[str] = ()) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys]
        self.admin_keys = [k.encode() for k in admin_keys]
        self.admin_paths = frozenset(admin_paths)
        self.open_paths = (_OPEN_PATHS | ({"/metrics"} if public_metrics else set())
                           | frozenset(public_paths))

    @staticmethod
    def _authorized(scope: Scope, keys: list[bytes]) -> bool:
        header = _header(scope, b"authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        presented = token.strip().encode()
        # Compare against every key, without early exit, in constant time per key.
        matches = [hmac.compare_digest(presented, key) for key in keys]
        return any(matches)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in self.admin_paths and self.admin_keys:
            if self._authorized(scope, self.admin_keys):
                await self.app(scope, receive, send)
                return
            await _send_error(scope, send, APIError(
                HTTPStatus.UNAUTHORIZED,
                "This route needs the admin key (--admin-api-key): send 'Authorization: "
                "Bearer <admin key>'. API keys do not authorise it.",
                code="invalid_admin_key"), [(b"www-authenticate", b"Bearer")])
            return
        if scope["type"] != "http" or scope["path"] in self.open_paths or not self.keys:
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and _header(scope, b"origin"):
            await self.app(scope, receive, send)  # CORS preflight carries no credentials
            return
        if not self._authorized(scope, self.keys):
            await _send_error(scope, send, APIError(
                HTTPStatus.UNAUTHORIZED,
                "Missing or invalid API key. Send 'Authorization: Bearer <key>'.",
                code="invalid_api_key"), [(b"www-authenticate", b"Bearer")])
            return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """413 for bodies over the limit, whether announced by Content-Length or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _error(self) -> APIError:
        return APIError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        f"Request body larger than {self.max_bytes} bytes (--max-body-bytes).",
                        code="request_too_large")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await _send_error(scope, send, self._error())
            return
        # Read the body here (the app would buffer it anyway), so that one streamed without a
        # Content-Length is refused at the limit, before the app sees a byte of it.
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            received += len(chunks[-1])
            if received > self.max_bytes:
                await _send_error(scope, send, self._error())
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # then: disconnects, as the client sends them

        await self.app(scope, replay, send)
