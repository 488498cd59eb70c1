"""What the status says once the folder is mirrored: every file's last word is a final one.

The notifier keeps, per path, the state its newest event set, and the API, the CLI and the
dashboard show those rows ("queued 3", "oldest pending: …"). So every path an action announced
("queued") must get a final event, and a folder's move must take the rows of its files along.
A remote as quick as a mounted folder is where an uploader can finish an action before the
watcher's own "queued" event for it goes out.
"""

from __future__ import annotations

import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psycopg2

from skynet.api import queries
from skynet.api.models import Status, TargetConflict, WatcherConflict, Worker
from tests.e2e.harness import Stack
from tests.e2e.remotes import FolderRemote
from tests.fixtures.common import wait_for

PENDING = ("queued", "waiting", "started")
T = TypeVar("T")


def _read(pg_url: str, query: Callable[[Any], T], empty: T) -> T:
    """``query`` run on a cursor of its own; ``empty`` until the notifier has made its tables."""
    conn = psycopg2.connect(pg_url)
    try:
        with conn.cursor() as cur:
            return query(cur)
    except psycopg2.errors.UndefinedTable:
        return empty
    finally:
        conn.close()


def _rows(pg_url: str) -> dict[str, str]:
    def files(cur: Any) -> dict[str, str]:
        cur.execute("SELECT path, state FROM files")
        return {path: state for path, state in cur.fetchall()}

    return _read(pg_url, files, {})


def test_once_mirrored_no_file_is_left_pending_and_no_old_name_is_listed(
    tmp_path: Path, amqp_url: str, pg_url: str
) -> None:
    stack = Stack(tmp_path / "stack", amqp_url, FolderRemote(tmp_path / "nas"), settle_ms=100)
    try:
        stack.start("notifier", SKYNET_DATABASE_URL=pg_url)
        stack.start("watcher")
        stack.start("uploader")
        w = stack.watch
        (w / "shoot" / "day1").mkdir(parents=True)
        for i in range(60):
            (w / "shoot" / "day1" / f"img{i:02}.raw").write_bytes(bytes([i]) * 50_000)
        (w / "notes.txt").write_text("kept throughout")
        stack.wait_mirror(60)

        (w / "shoot").rename(w / "shoot-2026")  # a folder renamed, one of its files deleted after
        (w / "shoot-2026" / "day1" / "img07.raw").unlink()
        (w / "fresh").mkdir()  # a folder renamed before its files were sent
        for i in range(3):
            (w / "fresh" / f"f{i}.txt").write_text(f"fresh {i}")
        (w / "fresh").rename(w / "fresh-2")
        stack.wait_mirror(60)
        shutil.rmtree(w / "shoot-2026")  # a folder deleted
        stack.wait_mirror(60)

        gone = [f"shoot-2026/day1/img{i:02}.raw" for i in range(60) if i != 7]

        def settled() -> bool:  # the deletes stored (the last change made), and nothing pending
            rows = _rows(pg_url)
            return all(rows.get(p) == "deleted" for p in gone) and not any(s in PENDING for s in rows.values())

        try:
            wait_for(settled, 30, what="the notifier caught up")
        except AssertionError:
            rows = _rows(pg_url)
            pending = {p: s for p, s in rows.items() if s in PENDING}
            raise AssertionError(f"shown as pending after the mirror is complete: {pending}; all: {rows}") from None
        rows = _rows(pg_url)
        assert not [p for p in rows if p.startswith("shoot/")], "files listed under the folder's old name"
        assert rows["shoot-2026/day1/img07.raw"] in ("deleted", "skipped")
        assert [rows[p] for p in ("notes.txt", "fresh-2/f0.txt", "fresh-2/f1.txt", "fresh-2/f2.txt")] == ["done"] * 4
    finally:
        stack.stop_all()


def _status(pg_url: str) -> Status | None:
    """What `skynet status` shows; None until the notifier has made its tables."""
    return _read(pg_url, queries.status, None)


def _workers(pg_url: str) -> dict[str, Worker]:
    """What `/v1/workers` shows; nothing until the notifier has made its tables."""
    return _read(pg_url, lambda cur: {w.worker: w for w in queries.list_workers(cur, 30.0)}, {})


