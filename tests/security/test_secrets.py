"""Issue 8 (4): run the whole stack with known secrets, do a round of work with failures, and
look for those secrets in every log line, every event and every API response: none is found.

Secrets: the broker password (a RabbitMQ user created for the test), the SFTP password (given
alongside the key; the uploader holds it even when the key is used), the AWS secret key and
session token, the Postgres password (a role created for the test), and the API's two tokens.
Wrong ones too: a watcher with a wrong broker password and an uploader whose broker URL is
invalid must not echo them in their errors.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit

import psycopg2
import pytest
import requests

from tests.e2e.harness import EventTap, RemoteView, Stack
from tests.e2e.remotes import S3Remote
from tests.fixtures.broker import AMQP_HOST, AMQP_PORT
from tests.fixtures.common import wait_for
from tests.fixtures.postgres import PG_HOST, PG_PORT, PG_USER, migrate_url, start_api, start_notifier, stop_process
from tests.security.hostile import write_bytes_name

TAG = uuid.uuid4().hex[:12]
AMQP_PASSWORD = f"amqp-pw-{TAG}"
WRONG_AMQP_PASSWORD = f"wrong-amqp-pw-{TAG}"
SFTP_PASSWORD = f"sftp-pw-{TAG}"
AWS_SECRET = f"aws-secret-{TAG}"
AWS_TOKEN = f"aws-session-token-{TAG}"
PG_PASSWORD = f"pg-pw-{TAG}"
READ_TOKEN = f"read-token-{TAG}-0123456789"
ADMIN_TOKEN = f"admin-token-{TAG}-0123456789"
SECRETS = (
    AMQP_PASSWORD,
    WRONG_AMQP_PASSWORD,
    SFTP_PASSWORD,
    AWS_SECRET,
    AWS_TOKEN,
    PG_PASSWORD,
    READ_TOKEN,
    ADMIN_TOKEN,
)


def _ctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def secret_amqp_url(amqp_vhost: str) -> Iterator[str]:
    """The test's vhost through a user of its own, with a known password."""
    user = f"skynet-{TAG}"
    _ctl("add_user", user, AMQP_PASSWORD)
    try:
        _ctl("set_permissions", "-p", amqp_vhost, user, ".*", ".*", ".*")
        yield f"amqp://{user}:{AMQP_PASSWORD}@{AMQP_HOST}:{AMQP_PORT}/{quote(amqp_vhost, safe='')}"
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_user", user], capture_output=True, timeout=60)


@pytest.fixture
def secret_pg_url(pg_url: str) -> Iterator[str]:
    """The test's database, owned by a role of its own with a known password, schema applied."""
    dbname = urlsplit(pg_url).path.lstrip("/")
    role = f"skynet_{TAG}"
    admin = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=5)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE ROLE {role} LOGIN PASSWORD %s", (PG_PASSWORD,))
            cur.execute(f'ALTER DATABASE "{dbname}" OWNER TO {role}')
        url = f"postgresql://{role}:{PG_PASSWORD}@{PG_HOST}:{PG_PORT}/{dbname}"
        migrate_url(url)
        yield url
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            cur.execute(f"DROP ROLE IF EXISTS {role}")
        admin.close()


