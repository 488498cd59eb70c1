"""The watcher's local state in SQLite: the outbox and the index.

* **outbox** — actions waiting for the broker's confirm, at most one per key (the path; the
  destination for a move; the path and a ``/`` for a folder's delete or move, which an action on
  a file of the same name must not replace, nor be replaced by). A newer action for a path replaces the
  older one: that is the deduplication. A row is removed only after the broker confirmed it, and only if it was not
  replaced meanwhile (its ``seq`` still matches), so a broker outage or a crash loses nothing.
* **index** — the generation last handed to the outbox for each path, so that a scan at start
  finds exactly what changed (or vanished) while the watcher was down. A file the index never
  held skips the outbox: its row is added once the broker confirmed its action (see
  ``discovered.py``).
* **held** — deletes held back by the safety rules until an admin releases them.
* **meta** — small facts that must survive a restart (the identity of the watched root).

One connection, guarded by a lock, shared by the watcher's threads. WAL mode: a commit survives
a crash of the process without an fsync per commit. A write that fails (the state folder's disk
full, read-only, gone) is rolled back whole and raised as :class:`StateUnavailable`: what SQLite
holds is always a state the watcher once meant, and the engine rebuilds its memory from it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from skynet.common.errors import TransientError
from skynet.common.messages import Generation, PathChanged, PathMoved, PruneRemote, decode_action, encode

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (key TEXT PRIMARY KEY, seq INTEGER NOT NULL, body BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS outbox_seq ON outbox (seq);
CREATE TABLE IF NOT EXISTS idx (path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
                                inode INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS held (path TEXT PRIMARY KEY, body BLOB NOT NULL, held_at REAL NOT NULL,
                                 reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

Action = PathChanged | PathMoved | PruneRemote
# An action for the outbox: a model, or the bytes of a file's PathChanged already encoded by
# ``encode_changed`` (the scan's fast path).
Pending = Action | bytes


@dataclass(frozen=True)
class OutboxRow:
    """One pending action as stored: ``body`` is what ``encode`` wrote, sent to the broker as is."""

    key: str
    seq: int
    body: bytes

    @cached_property
    def fields(self) -> dict[str, Any]:
        """The body's fields, read without validating again what ``encode`` wrote (the pump's fast path)."""
        data = json.loads(self.body)
        return data if isinstance(data, dict) else {}


class StateUnavailable(TransientError):
    """The watcher's state (``SKYNET_STATE_DIR``) cannot be written now: a full disk, most often."""


SELECT_KEYS = "SELECT key, body FROM outbox WHERE key IN (SELECT value FROM json_each(?))"


def _outbox_key(key: str, action: Pending) -> str:
    """A folder's actions (its delete, its move) are keyed ``path/``, apart from a file's of the
    same name: a folder replaced by a file (``rm -r x; echo > x``), or a file by a folder moved
    there (``rm x; mv folder x``), needs both actions, one to clear the old one away on the
    remote, the other to bring the new one."""
    if isinstance(action, PathChanged) and action.is_dir:
        return action.path + "/"
    if isinstance(action, PathMoved) and action.is_dir:
        return action.dst + "/"
    return key


