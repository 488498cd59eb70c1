"""The web dashboard: one page at ``/``, its static files, and the two endpoints it needs.

The page and its static files hold no data and are served without a token: the page asks for
one (kept in the browser's sessionStorage) and sends it with every data call, as
``Authorization: Bearer`` — and as ``?token=`` for the event stream, which EventSource cannot
give headers. ``GET /v1/whoami`` tells the page which role its token has (to show the retry
buttons only to an admin); ``GET /v1/throughput`` gives files and bytes done per minute.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import FileResponse
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.staticfiles import StaticFiles

from skynet.api import auth, dashboard_queries
from skynet.api.dashboard_models import ThroughputSeries, WhoAmI
from skynet.api.db import Database
from skynet.api.errors import responses
from skynet.common.messages import SOURCE_PATTERN

STATIC_DIR = Path(__file__).parent / "static"

# The page loads only its own script and style sheet and talks only to this API.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _role(request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(auth.bearer)]) -> auth.Role:
    """The token's role; an open API (no token configured, on purpose) lets anyone act as admin."""
    if request.app.state.dashboard_open:
        return "admin"
    return auth.require_read(request, creds)


RoleDep = Annotated[auth.Role, Depends(_role)]


def page_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=PAGE_HEADERS)

    return router


def data_router() -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["dashboard"])

    @router.get("/whoami", response_model=WhoAmI, responses=responses(401), summary="The role of the token sent")
    def whoami(role: RoleDep) -> WhoAmI:
        return WhoAmI(role=role)

    @router.get(
        "/throughput",
        response_model=ThroughputSeries,
        responses=responses(401, 422, 503),
        summary="Files and bytes done per minute, the last minutes",
    )
    def throughput(
        request: Request,
        _role: RoleDep,
        minutes: Annotated[int, Query(ge=1, le=1440, description="how many minutes, the current one included")] = 60,
        source: Annotated[str | None, Query(pattern=SOURCE_PATTERN, description="only this source")] = None,
    ) -> ThroughputSeries:
        db: Database = request.app.state.db
        return ThroughputSeries(items=db.run(dashboard_queries.throughput, minutes=minutes, source=source))

    return router


def install(app: FastAPI, read: list[Any]) -> None:
    """Add the page, its static files and its endpoints; ``read`` empty means an open API."""
    app.state.dashboard_open = not read
    app.include_router(page_router())
    app.include_router(data_router())
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
