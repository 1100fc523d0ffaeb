"""HTTP plumbing of the registry app: error bodies, body limit, request metrics.

Domain and validation errors are mapped to status codes here, in one place;
every non-2xx response has the body ``{"error": {"code", "message"}}``
(:class:`natroute.registry.models.ErrorBody`). Nothing a client sends can
produce a 500: unexpected exceptions are still answered with the same body
shape, counted and logged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .metrics import RegistryMetrics

__all__ = [
    "ApiError",
    "BodyLimitMiddleware",
    "RequestMetricsMiddleware",
    "error_response",
    "install_error_handlers",
]

_log = logging.getLogger(__name__)
_MAX_MESSAGE: Final = 500
_HTTP_CODES: Final = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


class ApiError(Exception):
    """A refusal with a status code, a snake_case code and a message."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def error_response(
    metrics: RegistryMetrics,
    status: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """Count the error and build its JSON response."""
    metrics.errors.labels(code=code).inc()
    body = {"error": {"code": code, "message": message[:_MAX_MESSAGE]}}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def _describe_validation(exc: RequestValidationError) -> tuple[int, str, str]:
    errors = list(exc.errors())
    if any(err.get("type") == "json_invalid" for err in errors):
        return 400, "malformed_json", "request body is not valid JSON"
    if any(tuple(err.get("loc", ())) == ("body",) for err in errors):
        message = "request body must be a JSON object (Content-Type: application/json)"
        return 422, "invalid_request", message
    parts = []
    for err in errors[:3]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
    return 422, "invalid_request", "; ".join(parts) + more


def install_error_handlers(app: FastAPI, metrics: RegistryMetrics) -> None:
    """Route every exception to the one error body shape."""

    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(metrics, exc.status, exc.code, exc.message, exc.headers)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        status, code, message = _describe_validation(exc)
        return error_response(metrics, status, code, message)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return error_response(metrics, exc.status_code, code, message, exc.headers)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        _log.error("request_failed", exc_info=exc, extra={"path": request.url.path})
        return error_response(metrics, 500, "internal", "internal error")

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with 413 before the app reads them.

    The body is buffered (it is small by construction) so the limit holds for
    chunked uploads without ``Content-Length`` too.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, metrics: RegistryMetrics) -> None:
        self._app = app
        self._max = max_bytes
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and (not value.isdigit() or int(value) > self._max):
                await self._refuse(scope, receive, send)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # client went away; let the app see a disconnect
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self._app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            self._metrics, 413, "body_too_large", f"request body exceeds {self._max} bytes"
        )
        await response(scope, receive, send)


class RequestMetricsMiddleware:
    """Count every response by route template (bounded label set) and status."""

    def __init__(self, app: ASGIApp, *, metrics: RegistryMetrics) -> None:
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self._app(scope, receive, capture)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self._metrics.requests.labels(route=template, status=str(status)).inc()
