"""An uploader's requests to its watcher on a real broker: each is kept in the source's durable
recheck queue once the call returns, through a broker restart, and a broker that cannot take one
is an error the action's handling sees (so the action is not acknowledged)."""

from __future__ import annotations

import pytest

from skynet.common.errors import BrokerUnavailable
from skynet.common.messages import Generation, RecheckRequest
from skynet.common.topology import Topology, recheck_queue
from skynet.uploader.watcher_requests import WatcherRequests
from tests.fixtures.broker import PrivateBroker, drain_json, queue_depth


def test_a_request_is_kept_for_the_watcher_through_a_broker_restart(private_broker: PrivateBroker) -> None:
    landed = Generation(size=5000, mtime_ns=1_700_000_000_000_000_000, inode=42)
    requests = WatcherRequests(private_broker.url, Topology("cam-1"), name="uploader-test")
    try:
        requests.recheck("shoot/clip.bin", landed)  # no watcher is running
        private_broker.restart()
        assert queue_depth(private_broker.url, recheck_queue("cam-1")) == 1
        requests.recheck("gone.bin", None)  # a new connection after the restart
    finally:
        requests.close()
    kept = [RecheckRequest.model_validate(m) for m in drain_json(private_broker.url, recheck_queue("cam-1"))]
    assert [(r.source, r.path, r.generation) for r in kept] == [
        ("cam-1", "shoot/clip.bin", landed),
        ("cam-1", "gone.bin", None),
    ]


def test_a_broker_that_cannot_be_reached_is_an_error_not_a_request_dropped(private_broker: PrivateBroker) -> None:
    requests = WatcherRequests(private_broker.url, Topology("cam-1"), name="uploader-test")
    try:
        private_broker.stop_app()
        with pytest.raises(BrokerUnavailable):
            requests.recheck("shoot/clip.bin", None)
        private_broker.start_app()
        requests.recheck("shoot/clip.bin", None)
    finally:
        requests.close()
    assert queue_depth(private_broker.url, recheck_queue("cam-1")) == 1
