"""The publisher against the real broker: confirmed and batched (AMQP transaction) modes."""

from __future__ import annotations

import pika
import pytest

from skynet.common.broker import Outgoing, Publisher
from skynet.common.errors import BrokerUnavailable
from tests.fixtures.broker import queue_depth


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
@pytest.mark.parametrize("batched", [False, True])
def test_a_batch_lands_whole_and_an_unroutable_message_fails_the_batch(
    amqp_url: str, batched: bool, queue_type: str
) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    conn.channel().queue_declare("target", durable=True, arguments={"x-queue-type": queue_type})
    conn.close()
    pub = Publisher(amqp_url, name="test-publisher", batched=batched)
    try:
        pub.publish_many([Outgoing("", "target", f"m{i}".encode(), message_id=str(i)) for i in range(1200)])
        assert queue_depth(amqp_url, "target") == 1200

        with pytest.raises(BrokerUnavailable, match="unroutable"):
            pub.publish_many([Outgoing("", "target", b"ok"), Outgoing("", "no-such-queue", b"lost?")])
        # The routable one was taken (a failed batch is resent whole: consumers are idempotent);
        # the publisher is still usable afterwards, and single publishes go through it too.
        pub.publish("", "target", b"after", message_id="after")
        assert queue_depth(amqp_url, "target") == 1202
    finally:
        pub.close()
