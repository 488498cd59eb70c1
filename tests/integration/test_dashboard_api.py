"""The dashboard's page and endpoints against real Postgres: whoami, throughput, the page itself."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from datetime import datetime

import psycopg2
import pytest

from skynet.api.app import create_app
from skynet.api.dashboard_queries import THROUGHPUT_SQL
from skynet.api.settings import ApiSettings
from skynet.common.messages import FileEvent, WorkerHeartbeat
from skynet.notifier.store import EventStore

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

READ = "read-token-0123456789abcdef"
ADMIN = "admin-token-0123456789abcdef"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def client(migrated_pg_url: str) -> Iterator[TestClient]:
    settings = ApiSettings(database_url=migrated_pg_url, api_token=READ, api_admin_token=ADMIN)
    with TestClient(create_app(settings)) as c:
        yield c


def store(url: str, events: list[FileEvent | WorkerHeartbeat]) -> None:
    s = EventStore(url)
    try:
        s.store(events)
    finally:
        s.close()


def test_the_page_and_its_files_are_served_without_a_token_and_hold_no_data(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert 'id="login-form"' in page.text
    for name in ("dashboard.js", "dashboard.css"):
        assert client.get(f"/static/{name}").status_code == 200
    missing = client.get("/static/nothing.js")
    assert missing.status_code == 404
    assert missing.json()["error"]
    assert "/" not in client.get("/openapi.json").json()["paths"]


def test_whoami_tells_the_role_of_the_token(client: TestClient) -> None:
    assert client.get("/v1/whoami", headers=bearer(READ)).json() == {"role": "read"}
    assert client.get("/v1/whoami", headers=bearer(ADMIN)).json() == {"role": "admin"}
    assert client.get("/v1/whoami", headers=bearer("wrong")).status_code == 401
    assert client.get("/v1/whoami").status_code == 401
    assert client.get("/v1/throughput").status_code == 401


def test_an_open_api_makes_everyone_admin(migrated_pg_url: str) -> None:
    settings = ApiSettings(database_url=migrated_pg_url, api_insecure_no_auth=True)
    with TestClient(create_app(settings)) as c:
        assert c.get("/v1/whoami").json() == {"role": "admin"}


def test_throughput_counts_done_files_and_bytes_per_minute(client: TestClient, migrated_pg_url: str) -> None:
    now = time.time()
    minute = now - now % 60
    events: list[FileEvent | WorkerHeartbeat] = []
    # Three files done in the current minute, two five minutes ago, one two hours ago (outside).
    for i, at in enumerate([minute + 1, minute + 2, minute + 3, minute - 299, minute - 298, now - 7200]):
        events.append(FileEvent.make("done", source="cam", path=f"f{i}", size=1000 * (i + 1), created_at=at))
    events.append(FileEvent.make("progress", source="cam", path="f9", size=10, bytes_done=5, created_at=minute + 1))
    events.append(FileEvent.make("failed", source="cam", path="f8", reason="nope", created_at=minute + 1))
    events.append(FileEvent.make("done", source="other", path="g", size=7, created_at=minute + 1))
    store(migrated_pg_url, events)

    body = client.get("/v1/throughput", headers=bearer(READ)).json()
    items = body["items"]
    assert body["bucket_s"] == 60
    assert len(items) == 60
    assert [b["at"] for b in items] == sorted(b["at"] for b in items)
    by_minute = {datetime.fromisoformat(b["at"]).timestamp(): (b["files"], b["bytes"]) for b in items}
    assert by_minute[minute] == (4, 1000 + 2000 + 3000 + 7)
    assert by_minute[minute - 300] == (2, 4000 + 5000)
    assert sum(b["files"] for b in items) == 6

    cam = client.get("/v1/throughput?minutes=10&source=cam", headers=bearer(READ)).json()["items"]
    assert len(cam) == 10
    assert {datetime.fromisoformat(b["at"]).timestamp(): b["files"] for b in cam}[minute] == 3
    assert sum(b["bytes"] for b in cam) == 1000 + 2000 + 3000 + 4000 + 5000
    assert client.get("/v1/throughput?minutes=0", headers=bearer(READ)).status_code == 422
    assert client.get("/v1/throughput?minutes=1441", headers=bearer(READ)).status_code == 422


def test_throughput_reads_only_the_done_events_index(migrated_pg_url: str) -> None:
    """No full scan: the plan is a range scan of the partial index on done events."""
    conn = psycopg2.connect(migrated_pg_url)
    try:
        with conn.cursor() as cur:
            # A log big enough for the planner to care: 200k progress ticks, 2k done events.
            cur.execute(
                "INSERT INTO events (id, type, source, path, state, size, created_at, payload)"
                " SELECT 'e' || g, CASE WHEN g % 100 = 0 THEN 'file.done.v1' ELSE 'progress.file.v1' END,"
                " 'cam', 'p' || (g % 5000), CASE WHEN g % 100 = 0 THEN 'done' ELSE 'progress' END, 1000,"
                " now() - make_interval(secs => g * 0.1), '{}'::jsonb FROM generate_series(1, 200000) g"
            )
            cur.execute("ANALYZE events")
            for source in (None, "cam"):
                cur.execute("EXPLAIN " + THROUGHPUT_SQL, {"n": 60, "source": source})
                plan = "\n".join(r[0] for r in cur.fetchall())
                assert "events_done_idx" in plan, plan
                assert "Seq Scan on events" not in plan, plan
    finally:
        conn.rollback()
        conn.close()
