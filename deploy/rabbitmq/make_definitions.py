#!/usr/bin/env python3
"""Write RabbitMQ definitions (exchanges, queues, bindings, policies) for skynet's sources.

The declarations come from ``skynet.common.topology.Topology`` itself, recorded through a fake
channel, so the definitions carry exactly the arguments the services declare: a broker loaded with
them accepts the services' own declarations instead of failing with PRECONDITION_FAILED.

    python deploy/rabbitmq/make_definitions.py --source default --queue-type quorum \\
        > deploy/rabbitmq/definitions.json

One ``--source`` per watched folder (one watcher each). Production uses quorum queues: run the
services with SKYNET_QUEUE_TYPE=quorum to match. Needs skynet-common installed (``make install``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from skynet.common.topology import Topology, actions_queue, dead_queue

# A message whose delivery keeps killing its consumer (a crash loop, not a handled failure) is
# taken out of the rotation after this many deliveries and parked in its source's dead queue.
# RabbitMQ 4 would otherwise drop it silently after 20 deliveries of a quorum queue.
DELIVERY_LIMIT = 100


class RecordingChannel:
    """Records what ``Topology.declare_all`` declares, as definitions entries."""

    def __init__(self, vhost: str) -> None:
        self.vhost = vhost
        self.exchanges: dict[str, dict[str, Any]] = {}
        self.queues: dict[str, dict[str, Any]] = {}
        self.bindings: list[dict[str, Any]] = []

    def exchange_declare(self, exchange: str, exchange_type: str, durable: bool) -> None:
        self.exchanges[exchange] = {
            "name": exchange,
            "vhost": self.vhost,
            "type": exchange_type,
            "durable": durable,
            "auto_delete": False,
            "internal": False,
            "arguments": {},
        }

    def queue_declare(self, queue: str, durable: bool, arguments: dict[str, Any] | None) -> None:
        self.queues[queue] = {
            "name": queue,
            "vhost": self.vhost,
            "durable": durable,
            "auto_delete": False,
            "arguments": dict(arguments or {}),
        }

    def queue_bind(self, queue: str, exchange: str, routing_key: str | None) -> None:
        binding = {
            "source": exchange,
            "vhost": self.vhost,
            "destination": queue,
            "destination_type": "queue",
            "routing_key": routing_key or "",
            "arguments": {},
        }
        if binding not in self.bindings:
            self.bindings.append(binding)


def policies(vhost: str, sources: list[str], queue_type: str) -> list[dict[str, Any]]:
    if queue_type != "quorum":
        return []
    return [
        {
            "vhost": vhost,
            "name": f"skynet-actions-{source}",
            "pattern": f"^{re.escape(actions_queue(source))}$",
            "apply-to": "queues",
            "priority": 10,
            "definition": {
                "delivery-limit": DELIVERY_LIMIT,
                "dead-letter-exchange": "",
                "dead-letter-routing-key": dead_queue(source),
            },
        }
        for source in sources
    ]


def definitions(sources: list[str], queue_type: str, vhost: str = "/") -> dict[str, Any]:
    ch = RecordingChannel(vhost)
    for source in sources:
        Topology(source=source, queue_type=queue_type).declare_all(ch)
    return {
        "vhosts": [{"name": vhost}],
        "exchanges": list(ch.exchanges.values()),
        "queues": list(ch.queues.values()),
        "bindings": ch.bindings,
        "policies": policies(vhost, sources, queue_type),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", action="append", required=True, help="a source name (repeat for several)")
    parser.add_argument("--queue-type", choices=["classic", "quorum"], default="quorum")
    parser.add_argument("--vhost", default="/")
    args = parser.parse_args(argv)
    json.dump(definitions(args.source, args.queue_type, args.vhost), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