def _escape_like(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class Store:
    def __init__(self, state_dir: Path) -> None:
        self._dir = state_dir
        self._lock = threading.Lock()
        with self._failing_as_unavailable():
            state_dir.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(state_dir / "watcher.sqlite3", check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM outbox").fetchone()
        self._seq = itertools.count(int(row[0]) + 1)

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self._transaction() as cur:
            cur.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    @contextlib.contextmanager
    def _failing_as_unavailable(self) -> Iterator[None]:
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            raise StateUnavailable(
                f"cannot write the watcher's state in {self._dir} (SKYNET_STATE_DIR): {exc}"
            ) from exc

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction under the lock; on any failure nothing of it is kept."""
        with self._lock, self._failing_as_unavailable():
            cur = self._db.cursor()
            cur.execute("BEGIN")
            try:
                yield cur
                cur.execute("COMMIT")
            except BaseException:
                # SQLite rolls back by itself on some errors (a full disk among them).
                if self._db.in_transaction:
                    cur.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ writes (one transaction)

    def record(
        self,
        actions: Iterable[tuple[str, Pending]] = (),
        index_set: Iterable[tuple[str, int, int, int]] = (),
        index_drop: Iterable[str] = (),
        index_drop_under: Iterable[str] = (),
        index_moves: Iterable[tuple[str, str, bool]] = (),
    ) -> None:
        """Apply outbox puts and index changes (``(path, size, mtime_ns, inode)`` rows) atomically."""
        with self._transaction() as cur:
            for src, dst, is_dir in index_moves:
                self._index_move(cur, src, dst, is_dir)
            for prefix in index_drop_under:
                cur.execute(
                    "DELETE FROM idx WHERE path = ? OR path LIKE ? ESCAPE '\\'",
                    (prefix, _escape_like(prefix) + "/%"),
                )
            for path in index_drop:
                cur.execute("DELETE FROM idx WHERE path = ?", (path,))
            cur.executemany(
                "INSERT OR REPLACE INTO idx (path, size, mtime_ns, inode) VALUES (?, ?, ?, ?)",
                index_set,
            )
            self._put_all(cur, list(actions))

    def _put_all(self, cur: sqlite3.Cursor, actions: list[tuple[str, Pending]]) -> None:
        """Insert or replace the outbox row of each key; a pending move is never replaced by a
        change or delete of its destination (the move still has to happen; its handler reconciles
        the destination afterwards). One lookup per 500 keys, one executemany for the writes."""
        if not actions:
            return
        actions = [(_outbox_key(key, action), action) for key, action in actions]
        keys = list(dict.fromkeys(key for key, _ in actions))
        moves: set[str] = set()
        for i in range(0, len(keys), 500):
            chunk = json.dumps(keys[i : i + 500])
            for key, body in cur.execute(SELECT_KEYS, (chunk,)):
                if isinstance(decode_action(body), PathMoved):
                    moves.add(key)
        rows = []
        for key, action in actions:
            if isinstance(action, bytes):  # a file's PathChanged, already encoded
                if key not in moves:
                    rows.append((key, next(self._seq), action))
                continue
            if key in moves and isinstance(action, PathChanged):
                # The move still has to happen; its handler reconciles the destination after it
                # (a folder's: every remote file under it, as a delete of the folder would).
                continue
            if isinstance(action, PathMoved):
                moves.add(key)
            rows.append((key, next(self._seq), encode(action)))
        cur.executemany("INSERT OR REPLACE INTO outbox (key, seq, body) VALUES (?, ?, ?)", rows)

    def _index_move(self, cur: sqlite3.Cursor, src: str, dst: str, is_dir: bool) -> None:
        if not is_dir:
            cur.execute("DELETE FROM idx WHERE path = ?", (dst,))
            cur.execute("UPDATE idx SET path = ? WHERE path = ?", (dst, src))
            return
        rows = cur.execute("SELECT path FROM idx WHERE path LIKE ? ESCAPE '\\'", (_escape_like(src) + "/%",)).fetchall()
        cur.execute("DELETE FROM idx WHERE path = ? OR path LIKE ? ESCAPE '\\'", (dst, _escape_like(dst) + "/%"))
        for (path,) in rows:
            cur.execute("UPDATE idx SET path = ? WHERE path = ?", (dst + path[len(src) :], path))

    def drop_pending_under(self, prefix: str) -> list[tuple[str, Action]]:
        """Forget the outbox rows of paths below folder ``prefix`` (a folder action covers them);
        their keys and actions. The folder's own actions (key ``prefix/``) are not below it: they
        stay."""
        pattern = _escape_like(prefix) + "/_%"
        with self._transaction() as cur:
            rows = cur.execute("SELECT key, body FROM outbox WHERE key LIKE ? ESCAPE '\\'", (pattern,)).fetchall()
            cur.execute("DELETE FROM outbox WHERE key LIKE ? ESCAPE '\\'", (pattern,))
        return [(key, decode_action(bytes(body))) for key, body in rows]

    # ------------------------------------------------------------------ outbox draining

    def pending(self, limit: int) -> list[OutboxRow]:
        with self._lock:
            rows = self._db.execute("SELECT key, seq, body FROM outbox ORDER BY seq LIMIT ?", (limit,)).fetchall()
        return [OutboxRow(key, seq, bytes(body)) for key, seq, body in rows]

    def pending_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def confirmed(self, rows: Iterable[OutboxRow]) -> None:
        """Remove rows the broker confirmed, unless a newer action replaced them meanwhile."""
        with self._transaction() as cur:
            cur.executemany("DELETE FROM outbox WHERE key = ? AND seq = ?", [(r.key, r.seq) for r in rows])

    # ------------------------------------------------------------------ index

    def index_add(self, rows: list[tuple[str, int, int, int]]) -> None:
        """Add (path, size, mtime_ns, inode) rows for paths the index does not hold yet."""
        with self._transaction() as cur:
            cur.executemany("INSERT OR IGNORE INTO idx (path, size, mtime_ns, inode) VALUES (?, ?, ?, ?)", rows)

    def index_get(self, path: str) -> Generation | None:
        with self._lock:
            row = self._db.execute("SELECT size, mtime_ns, inode FROM idx WHERE path = ?", (path,)).fetchone()
        return Generation(size=row[0], mtime_ns=row[1], inode=row[2]) if row else None

    def index_has_under(self, prefix: str) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM idx WHERE path LIKE ? ESCAPE '\\' LIMIT 1", (_escape_like(prefix) + "/%",)
            ).fetchone()
        return row is not None

    def index_tuples(self) -> list[tuple[str, int, int, int]]:
        """The whole index as (path, size, mtime_ns, inode) rows: what the engine loads at start."""
        with self._lock:
            return self._db.execute("SELECT path, size, mtime_ns, inode FROM idx").fetchall()

    def index_items(self) -> Iterator[tuple[str, Generation]]:
        with self._lock:
            rows = self._db.execute("SELECT path, size, mtime_ns, inode FROM idx").fetchall()
        for path, size, mtime_ns, inode in rows:
            yield path, Generation(size=size, mtime_ns=mtime_ns, inode=inode)

    # ------------------------------------------------------------------ held deletes

    def hold(self, path: str, action: Action, reason: str, at: float) -> None:
        with self._transaction() as cur:
            cur.execute(
                "INSERT OR REPLACE INTO held (path, body, held_at, reason) VALUES (?, ?, ?, ?)",
                (path, encode(action), at, reason),
            )

    def held(self) -> list[tuple[str, Action, str]]:
        with self._lock:
            rows = self._db.execute("SELECT path, body, reason FROM held ORDER BY held_at").fetchall()
        return [(p, decode_action(b), r) for p, b, r in rows]

    def release_held(self) -> list[tuple[str, Action]]:
        """Move every held delete into the outbox; returns what was released."""
        with self._lock:
            rows = self._db.execute("SELECT path, body FROM held").fetchall()
        released = [(p, decode_action(b)) for p, b in rows]
        self.record(actions=released)
        with self._transaction() as cur:
            cur.execute("DELETE FROM held")
        return released
