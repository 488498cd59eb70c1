"""The API against real Postgres (and RabbitMQ for queue depths and admin actions)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pika
import pytest

from skynet.api.app import create_app
from skynet.api.settings import ApiSettings
from skynet.common.broker import Publisher
from skynet.common.messages import MAX_CONDITION, FileEvent, WorkerHeartbeat, decode_action, encode
from skynet.common.topology import (
    CONTROL_EXCHANGE,
    EVENTS_EXCHANGE,
    HEADER_ATTEMPTS,
    HEADER_REASON,
    Topology,
    actions_queue,
    dead_queue,
    recheck_queue,
    retry_queue,
)
from skynet.notifier.store import EventStore
from tests.fixtures.common import wait_for
from tests.fixtures.postgres import start_api, start_notifier, stop_process

with warnings.catch_warnings():
    # starlette's TestClient warns that it prefers httpx2 at import time; httpx is what we have.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

READ = "read-token-0123456789abcdef"
ADMIN = "admin-token-0123456789abcdef"
H_READ = {"Authorization": f"Bearer {READ}"}
H_ADMIN = {"Authorization": f"Bearer {ADMIN}"}
DB_PASSWORD = "pw-that-must-never-show"  # trust auth ignores it; it must never be echoed


def with_password(url: str) -> str:
    return url.replace("postgres@", f"postgres:{DB_PASSWORD}@", 1)


def store(url: str, events: list[FileEvent | WorkerHeartbeat]) -> None:
    s = EventStore(url)
    try:
        s.store(events)
    finally:
        s.close()


@pytest.fixture
def client(migrated_pg_url: str) -> Iterator[TestClient]:
    settings = ApiSettings(database_url=with_password(migrated_pg_url), api_token=READ, api_admin_token=ADMIN)
    with TestClient(create_app(settings)) as c:
        yield c


def skynet_status(db_url: str, *args: str) -> str:
    """What ``skynet status [args]`` prints for the database at ``db_url`` (it must succeed)."""
    done = subprocess.run(
        [sys.executable, "-m", "skynet.api.cli", "status", *args],
        env={"SKYNET_DATABASE_URL": db_url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def seed_files(url: str, n: int = 25) -> None:
    t0 = time.time() - 1000
    events: list[FileEvent | WorkerHeartbeat] = []
    for i in range(n):
        state = ("done", "failed", "queued", "dead", "started")[i % 5]
        source = "alpha" if i % 2 else "beta"
        extra: dict[str, Any] = {"reason": f"boom {i}", "attempt": 3} if state in ("failed", "dead") else {}
        events.append(
            FileEvent.make(
                state,
                source=source,
                path=f"dir{i % 3}/file{i:03d}.bin",
                size=100,  # type: ignore[arg-type]
                created_at=t0 + i,
                **extra,
            )
        )
    store(url, events)


def test_files_are_listed_by_path_with_filters_and_a_cursor_that_walks_every_page(
    client: TestClient, migrated_pg_url: str
) -> None:
    seed_files(migrated_pg_url)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 7, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/files", params=params, headers=H_READ).json()
        seen += [f["path"] for f in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 25 and seen == sorted(seen)
    failed = client.get("/v1/files", params={"state": "failed"}, headers=H_READ).json()["items"]
    assert {f["state"] for f in failed} == {"failed"} and len(failed) == 5
    beta = client.get("/v1/files", params={"source": "beta", "prefix": "dir1/"}, headers=H_READ).json()["items"]
    assert beta and all(f["source"] == "beta" and f["path"].startswith("dir1/") for f in beta)
    # A prefix with LIKE wildcards matches literally.
    assert client.get("/v1/files", params={"prefix": "dir%"}, headers=H_READ).json()["items"] == []
    bad = client.get("/v1/files", params={"cursor": "bm9wZQ"}, headers=H_READ)
    assert bad.status_code == 422 and bad.json()["error"] == "invalid cursor"


def test_status_counts_files_per_state_and_reports_the_oldest_pending_file(
    client: TestClient, migrated_pg_url: str
) -> None:
    seed_files(migrated_pg_url)
    store(migrated_pg_url, [FileEvent.make("done", source="alpha", path="now.bin", size=7)])
    st = client.get("/v1/status", headers=H_READ).json()
    assert st["files"] == {"done": 6, "failed": 5, "queued": 5, "dead": 5, "started": 5}
    assert st["files_total"] == 26
    assert st["done_last_minute"] == {"files": 1, "bytes": 7}
    assert st["oldest_pending"]["path"] == "dir1/file001.bin"  # the first failed one
    assert st["queues"] is None  # no broker configured


def test_status_of_one_source_counts_only_its_files_uploads_and_workers(
    client: TestClient, migrated_pg_url: str
) -> None:
    seed_files(migrated_pg_url)
    store(
        migrated_pg_url,
        [
            FileEvent.make("done", source="alpha", path="now.bin", size=7),
            WorkerHeartbeat(source="alpha", worker="up-a", role="uploader"),
            WorkerHeartbeat(source="beta", worker="up-b", role="uploader"),
            WorkerHeartbeat(source="beta", worker="watch-b", role="watcher"),
            WorkerHeartbeat(source="default", worker="notif", role="notifier"),
        ],
    )
    beta = client.get("/v1/status", params={"source": "beta"}, headers=H_READ).json()
    assert beta["files"] == {"done": 3, "queued": 3, "started": 3, "failed": 2, "dead": 2}
    assert beta["files_total"] == 13 and set(beta["sources"]) == {"beta"}
    assert beta["done_last_minute"] == {"files": 0, "bytes": 0}  # the recent one is alpha's
    assert beta["oldest_pending"]["path"] == "dir2/file002.bin"
    assert beta["active_transfers"] == 3
    assert beta["workers_alive"] == 3  # its uploader and watcher, and the notifier that serves all
    alpha = client.get("/v1/status", params={"source": "alpha"}, headers=H_READ).json()
    assert alpha["files_total"] == 13 and alpha["done_last_minute"] == {"files": 1, "bytes": 7}
    assert alpha["oldest_pending"]["path"] == "dir1/file001.bin" and alpha["workers_alive"] == 2
    everyone = client.get("/v1/status", headers=H_READ).json()
    assert everyone["files_total"] == 26 and everyone["workers_alive"] == 4
    nobody = client.get("/v1/status", params={"source": "gamma"}, headers=H_READ).json()
    assert nobody["files_total"] == 0 and nobody["oldest_pending"] is None and nobody["sources"] == {}
    bad = client.get("/v1/status", params={"source": "../x"}, headers=H_READ)
    assert bad.status_code == 422


def test_failures_list_failed_and_dead_files_newest_first_with_their_reason(
    client: TestClient, migrated_pg_url: str
) -> None:
    seed_files(migrated_pg_url)
    page = client.get("/v1/failures", params={"limit": 4}, headers=H_READ).json()
    rest = client.get("/v1/failures", params={"cursor": page["next_cursor"]}, headers=H_READ).json()
    items = page["items"] + rest["items"]
    assert len(items) == 10 and rest["next_cursor"] is None
    assert [f["state_at"] for f in items] == sorted((f["state_at"] for f in items), reverse=True)
    assert all(f["last_error"].startswith("boom") and f["attempts"] == 3 for f in items)


def test_a_path_in_two_sources_needs_a_source_and_an_unknown_path_is_404(
    client: TestClient, migrated_pg_url: str
) -> None:
    store(
        migrated_pg_url,
        [FileEvent.make("done", source="a", path="same.txt"), FileEvent.make("queued", source="b", path="same.txt")],
    )
    assert client.get("/v1/files/same.txt", headers=H_READ).status_code == 409
    one = client.get("/v1/files/same.txt", params={"source": "b"}, headers=H_READ).json()
    assert one["file"]["state"] == "queued" and [e["state"] for e in one["history"]] == ["queued"]
    missing = client.get("/v1/files/no/such.txt", headers=H_READ)
    assert missing.status_code == 404 and missing.json()["error"] == "no such file"


def test_events_page_forward_from_a_cursor(client: TestClient, migrated_pg_url: str) -> None:
    store(migrated_pg_url, [FileEvent.make("queued", source="s", path=f"e{i}") for i in range(5)])
    newest = client.get("/v1/events", params={"limit": 2}, headers=H_READ).json()
    assert [e["path"] for e in newest["items"]] == ["e3", "e4"]
    first = client.get("/v1/events", params={"cursor": "0", "limit": 3}, headers=H_READ).json()
    assert [e["path"] for e in first["items"]] == ["e0", "e1", "e2"]
    after = client.get("/v1/events", params={"cursor": first["next_cursor"]}, headers=H_READ).json()
    assert [e["path"] for e in after["items"]] == ["e3", "e4"]
    empty = client.get("/v1/events", params={"cursor": after["next_cursor"]}, headers=H_READ).json()
    assert empty["items"] == [] and empty["next_cursor"] == after["next_cursor"]


def test_transfers_show_percent_and_eta_and_workers_show_liveness(client: TestClient, migrated_pg_url: str) -> None:
    now = time.time()
    store(
        migrated_pg_url,
        [
            FileEvent.make("started", source="s", path="big.iso", size=1000, worker="w1", created_at=now - 10),
            FileEvent.make("progress", source="s", path="big.iso", size=1000, bytes_done=250, created_at=now - 5),
            WorkerHeartbeat(source="s", worker="w1", role="uploader", active=1, capacity=4),
            WorkerHeartbeat(source="s", worker="old", role="watcher", created_at=now - 3600),
        ],
    )
    t = client.get("/v1/transfers", headers=H_READ).json()["items"][0]
    assert t["percent"] == 25.0 and t["rate_bytes_per_s"] == 50.0 and t["eta_s"] == 15.0
    workers = {w["worker"]: w["alive"] for w in client.get("/v1/workers", headers=H_READ).json()["items"]}
    assert workers == {"w1": True, "old": False}


def test_a_worker_that_stopped_cleanly_is_shown_stopped_at_once_until_it_starts_again(
    client: TestClient, migrated_pg_url: str
) -> None:
    """A worker's last heartbeat says it stopped: it no longer counts as alive, nor its condition
    as news, without waiting for its heartbeats to grow stale. Starting again revives the row."""
    paused = "paused: remote unavailable: connection refused"
    live = WorkerHeartbeat(source="s", worker="up-1", role="uploader", active=3, capacity=4, condition=paused)
    notifier = WorkerHeartbeat(source="default", worker="n1", role="notifier")
    store(migrated_pg_url, [live, WorkerHeartbeat(source="s", worker="w-1", role="watcher"), notifier])
    assert client.get("/v1/status", headers=H_READ).json()["workers_alive"] == 3

    store(migrated_pg_url, [WorkerHeartbeat(**live.model_dump(exclude={"id", "created_at"})).last(), notifier.last()])
    workers = {w["worker"]: w for w in client.get("/v1/workers", headers=H_READ).json()["items"]}
    assert (workers["up-1"]["alive"], workers["up-1"]["active"]) == (False, 0)
    assert abs(datetime.fromisoformat(workers["up-1"]["stopped_at"]).timestamp() - time.time()) < 30
    assert (workers["w-1"]["alive"], workers["w-1"]["stopped_at"]) == (True, None)
    st = client.get("/v1/status", headers=H_READ).json()
    assert (st["workers_alive"], st["workers_impeded"], st["notifier_alive"]) == (1, [], False)
    assert "workers alive: 1" in skynet_status(migrated_pg_url)
    assert 'skynet_workers{alive="false",role="uploader"} 1' in client.get("/metrics", headers=H_READ).text

    store(migrated_pg_url, [WorkerHeartbeat(source="s", worker="up-1", role="uploader")])  # started again
    workers = {w["worker"]: w for w in client.get("/v1/workers", headers=H_READ).json()["items"]}
    assert (workers["up-1"]["alive"], workers["up-1"]["stopped_at"]) == (True, None)


def test_two_sources_sending_to_the_same_place_are_named_in_the_status(
    client: TestClient, migrated_pg_url: str
) -> None:
    """A copied compose service that kept its SKYNET_TARGET makes two sources overwrite each other
    (and in mirror mode delete each other's files): the status says so, for live uploaders only."""
    now = time.time()

    def up(source: str, target: str, **kw: Any) -> WorkerHeartbeat:
        return WorkerHeartbeat(source=source, worker=f"up-{source}", role="uploader", target=target, **kw)

    store(
        migrated_pg_url,
        [
            up("photos", "sftp://skynet@nas:22/backup"),
            up("cams", "sftp://skynet@nas:22/backup/cams"),
            up("docs", "sftp://skynet@nas:22/docs"),
            up("old", "sftp://skynet@nas:22/docs", created_at=now - 3600),  # long gone
        ],
    )
    st = client.get("/v1/status", headers=H_READ).json()
    assert st["target_conflicts"] == [
        {"sources": ["cams", "photos"], "targets": ["sftp://skynet@nas:22/backup/cams", "sftp://skynet@nas:22/backup"]}
    ]
    assert client.get("/v1/status?source=docs", headers=H_READ).json()["target_conflicts"] == []
    assert len(client.get("/v1/status?source=photos", headers=H_READ).json()["target_conflicts"]) == 1
    workers = {w["worker"]: w for w in client.get("/v1/workers", headers=H_READ).json()["items"]}
    assert workers["up-docs"]["target"] == "sftp://skynet@nas:22/docs"
    assert "skynet_target_conflicts 1" in client.get("/metrics", headers=H_READ).text
    assert "! sources cams and photos send to the same place" in skynet_status(migrated_pg_url)

    store(migrated_pg_url, [up("cams", "sftp://skynet@nas:22/cams")])  # put right and restarted
    assert client.get("/v1/status", headers=H_READ).json()["target_conflicts"] == []
    assert "skynet_target_conflicts 0" in client.get("/metrics", headers=H_READ).text


def test_a_source_with_two_live_watchers_is_named_in_the_status(client: TestClient, migrated_pg_url: str) -> None:
    """One watcher per source: a second (a copied service that kept SKYNET_SOURCE, a replica count
    of 2) sends actions for its own folder to the same uploaders. A watcher gone or stopped and
    its successor are not two."""

    def watcher(source: str, name: str, **kw: Any) -> WorkerHeartbeat:
        return WorkerHeartbeat(source=source, worker=name, role="watcher", **kw)

    store(
        migrated_pg_url,
        [
            watcher("photos", "watcher-a"),
            watcher("photos", "watcher-b"),
            watcher("docs", "watcher-old", created_at=time.time() - 3600),
            watcher("docs", "watcher-new"),
            watcher("cams", "watcher-1").last(),
            watcher("cams", "watcher-2"),
        ],
    )
    st = client.get("/v1/status", headers=H_READ).json()
    assert st["watcher_conflicts"] == [{"source": "photos", "watchers": ["watcher-a", "watcher-b"]}]
    assert client.get("/v1/status?source=docs", headers=H_READ).json()["watcher_conflicts"] == []
    assert "skynet_watcher_conflicts 1" in client.get("/metrics", headers=H_READ).text
    assert "! source photos has 2 watchers (watcher-a, watcher-b): one watcher per source" in skynet_status(
        migrated_pg_url
    )


def test_what_keeps_a_worker_from_its_work_is_shown_until_a_newer_heartbeat_clears_it(
    client: TestClient, migrated_pg_url: str
) -> None:
    now = time.time()
    paused = "paused: remote unavailable: ssh: connect to host 127.0.0.1 port 2222: Connection refused"
    store(
        migrated_pg_url,
        [
            WorkerHeartbeat(source="s", worker="up-1", role="uploader", condition=paused, condition_since=now - 90),
            WorkerHeartbeat(source="s", worker="up-2", role="uploader"),
            WorkerHeartbeat(source="t", worker="w-t", role="watcher", condition="x" * 5000),  # cut, not refused
            WorkerHeartbeat(source="s", worker="gone", role="uploader", condition=paused, created_at=now - 3600),
        ],
    )
    workers = {w["worker"]: w for w in client.get("/v1/workers", headers=H_READ).json()["items"]}
    assert workers["up-1"]["condition"] == paused and workers["up-2"]["condition"] is None
    assert abs(datetime.fromisoformat(workers["up-1"]["condition_since"]).timestamp() - (now - 90)) < 1
    assert len(workers["w-t"]["condition"]) == MAX_CONDITION
    st = client.get("/v1/status", headers=H_READ).json()
    assert [(w["worker"], w["condition"][:6]) for w in st["workers_impeded"]] == [("up-1", "paused"), ("w-t", "xxxxxx")]
    assert [w["worker"] for w in client.get("/v1/status?source=s", headers=H_READ).json()["workers_impeded"]] == [
        "up-1"
    ]  # a stale worker's last word is not news, and another source's is not this one's
    text = client.get("/metrics", headers=H_READ).text
    assert 'skynet_workers_impeded{role="uploader"} 1' in text and 'skynet_workers_impeded{role="watcher"} 1' in text
    shown = skynet_status(migrated_pg_url, "--source", "s")
    assert f"! up-1 (uploader, s) (since {datetime.fromtimestamp(now - 90, UTC):%H:%M}" in shown
    assert paused in shown

    store(migrated_pg_url, [WorkerHeartbeat(source="s", worker="up-1", role="uploader")])  # the remote is back
    workers = {w["worker"]: w for w in client.get("/v1/workers", headers=H_READ).json()["items"]}
    assert workers["up-1"]["condition"] is None and workers["up-1"]["condition_since"] is None
    assert client.get("/v1/status?source=s", headers=H_READ).json()["workers_impeded"] == []


def test_without_a_live_notifier_the_status_says_it_is_out_of_date(client: TestClient, migrated_pg_url: str) -> None:
    """With no notifier storing events, every worker looks dead and the counts stop moving: the
    status must say that the picture is old, not let it pass for the present."""

    def status() -> dict[str, Any]:
        return dict(client.get("/v1/status", headers=H_READ).json())

    assert status()["notifier_alive"] is False and status()["notifier_seen_at"] is None  # never ran
    assert "! no notifier is storing events (ever)" in skynet_status(migrated_pg_url)
    long_ago = time.time() - 3600
    store(migrated_pg_url, [WorkerHeartbeat(source="default", worker="n1", role="notifier", created_at=long_ago)])
    st = status()
    assert st["notifier_alive"] is False
    assert abs(datetime.fromisoformat(st["notifier_seen_at"]).timestamp() - long_ago) < 1
    assert (
        f"! no notifier is storing events (since {datetime.fromtimestamp(long_ago, UTC):%Y-%m-%d %H:%M}"
        in skynet_status(migrated_pg_url)
    )
    store(migrated_pg_url, [WorkerHeartbeat(source="default", worker="n2", role="notifier")])
    assert status()["notifier_alive"] is True
    assert "no notifier" not in skynet_status(migrated_pg_url)


def test_a_file_name_cannot_drive_the_terminal_that_shows_skynet_status(migrated_pg_url: str) -> None:
    """The watcher refuses a name with control characters, and the failure is listed under that
    name: ``skynet status`` shows it escaped, never writes an escape sequence to the terminal."""
    hostile = "clear\x1b[2J\x1b]0;owned\x07\nfake: line.txt"
    store(
        migrated_pg_url,
        [
            FileEvent.make("failed", source="s", path=hostile, reason="InvalidPath: contains a control character"),
            WorkerHeartbeat(source="s", worker="up\x1b[31m", role="uploader", condition="paused: \x1b[5mremote"),
        ],
    )
    shown = skynet_status(migrated_pg_url)
    assert "\x1b" not in shown and "\x07" not in shown and "\nfake: line.txt" not in shown
    assert "oldest pending: s:clear\\x1b[2J\\x1b]0;owned\\x07\\nfake: line.txt (failed" in shown
    assert "! up\\x1b[31m (uploader, s)" in shown and "paused: \\x1b[5mremote" in shown


def test_metrics_speak_prometheus_and_need_the_read_token_by_default(client: TestClient, migrated_pg_url: str) -> None:
    seed_files(migrated_pg_url)
    assert client.get("/metrics").status_code == 401
    r = client.get("/metrics", headers=H_READ)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert 'skynet_files{source="alpha",state="failed"} ' in r.text
    assert "# TYPE skynet_api_requests_total counter" in r.text


def test_no_secret_appears_in_any_response(client: TestClient, migrated_pg_url: str) -> None:
    seed_files(migrated_pg_url)
    paths = [
        "/healthz",
        "/readyz",
        "/v1/status",
        "/v1/files",
        "/v1/failures",
        "/v1/events",
        "/metrics",
        "/openapi.json",
    ]
    for path in paths:
        body = client.get(path, headers=H_ADMIN).text
        for secret in (READ, ADMIN, DB_PASSWORD):
            assert secret not in body, path


# ----------------------------------------------------------------- with the broker


def _consume_one(amqp_url: str, queue: str) -> tuple[Any, bytes]:
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        ch = conn.channel()
        for _ in range(50):
            method, props, body = ch.basic_get(queue, auto_ack=True)
            if method is not None:
                return props, body
            time.sleep(0.1)
    finally:
        conn.close()
    raise AssertionError(f"nothing in {queue}")


def test_status_shows_queue_depths_and_admin_actions_reach_the_broker(amqp_url: str, migrated_pg_url: str) -> None:
    settings = ApiSettings(
        database_url=migrated_pg_url,
        api_token=READ,
        api_admin_token=ADMIN,
        amqp_url=amqp_url,
        api_sources=("cam",),
        api_queue_cache_s=0,
    )
    # An uploader's topology for source "cam", with six retry steps instead of the default four
    # (SKYNET_RETRY_DELAYS_S), one message waiting in the last and two dead messages.
    delays = (1.0, 2.0, 3.0, 4.0, 5.0, 600.0)
    pub = Publisher(amqp_url, name="test", declare=Topology("cam", retry_delays_s=delays).declare_all)
    try:
        for i in range(2):
            pub.publish("", dead_queue("cam"), b'{"x": %d}' % i, headers={HEADER_ATTEMPTS: 6, HEADER_REASON: "gave up"})
        pub.publish("", retry_queue("cam", 5), b'{"x": 9}', headers={HEADER_ATTEMPTS: 6})
        pub.publish("", recheck_queue("cam"), b'{"x": 7}')  # an uploader's request, its watcher down
    finally:
        pub.close()
    with TestClient(create_app(settings)) as c:
        st = c.get("/v1/status", headers=H_READ).json()
        assert st["queues"][dead_queue("cam")] == 2 and st["dead_letters"] == 2
        assert st["queues"][retry_queue("cam", 5)] == 1 and st["queues"][retry_queue("cam", 0)] == 0
        assert retry_queue("cam", 6) not in st["queues"]
        assert st["queues"][recheck_queue("cam")] == 1 and st["dead_letters"] == 2
        other = c.get("/v1/status", params={"source": "dog"}, headers=H_READ).json()
        assert dead_queue("cam") not in other["queues"] and other["dead_letters"] == 0
        assert dead_queue("dog") in other["queues"]
        assert c.get("/readyz").json()["checks"]["broker"]["ok"] is True
        assert c.post("/v1/admin/requeue-dead", json={"source": "cam"}, headers=H_READ).status_code == 403
        moved = c.post("/v1/admin/requeue-dead", json={"source": "cam"}, headers=H_ADMIN)
        assert moved.status_code == 200 and moved.json() == {"moved": 2}
        props, _ = _consume_one(amqp_url, actions_queue("cam"))
        assert HEADER_ATTEMPTS not in (props.headers or {})
        r = c.post("/v1/admin/retry", json={"source": "cam", "path": "a/b.jpg"}, headers=H_ADMIN)
        assert r.status_code == 202
        _consume_one(amqp_url, actions_queue("cam"))  # the second requeued message
        _, body = _consume_one(amqp_url, actions_queue("cam"))
        action = decode_action(body)
        assert action.path == "a/b.jpg" and action.force and action.id == r.json()["action_id"]  # type: ignore[union-attr]
        # Nobody listens for rescans of "cam" yet: the API says so.
        assert c.post("/v1/admin/rescan", json={"source": "cam"}, headers=H_ADMIN).status_code == 404
        conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
        try:
            ch = conn.channel()
            q = ch.queue_declare("", exclusive=True).method.queue
            ch.queue_bind(q, CONTROL_EXCHANGE, "rescan.cam")
            assert c.post("/v1/admin/rescan", json={"source": "cam"}, headers=H_ADMIN).status_code == 202
            method, _props, body = ch.basic_get(q, auto_ack=True)
            assert method is not None and json.loads(body)["source"] == "cam"
            assert json.loads(body)["full"] is False
            # A full rescan (every file checked on the remote) says so in the request.
            full = c.post("/v1/admin/rescan", json={"source": "cam", "full": True}, headers=H_ADMIN)
            assert full.status_code == 202
            method, _props, body = ch.basic_get(q, auto_ack=True)
            assert method is not None and json.loads(body)["full"] is True
            wrong = c.post("/v1/admin/rescan", json={"source": "cam", "full": "yes please"}, headers=H_ADMIN)
            assert wrong.status_code == 422
            # Releasing held deletes: admin only, delivered to the watcher's control binding.
            ch.queue_bind(q, CONTROL_EXCHANGE, "release.cam")
            assert c.post("/v1/admin/release-held", json={"source": "cam"}, headers=H_READ).status_code == 403
            assert c.post("/v1/admin/release-held", json={"source": "cam"}, headers=H_ADMIN).status_code == 202
            method, _props, body = ch.basic_get(q, auto_ack=True)
            assert method is not None and json.loads(body)["type"] == "control.release.v1"
        finally:
            conn.close()
        bad = c.post("/v1/admin/retry", json={"source": "cam", "path": "../etc/passwd"}, headers=H_ADMIN)
        assert bad.status_code == 422 and bad.json()["error"] == "invalid request"


# ----------------------------------------------------------------- the whole path, as processes


def _sse_events(base: str, token: str, until: str, timeout: float = 30) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    with httpx.stream(
        "GET", f"{base}/v1/events/stream", params={"cursor": "0", "token": token}, timeout=httpx.Timeout(20.0)
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                found.append(json.loads(line[6:]))
                if found[-1]["type"] == until:
                    return found
            if time.monotonic() > deadline:
                break
    raise AssertionError(f"no {until} in the stream: {[e['type'] for e in found]}")


def test_a_file_journey_reaches_the_file_view_the_event_stream_and_failures(
    amqp_url: str, migrated_pg_url: str, tmp_path: Path
) -> None:
    db_url = with_password(migrated_pg_url)
    notifier = start_notifier(amqp_url, db_url, str(tmp_path / "notifier.log"))
    api_log = tmp_path / "api.log"
    api, base = start_api(db_url, str(api_log), SKYNET_API_TOKEN=READ, SKYNET_API_ADMIN_TOKEN=ADMIN)
    try:
        t0 = time.time()
        journey = [
            FileEvent.make("queued", source="default", path="photos/1.jpg", created_at=t0),
            FileEvent.make(
                "started", source="default", path="photos/1.jpg", size=4096, worker="up-1", created_at=t0 + 0.01
            ),
            FileEvent.make(
                "progress", source="default", path="photos/1.jpg", size=4096, bytes_done=2048, created_at=t0 + 0.02
            ),
            FileEvent.make(
                "done",
                source="default",
                path="photos/1.jpg",
                size=4096,
                checksum="abc",
                remote="s3://bucket/photos/1.jpg",
                duration_s=0.03,
                created_at=t0 + 0.03,
            ),
            FileEvent.make(
                "failed",
                source="default",
                path="photos/2.jpg",
                reason="RemoteRefused: AccessDenied",
                attempt=1,
                created_at=t0 + 0.04,
            ),
        ]
        pub = Publisher(amqp_url, name="test", declare=Topology("default").declare_events)
        try:
            for e in journey:
                pub.publish(EVENTS_EXCHANGE, e.type, encode(e), message_id=e.id)
        finally:
            pub.close()

        def file_done() -> dict[str, Any] | None:
            r = httpx.get(f"{base}/v1/files/photos/1.jpg", headers=H_READ)
            return r.json() if r.status_code == 200 and r.json()["file"]["state"] == "done" else None

        detail = wait_for(file_done, 30, what="photos/1.jpg done")
        assert isinstance(detail, dict)
        assert detail["file"]["bytes_done"] == 4096 and detail["file"]["remote"] == "s3://bucket/photos/1.jpg"
        assert [e["state"] for e in detail["history"]] == ["queued", "started", "progress", "done"]

        streamed = _sse_events(base, READ, until="file.failed.v1")
        mine = [e["state"] for e in streamed if e["path"] == "photos/1.jpg"]
        assert mine == ["queued", "started", "progress", "done"]

        failures = httpx.get(f"{base}/v1/failures", headers=H_READ).json()["items"]
        assert [(f["path"], f["last_error"]) for f in failures] == [("photos/2.jpg", "RemoteRefused: AccessDenied")]

        # Without a token: refused, and the token given in the query string is never logged.
        assert httpx.get(f"{base}/v1/events/stream").status_code == 401
        shown = skynet_status(db_url)
        assert "done" in shown and "failed" in shown and DB_PASSWORD not in shown
        for source, total in (("default", 2), ("elsewhere", 0)):
            one = skynet_status(db_url, "--json", "--source", source)
            assert json.loads(one)["status"]["files_total"] == total
    finally:
        stop_process(api)
        stop_process(notifier)
    logs = api_log.read_text() + (tmp_path / "notifier.log").read_text()
    assert "GET /v1/events/stream 200" in logs
    for secret in (READ, ADMIN, DB_PASSWORD):
        assert secret not in logs


def test_the_cli_requeues_dead_letters_and_says_when_nobody_listens_for_a_rescan(amqp_url: str) -> None:
    pub = Publisher(amqp_url, name="test", declare=Topology("cam").declare_all)
    try:
        pub.publish("", dead_queue("cam"), b"{}", headers={HEADER_ATTEMPTS: 6, HEADER_REASON: "gave up"})
    finally:
        pub.close()
    env = {"SKYNET_AMQP_URL": amqp_url, "PATH": "/usr/bin:/bin"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "skynet.api.cli", *args], env=env, capture_output=True, text=True, timeout=60
        )

    done = cli("requeue-dead", "--source", "cam")
    assert done.returncode == 0 and "requeued 1 dead messages of cam" in done.stdout
    _consume_one(amqp_url, actions_queue("cam"))
    nobody = cli("rescan", "--source", "cam")
    assert nobody.returncode == 1 and "NotDelivered" in nobody.stderr
    assert cli("rescan", "--source", "../x").returncode == 2
    assert "guest:guest" not in nobody.stderr
