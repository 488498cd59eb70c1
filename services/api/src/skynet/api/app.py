"""The application factory: ``create_app(settings)`` wires settings, pool, auth and routes.

Nothing connects here: the pool opens its first connection on the first query. Which routes
require a token is decided here, from the settings, so the OpenAPI description says exactly what
the running API enforces.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request, Response

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
    read = [] if open_api else [Depends(auth.require_read)]
    admin = [] if open_api else [Depends(auth.require_admin)]
    stream = [] if open_api else [Depends(auth.require_read_or_query)]

    app.include_router(health_router(), dependencies=[] if settings.api_open_health else read)
    app.include_router(read_router(), dependencies=read)
    app.include_router(stream_router(), dependencies=stream)
    app.include_router(admin_router(), dependencies=admin)
    app.include_router(metrics_router(), dependencies=[] if settings.api_open_metrics else read)
    dashboard.install(app, read)

    @app.middleware("http")
    async def access_log(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        """One line per request: method, path (never the query string: it may hold a token), status."""
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "<unmatched>")
        app.state.requests.inc(request.method, template, response.status_code)
        log.info(
            "%s %s %d %.1fms",
            request.method,
            request.url.path,
            response.status_code,
            (time.perf_counter() - started) * 1000,
        )
        return response

    return app
