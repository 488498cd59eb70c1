"""The Postgres adapter: writes batches of events idempotently; every psycopg2 error stops here.

``store`` runs one transaction per batch: the log rows first (``ON CONFLICT (id) DO NOTHING
RETURNING id``), then the current-state rows for the events that were new to the log only, so an
event delivered twice is stored — and counted — once. Current-state upserts carry the event's
``created_at`` and apply only when it is not older than the recorded state.

Errors: :class:`StoreUnavailable` (retry later: the server is away, restarting, a deadlock) and
:class:`EventsRejected` (this data cannot be stored; retrying the same rows cannot help).
"""

from __future__ import annotations

import io
import logging
from datetime import datetime
from typing import Any

import psycopg2
import psycopg2.extensions
import psycopg2.extras

from skynet.common.errors import PermanentError, TransientError
from skynet.common.messages import FileEvent, WorkerHeartbeat
from skynet.notifier import rows
from skynet.notifier.schema import migrate

log = logging.getLogger(__name__)


class StoreUnavailable(TransientError):
    """Postgres cannot be reached or aborted the transaction for now."""


class EventsRejected(PermanentError):
    """Postgres refused these rows (invalid data); retrying them cannot help."""


# The log rows of a batch are COPYed into a session temp table as their JSON payloads, then moved
# with one INSERT ... SELECT that takes the columns out of the JSON: Postgres parses it in C on its
# own core, and the notifier neither re-encodes an event nor escapes it field by field (those two
# were a fifth of its CPU). ``ord`` keeps the arrival order, so that ``seq`` (the cursor clients
# read the log with) follows it.
CREATE_INCOMING = """
CREATE TEMP TABLE IF NOT EXISTS incoming (
    ord bigint GENERATED ALWAYS AS IDENTITY, body text
) ON COMMIT DELETE ROWS
"""
COPY_INCOMING = "COPY incoming (body) FROM STDIN"
MOVE_INCOMING = """
INSERT INTO events (id, type, source, path, state, worker, size, created_at, payload)
SELECT b->>'id', b->>'type', b->>'source', b->>'path', b->>'state', b->>'worker',
       (b->>'size')::numeric::bigint, to_timestamp((b->>'created_at')::float8), b
FROM (SELECT body::jsonb AS b, ord FROM incoming) AS i
ORDER BY ord
ON CONFLICT (id) DO NOTHING RETURNING id
"""
# The same insert as a VALUES list (what a bare psycopg2 writer would do; the benchmark uses it).
INSERT_EVENTS = """
INSERT INTO events (id, type, source, path, state, worker, size, created_at, payload) VALUES %s
ON CONFLICT (id) DO NOTHING RETURNING id
"""
EVENTS_TEMPLATE = "(%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)"

UPSERT_LIFECYCLE = """
INSERT INTO files AS f
    (source, path, state, size, bytes_done, attempts, last_error, remote, checksum, worker, state_at, last_event_id)
VALUES %s
ON CONFLICT (source, path) DO UPDATE SET
    state = EXCLUDED.state,
    size = COALESCE(EXCLUDED.size, f.size),
    bytes_done = CASE
        WHEN EXCLUDED.state = 'started' THEN
            CASE WHEN f.progress_at > EXCLUDED.state_at THEN f.bytes_done ELSE COALESCE(EXCLUDED.bytes_done, 0) END
        ELSE COALESCE(EXCLUDED.bytes_done, f.bytes_done) END,
    attempts = GREATEST(f.attempts, EXCLUDED.attempts),
    last_error = CASE
        WHEN EXCLUDED.state IN ('done', 'skipped', 'moved', 'deleted', 'queued') THEN NULL
        ELSE COALESCE(EXCLUDED.last_error, f.last_error) END,
    remote = COALESCE(EXCLUDED.remote, f.remote),
    checksum = CASE
        WHEN EXCLUDED.state IN ('done', 'skipped', 'moved') THEN COALESCE(EXCLUDED.checksum, f.checksum)
        ELSE f.checksum END,
    worker = COALESCE(EXCLUDED.worker, f.worker),
    state_at = EXCLUDED.state_at,
    updated_at = now(),
    last_event_id = EXCLUDED.last_event_id
WHERE EXCLUDED.state_at >= f.state_at
"""

