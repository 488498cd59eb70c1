#!/usr/bin/env python3
"""Container healthcheck for the skynet images (baked in as /usr/local/bin/skynet-healthcheck).

    skynet-healthcheck http [URL]   healthy when URL answers 2xx (default: the API's /healthz)
    skynet-healthcheck amqp         healthy when this container holds an open connection to the
                                    broker named by SKYNET_AMQP_URL (watcher, uploader, notifier)

The amqp check reads /proc/net/tcp{,6} of the container's network namespace, so it needs no help
from the service: a worker that lost its broker connection and is not getting it back turns
unhealthy, which orchestrators report and Kubernetes' liveness probe acts on.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from urllib.parse import urlsplit

ESTABLISHED = "01"


def _broker_port() -> int:
    url = urlsplit(os.environ.get("SKYNET_AMQP_URL", "amqp://localhost:5672/"))
    return url.port or (5671 if url.scheme == "amqps" else 5672)


def _remote_ports_established() -> set[int]:
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == ESTABLISHED:
                        ports.add(int(fields[2].rsplit(":", 1)[1], 16))
        except FileNotFoundError:
            continue
    return ports


def check_amqp() -> int:
    port = _broker_port()
    if port in _remote_ports_established():
        return 0
    print(f"no established connection to the broker port {port}", file=sys.stderr)
    return 1


def check_http(url: str | None) -> int:
    if url is None:
        url = f"http://127.0.0.1:{os.environ.get('SKYNET_API_PORT', '8000')}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:  # noqa: S310 (local URL)
            return 0 if 200 <= response.status < 300 else 1
    except (TimeoutError, OSError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str]) -> int:
    mode = argv[0] if argv else "amqp"
    if mode == "http":
        return check_http(argv[1] if len(argv) > 1 else None)
    if mode == "amqp":
        return check_amqp()
    print(f"unknown check {mode!r}: use http or amqp", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
