"""The read endpoints: health, status, files, transfers, workers, failures, events, metrics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from skynet.api import metrics, queries
from skynet.api.broker import QueueMonitor, dead_letters
from skynet.api.db import Database, DatabaseUnavailable
from skynet.api.errors import ApiError, responses
from skynet.api.models import (
    Check,
    EventPage,
    FileDetail,
    FilePage,
    Health,
    Ready,
    State,
    Status,
    TransferList,
    WorkerList,
)
from skynet.api.settings import ApiSettings
from skynet.common.messages import SOURCE_PATTERN

NO_NUL = r"^[^\x00]*$"
ERROR_REF = {"$ref": "#/components/schemas/Error"}
SourceQ = Annotated[str | None, Query(pattern=SOURCE_PATTERN, description="only this source")]
LimitQ = Annotated[int, Query(ge=1, le=1000, description="page size")]
CursorQ = Annotated[str | None, Query(max_length=20_000, pattern=r"^[A-Za-z0-9_-]*$", description="next_cursor")]


async def _db_dep(request: Request) -> Database:
    return _db(request)


def _db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def _settings(request: Request) -> ApiSettings:
    s: ApiSettings = request.app.state.settings
    return s


DbDep = Annotated[Database, Depends(_db_dep)]


def full_status(request: Request, source: str | None = None) -> Status:
    """Every source's picture, or only ``source``'s (its queues, plus the shared event queues)."""
    db = _db(request)
    settings = _settings(request)
    st = db.run(queries.status, worker_stale_s=settings.api_worker_stale_s, source=source)
    monitor: QueueMonitor | None = request.app.state.queues
    if monitor is not None:
        sources = {source} if source is not None else set(settings.api_sources) | set(st.sources)
        depths, error = monitor.depths(sources)
        st = st.model_copy(
            update={
                "queues": depths,
                "dead_letters": dead_letters(depths) if depths is not None else None,
                "broker_error": error,
            }
        )
    return st


def health_router() -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz", response_model=Health, summary="The process is up")
    def healthz() -> Health:
        return Health()

    @router.get(
        "/readyz",
        response_model=Ready,
        summary="The database (and the broker, when configured) answer",
        responses={503: {"model": Ready, "description": "not ready"}},
    )
    def readyz(request: Request) -> Any:
        checks: dict[str, Check] = {}
        try:
            _db(request).ping()
            checks["database"] = Check(ok=True)
        except DatabaseUnavailable as exc:
            checks["database"] = Check(ok=False, detail=str(exc))
        monitor: QueueMonitor | None = request.app.state.queues
        if monitor is not None:
            _depths, error = monitor.depths(_settings(request).api_sources)
            checks["broker"] = Check(ok=error is None, detail=error)
        ok = all(c.ok for c in checks.values())
        body = Ready(status="ready" if ok else "not ready", checks=checks)
        return JSONResponse(body.model_dump(), status_code=200 if ok else 503)

    return router


def read_router() -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["read"])
    errs = responses(401, 422, 503)

    @router.get("/status", response_model=Status, responses=errs, summary="The whole picture")
    def get_status(request: Request, source: SourceQ = None) -> Status:
        return full_status(request, source)

    @router.get("/files", response_model=FilePage, responses=errs, summary="Files, by path, with filters")
    def list_files(
        db: DbDep,
        state: Annotated[State | None, Query(description="only files in this state")] = None,
        source: SourceQ = None,
        prefix: Annotated[str | None, Query(max_length=4096, pattern=NO_NUL, description="path prefix")] = None,
        cursor: CursorQ = None,
        limit: LimitQ = 100,
    ) -> FilePage:
        items, nxt = db.run(queries.list_files, state=state, source=source, prefix=prefix, cursor=cursor, limit=limit)
        return FilePage(items=items, next_cursor=nxt)

    @router.get(
        "/files/{path:path}",
        response_model=FileDetail,
        responses=responses(401, 404, 409, 422, 503),
        summary="One file: its state and history",
    )
    def get_file(
        db: DbDep,
        path: Annotated[str, Path(description="the path relative to the watched folder")],
        source: SourceQ = None,
        history: Annotated[int, Query(ge=0, le=1000, description="how many of its newest events")] = 100,
    ) -> FileDetail:
        if "\x00" in path:
            raise ApiError(404, "no such file", {"path": path.replace("\x00", "")})
        found = db.run(queries.get_file, path, source)
        if not found:
            raise ApiError(404, "no such file", {"path": path, "source": source})
        if len(found) > 1:
            raise ApiError(409, "this path exists in several sources; pass ?source=", [f.source for f in found])
        f = found[0]
        events = db.run(queries.file_history, f.source, f.path, history) if history else []
        return FileDetail(file=f, history=events)

    @router.get("/transfers", response_model=TransferList, responses=errs, summary="Uploads in progress")
    def transfers(db: DbDep, source: SourceQ = None, limit: LimitQ = 100) -> TransferList:
        return TransferList(items=db.run(queries.active_transfers, source=source, limit=limit))

    @router.get("/workers", response_model=WorkerList, responses=errs, summary="Workers and their last heartbeat")
    def workers(request: Request, db: DbDep) -> WorkerList:
        return WorkerList(items=db.run(queries.list_workers, _settings(request).api_worker_stale_s))

    @router.get("/failures", response_model=FilePage, responses=errs, summary="Failed and dead files, newest first")
    def failures(db: DbDep, source: SourceQ = None, cursor: CursorQ = None, limit: LimitQ = 100) -> FilePage:
        items, nxt = db.run(queries.list_failures, source=source, cursor=cursor, limit=limit)
        return FilePage(items=items, next_cursor=nxt)

    @router.get("/events", response_model=EventPage, responses=errs, summary="The event log, by cursor")
    def events(
        db: DbDep,
        cursor: Annotated[
            str | None, Query(pattern=r"^[0-9]{1,18}$", description="events after this one (a next_cursor)")
        ] = None,
        source: SourceQ = None,
        path: Annotated[str | None, Query(max_length=4096, pattern=NO_NUL)] = None,
        type: Annotated[str | None, Query(max_length=64, pattern=r"^[a-z0-9.]+$", description="event type")] = None,
        limit: LimitQ = 100,
    ) -> EventPage:
        after = int(cursor) if cursor is not None else None
        items = db.run(queries.list_events, after=after, source=source, path=path, type_=type, limit=limit)
        nxt = str(items[-1].seq) if items else cursor
        if nxt is None:
            nxt = str(db.run(queries.last_seq))
        return EventPage(items=items, next_cursor=nxt)

    return router


def metrics_router() -> APIRouter:
    router = APIRouter(tags=["metrics"])

    @router.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={
            200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
            # Errors stay JSON; explicit content, since the route's class would label them text/plain.
            **{
                code: {"description": d, "content": {"application/json": {"schema": ERROR_REF}}}
                for code, d in ((401, "missing or unknown token"), (503, "database unavailable"))
            },
        },
        summary="Prometheus metrics",
    )
    def get_metrics(request: Request) -> Response:
        st = full_status(request)
        db = _db(request)
        workers = db.run(queries.list_workers, _settings(request).api_worker_stale_s)
        text = metrics.render(st, workers, db.run(queries.last_seq), request.app.state.requests)
        return Response(text, media_type=metrics.CONTENT_TYPE)

    return router