# Progress only updates rows that exist: a tick for a file the log does not know yet (its
# 'started' is still on the way) or no longer knows (moved, pruned) is dropped; the next tick or
# lifecycle event brings the row up to date.
UPDATE_PROGRESS = """
UPDATE files AS f SET
    bytes_done = v.bytes_done,
    size = COALESCE(v.size, f.size),
    worker = COALESCE(v.worker, f.worker),
    progress_at = v.at,
    state = 'started',
    state_at = CASE WHEN f.state = 'started' THEN f.state_at ELSE v.at END,
    updated_at = now(),
    last_event_id = v.id
FROM (VALUES %s) AS v(source, path, size, bytes_done, worker, at, id)
WHERE f.source = v.source AND f.path = v.path
  AND v.at >= f.state_at AND (f.progress_at IS NULL OR v.at > f.progress_at)
"""
PROGRESS_TEMPLATE = "(%s, %s, %s::bigint, %s::bigint, %s, %s::timestamptz, %s)"

# A move's source path goes, and, for a folder's move, every file under it: their new paths get
# rows of their own from the reconciling that follows. Paths are "C"-collated, so the files under
# "p" are exactly those in ["p/", "p0") ("0" follows "/"), which the primary key's btree answers.
DELETE_MOVED = """
DELETE FROM files f USING (VALUES %s) AS v(source, path, at)
WHERE f.source = v.source AND f.state_at <= v.at
  AND (f.path = v.path OR (f.path >= v.path || '/' AND f.path < v.path || '0'))
"""

UPSERT_WORKERS = """
INSERT INTO workers AS w
    (worker, role, source, host, active, capacity, bytes_sent, files_done, started_at, last_seen,
     condition, condition_since, stopped_at, target)
VALUES %s
ON CONFLICT (worker) DO UPDATE SET
    role = EXCLUDED.role, source = EXCLUDED.source, host = EXCLUDED.host, active = EXCLUDED.active,
    capacity = EXCLUDED.capacity, bytes_sent = EXCLUDED.bytes_sent, files_done = EXCLUDED.files_done,
    started_at = EXCLUDED.started_at, last_seen = EXCLUDED.last_seen,
    condition = EXCLUDED.condition, condition_since = EXCLUDED.condition_since,
    stopped_at = EXCLUDED.stopped_at, target = EXCLUDED.target
WHERE EXCLUDED.last_seen >= w.last_seen
"""

PRUNE_EVENTS = """
DELETE FROM events WHERE seq IN (
    SELECT seq FROM events WHERE created_at < %s ORDER BY created_at LIMIT %s)
"""
PRUNE_PROGRESS = """
DELETE FROM events WHERE seq IN (
    SELECT seq FROM events WHERE state = 'progress' AND created_at < %s ORDER BY created_at LIMIT %s)
"""
PRUNE_WORKERS = "DELETE FROM workers WHERE last_seen < %s"


def translate(exc: BaseException) -> StoreUnavailable | EventsRejected:
    """A psycopg2 (or encoding) error → the skynet error that says whether retrying helps."""
    name = type(exc).__name__
    pgcode = getattr(exc, "pgcode", None)
    if isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError | psycopg2.InternalError):
        return StoreUnavailable(f"database unavailable: {name} {pgcode or ''}".strip())
    if isinstance(exc, psycopg2.Error):
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        return EventsRejected(f"database refused the rows: {name} {pgcode or ''}: {first}")
    return EventsRejected(f"rows cannot be encoded: {name}: {exc}")


