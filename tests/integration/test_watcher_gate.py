"""The watcher alone against the real broker: what it publishes, and when."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pika

from skynet.common.topology import actions_queue
from tests.e2e.harness import EventTap, NoRemote, Stack
from tests.fixtures.common import wait_for


def drain_actions(url: str, source: str = "default") -> list[dict[str, object]]:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        out = []
        while True:
            try:
                method, _props, body = ch.basic_get(actions_queue(source), auto_ack=True)
            except pika.exceptions.ChannelClosedByBroker:
                return out
            if method is None:
                return out
            out.append(json.loads(body))
    finally:
        conn.close()


def test_a_file_already_open_for_writing_when_the_watcher_starts_waits_for_its_close(
    tmp_path: Path, amqp_url: str
) -> None:
    stack = Stack(tmp_path, amqp_url, NoRemote())
    try:
        with open(stack.watch / "stalled.bin", "wb") as f:
            f.write(b"x" * 1000)
            f.flush()
            stack.start("watcher")
            time.sleep(5)  # far longer than the settle period, and no write meanwhile
            assert drain_actions(amqp_url) == [], "a file still open for writing was published"
            f.write(b"y" * 1000)
        time.sleep(3)
        actions = drain_actions(amqp_url)
        assert [a["path"] for a in actions] == ["stalled.bin"]
        generation = actions[0]["generation"]
        assert isinstance(generation, dict) and generation["size"] == 2000
    finally:
        stack.stop_all()


def test_a_burst_of_writes_and_a_temp_file_renamed_into_place_become_one_action_each(
    tmp_path: Path, amqp_url: str
) -> None:
    stack = Stack(tmp_path, amqp_url, NoRemote())
    try:
        stack.start("watcher")
        time.sleep(2)
        for i in range(200):
            (stack.watch / "burst.txt").write_text(f"version {i}")
        tmp = stack.watch / "report.csv.tmp"
        tmp.write_text("a,b\n1,2\n")
        tmp.rename(stack.watch / "report.csv")
        (stack.watch / "editor.swp").write_text("swap")
        time.sleep(3)
        paths = sorted(str(a["path"]) for a in drain_actions(amqp_url))
        assert paths == ["burst.txt", "report.csv"], paths
    finally:
        stack.stop_all()


def test_only_a_file_that_has_to_wait_is_reported_waiting(tmp_path: Path, amqp_url: str) -> None:
    """With the shortest settle period, a file closed at once goes straight to "queued"; one still
    being written is reported "waiting" first (and then "queued", once closed)."""
    tap = EventTap(amqp_url).start()
    stack = Stack(tmp_path, amqp_url, NoRemote())
    try:
        stack.start("watcher", SKYNET_SETTLE_MS="0")
        time.sleep(2)
        (stack.watch / "quick.bin").write_bytes(b"q" * 65536)
        with open(stack.watch / "slow.bin", "wb") as f:
            for _ in range(10):
                f.write(b"s" * 1000)
                f.flush()
                time.sleep(0.1)
        wait_for(lambda: len(tap.of("queued")) == 2, 15, what="both files queued")
        states = {p: [e["state"] for e in tap.events if e.get("path") == p] for p in ("quick.bin", "slow.bin")}
        assert states == {"quick.bin": ["queued"], "slow.bin": ["waiting", "queued"]}, states
    finally:
        stack.stop_all()
        tap.stop()
