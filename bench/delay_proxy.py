"""A TCP proxy that adds a fixed delay each way (a slow, far-away remote on loopback).

    proxy = DelayProxy("127.0.0.1", server_port, rtt_ms=20).start()
    ... connect clients to proxy.port ...
    proxy.close()

Every chunk read from one side is held for ``rtt_ms / 2`` before it is written to the other, so
request/response round trips get ``rtt_ms`` longer while bandwidth is unchanged (a reader thread
and a writer thread per direction; the reader never waits for the writer).
"""

from __future__ import annotations

import collections
import contextlib
import socket
import threading
import time

from tests.fixtures.tcp_proxy import TcpProxy


class _Pipe:
    """One direction of one connection: recv → hold for ``delay`` s → sendall."""

    def __init__(self, src: socket.socket, dst: socket.socket, delay: float) -> None:
        self.src, self.dst, self.delay = src, dst, delay
        self._q: collections.deque[tuple[float, bytes]] = collections.deque()
        self._cv = threading.Condition()
        self._eof = False

    def start(self) -> None:
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._write, daemon=True).start()

    def _read(self) -> None:
        try:
            while True:
                data = self.src.recv(256 * 1024)
                if not data:
                    break
                with self._cv:
                    self._q.append((time.monotonic() + self.delay, data))
                    self._cv.notify()
        except OSError:
            pass
        with self._cv:
            self._eof = True
            self._cv.notify()

    def _write(self) -> None:
        try:
            while True:
                with self._cv:
                    while not self._q and not self._eof:
                        self._cv.wait()
                    if not self._q:
                        break
                    due, data = self._q.popleft()
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                self.dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            self.dst.shutdown(socket.SHUT_WR)


class DelayProxy(TcpProxy):
    """The test suite's :class:`TcpProxy` (listener, accept loop, cut/close), with delayed pipes."""

    backlog = 128

    def __init__(self, target_host: str, target_port: int, rtt_ms: float = 20.0) -> None:
        super().__init__(target_host, target_port)
        self.delay = rtt_ms / 2000.0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _connected(self, client: socket.socket, upstream: socket.socket) -> None:
        _Pipe(client, upstream, self.delay).start()
        _Pipe(upstream, client, self.delay).start()