class EventStore:
    """One connection, owned by the notifier's consumer thread; reconnects on the next call."""

    def __init__(self, dsn: str, *, application_name: str = "skynet-notifier", connect_timeout: int = 5) -> None:
        self._dsn = dsn
        self._app = application_name
        self._timeout = connect_timeout
        self._conn: Any = None
        self._incoming_ready = False

    def _connection(self) -> Any:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            self._conn = psycopg2.connect(
                self._dsn,
                connect_timeout=self._timeout,
                application_name=self._app,
                keepalives=1,
                keepalives_idle=10,
                keepalives_interval=5,
                keepalives_count=3,
                options="-c statement_timeout=60000",
            )
        except psycopg2.Error as exc:
            raise StoreUnavailable(f"cannot connect to the database: {type(exc).__name__}") from exc
        self._incoming_ready = False
        return self._conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            conn.close()

    def _fail(self, exc: BaseException) -> StoreUnavailable | EventsRejected:
        err = translate(exc)
        if self._conn is not None:
            try:
                if isinstance(err, StoreUnavailable):
                    self.close()
                else:
                    self._conn.rollback()
            except psycopg2.Error:
                self.close()
        return err

    def migrate(self) -> list[int]:
        try:
            return migrate(self._connection())
        except (psycopg2.Error, ValueError) as exc:
            raise self._fail(exc) from exc

    def store(self, events: list[FileEvent | WorkerHeartbeat], bodies: list[bytes] | None = None) -> int:
        """Store a batch in one transaction; return how many file events were new to the log.

        ``bodies``, when given, are the messages the events were decoded from (same order): they
        become the stored payloads as they are (see :func:`rows.payload`).
        """
        conn = self._connection()
        try:
            with conn.cursor() as cur:
                fresh = self._write(cur, events, bodies)
            conn.commit()
            return fresh
        except psycopg2.Error as exc:
            raise self._fail(exc) from exc
        except Exception as exc:  # a row we cannot even encode: reject it, never crash the loop
            log.exception("cannot store a batch of %d events", len(events))
            raise self._fail(exc) from exc

    def _write(self, cur: Any, events: list[FileEvent | WorkerHeartbeat], bodies: list[bytes] | None) -> int:
        by_id: dict[str, bytes] = {}
        for n, e in enumerate(events):
            if isinstance(e, FileEvent) and e.id not in by_id:
                by_id[e.id] = rows.copy_line(rows.payload(e, bodies[n] if bodies is not None else None))
        new_ids: set[str] = set()
        if by_id:
            if not self._incoming_ready:
                cur.execute(CREATE_INCOMING)
                self._incoming_ready = True
            cur.copy_expert(COPY_INCOMING, io.BytesIO(b"".join(by_id.values())))
            cur.execute(MOVE_INCOMING)
            new_ids = {r[0] for r in cur.fetchall()}
        batch = rows.build([e for e in events if isinstance(e, WorkerHeartbeat) or e.id in new_ids])
        if batch.lifecycle:
            values = [rows.lifecycle_row(e, batch.attempts.get(k, 0)) for k, e in sorted(batch.lifecycle.items())]
            psycopg2.extras.execute_values(cur, UPSERT_LIFECYCLE, values, page_size=len(values))
        if batch.moved_from:
            values = [(s, p, rows.ts(e.created_at)) for (s, p), e in sorted(batch.moved_from.items())]
            psycopg2.extras.execute_values(
                cur, DELETE_MOVED, values, template="(%s, %s, %s::timestamptz)", page_size=len(values)
            )
        if batch.progress:
            values = [rows.progress_row(e) for _, e in sorted(batch.progress.items())]
            psycopg2.extras.execute_values(
                cur, UPDATE_PROGRESS, values, template=PROGRESS_TEMPLATE, page_size=len(values)
            )
        if batch.workers:
            values = [rows.worker_row(h) for _, h in sorted(batch.workers.items())]
            psycopg2.extras.execute_values(cur, UPSERT_WORKERS, values, page_size=len(values))
        return len(new_ids)

    def prune(self, events_before: datetime, progress_before: datetime, workers_before: datetime, limit: int) -> int:
        """Delete up to ``limit`` old events and ``limit`` old progress ticks; return rows deleted."""
        conn = self._connection()
        try:
            with conn.cursor() as cur:
                cur.execute(PRUNE_EVENTS, (events_before, limit))
                deleted = int(cur.rowcount)
                cur.execute(PRUNE_PROGRESS, (progress_before, limit))
                deleted += int(cur.rowcount)
                cur.execute(PRUNE_WORKERS, (workers_before,))
            conn.commit()
            return deleted
        except (psycopg2.Error, ValueError) as exc:
            raise self._fail(exc) from exc
