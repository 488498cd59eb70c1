"""``GET /v1/events/stream``: the event log as server-sent events, live.

Each event is ``id: <seq>``, ``event: <type>``, ``data: <EventInfo JSON>``. A client resumes
with ``Last-Event-ID`` (EventSource does it by itself) or ``?cursor=``; without either it gets the
events from now on. The stream polls the log every half second (one indexed range read on
``seq``), sends a comment every 15 s to keep proxies from closing it, and reports a database
outage as an ``error`` event and keeps trying.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from skynet.api import queries
from skynet.api.db import Database, DatabaseUnavailable
from skynet.api.errors import responses
from skynet.common.messages import SOURCE_PATTERN

POLL_S = 0.5
KEEPALIVE_S = 15.0
BATCH = 500
SSE = {"text/event-stream": {"schema": {"type": "string"}}}


def _format(seq: int, kind: str, data: str) -> str:
    return f"id: {seq}\nevent: {kind}\ndata: {data}\n\n"


async def event_stream(
    request: Request, db: Database, after: int | None, source: str | None, path: str | None
) -> AsyncIterator[str]:
    if after is None:
        try:
            after = await run_in_threadpool(db.run, queries.last_seq)
        except DatabaseUnavailable:
            after = 0
    yield "retry: 2000\n\n"
    last_sent = time.monotonic()
    while not await request.is_disconnected():
        try:
            batch = await run_in_threadpool(
                db.run, queries.list_events, after=after, source=source, path=path, limit=500
            )
        except DatabaseUnavailable as exc:
            yield f"event: error\ndata: {json.dumps({'error': str(exc)})}\n\n"
            await asyncio.sleep(2.0)
            continue
        for e in batch:
            after = e.seq
            yield _format(e.seq, e.type, e.model_dump_json())
        if batch:
            last_sent = time.monotonic()
            if len(batch) == BATCH:
                continue
        elif time.monotonic() - last_sent > KEEPALIVE_S:
            yield ": keepalive\n\n"
            last_sent = time.monotonic()
        await asyncio.sleep(POLL_S)


def stream_router() -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["read"])

    @router.get(
        "/events/stream",
        response_class=StreamingResponse,
        responses={
            200: {
                "description": "server-sent events",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            **responses(401, 422),
        },
        summary="Live events (server-sent events); token by header or ?token=",
    )
    async def stream(
        request: Request,
        cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$", description="start after this event")] = None,
        source: Annotated[str | None, Query(pattern=SOURCE_PATTERN)] = None,
        path: Annotated[str | None, Query(max_length=4096, pattern=r"^[^\x00]*$")] = None,
        last_event_id: Annotated[str | None, Header(pattern=r"^[0-9]{1,18}$", include_in_schema=False)] = None,
    ) -> StreamingResponse:
        start = last_event_id or cursor
        after = int(start) if start is not None else None
        db: Database = request.app.state.db
        return StreamingResponse(
            event_stream(request, db, after, source, path),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return router
