"""Property-based run of schemathesis against the live API (uvicorn, real Postgres and RabbitMQ).

Every operation of the OpenAPI description is called with generated data three times — without
a token, with the read token, with the admin token — and every response must be no server
error, a declared status, the declared content type, and match its declared schema. The live
stream (``/v1/events/stream``) never ends by design and is left out.

schemathesis is a test-only dependency (pip install schemathesis).
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings

from skynet.api.app import create_app
from skynet.api.settings import ApiSettings
from skynet.common.messages import FileEvent, WorkerHeartbeat
from skynet.notifier.store import EventStore
from tests.fixtures.broker import AMQP_HOST, AMQP_PORT, amqp_url_for
from tests.fixtures.common import port_open, require
from tests.fixtures.postgres import (
    PG_HOST,
    PG_PORT,
    create_database,
    drop_database,
    migrate_url,
    pg_url_for,
    start_api,
    stop_process,
)

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

READ = "read-token-0123456789abcdef"
ADMIN = "admin-token-0123456789abcdef"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

# The description the live API serves (built without connecting; compared with the live one below).
_SETTINGS = ApiSettings(api_token=READ, api_admin_token=ADMIN, amqp_url="amqp://guest:guest@127.0.0.1/")  # type: ignore[arg-type]
SPEC = create_app(_SETTINGS).openapi()
schema = schemathesis.openapi.from_dict(SPEC).exclude(path="/v1/events/stream")


@pytest.fixture(scope="module")
def live_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One API for the whole run (module scope: a vhost and a database, seeded once)."""
    require(port_open(AMQP_HOST, AMQP_PORT), "RabbitMQ")
    require(port_open(PG_HOST, PG_PORT), "Postgres")
    vhost = f"skynet-test-{uuid.uuid4().hex[:10]}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, capture_output=True, timeout=60)
    subprocess.run(
        ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    dbname = create_database()
    url = pg_url_for(dbname)
    migrate_url(url)
    t0 = time.time() - 100
    store = EventStore(url)
    events: list[FileEvent | WorkerHeartbeat] = [
        FileEvent.make("queued", source="default", path="a/b.txt", created_at=t0),
        FileEvent.make("started", source="default", path="a/b.txt", size=10, created_at=t0 + 1),
        FileEvent.make("progress", source="default", path="a/b.txt", size=10, bytes_done=5, created_at=t0 + 2),
        FileEvent.make("failed", source="default", path="c.txt", reason="boom", attempt=1, created_at=t0 + 3),
        FileEvent.make("done", source="other", path="d.txt", size=3, checksum="x", created_at=t0 + 4),
        WorkerHeartbeat(source="default", worker="w1", role="uploader"),
    ]
    try:
        store.store(events)
    finally:
        store.close()
    proc, base = start_api(
        url,
        str(tmp_path_factory.mktemp("api") / "api.log"),
        SKYNET_API_TOKEN=READ,
        SKYNET_API_ADMIN_TOKEN=ADMIN,
        SKYNET_AMQP_URL=amqp_url_for(vhost),
        SKYNET_LOG_LEVEL="WARNING",
    )
    try:
        yield base
    finally:
        stop_process(proc)
        drop_database(dbname)
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True, timeout=60)


def test_the_live_api_serves_the_description_under_test(live_api: str) -> None:
    assert httpx.get(f"{live_api}/openapi.json").json() == SPEC


@schema.parametrize()
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_no_operation_gives_a_server_error_or_breaks_its_schema(case: Any, live_api: str) -> None:
    for headers in ({}, {"Authorization": f"Bearer {READ}"}, {"Authorization": f"Bearer {ADMIN}"}):
        case.call_and_validate(base_url=live_api, headers=headers, checks=CHECKS, timeout=30)
