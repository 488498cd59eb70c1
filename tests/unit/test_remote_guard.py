"""The uploader's pause while the target is away or refuses it (pure logic, no server)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from skynet.common.errors import RemoteAccessDenied, RemoteUnavailable
from skynet.common.events import Condition
from skynet.uploader import main as uploader_main
from skynet.uploader.main import RemoteGuard


class Consumer:
    def __init__(self) -> None:
        self.paused = False
        self.resumed = threading.Event()

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self.resumed.set()


class Probe:
    """A target whose open session keeps answering after it started refusing new connections."""

    def __init__(self, refusals: int) -> None:
        self.session_open = True
        self.refusals = refusals
        self.connections = 0

    def close(self) -> None:
        self.session_open = False

    def check(self) -> None:
        if self.session_open:
            return
        self.connections += 1
        if self.connections <= self.refusals:
            raise RemoteAccessDenied("host key of [h]:22 does not match known_hosts: refusing to connect")
        self.session_open = True


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uploader_main.time, "sleep", lambda _s: None)


def test_a_refused_uploader_resumes_only_once_a_new_connection_is_accepted() -> None:
    consumer, probe = Consumer(), Probe(refusals=3)
    guard = RemoteGuard(consumer, probe, Condition())  # type: ignore[arg-type]
    guard.remote_down(RemoteAccessDenied("host key of [h]:22 does not match known_hosts: refusing to connect"))
    assert consumer.resumed.wait(5)
    assert probe.connections == 4, "resumed on a session opened before the refusal"


def test_an_outage_is_probed_on_the_session_as_before() -> None:
    consumer, probe = Consumer(), Probe(refusals=0)
    calls: list[Any] = []
    probe.close = lambda: calls.append("close")  # type: ignore[method-assign]
    guard = RemoteGuard(consumer, probe, Condition())  # type: ignore[arg-type]
    guard.remote_down(RemoteUnavailable("connection reset"))
    assert consumer.resumed.wait(5)
    assert calls == []


def test_the_pause_and_its_latest_cause_are_reported_until_the_remote_is_back() -> None:
    """What the heartbeat carries: the pause's cause as it is now, since the pause began."""
    consumer, probe, condition = Consumer(), Probe(refusals=0), Condition()
    seen: list[dict[str, Any]] = []
    causes = iter([RemoteUnavailable("connection refused"), RemoteUnavailable("no route to host")])

    def check() -> None:
        seen.append(condition.fields())
        cause = next(causes, None)
        if cause is not None:
            raise cause

    probe.check = check  # type: ignore[method-assign]
    guard = RemoteGuard(consumer, probe, condition)  # type: ignore[arg-type]
    guard.remote_down(RemoteUnavailable("connection reset"))
    assert consumer.resumed.wait(5)
    assert [f["condition"] for f in seen] == [
        "paused: remote unavailable: connection reset",
        "paused: remote unavailable: connection refused",
        "paused: remote unavailable: no route to host",
    ]
    assert len({f["condition_since"] for f in seen}) == 1, "the pause began once"
    assert condition.fields() == {"condition": None, "condition_since": None}
