"""Every SQL statement the API and the CLI run, each a function of a psycopg2 cursor.

Hot paths use indexes only: counts come from ``file_counts`` (kept by triggers), listings are
keyset-paginated on ``(path, source)`` / ``(state, path, source)`` / ``(source, path)``, time
windows use ``(state, state_at)``, the event log pages on ``seq``.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

from psycopg2 import sql

from skynet.api import conflicts
from skynet.api.models import (
    PENDING_STATES,
    EventInfo,
    FileInfo,
    OldestPending,
    Status,
    Throughput,
    Transfer,
    Worker,
    WorkerCondition,
)
from skynet.common.errors import PermanentError

FILE_COLUMNS = (
    "source, path, state, size, bytes_done, attempts, last_error, remote, checksum, worker,"
    " state_at, progress_at, first_seen_at, updated_at"
)
EVENT_COLUMNS = "seq, id, type, source, path, state, worker, size, created_at, received_at, payload"


class BadCursor(PermanentError):
    """A cursor that this API did not hand out."""


def encode_cursor(*parts: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(parts), default=str).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parts = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadCursor("invalid cursor") from exc
    if not isinstance(parts, list) or len(parts) != arity or not all(isinstance(p, str) for p in parts):
        raise BadCursor("invalid cursor")
    if any("\x00" in p for p in parts):
        raise BadCursor("invalid cursor")
    return parts


def _percent(size: int | None, done: int | None) -> float | None:
    if not size or done is None:
        return 100.0 if size == 0 else None
    return round(min(100.0, 100.0 * done / size), 2)


def _file(row: tuple[Any, ...]) -> FileInfo:
    (source, path, state, size, done, attempts, error, remote, checksum, worker, state_at, progress_at, first, upd) = (
        row
    )
    return FileInfo(
        source=source,
        path=path,
        state=state,
        size=size,
        bytes_done=done,
        percent=_percent(size, done),
        attempts=attempts,
        last_error=error,
        remote=remote,
        checksum=checksum,
        worker=worker,
        state_at=state_at,
        progress_at=progress_at,
        first_seen_at=first,
        updated_at=upd,
    )


def _event(row: tuple[Any, ...]) -> EventInfo:
    seq, id_, type_, source, path, state, worker, size, created, received, payload = row
    return EventInfo(
        seq=seq,
        id=id_,
        type=type_,
        source=source,
        path=path,
        state=state,
        worker=worker,
        size=size,
        created_at=created,
        received_at=received,
        data=payload if isinstance(payload, dict) else {},
    )


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


# ---------------------------------------------------------------------------- files


def list_files(
    cur: Any,
    *,
    state: str | None = None,
    source: str | None = None,
    prefix: str | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> tuple[list[FileInfo], str | None]:
    where: list[str] = []
    args: list[Any] = []
    if state is not None:
        where.append("state = %s")
        args.append(state)
    if source is not None:
        where.append("source = %s")
        args.append(source)
    if prefix:
        # The range bound lets the btree on the "C"-collated path answer; LIKE keeps it exact.
        where.append("path >= %s AND path LIKE %s")
        args += [prefix, _like_prefix(prefix)]
    if cursor is not None:
        after_path, after_source = decode_cursor(cursor, 2)
        where.append("(path, source) > (%s, %s)")
        args += [after_path, after_source]
    sql = f"SELECT {FILE_COLUMNS} FROM files"  # noqa: S608 - only constant fragments are interpolated
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY path, source LIMIT %s"
    cur.execute(sql, [*args, limit + 1])
    rows = cur.fetchall()
    items = [_file(r) for r in rows[:limit]]
    next_cursor = encode_cursor(items[-1].path, items[-1].source) if len(rows) > limit and items else None
    return items, next_cursor


def get_file(cur: Any, path: str, source: str | None) -> list[FileInfo]:
    """The file(s) at ``path``: one per source that has it (at most 2 when no source is given)."""
    if source is not None:
        cur.execute(f"SELECT {FILE_COLUMNS} FROM files WHERE source = %s AND path = %s", (source, path))  # noqa: S608
    else:
        cur.execute(f"SELECT {FILE_COLUMNS} FROM files WHERE path = %s ORDER BY source LIMIT 2", (path,))  # noqa: S608
    return [_file(r) for r in cur.fetchall()]


def file_history(cur: Any, source: str, path: str, limit: int = 100) -> list[EventInfo]:
    cur.execute(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE source = %s AND path = %s ORDER BY seq DESC LIMIT %s",  # noqa: S608
        (source, path, limit),
    )
    return [_event(r) for r in reversed(cur.fetchall())]


def list_failures(
    cur: Any, *, source: str | None = None, cursor: str | None = None, limit: int = 100
) -> tuple[list[FileInfo], str | None]:
    """Failed and dead files, the most recent first."""
    conds = ["state = %s"]
    args: list[Any] = []
    if source is not None:
        conds.append("source = %s")
        args.append(source)
    if cursor is not None:
        at, after_source, after_path = decode_cursor(cursor, 3)
        try:
            datetime.fromisoformat(at)
        except ValueError as exc:
            raise BadCursor("invalid cursor") from exc
        conds.append("(state_at, source, path) < (%s::timestamptz, %s, %s)")
        args += [at, after_source, after_path]
    one = (
        f"(SELECT {FILE_COLUMNS} FROM files WHERE {' AND '.join(conds)}"  # noqa: S608
        " ORDER BY state_at DESC, source DESC, path DESC LIMIT %s)"
    )
    sql = f"SELECT * FROM ({one} UNION ALL {one}) f ORDER BY state_at DESC, source DESC, path DESC LIMIT %s"  # noqa: S608
    cur.execute(sql, ["failed", *args, limit + 1, "dead", *args, limit + 1, limit + 1])
    rows = cur.fetchall()
    items = [_file(r) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit and items:
        last = items[-1]
        next_cursor = encode_cursor(last.state_at.isoformat(), last.source, last.path)
    return items, next_cursor


# ---------------------------------------------------------------------------- events


def list_events(
    cur: Any,
    *,
    after: int | None = None,
    source: str | None = None,
    path: str | None = None,
    type_: str | None = None,
    limit: int = 100,
) -> list[EventInfo]:
    """Events after ``after`` (oldest first); without it, the newest ``limit`` (oldest first)."""
    conds: list[str] = []
    args: list[Any] = []
    if after is not None:
        conds.append("seq > %s")
        args.append(after)
    if source is not None:
        conds.append("source = %s")
        args.append(source)
    if path is not None:
        conds.append("path = %s")
        args.append(path)
    if type_ is not None:
        conds.append("type = %s")
        args.append(type_)
    where = (" WHERE " + " AND ".join(conds)) if conds else ""
    order = "ASC" if after is not None else "DESC"
    cur.execute(f"SELECT {EVENT_COLUMNS} FROM events{where} ORDER BY seq {order} LIMIT %s", [*args, limit])  # noqa: S608
    rows = cur.fetchall()
    if after is None:
        rows.reverse()
    return [_event(r) for r in rows]


def last_seq(cur: Any) -> int:
    cur.execute("SELECT COALESCE(max(seq), 0) FROM events")
    return int(cur.fetchone()[0])


# ---------------------------------------------------------------------------- transfers, workers


def active_transfers(cur: Any, *, source: str | None = None, limit: int = 500) -> list[Transfer]:
    sql = f"SELECT {FILE_COLUMNS}, now() FROM files WHERE state = 'started'"  # noqa: S608
    args: list[Any] = []
    if source is not None:
        sql += " AND source = %s"
        args.append(source)
    cur.execute(sql + " ORDER BY state_at LIMIT %s", [*args, limit])
    out = []
    for row in cur.fetchall():
        f = _file(row[:-1])
        now: datetime = row[-1]
        done = f.bytes_done or 0
        elapsed = ((f.progress_at or now) - f.state_at).total_seconds()
        rate = done / elapsed if elapsed > 0 and done > 0 else None
        eta = (max(0, f.size - done) / rate) if rate and f.size is not None else None
        out.append(
            Transfer(
                source=f.source,
                path=f.path,
                worker=f.worker,
                size=f.size,
                bytes_done=done,
                percent=_percent(f.size, done),
                started_at=f.state_at,
                progress_at=f.progress_at,
                rate_bytes_per_s=round(rate, 1) if rate else None,
                eta_s=round(eta, 1) if eta is not None else None,
            )
        )
    return out


# A worker is alive while its heartbeats are recent and its last one did not say it stopped.
LIVE = sql.SQL("stopped_at IS NULL AND last_seen > now() - make_interval(secs => %(stale)s)")


def list_workers(cur: Any, stale_s: float) -> list[Worker]:
    cur.execute(
        sql.SQL(
            "SELECT worker, role, source, host, active, capacity, bytes_sent, files_done, started_at,"
            " condition, condition_since, stopped_at, target, last_seen, {live}"
            " FROM workers ORDER BY last_seen DESC LIMIT 1000"
        ).format(live=LIVE),
        {"stale": stale_s},
    )
    keys = (
        "worker",
        "role",
        "source",
        "host",
        "active",
        "capacity",
        "bytes_sent",
        "files_done",
        "started_at",
        "condition",
        "condition_since",
        "stopped_at",
        "target",
        "last_seen",
    )
    return [Worker(**dict(zip(keys, r[:14], strict=True)), alive=bool(r[14])) for r in cur.fetchall()]


# ---------------------------------------------------------------------------- status


def file_counts(cur: Any, source: str | None = None) -> dict[str, dict[str, int]]:
    cur.execute(
        "SELECT source, state, n FROM file_counts WHERE n <> 0 AND (%(s)s::text IS NULL OR source = %(s)s)"
        " ORDER BY source, state",
        {"s": source},
    )
    out: dict[str, dict[str, int]] = {}
    for src, state, n in cur.fetchall():
        out.setdefault(src, {})[state] = int(n)
    return out


def status(cur: Any, *, worker_stale_s: float = 30.0, source: str | None = None) -> Status:
    """The whole picture, or one source's: its files, its uploads, its workers (and the notifiers)."""
    per_source = file_counts(cur, source)
    totals: dict[str, int] = {}
    for states in per_source.values():
        for state, n in states.items():
            totals[state] = totals.get(state, 0) + n
    # psycopg2 inlines the parameters, so with no source the planner folds "NULL IS NULL" away.
    cur.execute(
        "SELECT count(*), COALESCE(sum(size), 0)::bigint FROM files"
        " WHERE state = 'done' AND state_at > now() - interval '60 seconds'"
        " AND (%(s)s::text IS NULL OR source = %(s)s)",
        {"s": source},
    )
    files_min, bytes_min = cur.fetchone()
    cur.execute(
        "SELECT f.source, f.path, f.state, f.state_at, extract(epoch FROM now() - f.state_at)"
        " FROM unnest(%(states)s::text[]) AS s(state),"
        " LATERAL (SELECT source, path, state, state_at FROM files"
        "          WHERE files.state = s.state AND (%(s)s::text IS NULL OR files.source = %(s)s)"
        "          ORDER BY state_at LIMIT 1) f"
        " ORDER BY f.state_at LIMIT 1",
        {"states": list(PENDING_STATES), "s": source},
    )
    row = cur.fetchone()
    oldest = (
        OldestPending(source=row[0], path=row[1], state=row[2], since=row[3], age_s=round(float(row[4]), 3))
        if row
        else None
    )
    # The notifier serves every source, so it counts in each one's picture.
    cur.execute(
        sql.SQL(
            "SELECT count(*) FROM workers WHERE {live} AND (%(s)s::text IS NULL OR source = %(s)s OR role = 'notifier')"
        ).format(live=LIVE),
        {"stale": worker_stale_s, "s": source},
    )
    alive = int(cur.fetchone()[0])
    cur.execute(
        sql.SQL(
            "SELECT worker, role, source, condition, condition_since FROM workers"
            " WHERE condition IS NOT NULL AND {live} AND (%(s)s::text IS NULL OR source = %(s)s OR role = 'notifier')"
            " ORDER BY condition_since, worker LIMIT 100"
        ).format(live=LIVE),
        {"stale": worker_stale_s, "s": source},
    )
    impeded = [
        WorkerCondition(worker=w, role=r, source=src, condition=c, since=t) for w, r, src, c, t in cur.fetchall()
    ]
    cur.execute(
        sql.SQL("SELECT max(last_seen), coalesce(bool_or({live}), false) FROM workers WHERE role = 'notifier'").format(
            live=LIVE
        ),
        {"stale": worker_stale_s},
    )
    notifier_seen_at, notifier_alive = cur.fetchone()
    cur.execute(
        sql.SQL(
            "SELECT DISTINCT source, target FROM workers WHERE role = 'uploader' AND target IS NOT NULL AND {live}"
        ).format(live=LIVE),
        {"stale": worker_stale_s},
    )
    shared = [c for c in conflicts.shared_targets(cur.fetchall()) if source is None or source in c.sources]
    cur.execute(
        sql.SQL(
            "SELECT source, worker, started_at, last_seen FROM workers WHERE role = 'watcher' AND {live}"
            " AND (%(s)s::text IS NULL OR source = %(s)s)"
        ).format(live=LIVE),
        {"stale": worker_stale_s, "s": source},
    )
    doubled = conflicts.doubled_watchers(cur.fetchall())
    return Status(
        generated_at=datetime.now(UTC),
        files=totals,
        files_total=sum(totals.values()),
        sources=per_source,
        done_last_minute=Throughput(files=int(files_min), bytes=int(bytes_min)),
        oldest_pending=oldest,
        active_transfers=totals.get("started", 0),
        workers_alive=alive,
        workers_impeded=impeded,
        notifier_alive=bool(notifier_alive),
        notifier_seen_at=notifier_seen_at,
        target_conflicts=shared,
        watcher_conflicts=doubled,
    )