def test_a_worker_stopped_cleanly_is_shown_stopped_at_once_and_one_killed_is_not(
    tmp_path: Path, amqp_url: str, pg_url: str
) -> None:
    """`docker compose stop uploader` must not leave the status counting the uploader alive for
    another 30 s; a worker killed outright sends no word, so only its heartbeats' age tells."""
    stack = Stack(tmp_path / "stack", amqp_url, FolderRemote(tmp_path / "nas"), settle_ms=100)
    try:
        notifier = stack.start("notifier", name="n-1", SKYNET_DATABASE_URL=pg_url, SKYNET_HEARTBEAT_INTERVAL_S="1")
        watcher = stack.start("watcher", name="w-1")
        stopped = stack.start("uploader", name="up-stopped", SKYNET_HEARTBEAT_INTERVAL_S="1")
        killed = stack.start("uploader", name="up-killed", SKYNET_HEARTBEAT_INTERVAL_S="1")
        (stack.watch / "a.txt").write_text("mirrored while all four run")
        stack.wait_mirror(60)
        wait_for(lambda: len([w for w in _workers(pg_url).values() if w.alive]) == 4, 30, what="four live workers")

        for proc in (stopped, watcher):
            proc.kill(signal.SIGTERM)
        killed.kill(signal.SIGKILL)
        wait_for(
            lambda: not _workers(pg_url)["uploader-up-stopped"].alive, 10, what="the stopped uploader shown stopped"
        )
        wait_for(lambda: not _workers(pg_url)["watcher-w-1"].alive, 10, what="the stopped watcher shown stopped")
        workers = _workers(pg_url)
        assert workers["uploader-up-stopped"].stopped_at is not None and workers["watcher-w-1"].stopped_at is not None
        assert (
            workers["uploader-up-killed"].stopped_at is None and workers["uploader-up-killed"].alive
        )  # until its beats are old
        assert workers["n-1"].alive

        notifier.kill(signal.SIGTERM)
        assert not notifier.alive()
        notifier_row = _workers(pg_url)["n-1"]
        assert (notifier_row.alive, notifier_row.stopped_at is not None) == (False, True)
    finally:
        stack.stop_all()


def test_two_sources_whose_uploaders_share_a_target_are_named_in_the_status(
    tmp_path: Path, amqp_url: str, pg_url: str
) -> None:
    remote = FolderRemote(tmp_path / "nas")
    stack = Stack(tmp_path / "stack", amqp_url, remote, settle_ms=100)
    try:
        stack.start("notifier", SKYNET_DATABASE_URL=pg_url)
        for source in ("photos", "cams"):
            stack.start("uploader", name=f"up-{source}", SKYNET_SOURCE=source, SKYNET_HEARTBEAT_INTERVAL_S="1")

        def shared() -> list[TargetConflict]:
            st = _status(pg_url)
            return st.target_conflicts if st else []

        wait_for(lambda: len(shared()) == 1, 30, what="the shared target named in the status")
        (conflict,) = shared()
        assert conflict.sources == ["cams", "photos"]
        assert conflict.targets == [f"file://{remote.root}"] * 2
    finally:
        stack.stop_all()


def test_a_second_watcher_of_one_source_is_named_in_the_status(tmp_path: Path, amqp_url: str, pg_url: str) -> None:
    stack = Stack(tmp_path / "stack", amqp_url, FolderRemote(tmp_path / "nas"), settle_ms=100)
    other = tmp_path / "other"
    (other / "watched").mkdir(parents=True)
    try:
        stack.start("notifier", SKYNET_DATABASE_URL=pg_url)
        stack.start("watcher", name="w-1")
        stack.start("watcher", name="w-2", SKYNET_WATCH_DIR=str(other / "watched"), SKYNET_STATE_DIR=str(other))

        def doubled() -> list[WatcherConflict]:
            st = _status(pg_url)
            return st.watcher_conflicts if st else []

        wait_for(lambda: len(doubled()) == 1, 30, what="the source's two watchers named in the status")
        assert doubled()[0].watchers == ["watcher-w-1", "watcher-w-2"]
    finally:
        stack.stop_all()
