"""The event sink against the real broker: every event arrives, in order, sent in few batches."""

from __future__ import annotations

import time

import pika

from skynet.common.events import EventSink
from skynet.common.messages import FileEvent
from skynet.common.topology import EVENTS_QUEUE, Topology
from tests.fixtures.broker import drain_json, queue_depth
from tests.fixtures.common import wait_for


def _declare(amqp_url: str, topology: Topology) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        topology.declare_events(conn.channel())
    finally:
        conn.close()


def _wait_events(amqp_url: str, n: int, why: str) -> None:
    """Wait until ``n`` events wait in the events queue: 20 s at most, a third of the tests' long linger."""
    wait_for(lambda: queue_depth(amqp_url, EVENTS_QUEUE) >= n, 20, interval=0.05, what=f"{n} events ({why})")


def test_a_burst_of_events_arrives_whole_in_order_in_a_few_confirmed_batches(amqp_url: str) -> None:
    topology = Topology("sinktest")
    _declare(amqp_url, topology)
    sink = EventSink(amqp_url, topology, name="test-sink").start()
    batches: list[int] = []
    publish_many = sink._publisher.publish_many

    def counting(messages):  # type: ignore[no-untyped-def]
        batches.append(len(messages))
        publish_many(messages)

    sink._publisher.publish_many = counting  # type: ignore[method-assign]
    try:
        # A busy uploader: "started" and "done" for 300 small files, one file every millisecond.
        for i in range(300):
            for state in ("started", "done"):
                sink.emit(FileEvent.make(state, source="sinktest", path=f"f{i:03d}.bin", size=i))
            time.sleep(0.001)
        _wait_events(amqp_url, 600, "a burst")
        assert queue_depth(amqp_url, EVENTS_QUEUE) == 600
    finally:
        sink.close()
    events = drain_json(amqp_url, EVENTS_QUEUE)
    assert [(e["path"], e["state"]) for e in events] == [
        (f"f{i:03d}.bin", state) for i in range(300) for state in ("started", "done")
    ]
    # The sink waits a moment for more before it publishes: the broker confirms them together
    # (one round trip each) instead of one or two per publish.
    assert sum(batches) == 600
    assert len(batches) <= 30, batches


def test_closing_sends_what_is_still_waiting(amqp_url: str) -> None:
    sink = EventSink(amqp_url, Topology("sinktest"), name="test-sink", linger_s=60.0).start()
    for i in range(50):
        sink.emit(FileEvent.make("done", source="sinktest", path=f"f{i}.bin", size=i))
    time.sleep(0.2)  # the sink is waiting for more
    sink.close(timeout=10.0)  # a stop cuts the wait short
    assert queue_depth(amqp_url, EVENTS_QUEUE) == 50


def test_a_file_now_and_then_is_told_at_once_and_a_failure_is_never_held_back(amqp_url: str) -> None:
    topology = Topology("sinktest")
    _declare(amqp_url, topology)
    # A linger far longer than the test may wait: only events that skip it can arrive in time.
    sink = EventSink(amqp_url, topology, name="test-sink", linger_s=60.0).start()
    try:
        sink.emit(FileEvent.make("started", source="sinktest", path="alone.bin", size=1))
        time.sleep(0.005)
        sink.emit(FileEvent.make("done", source="sinktest", path="alone.bin", size=1))
        _wait_events(amqp_url, 2, "a lone file's, which must not wait for more")
        # A busy spell: events now linger... until one says something went wrong.
        for i in range(20):
            sink.emit(FileEvent.make("done", source="sinktest", path=f"busy{i:02d}.bin", size=1))
            time.sleep(0.001)
        sink.emit(FileEvent.make("failed", source="sinktest", path="bad.bin", reason="refused"))
        _wait_events(amqp_url, 23, "a busy spell's, flushed by a failure")
    finally:
        sink.close()
    events = drain_json(amqp_url, EVENTS_QUEUE)
    assert [(e["path"], e["state"]) for e in events] == [
        ("alone.bin", "started"),
        ("alone.bin", "done"),
        *[(f"busy{i:02d}.bin", "done") for i in range(20)],
        ("bad.bin", "failed"),
    ]
