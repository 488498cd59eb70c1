"""The consumer against the real broker: spare deliveries beyond its workers, and a clean stop."""

from __future__ import annotations

import threading
import time

import pika

from skynet.common.broker import ACK, Consumer, Delivery, Outcome
from skynet.common.topology import Topology, actions_queue
from tests.fixtures.broker import queue_depth
from tests.fixtures.common import wait_for


def _publish(amqp_url: str, topology: Topology, count: int) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        ch = conn.channel()
        topology.declare_actions(ch)
        for i in range(count):
            ch.basic_publish("", actions_queue(topology.source), f"m{i}".encode())
    finally:
        conn.close()


def test_spare_deliveries_never_run_beyond_the_workers_and_go_back_on_stop(amqp_url: str) -> None:
    topology = Topology("consumer-test")
    _publish(amqp_url, topology, 20)
    lock = threading.Lock()
    running = 0
    most = 0
    handled: list[bytes] = []
    release = threading.Event()

    def handler(d: Delivery) -> Outcome:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        release.wait(10)
        with lock:
            running -= 1
            handled.append(d.body)
        return ACK

    consumer = Consumer(
        amqp_url,
        actions_queue(topology.source),
        handler,
        topology=topology,
        prefetch=5,
        workers=2,
        name="consumer-test",
        declare=topology.declare_actions,
        stop_grace_s=5,
    )
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    try:
        # Five deliveries taken from the queue, two of them running, three waiting at hand.
        wait_for(lambda: queue_depth(amqp_url, actions_queue(topology.source)) == 15, 15, what="5 deliveries taken")
        time.sleep(0.5)
        assert most == 2 and consumer.in_flight == 5
        consumer.stop()
        release.set()
        thread.join(20)
        assert not thread.is_alive()
    finally:
        consumer.stop()
        release.set()
    # The two that ran were acked; the three spares went back unhandled, with the rest.
    assert len(handled) == 2 and most == 2
    assert queue_depth(amqp_url, actions_queue(topology.source)) == 18
