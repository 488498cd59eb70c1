"""The dashboard in a real Chromium, over the real stack: watcher, uploader, broker, notifier, API.

The SFTP target sits behind a proxy that slows uploads to a few MB/s, so that transfers stay in
flight long enough to be watched. A regular file named ``blocked`` in the remote base folder
makes the upload of ``blocked/inside.txt`` impossible ("exists on the server and is not a
folder"): that is the failure the page must show, and that an admin retries once it is removed.

Set ``SKYNET_DASHBOARD_SCREENSHOTS=docs`` to (re)write docs/dashboard-inflight.png and
docs/dashboard-failure.png; otherwise the screenshots go to the test's temporary folder.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.e2e.harness import Stack, local_snapshot
from tests.e2e.remotes import SftpRemote
from tests.fixtures.common import require, wait_for
from tests.fixtures.postgres import start_api, start_notifier, stop_process
from tests.fixtures.sftp_server import SftpServer, SftpTarget, make_target
from tests.fixtures.tcp_proxy import TcpProxy

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("SKYNET_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
READ = "read-token-0123456789abcdef"
ADMIN = "admin-token-0123456789abcdef"
UPLOAD_RATE = 4 * 1024 * 1024  # bytes/s through the proxy to sshd
VIEWPORT = {"width": 1280, "height": 900}
LONG = 60_000  # ms, for what waits on the pipeline
HELD_REASON = "140 deletes within 10 s is over the threshold of 100: held"
PAUSED = "paused: remote unavailable: ssh: connect to host 10.0.0.9 port 22: Connection refused"


class _Throttled:
    """A socket whose ``sendall`` goes at about ``rate`` bytes/s."""

    def __init__(self, sock: socket.socket, rate: int) -> None:
        self._sock = sock
        self._rate = rate

    def sendall(self, data: bytes) -> None:
        for i in range(0, len(data), 32 * 1024):
            chunk = data[i : i + 32 * 1024]
            self._sock.sendall(chunk)
            time.sleep(len(chunk) / self._rate)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class SlowProxy(TcpProxy):
    """A TCP proxy that slows the client → server direction (the uploads) to ``rate`` bytes/s."""

    def __init__(self, host: str, port: int, rate: int) -> None:
        super().__init__(host, port)
        self.rate = rate

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        super()._pump(src, _Throttled(dst, self.rate) if up else dst, up)  # type: ignore[arg-type]


@dataclass
class Dashboard:
    url: str
    stack: Stack
    remote: SftpRemote
    target: SftpTarget


@pytest.fixture
def browser() -> Iterator[Browser]:
    require(importlib.util.find_spec("playwright") is not None, "Playwright for Python (pip install playwright)")
    require(os.access(CHROMIUM, os.X_OK), f"Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def dashboard(tmp_path: Path, amqp_url: str, migrated_pg_url: str, sftp_server: SftpServer) -> Iterator[Dashboard]:
    sftp_server.start()
    proxy = SlowProxy(sftp_server.host, sftp_server.port, UPLOAD_RATE).start()
    target = make_target(sftp_server, via=proxy)
    target.local_dir.mkdir(parents=True)
    (target.local_dir / "blocked").write_text("a file where the uploader needs a folder\n")
    remote = SftpRemote(target)
    stack = Stack(tmp_path / "stack", amqp_url, remote, delete_mode="keep")
    notifier = start_notifier(amqp_url, migrated_pg_url, str(stack.logs / "notifier.log"))
    api, url = start_api(
        migrated_pg_url,
        str(stack.logs / "api.log"),
        SKYNET_API_TOKEN=READ,
        SKYNET_API_ADMIN_TOKEN=ADMIN,
        SKYNET_AMQP_URL=amqp_url,
        SKYNET_API_QUEUE_CACHE_S="1",
        SKYNET_API_SOURCES="default",
    )
    try:
        stack.start("watcher")
        stack.start("uploader", SKYNET_HEARTBEAT_INTERVAL_S="1")
        yield Dashboard(url, stack, remote, target)
    finally:
        stack.stop_all()
        stop_process(api)
        stop_process(notifier)
        proxy.close()


def screenshot_dir(tmp_path: Path) -> Path:
    wanted = os.environ.get("SKYNET_DASHBOARD_SCREENSHOTS")
    return Path(wanted) if wanted else tmp_path


def sign_in(browser: Browser, url: str, token: str) -> Page:
    from playwright.sync_api import expect

    page = browser.new_context(viewport=VIEWPORT).new_page()  # type: ignore[arg-type]
    page.goto(url)
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#dashboard")).to_be_visible()
    expect(page.locator("#conn")).to_have_text("live", timeout=10_000)
    return page


def test_a_wrong_token_is_refused(browser: Browser, dashboard: Dashboard) -> None:
    from playwright.sync_api import expect

    page = browser.new_context(viewport=VIEWPORT).new_page()  # type: ignore[arg-type]
    page.goto(dashboard.url)
    page.get_by_label("API token").fill("not-the-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("That token was refused.")
    expect(page.locator("#dashboard")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('skynet.token')") is None
    # The data behind the page is refused too, whatever way the token is sent.
    assert httpx.get(f"{dashboard.url}/v1/files", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert httpx.get(f"{dashboard.url}/v1/whoami").status_code == 401


def test_files_move_on_the_page_and_an_admin_retries_a_failure(
    browser: Browser, dashboard: Dashboard, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    shots = screenshot_dir(tmp_path)
    admin = sign_in(browser, dashboard.url, ADMIN)
    expect(admin.locator("#role-badge")).to_have_text("admin")
    expect(admin.locator("#workers tbody tr")).not_to_have_count(0, timeout=LONG)

    watch = dashboard.stack.watch
    small = {f"notes/day-{i}.txt": f"note {i}\n".encode() * 100 for i in range(3)}
    for rel, data in small.items():
        (watch / rel).parent.mkdir(parents=True, exist_ok=True)
        (watch / rel).write_bytes(data)
    for i in range(3):
        (watch / f"scans/scan-{i}.tif").parent.mkdir(exist_ok=True)
        (watch / f"scans/scan-{i}.tif").write_bytes(os.urandom(12 * 1024 * 1024))
    (watch / "video.mp4").write_bytes(os.urandom(40 * 1024 * 1024))

    # Queued, then done: the live feed shows the queued event, the file list the done state.
    first = "notes/day-0.txt"
    feed = admin.locator("#feed li")
    expect(feed.filter(has_text=first).filter(has=admin.locator(".state.queued"))).not_to_have_count(0, timeout=LONG)
    row = admin.locator(f"#files tr[data-path='{first}']")
    expect(row.locator(".state")).to_have_text("done", timeout=LONG)
    expect(feed.filter(has_text=first).filter(has=admin.locator(".state.done"))).not_to_have_count(0)

    # Work in flight: a progress bar, a rate and an ETA for the big file.
    video = admin.locator("#transfers li[data-path='video.mp4']")
    expect(video.locator("progress")).to_be_visible(timeout=LONG)
    expect(video.locator(".meta")).to_contain_text(re.compile(r"[1-9]\d*% .* [0-9.]+ [KMG]iB/s · ETA \d"), timeout=LONG)
    expect(admin.locator("#throughput-note")).to_contain_text(re.compile(r"Last hour: [1-9]"), timeout=LONG)
    wait_for(lambda: admin.locator("#transfers li").count() >= 2, 60, what="two transfers in flight on the page")
    admin.screenshot(path=str(shots / "dashboard-inflight.png"))

    # A failure, with its reason.
    blocked = "blocked/inside.txt"
    (watch / "blocked").mkdir()
    (watch / blocked).write_text("this one needs a folder where the remote has a file\n")
    failure = admin.locator(f"#failures tr[data-path='{blocked}']")
    expect(failure.locator(".reason")).to_contain_text("not a folder", timeout=LONG)
    expect(failure.locator(".state")).to_have_text(re.compile("failed|dead"))
    everything_else = {p: h for p, h in local_snapshot(watch).items() if p != blocked}
    wait_for(
        lambda: {p: h for p, h in dashboard.remote.snapshot().items() if p != "blocked"} == everything_else,
        120,
        what="every other file on the remote",
    )
    expect(admin.locator("#transfers li")).to_have_count(0, timeout=LONG)
    summary = admin.locator("#summary")
    expect(summary.locator("div", has_text="Uploading").locator("dd")).to_have_text("0", timeout=LONG)
    expect(summary.locator("div", has_text="Dead letters").locator("dd")).to_have_text("1", timeout=LONG)
    admin.evaluate("window.scrollTo(0, 0)")
    admin.screenshot(path=str(shots / "dashboard-failure.png"))

    # The file list filters on the server: by path prefix, by state.
    files = admin.locator("#files tbody tr")
    admin.get_by_label("Path starts with").fill("notes/")
    expect(files).to_have_count(3)
    expect(files.first).to_have_attribute("data-path", first)
    admin.get_by_label("Path starts with").fill("")
    admin.get_by_label("State").select_option(failure.locator(".state").inner_text())
    expect(files).to_have_count(1)
    expect(files.first).to_have_attribute("data-path", blocked)
    admin.get_by_label("State").select_option("")
    expect(files).to_have_count(len(small) + 4 + 1)

    # At phone width nothing sticks out sideways, and the retry button is still there.
    admin.set_viewport_size({"width": 390, "height": 844})
    assert admin.evaluate("document.documentElement.scrollWidth") <= 390
    expect(failure.get_by_role("button", name=f"Retry {blocked}")).to_be_visible()
    admin.screenshot(path=str(tmp_path / "dashboard-phone.png"), full_page=True)
    admin.set_viewport_size(VIEWPORT)  # type: ignore[arg-type]

    # A read token sees the failure but has no retry button.
    reader = sign_in(browser, dashboard.url, READ)
    expect(reader.locator("#role-badge")).to_have_text("read-only")
    read_row = reader.locator(f"#failures tr[data-path='{blocked}']")
    expect(read_row.locator(".reason")).to_contain_text("not a folder", timeout=LONG)
    expect(read_row.get_by_role("button")).to_have_count(0)
    expect(reader.get_by_role("button", name=re.compile("^Retry"))).to_have_count(0)

    # The admin removes the obstacle and retries: the file arrives and the failure goes away.
    (dashboard.target.local_dir / "blocked").unlink()
    button = failure.get_by_role("button", name=f"Retry {blocked}")
    button.click()
    expect(admin.locator("#notice")).to_have_text(f"Retry requested for {blocked}.")
    wait_for(lambda: dashboard.remote.read(blocked) == (watch / blocked).read_bytes(), 60, what="the retried file")
    expect(failure).to_have_count(0, timeout=LONG)
    expect(admin.locator(f"#files tr[data-path='{blocked}'] .state")).to_have_text("done", timeout=LONG)
    # The read-only page follows along, live.
    expect(read_row).to_have_count(0, timeout=LONG)
    dashboard.stack.wait_mirror(timeout=60)


@pytest.fixture
def seeded_api(tmp_path: Path, migrated_pg_url: str) -> Iterator[str]:
    """The API alone over a database seeded with 130 done files, a held delete, a failure and
    three uploaders: one paused because its remote is away, one stopped."""
    from skynet.common.messages import FileEvent, WorkerHeartbeat
    from skynet.notifier.store import EventStore

    now = time.time()
    events = [
        FileEvent.make("done", source="default", path=f"photos/img-{i:04d}.jpg", size=3000, created_at=now - i)
        for i in range(130)
    ]
    events.append(
        FileEvent.make("held", source="default", path="old/report.pdf", reason=HELD_REASON, created_at=now - 5)
    )
    beats = [
        WorkerHeartbeat(source="default", worker="notifier", role="notifier"),
        WorkerHeartbeat(source="default", worker="uploader-ok", role="uploader"),
        WorkerHeartbeat(
            source="default", worker="uploader-off", role="uploader", condition=PAUSED, condition_since=now
        ),
        WorkerHeartbeat(source="default", worker="uploader-gone", role="uploader").last(),  # stopped cleanly
    ]
    store = EventStore(migrated_pg_url)
    try:
        store.store([*events, *beats])
    finally:
        store.close()
    api, url = start_api(
        migrated_pg_url,
        str(tmp_path / "api.log"),
        SKYNET_API_TOKEN=READ,
        SKYNET_API_ADMIN_TOKEN=ADMIN,
        SKYNET_API_WORKER_STALE_S="3600",  # the seeded heartbeats stay those of live workers
    )
    try:
        yield url
    finally:
        stop_process(api)


def test_a_paused_uploader_says_why_above_everything_and_in_its_row(browser: Browser, seeded_api: str) -> None:
    from playwright.sync_api import expect

    page = sign_in(browser, seeded_api, READ)
    expect(page.locator("#notice")).to_have_text(f"uploader-off: {PAUSED}")
    expect(page.locator("#summary div", has_text="Workers alive").locator("dd.bad")).to_have_text("3")
    expect(page.locator("#workers tr", has_text="uploader-gone").locator("td.stopped")).to_contain_text("(stopped)")
    expect(page.locator("#workers tr", has_text="uploader-off").locator("td.condition.bad")).to_have_text(PAUSED)
    expect(page.locator("#workers tr", has_text="uploader-ok").locator("td.condition")).to_have_text(
        "\u2013"
    )  # an en dash: nothing


def test_held_deletes_show_their_reason_and_long_lists_page_on_the_server(browser: Browser, seeded_api: str) -> None:
    from playwright.sync_api import expect

    page = sign_in(browser, seeded_api, READ)
    held = page.locator("#held tr[data-path='old/report.pdf']")
    expect(held.locator(".reason")).to_have_text(HELD_REASON)
    expect(page.locator("#summary div", has_text="Held deletes").locator("dd")).to_have_text("1")
    # Only an admin may apply held deletes: a read token gets no button for it.
    expect(page.get_by_role("button", name="Apply the held deletes of source default")).to_have_count(0)
    admin = sign_in(browser, seeded_api, ADMIN)
    expect(admin.get_by_role("button", name="Apply the held deletes of source default")).to_have_count(1)

    files = page.locator("#files tbody tr")
    more = page.get_by_role("button", name="Load more files")
    expect(files).to_have_count(50)
    more.click()
    expect(files).to_have_count(100)
    more.click()
    expect(files).to_have_count(131)
    expect(more).to_be_hidden()
    page.get_by_label("Path starts with").fill("photos/img-01")
    expect(files).to_have_count(30)
    page.get_by_label("State").select_option("held")
    expect(files).to_have_count(0)
    expect(page.locator("#files-empty")).to_be_visible()


def test_without_a_live_notifier_the_page_says_it_shows_the_past(
    browser: Browser, tmp_path: Path, migrated_pg_url: str
) -> None:
    from playwright.sync_api import expect

    from skynet.common.messages import WorkerHeartbeat
    from skynet.notifier.store import EventStore

    store = EventStore(migrated_pg_url)
    try:
        store.store(
            [WorkerHeartbeat(source="default", worker="notifier", role="notifier", created_at=time.time() - 600)]
        )
    finally:
        store.close()
    api, url = start_api(migrated_pg_url, str(tmp_path / "api.log"), SKYNET_API_TOKEN=READ)
    try:
        page = sign_in(browser, url, READ)
        expect(page.locator("#notice")).to_contain_text("No notifier is storing events since ")
        expect(page.locator("#notice")).to_contain_text("this page shows how things were then")
    finally:
        stop_process(api)


def test_sources_sharing_a_target_or_a_watcher_are_named_above_everything(
    browser: Browser, tmp_path: Path, migrated_pg_url: str
) -> None:
    from playwright.sync_api import expect

    from skynet.common.messages import WorkerHeartbeat
    from skynet.notifier.store import EventStore

    def beat(source: str, worker: str, role: str, **kw: str) -> WorkerHeartbeat:
        return WorkerHeartbeat(source=source, worker=worker, role=role, **kw)  # type: ignore[arg-type]

    store = EventStore(migrated_pg_url)
    try:
        store.store(
            [
                beat("default", "notifier", "notifier"),
                beat("photos", "up-photos", "uploader", target="sftp://skynet@nas:22/backup"),
                beat("cams", "up-cams", "uploader", target="sftp://skynet@nas:22/backup/cams"),
                beat("cams", "watcher-1", "watcher"),
                beat("cams", "watcher-2", "watcher"),
            ]
        )
    finally:
        store.close()
    api, url = start_api(migrated_pg_url, str(tmp_path / "api.log"), SKYNET_API_TOKEN=READ)
    try:
        page = sign_in(browser, url, READ)
        notice = page.locator("#notice.bad")
        expect(notice).to_contain_text(
            "Sources cams and photos send to the same place"
            " (sftp://skynet@nas:22/backup/cams, sftp://skynet@nas:22/backup)",
            timeout=15_000,  # a loaded machine: the page's first refresh may be slow
        )
        expect(notice).to_contain_text(
            "Source cams has 2 watchers (watcher-1, watcher-2): one watcher per source.", timeout=15_000
        )
    finally:
        stop_process(api)
