"""The application factory: ``create_app(settings)`` wires settings, pool, auth and routes.

Nothing connects here: the pool opens its first connection on the first query. Which routes
require a token is decided here, from the settings, so the OpenAPI description says exactly what
the running API enforces.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from skynet.api import auth, dashboard, errors
from skynet.api.admin_routes import admin_router
from skynet.api.broker import QueueMonitor
from skynet.api.db import Database
from skynet.api.metrics import RequestCounter
from skynet.api.routes import health_router, metrics_router, read_router
from skynet.api.settings import ApiSettings
from skynet.api.stream import stream_router

log = logging.getLogger("skynet.api.access")

DESCRIPTION = """\
Status of a skynet mirror: files and their states, transfers in progress, workers, failures,
the event log (paged and live) and admin actions.

Auth: `Authorization: Bearer <token>` with the read token (`SKYNET_API_TOKEN`) or the admin
token (`SKYNET_API_ADMIN_TOKEN`, needed for `/v1/admin/*`). The live stream also accepts
`?token=`. Errors are JSON: `{"error": "...", "detail": ...}`.
"""


def create_app(settings: ApiSettings, *, db: Database | None = None) -> FastAPI:
    database = db or Database(settings.database_url.get_secret_value(), pool_size=settings.api_db_pool_size)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        database.close()

    app = FastAPI(title="skynet API", version="1.0.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.db = database
    app.state.auth = auth.Authenticator(
        settings.api_token.get_secret_value() if settings.api_token else None,
        settings.api_admin_token.get_secret_value() if settings.api_admin_token else None,
    )
    app.state.queues = (
        QueueMonitor(settings.amqp_url.get_secret_value(), settings.api_queue_cache_s) if settings.amqp_url else None
    )
    app.state.requests = RequestCounter()
    errors.install(app)

    open_api = settings.api_insecure_no_auth and settings.api_token is None and settings.api_admin_token is None
    read = [] if open_api else [Depends(auth.read_access)]
    admin = [] if open_api else [Depends(auth.admin_access)]
    stream = [] if open_api else [Depends(auth.stream_access)]

    app.include_router(health_router(), dependencies=[] if settings.api_open_health else read)
    app.include_router(read_router(), dependencies=read)
    app.include_router(stream_router(), dependencies=stream)
    app.include_router(admin_router(), dependencies=admin)
    app.include_router(metrics_router(), dependencies=[] if settings.api_open_metrics else read)
    app.add_middleware(AccessLog, counter=app.state.requests)
    dashboard.install(app, read)

    return app


class AccessLog:
    """One log line per request — method, path (never the query string: it may hold a token),
    status, duration — and the request counter of /metrics. A plain ASGI middleware: it does not
    buffer or re-wrap responses, so the event stream flows through untouched."""

    def __init__(self, app: ASGIApp, counter: RequestCounter) -> None:
        self.app = app
        self.counter = counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            template = getattr(scope.get("route"), "path", "<unmatched>")
            self.counter.inc(scope["method"], template, status)
            log.info("%s %s %d %.1fms", scope["method"], scope["path"], status, (time.perf_counter() - started) * 1000)
