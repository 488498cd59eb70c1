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

from tests.fixtures.common import free_port


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


class DelayProxy:
    def __init__(self, target_host: str, target_port: int, rtt_ms: float = 20.0) -> None:
        self.target = (target_host, target_port)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.delay = rtt_ms / 2000.0
        self._socks: list[socket.socket] = []
        self._closed = False
        self._listener: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> DelayProxy:
        lsock = socket.socket()
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind((self.host, self.port))
        lsock.listen(128)
        lsock.settimeout(0.2)
        self._listener = lsock
        threading.Thread(target=self._accept_loop, daemon=True).start()
        return self

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.settimeout(None)
            self._socks += [client, upstream]
            _Pipe(client, upstream, self.delay).start()
            _Pipe(upstream, client, self.delay).start()

    def close(self) -> None:
        self._closed = True
        if self._listener is not None:
            self._listener.close()
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.close()
