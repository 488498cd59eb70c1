"""Errors as JSON ``{"error": "...", "detail": ...}`` with the right status, and never a secret.

Messages come from skynet errors (whose ``reason`` is secret-free by contract) or are fixed
strings; a driver's own message never reaches a response.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from skynet.api.db import DatabaseUnavailable, InvalidInput
from skynet.api.models import Error
from skynet.api.queries import BadCursor
from skynet.common.admin import NotDelivered
from skynet.common.errors import BrokerUnavailable

log = logging.getLogger(__name__)

WWW_AUTHENTICATE = {"WWW-Authenticate": 'Bearer realm="skynet"'}


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers


def _json(status: int, error: str, detail: Any = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(Error(error=error, detail=detail).model_dump(), status_code=status, headers=headers)


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error responses a route may give."""
    text = {
        400: "the body is not JSON",
        401: "missing or unknown token",
        403: "this token may not do that",
        404: "not found",
        409: "ambiguous: pass ?source=",
        422: "invalid request",
        503: "database or broker unavailable",
    }
    return {code: {"model": Error, "description": text.get(code, "error")} for code in codes}


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return _json(exc.status, exc.error, exc.detail, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "error"
        return _json(exc.status_code, message, None, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [
            {"loc": [str(p) for p in err.get("loc", ())], "msg": str(err.get("msg", "")), "type": str(err.get("type"))}
            for err in exc.errors()[:20]
        ]
        return _json(422, "invalid request", detail)

    @app.exception_handler(BadCursor)
    async def _bad_cursor(_request: Request, exc: BadCursor) -> JSONResponse:
        return _json(422, "invalid cursor", "pass a next_cursor value from a previous page")

    @app.exception_handler(InvalidInput)
    async def _bad_input(_request: Request, exc: InvalidInput) -> JSONResponse:
        return _json(422, "invalid request", "a parameter contains characters that cannot be stored")

    @app.exception_handler(DatabaseUnavailable)
    async def _db_down(_request: Request, exc: DatabaseUnavailable) -> JSONResponse:
        log.warning("database: %s", exc)
        return _json(503, str(exc), None, {"Retry-After": "5"})

    @app.exception_handler(BrokerUnavailable)
    async def _broker_down(_request: Request, exc: BrokerUnavailable) -> JSONResponse:
        log.warning("broker: %s", exc)
        return _json(503, "broker unavailable", None, {"Retry-After": "5"})

    @app.exception_handler(NotDelivered)
    async def _not_delivered(_request: Request, exc: NotDelivered) -> JSONResponse:
        return _json(404, "nobody listens for that source", str(exc))

    @app.exception_handler(Exception)
    async def _crash(_request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error: %s", type(exc).__name__, exc_info=exc)
        return _json(500, "internal error")