def found_in(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


def test_no_secret_reaches_a_log_line_an_event_or_an_api_response(
    tmp_path: Path, secret_amqp_url: str, secret_pg_url: str, remote: RemoteView
) -> None:
    stack = Stack(tmp_path, secret_amqp_url, remote)
    stack.extra_env.update({"SKYNET_MAX_FILE_SIZE": str(1024 * 1024), "SKYNET_LOG_LEVEL": "DEBUG"})
    if isinstance(remote, S3Remote):
        stack.extra_env.update({"AWS_SECRET_ACCESS_KEY": AWS_SECRET, "AWS_SESSION_TOKEN": AWS_TOKEN})
    else:
        stack.extra_env["SKYNET_SFTP_PASSWORD"] = SFTP_PASSWORD
    tap = EventTap(secret_amqp_url, keys=("#",)).start()
    notifier_log, api_log = tmp_path / "notifier.log", tmp_path / "api.log"
    notifier = start_notifier(secret_amqp_url, secret_pg_url, str(notifier_log), SKYNET_LOG_LEVEL="DEBUG")
    api, base = start_api(
        secret_pg_url,
        str(api_log),
        SKYNET_AMQP_URL=secret_amqp_url,
        SKYNET_API_TOKEN=READ_TOKEN,
        SKYNET_API_ADMIN_TOKEN=ADMIN_TOKEN,
        SKYNET_LOG_LEVEL="DEBUG",
    )
    responses: list[str] = []
    try:
        stack.start("watcher")
        stack.start("uploader", "uploader-a")
        w = stack.watch
        for i in range(5):
            (w / f"good-{i}.txt").write_text(f"good {i}")
        (w / "too-big.bin").write_bytes(b"x" * (1024 * 1024 + 1))  # refused: over SKYNET_MAX_FILE_SIZE
        write_bytes_name(w, b"bad-\xff.txt", b"a name that is not UTF-8")  # refused: InvalidPath
        os.mkfifo(w / "a-fifo")  # skipped
        os.symlink("/etc/passwd", w / "a-link")  # skipped
        stack.wait_mirror(60, exclude=frozenset({"too-big.bin", os.fsdecode(b"bad-\xff.txt")}))
        (w / "good-0.txt").unlink()  # a delete, in mirror mode
        stack.wait_mirror(60, exclude=frozenset({"too-big.bin", os.fsdecode(b"bad-\xff.txt")}))

        # Bad callers and bad configuration, each holding a secret.
        stack.start(
            "watcher",
            "watcher-wrong-password",
            SKYNET_AMQP_URL=secret_amqp_url.replace(AMQP_PASSWORD, WRONG_AMQP_PASSWORD),
            SKYNET_SOURCE="other",
            SKYNET_STATE_DIR=str(tmp_path / "state-other"),
        )
        bad_config = stack.start(
            "uploader", "uploader-bad-config", SKYNET_AMQP_URL=f"http://user:{WRONG_AMQP_PASSWORD}@nowhere/"
        )
        wait_for(lambda: not bad_config.alive(), 30, what="the misconfigured uploader to refuse to start")

        # Every API endpoint, with the right tokens, a wrong one, and a secret in the query string.
        wait_for(
            lambda: "good-1.txt" in requests.get(f"{base}/v1/files", headers=auth(READ_TOKEN), timeout=10).text, 60
        )
        endpoints = ("/healthz", "/readyz", "/v1/status", "/v1/files", "/v1/failures", "/v1/events")
        for path in (*endpoints, "/v1/transfers", "/v1/workers", "/metrics", "/openapi.json", "/"):
            for headers in (auth(READ_TOKEN), auth(ADMIN_TOKEN), auth(READ_TOKEN + "x"), {}):
                r = requests.get(f"{base}{path}", headers=headers, timeout=10)
                responses.append(f"{path} {r.status_code} {r.headers} {r.text}")
        r = requests.get(f"{base}/v1/files?token={ADMIN_TOKEN}x", timeout=10)
        responses.append(r.text)
        for body in ({"source": "default"}, {"source": "default", "path": "good-1.txt"}, {"source": "../x"}):
            for route in ("/v1/admin/rescan", "/v1/admin/retry", "/v1/admin/requeue-dead"):
                r = requests.post(f"{base}{route}", json=body, headers=auth(ADMIN_TOKEN), timeout=30)
                responses.append(f"{route} {r.status_code} {r.text}")
        wait_for(lambda: tap.of("failed", "too-big.bin") and tap.of("skipped", "a-fifo"), 30)
    finally:
        stack.stop_all()
        stop_process(api)
        stop_process(notifier)
        tap.stop()

    logs = {p.name: p.text() for p in stack.procs}
    logs["notifier"] = notifier_log.read_text(errors="replace")
    logs["api"] = api_log.read_text(errors="replace")
    assert "ACCESS_REFUSED" in logs["watcher-wrong-password"] or "refused" in logs["watcher-wrong-password"].lower()
    assert "SKYNET_AMQP_URL" in logs["uploader-bad-config"]
    for name, text in logs.items():
        assert text.strip(), f"{name} wrote no log at all"
        leaked = found_in(text)
        assert not leaked, f"{name}'s log holds {leaked}"
    assert len(tap.events) > 20
    leaked_events = [e for e in tap.events if found_in(json.dumps(e))]
    assert not leaked_events, leaked_events[:3]
    assert tap.of("failed", "too-big.bin") and tap.of("deleted", "good-0.txt")
    leaked_responses = [r[:300] for r in responses if found_in(r)]
    assert not leaked_responses, leaked_responses


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
