"""The API across a Postgres outage: a clear 503 while it is away, and answers again as soon as it
is back, without a failed request per stale pooled connection first."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.fixtures.postgres import PrivatePostgres, migrate_url, start_api, stop_process

READ = "read-token-for-the-outage-test-0123456789"


def test_the_api_says_503_while_postgres_is_down_and_answers_again_at_once_when_it_is_back(
    private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    pg = private_postgres
    url = pg.url(pg.create_database())
    migrate_url(url)
    proc, base = start_api(url, str(tmp_path / "api.log"), SKYNET_API_TOKEN=READ, SKYNET_API_DB_POOL_SIZE="4")
    headers = {"Authorization": f"Bearer {READ}"}
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=20) as c:
            for _ in range(8):  # every pooled connection opened and used
                assert c.get("/v1/status").status_code == 200
            pg.stop()
            down = c.get("/v1/status")
            assert down.status_code == 503 and down.json()["error"].startswith("database unavailable")
            assert c.get("/readyz").status_code == 503
            pg.start()
            answers = [c.get("/v1/status").status_code for _ in range(8)]
            assert answers == [200] * 8, f"after Postgres came back: {answers}"
            assert c.get("/readyz").status_code == 200
    finally:
        stop_process(proc)
