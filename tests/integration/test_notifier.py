"""The notifier against real RabbitMQ and Postgres, run as a process (``python -m skynet.notifier``)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

import pika
import psycopg2

from skynet.common.broker import Publisher
from skynet.common.messages import FileEvent, WorkerHeartbeat, encode
from skynet.common.topology import EVENTS_DEAD_QUEUE, EVENTS_EXCHANGE, HEADER_REASON, Topology
from tests.fixtures.common import wait_for
from tests.fixtures.postgres import PrivatePostgres, migrate_url, start_notifier, stop_process


def publish(amqp_url: str, events: Iterable[FileEvent | WorkerHeartbeat]) -> None:
    pub = Publisher(amqp_url, name="test-events", declare=Topology("default").declare_events)
    try:
        for e in events:
            pub.publish(EVENTS_EXCHANGE, e.type, encode(e), message_id=e.id)
    finally:
        pub.close()


def publish_raw(amqp_url: str, routing_key: str, body: bytes) -> None:
    pub = Publisher(amqp_url, name="test-raw", declare=Topology("default").declare_events)
    try:
        pub.publish(EVENTS_EXCHANGE, routing_key, body)
    finally:
        pub.close()


def scalar(url: str, sql: str, *args: object) -> object:
    conn = psycopg2.connect(url, connect_timeout=3)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            row = cur.fetchone()
            return row[0] if row else None
    finally:
        conn.close()


def rows(url: str, sql: str, *args: object) -> list[tuple[object, ...]]:
    conn = psycopg2.connect(url, connect_timeout=3)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())
    finally:
        conn.close()


def journey(path: str, t0: float, size: int = 1000, source: str = "default") -> list[FileEvent]:
    return [
        FileEvent.make("queued", source=source, path=path, created_at=t0),
        FileEvent.make("started", source=source, path=path, size=size, worker="w1", created_at=t0 + 1),
        FileEvent.make("progress", source=source, path=path, size=size, bytes_done=size // 2, created_at=t0 + 2),
        FileEvent.make(
            "done", source=source, path=path, size=size, checksum="etag-1", remote="s3://b/" + path, created_at=t0 + 3
        ),
    ]


def counts_match(url: str) -> None:
    counted = dict(rows(url, "SELECT state, count(*) FROM files GROUP BY state"))
    kept = {s: n for s, n in rows(url, "SELECT state, sum(n)::bigint FROM file_counts GROUP BY state") if n}
    assert counted == kept


def test_a_file_journey_is_stored_once_and_an_older_event_never_overwrites_a_newer_state(
    amqp_url: str, pg_url: str, tmp_path: Path
) -> None:
    t0 = time.time() - 100
    events = journey("a/b.txt", t0)
    late_started = FileEvent.make("started", source="default", path="a/b.txt", created_at=t0 + 1.5)
    beat = WorkerHeartbeat(source="default", worker="w1", role="uploader", active=1, capacity=4)
    # Delivered twice, and out of order: the stale 'started' arrives after 'done'.
    publish(amqp_url, [*events, events[-1], events[0], late_started, beat])
    proc = start_notifier(amqp_url, pg_url, str(tmp_path / "notifier.log"))
    try:
        wait_for(lambda: scalar(pg_url, "SELECT count(*) FROM events") == 5 if _has_schema(pg_url) else False, 30)
        wait_for(lambda: scalar(pg_url, "SELECT count(*) FROM workers WHERE role = 'uploader'") == 1, 10)
        state, size, done, checksum, remote = rows(
            pg_url, "SELECT state, size, bytes_done, checksum, remote FROM files WHERE path = 'a/b.txt'"
        )[0]
        assert (state, size, done, checksum, remote) == ("done", 1000, 1000, "etag-1", "s3://b/a/b.txt")
        assert scalar(pg_url, "SELECT count(DISTINCT id) FROM events") == 5
        counts_match(pg_url)
    finally:
        assert stop_process(proc) == 0


def test_the_notifier_keeps_its_own_worker_row_fresh_and_counts_the_events_it_stored(
    amqp_url: str, pg_url: str, tmp_path: Path
) -> None:
    proc = start_notifier(
        amqp_url,
        pg_url,
        str(tmp_path / "notifier.log"),
        SKYNET_WORKER_ID="notifier-7",
        SKYNET_HEARTBEAT_INTERVAL_S="0.3",
    )
    sql = "SELECT role, files_done, capacity, last_seen FROM workers WHERE worker = 'notifier-7'"
    try:
        wait_for(lambda: _has_schema(pg_url) and bool(rows(pg_url, sql)), 30, what="the notifier's own worker row")
        role, _done, capacity, first_seen = rows(pg_url, sql)[0]
        assert (role, capacity) == ("notifier", 2000)
        publish(amqp_url, journey("n/one.txt", time.time() - 10))
        wait_for(lambda: rows(pg_url, sql)[0][1] == 4, 15, what="files_done = the 4 events stored")
        assert rows(pg_url, sql)[0][3] > first_seen  # still beating
    finally:
        assert stop_process(proc) == 0
    last_seen = rows(pg_url, sql)[0][3]
    time.sleep(1.0)
    assert rows(pg_url, sql)[0][3] == last_seen  # a stopped notifier goes stale


def _has_schema(url: str) -> bool:
    return bool(scalar(url, "SELECT to_regclass('events') IS NOT NULL"))


def test_a_failed_file_records_its_reason_and_attempts_then_clears_them_when_done(
    amqp_url: str, migrated_pg_url: str, tmp_path: Path
) -> None:
    url = migrated_pg_url
    t0 = time.time() - 50
    publish(
        amqp_url,
        [
            FileEvent.make("queued", source="default", path="x.bin", created_at=t0),
            FileEvent.make(
                "failed", source="default", path="x.bin", reason="RemoteUnavailable: 503", attempt=2, created_at=t0 + 1
            ),
        ],
    )
    proc = start_notifier(amqp_url, url, str(tmp_path / "notifier.log"))
    try:
        wait_for(lambda: scalar(url, "SELECT state FROM files WHERE path = 'x.bin'") == "failed", 30)
        assert rows(url, "SELECT attempts, last_error FROM files")[0] == (2, "RemoteUnavailable: 503")
        publish(amqp_url, [FileEvent.make("done", source="default", path="x.bin", size=3, created_at=t0 + 2)])
        wait_for(lambda: scalar(url, "SELECT state FROM files WHERE path = 'x.bin'") == "done", 30)
        assert rows(url, "SELECT attempts, last_error, bytes_done FROM files")[0] == (2, None, 3)
        counts_match(url)
    finally:
        assert stop_process(proc) == 0


def test_a_move_replaces_the_old_path_with_the_new_one(amqp_url: str, migrated_pg_url: str, tmp_path: Path) -> None:
    url = migrated_pg_url
    t0 = time.time() - 50
    publish(
        amqp_url,
        [
            *journey("old.txt", t0),
            FileEvent.make("moved", source="default", path="new.txt", src="old.txt", size=1000, created_at=t0 + 10),
        ],
    )
    proc = start_notifier(amqp_url, url, str(tmp_path / "notifier.log"))
    try:
        wait_for(lambda: scalar(url, "SELECT count(*) FROM events") == 5, 30)
        assert rows(url, "SELECT path, state FROM files") == [("new.txt", "moved")]
        counts_match(url)
    finally:
        assert stop_process(proc) == 0


def test_a_folders_move_takes_the_rows_of_its_files_along_and_leaves_its_neighbours(
    amqp_url: str, migrated_pg_url: str, tmp_path: Path
) -> None:
    """The files under the old folder name are listed under the new one (their reconciling
    reports them there), never under both; a sibling whose name only starts the same stays."""
    url = migrated_pg_url
    t0 = time.time() - 50
    publish(
        amqp_url,
        [
            *journey("shoot/a.raw", t0),
            *journey("shoot/day1/b.raw", t0),
            *journey("shoot-old/c.raw", t0),  # "shoot" begins its name: not under the folder
            *journey("shoot.txt", t0),
            FileEvent.make("moved", source="default", path="shoot-2026", src="shoot", created_at=t0 + 10),
            FileEvent.make("skipped", source="default", path="shoot-2026/a.raw", created_at=t0 + 11),
            FileEvent.make("skipped", source="default", path="shoot-2026/day1/b.raw", created_at=t0 + 11),
        ],
    )
    proc = start_notifier(amqp_url, url, str(tmp_path / "notifier.log"))
    try:
        wait_for(lambda: scalar(url, "SELECT count(*) FROM events") == 19, 30)
        assert rows(url, "SELECT path, state FROM files ORDER BY path") == [
            ("shoot-2026", "moved"),
            ("shoot-2026/a.raw", "skipped"),
            ("shoot-2026/day1/b.raw", "skipped"),
            ("shoot-old/c.raw", "done"),
            ("shoot.txt", "done"),
        ]
        counts_match(url)
    finally:
        assert stop_process(proc) == 0


def test_malformed_events_go_to_the_dead_queue_with_a_reason_and_the_rest_are_stored(
    amqp_url: str, migrated_pg_url: str, tmp_path: Path
) -> None:
    url = migrated_pg_url
    publish_raw(amqp_url, "file.done.v1", b"{not json")
    publish_raw(amqp_url, "file.done.v1", json.dumps({"type": "file.done.v1", "source": "default"}).encode())
    publish_raw(amqp_url, "file.zzz.v9", json.dumps({"type": "file.zzz.v9"}).encode())
    publish(amqp_url, journey("ok.txt", time.time() - 10))
    proc = start_notifier(amqp_url, url, str(tmp_path / "notifier.log"))
    try:
        wait_for(lambda: scalar(url, "SELECT count(*) FROM events") == 4, 30)
        conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
        try:
            ch = conn.channel()
            reasons = []
            for _ in range(50):
                method, props, _body = ch.basic_get(EVENTS_DEAD_QUEUE, auto_ack=True)
                if method is None:
                    if len(reasons) == 3:
                        break
                    time.sleep(0.2)
                    continue
                reasons.append(props.headers[HEADER_REASON])
        finally:
            conn.close()
        assert len(reasons) == 3
        assert any("not JSON" in r for r in reasons)
        assert any("path" in r for r in reasons)
        assert proc.poll() is None
    finally:
        assert stop_process(proc) == 0


def test_awkward_but_valid_event_bodies_are_all_stored_with_their_text_intact(
    amqp_url: str, migrated_pg_url: str, tmp_path: Path
) -> None:
    """Bodies are stored as they arrive (no re-encoding): tabs, backslashes, newlines, NULs, quotes,
    pretty-printed JSON, a number written as 1e3 and missing defaults must all still land right."""
    url = migrated_pg_url
    t = time.time() - 5
    tricky_path = 'odd dir/tab\there back\\slash "quoted" é.txt'
    reason = "line one\nline two\twith tab \\ and a NUL\x00 here"
    failed = FileEvent.make("failed", source="default", path=tricky_path, reason=reason, attempt=2, created_at=t)
    publish(amqp_url, [failed])
    pretty = json.dumps(
        {
            "type": "file.queued.v1",
            "state": "queued",
            "source": "default",
            "path": "pretty.txt",
            "size": 1e3,
            "id": "pretty-1",
            "created_at": t,
        },
        indent=2,
    ).encode()
    publish_raw(amqp_url, "file.queued.v1", pretty)
    no_defaults = json.dumps({"type": "file.queued.v1", "state": "queued", "source": "default", "path": "bare.txt"})
    publish_raw(amqp_url, "file.queued.v1", no_defaults.encode())
    proc = start_notifier(amqp_url, url, str(tmp_path / "notifier.log"))
    try:
        wait_for(lambda: scalar(url, "SELECT count(*) FROM events") == 3, 30)
        got = dict(rows(url, "SELECT path, payload->>'reason' FROM events"))
        assert got[tricky_path] == reason.replace("\x00", "")
        assert rows(url, "SELECT state, last_error, attempts FROM files WHERE path = %s", tricky_path) == [
            ("failed", reason.replace("\x00", ""), 2)
        ]
        assert scalar(url, "SELECT size FROM events WHERE path = 'pretty.txt'") == 1000
        assert scalar(url, "SELECT id FROM events WHERE path = 'pretty.txt'") == "pretty-1"
        bare_id = scalar(url, "SELECT id FROM events WHERE path = 'bare.txt'")
        assert isinstance(bare_id, str) and bare_id
        assert scalar(url, "SELECT payload->>'id' FROM events WHERE path = 'bare.txt'") == bare_id
        assert scalar(url, "SELECT count(*) FROM files WHERE state = 'queued'") == 2
        assert proc.poll() is None
    finally:
        assert stop_process(proc) == 0


def test_a_newer_workers_events_with_fields_this_notifier_does_not_know_are_stored_without_them(
    amqp_url: str, migrated_pg_url: str, tmp_path: Path
) -> None:
    """During an upgrade, workers may run a newer version than the notifier: the events they add
    fields to are still stored (the fields this version knows), not dead-lettered, and the worker
    shows as alive. A field it does not know is neither stored nor served."""
    url = migrated_pg_url
    t = time.time() - 5
    newer = {"hint": "from a newer worker", "secret_token": "s3cr3t", "nested": {"a": [1, 2]}}
    done = {"type": "file.done.v1", "state": "done", "source": "default", "path": "new.txt", "size": 7}
    publish_raw(amqp_url, "file.done.v1", json.dumps({**done, "id": "newer-1", "created_at": t, **newer}).encode())
    beat = {"type": "worker.heartbeat.v1", "source": "default", "worker": "uploader-v9", "role": "uploader"}
    publish_raw(amqp_url, "worker.heartbeat.v1", json.dumps({**beat, "files_done": 1, **newer}).encode())
    publish_raw(amqp_url, "file.done.v1", json.dumps({**done, "path": "bad.txt", "size": -1, **newer}).encode())
    proc = start_notifier(amqp_url, url, str(tmp_path / "notifier.log"))
    try:
        wait_for(lambda: scalar(url, "SELECT count(*) FROM workers WHERE worker = 'uploader-v9'") == 1, 30)
        wait_for(lambda: scalar(url, "SELECT count(*) FROM events") == 1, 30)
        assert rows(url, "SELECT path, state, size FROM files") == [("new.txt", "done", 7)]
        payload = scalar(url, "SELECT payload FROM events WHERE id = 'newer-1'")
        assert isinstance(payload, dict) and payload["path"] == "new.txt"
        assert not set(newer) & set(payload)
        assert scalar(url, "SELECT files_done FROM workers WHERE worker = 'uploader-v9'") == 1
        assert "s3cr3t" not in (tmp_path / "notifier.log").read_text()
        wait_for(lambda: _dead_count(amqp_url) == 1, 10, what="a known field with a bad value still refused")
        assert proc.poll() is None
    finally:
        assert stop_process(proc) == 0


def _dead_count(amqp_url: str) -> int:
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        return int(conn.channel().queue_declare(EVENTS_DEAD_QUEUE, passive=True).method.message_count)
    finally:
        conn.close()


def test_the_notifier_killed_midway_through_10000_events_stores_each_exactly_once(
    amqp_url: str, migrated_pg_url: str, tmp_path: Path
) -> None:
    url = migrated_pg_url
    t0 = time.time() - 1000
    events = [
        FileEvent.make("done" if i % 2 else "queued", source="default", path=f"f/{i // 2}", size=i, created_at=t0 + i)
        for i in range(10_000)
    ]
    publish(amqp_url, events)
    log = str(tmp_path / "notifier.log")
    proc = start_notifier(amqp_url, url, log, SKYNET_BATCH_SIZE="200")
    wait_for(lambda: (scalar(url, "SELECT count(*) FROM events") or 0) >= 2000, 60, what="a fifth stored")  # type: ignore[operator]
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    stored_at_kill = scalar(url, "SELECT count(*) FROM events")
    assert stored_at_kill < 10_000  # type: ignore[operator]
    proc = start_notifier(amqp_url, url, log, SKYNET_BATCH_SIZE="200")
    try:
        wait_for(lambda: scalar(url, "SELECT count(*) FROM events") == 10_000, 120, what="all 10,000 events")
        time.sleep(1.0)  # anything redelivered late must not add rows
        assert scalar(url, "SELECT count(*) FROM events") == 10_000
        assert scalar(url, "SELECT count(DISTINCT id) FROM events") == 10_000
        assert rows(url, "SELECT state, count(*) FROM files GROUP BY state") == [("done", 5000)]
        counts_match(url)
    finally:
        assert stop_process(proc) == 0


def test_with_postgres_stopped_for_30s_events_wait_in_the_queue_and_are_stored_when_it_returns(
    amqp_url: str, private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    pg = private_postgres
    url = pg.url(pg.create_database())
    migrate_url(url)
    log = tmp_path / "notifier.log"
    proc = start_notifier(amqp_url, url, str(log))
    try:
        publish(amqp_url, journey("before.txt", time.time() - 5))
        wait_for(lambda: scalar(url, "SELECT count(*) FROM events") == 4, 30)
        pg.stop()
        t_stop = time.monotonic()
        # Uploads go on meanwhile: their events are published and wait in the queue.
        during = [e for i in range(100) for e in journey(f"during/{i}.txt", time.time() + i)]
        publish(amqp_url, during)
        time.sleep(max(0.0, 30 - (time.monotonic() - t_stop)))
        assert proc.poll() is None, "the notifier must survive a database outage"
        pg.start()
        wait_for(lambda: _count_or_none(url) == 404, 90, what="the events published during the outage")
        assert scalar(url, "SELECT count(*) FROM files WHERE state = 'done'") == 101
        assert "database unavailable" in log.read_text() or "cannot connect" in log.read_text()
    finally:
        assert stop_process(proc) == 0


def _count_or_none(url: str) -> object:
    try:
        return scalar(url, "SELECT count(*) FROM events")
    except psycopg2.OperationalError:
        return None


def test_old_events_and_old_progress_ticks_are_pruned(amqp_url: str, migrated_pg_url: str, tmp_path: Path) -> None:
    url = migrated_pg_url
    now = time.time()
    publish(
        amqp_url,
        [
            FileEvent.make("done", source="default", path="ancient.txt", created_at=now - 40 * 86400),
            FileEvent.make("progress", source="default", path="p.txt", bytes_done=1, created_at=now - 7200),
            FileEvent.make("progress", source="default", path="p.txt", bytes_done=2, created_at=now - 10),
            FileEvent.make("done", source="default", path="recent.txt", created_at=now - 10),
        ],
    )
    proc = start_notifier(
        amqp_url, url, str(tmp_path / "n.log"), SKYNET_EVENT_RETENTION_DAYS="30", SKYNET_PROGRESS_RETENTION_MINUTES="60"
    )
    try:
        wait_for(lambda: scalar(url, "SELECT count(*) FROM events") == 2, 30, what="pruning")
        kept = {r[0] for r in rows(url, "SELECT path || ':' || state FROM events")}
        assert kept == {"p.txt:progress", "recent.txt:done"}
        # The current state of a file outlives its pruned events.
        assert scalar(url, "SELECT state FROM files WHERE path = 'ancient.txt'") == "done"
    finally:
        assert stop_process(proc) == 0


def test_when_the_broker_drops_the_connection_the_notifier_reconnects_and_goes_on(
    amqp_vhost: str, amqp_url: str, migrated_pg_url: str, tmp_path: Path
) -> None:
    url = migrated_pg_url
    proc = start_notifier(amqp_url, url, str(tmp_path / "notifier.log"))
    try:
        publish(amqp_url, journey("one.txt", time.time() - 5))
        wait_for(lambda: scalar(url, "SELECT count(*) FROM events") == 4, 30)
        subprocess.run(
            ["rabbitmqctl", "-q", "close_all_connections", "-p", amqp_vhost, "test: broker restart"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        publish(amqp_url, journey("two.txt", time.time() - 4))
        wait_for(lambda: scalar(url, "SELECT count(*) FROM events") == 8, 60, what="events after the reconnect")
        assert proc.poll() is None
        assert "reconnecting" in (tmp_path / "notifier.log").read_text()
    finally:
        assert stop_process(proc) == 0
