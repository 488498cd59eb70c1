"""Auth, settings and error shapes of the API, without any server (the database is unreachable)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator

import pytest

from skynet.api import auth
from skynet.api.app import create_app
from skynet.api.settings import ApiSettings
from skynet.common.errors import ConfigError
from skynet.common.settings import load_settings
from tests.fixtures.common import free_port

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's TestClient prefers httpx2; httpx is what we have
    from fastapi.testclient import TestClient

READ = "read-token-0123456789abcdef"
ADMIN = "admin-token-0123456789abcdef"
PASSWORD = "db-pass-never-shown"


def settings(**overrides: object) -> ApiSettings:
    base: dict[str, object] = {
        "database_url": f"postgresql://skynet:{PASSWORD}@127.0.0.1:{free_port()}/skynet",
        "api_token": READ,
        "api_admin_token": ADMIN,
    }
    base.update(overrides)
    return ApiSettings(**base)  # type: ignore[arg-type]


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app(settings())) as c:
        yield c


@pytest.mark.parametrize("path", ["/v1/status", "/v1/files", "/v1/files/a.txt", "/v1/events", "/metrics"])
def test_a_read_endpoint_without_a_token_or_with_an_unknown_one_is_401(client: TestClient, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {READ}"}):
        r = client.get(path, headers=headers)
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["error"] == "missing or invalid token"


@pytest.mark.parametrize("path", ["/v1/admin/retry", "/v1/admin/requeue-dead", "/v1/admin/rescan"])
def test_an_admin_action_is_401_without_a_token_and_403_with_the_read_token(client: TestClient, path: str) -> None:
    body = {"source": "cam", "path": "a.txt"} if path.endswith("retry") else {"source": "cam"}
    assert client.post(path, json=body).status_code == 401
    r = client.post(path, json=body, headers={"Authorization": f"Bearer {READ}"})
    assert r.status_code == 403 and r.json() == {"error": "this action needs the admin token", "detail": None}
    # The admin token passes auth; without a broker configured the action is unavailable.
    r = client.post(path, json=body, headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 503 and r.json()["error"] == "no broker configured"


def test_the_event_stream_accepts_the_token_in_the_query_string_but_not_a_wrong_one(client: TestClient) -> None:
    assert client.get("/v1/events/stream", params={"token": "wrong"}).status_code == 401
    assert client.get("/v1/events/stream").status_code == 401


def test_tokens_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = auth.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    checker = auth.Authenticator(READ, ADMIN)
    assert checker.role(READ) == "read"
    assert checker.role(ADMIN) == "admin"
    assert checker.role("x" * len(READ)) is None
    # Every check compares against both tokens, whichever matches.
    assert len(calls) == 6 and {b for _, b in calls} == {READ.encode(), ADMIN.encode()}


def test_health_is_open_by_default_and_can_require_the_token() -> None:
    with TestClient(create_app(settings())) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
    with TestClient(create_app(settings(api_open_health=False, api_open_metrics=True))) as c:
        assert c.get("/healthz").status_code == 401
        assert c.get("/metrics").status_code == 503  # open, and the database is away


def test_readyz_with_the_database_down_is_503_without_the_password(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    r = client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["checks"]["database"]["ok"] is False
    status = client.get("/v1/status", headers={"Authorization": f"Bearer {READ}"})
    assert status.status_code == 503 and status.json()["error"].startswith("database unavailable")
    for text in (r.text, status.text, caplog.text):
        assert PASSWORD not in text and READ not in text and ADMIN not in text


def test_invalid_parameters_are_422_as_json(client: TestClient) -> None:
    r = client.get("/v1/files", params={"limit": 0, "state": "weird"}, headers={"Authorization": f"Bearer {READ}"})
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "invalid request" and {tuple(d["loc"]) for d in body["detail"]} == {
        ("query", "limit"),
        ("query", "state"),
    }


def test_the_openapi_description_declares_bearer_auth_and_error_models(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path, ops in spec["paths"].items():
        for op in ops.values():
            if path.startswith("/v1/"):
                assert op.get("security"), path
                assert op["responses"]["401"]["content"]["application/json"]["schema"]["$ref"].endswith("/Error")
    assert "/healthz" in spec["paths"] and "security" not in spec["paths"]["/healthz"]["get"]


def test_without_any_token_the_api_refuses_to_start_unless_told_it_is_insecure_on_purpose(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for var in ("SKYNET_API_TOKEN", "SKYNET_API_ADMIN_TOKEN", "SKYNET_API_INSECURE_NO_AUTH", "SKYNET_PRODUCTION"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match="SKYNET_API_INSECURE_NO_AUTH"):
        load_settings(ApiSettings)
    monkeypatch.setenv("SKYNET_API_INSECURE_NO_AUTH", "true")
    open_settings = load_settings(ApiSettings)
    with TestClient(create_app(open_settings)) as c:
        assert c.post("/v1/admin/rescan", json={"source": "x"}).status_code == 503  # no auth, no broker


@pytest.mark.parametrize("token", ["changeme", "short-token"])
def test_production_refuses_placeholder_or_short_tokens(monkeypatch: pytest.MonkeyPatch, token: str) -> None:
    monkeypatch.setenv("SKYNET_PRODUCTION", "true")
    monkeypatch.setenv("SKYNET_API_TOKEN", token)
    with pytest.raises(ConfigError) as err:
        load_settings(ApiSettings)
    assert "SKYNET_API_TOKEN" in str(err.value) and token not in str(err.value)


def test_production_refuses_a_placeholder_database_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYNET_PRODUCTION", "true")
    monkeypatch.setenv("SKYNET_API_TOKEN", READ)
    monkeypatch.setenv("SKYNET_DATABASE_URL", "postgresql://skynet:changeme@db/skynet")
    with pytest.raises(ConfigError, match=r"SKYNET_DATABASE_URL: .*placeholder password") as err:
        load_settings(ApiSettings)
    assert "changeme" not in str(err.value)


def test_read_and_admin_tokens_must_differ() -> None:
    with pytest.raises(ConfigError, match=r"SKYNET_API_ADMIN_TOKEN: .*must differ") as err:
        load_settings(ApiSettings, api_token=READ, api_admin_token=READ)
    assert READ not in str(err.value)
