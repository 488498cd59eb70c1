"""The Postgres adapter of the API: a psycopg2 ThreadedConnectionPool, read-only sessions.

Nothing connects until the first query. Sync endpoints run in FastAPI's threadpool and borrow a
connection for one unit of work (:meth:`Database.run`); a semaphore keeps the borrowers within
the pool's size instead of failing. Every psycopg2 error stops here and becomes
:class:`DatabaseUnavailable` (the server is away, timed out) or :class:`SchemaMissing` (the
notifier has not migrated this database yet); no message from the driver — which may name the
host or user — goes further.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg2
import psycopg2.errors
import psycopg2.pool

from skynet.common.errors import PermanentError, TransientError

log = logging.getLogger(__name__)

T = TypeVar("T")


class DatabaseUnavailable(TransientError):
    """The database cannot answer now."""


class SchemaMissing(DatabaseUnavailable):
    """The database has no skynet schema yet (the notifier applies it at start)."""


class InvalidInput(PermanentError):
    """A parameter the database cannot take (it answers 422)."""


class _StaleConnection(Exception):
    """A pooled connection was found closed (the server restarted or dropped it)."""


class Database:
    def __init__(self, dsn: str, *, pool_size: int = 8, statement_timeout_ms: int = 5000) -> None:
        self._dsn = dsn
        self._size = pool_size
        self._timeout_ms = statement_timeout_ms
        self._pool: psycopg2.pool.ThreadedConnectionPool | None = None
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(pool_size)

    def _get_pool(self) -> psycopg2.pool.ThreadedConnectionPool:
        """The pool, opened (with all its connections) on first use; DatabaseUnavailable if it cannot."""
        with self._lock:
            if self._pool is None:
                # minconn = maxconn: psycopg2's pool closes every connection returned beyond
                # minconn, which would mean one new connection per request.
                self._pool = psycopg2.pool.ThreadedConnectionPool(
                    self._size,
                    self._size,
                    self._dsn,
                    connect_timeout=3,
                    application_name="skynet-api",
                    options=f"-c statement_timeout={self._timeout_ms} -c default_transaction_read_only=on",
                )
            return self._pool

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(cursor, *args, **kwargs)`` on a pooled connection, in one read-only transaction."""
        if not self._slots.acquire(timeout=10):
            raise DatabaseUnavailable("database pool exhausted")
        try:
            return self._run(fn, *args, **kwargs)
        finally:
            self._slots.release()

    def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            pool = self._get_pool()
        except psycopg2.Error as exc:
            raise DatabaseUnavailable(f"database unavailable ({type(exc).__name__})") from exc
        # After Postgres restarts, every pooled connection is dead, and psycopg2 only finds out by
        # using it. A connection found closed is dropped and the query (read-only, so safe to
        # repeat) tried on the next one, so that the first requests after the database is back
        # answer instead of failing once per stale connection. Bounded: each try either answers,
        # meets a closed connection (at once), or fails to connect, which ends the loop.
        for _ in range(self._size + 1):
            conn = self._borrow(pool)
            try:
                return self._on(pool, conn, fn, *args, **kwargs)
            except _StaleConnection:
                log.info("dropped a pooled database connection closed since its last use")
        raise DatabaseUnavailable("database unavailable (every connection tried was closed)")

    @staticmethod
    def _borrow(pool: psycopg2.pool.ThreadedConnectionPool) -> Any:
        try:
            return pool.getconn()
        except (psycopg2.Error, psycopg2.pool.PoolError) as exc:
            raise DatabaseUnavailable(f"database unavailable ({type(exc).__name__})") from exc

    def _on(
        self, pool: psycopg2.pool.ThreadedConnectionPool, conn: Any, fn: Callable[..., T], *args: Any, **kwargs: Any
    ) -> T:
        broken = False
        try:
            with conn.cursor() as cur:
                result = fn(cur, *args, **kwargs)
            conn.rollback()  # read-only: nothing to commit; ends the transaction
            return result
        except ValueError as exc:  # e.g. a NUL character in a parameter: the input is at fault
            conn.rollback()
            raise InvalidInput(f"invalid query parameter: {exc}") from exc
        except psycopg2.errors.UndefinedTable as exc:
            conn.rollback()
            raise SchemaMissing("database schema not ready (the notifier applies it at start)") from exc
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            broken = True
            if conn.closed:
                raise _StaleConnection from exc
            raise DatabaseUnavailable(f"database unavailable ({type(exc).__name__})") from exc
        except psycopg2.Error as exc:
            broken = True
            log.error("query failed: %s %s", type(exc).__name__, getattr(exc, "pgcode", ""))
            raise DatabaseUnavailable(f"database error ({type(exc).__name__})") from exc
        finally:
            with contextlib.suppress(psycopg2.pool.PoolError):
                pool.putconn(conn, close=broken or bool(conn.closed))

    def ping(self) -> None:
        self.run(lambda cur: cur.execute("SELECT 1 FROM schema_migrations LIMIT 1"))

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.closeall()
                self._pool = None
