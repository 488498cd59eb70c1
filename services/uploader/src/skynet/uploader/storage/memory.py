"""An in-memory backend: a real implementation of the interface for fast unit tests.

Several :class:`MemoryBackend` instances may share one :class:`MemoryStore` (as uploader threads
share a remote). The store also offers fault switches for tests of the logic above the backends:

* ``store.unavailable = True`` — every call raises RemoteUnavailable (a remote outage);
* ``store.refuse(predicate)`` — uploads of matching paths raise RemoteRefused;
* ``store.interrupt_after = n`` — the next upload stops with RemoteUnavailable after ``n`` bytes,
  leaving a partial that the following upload of the same generation continues.

``store.bytes_sent`` counts every byte "sent" to the store, so tests can assert what was re-sent.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from skynet.common.errors import LocalFileError, RemoteRefused, RemoteUnavailable
from skynet.common.messages import Generation
from skynet.common.paths import validate_rel_path
from skynet.uploader.storage import _partial
from skynet.uploader.storage.base import Backend, Capabilities, ProgressFn, RemoteEntry, UploadResult
from skynet.uploader.storage.config import BackendSettings

CHUNK = 64 * 1024


@dataclass
class StoredFile:
    data: bytes
    generation: Generation
    mtime: float


@dataclass
class MemoryStore:
    files: dict[str, StoredFile] = field(default_factory=dict)
    partials: dict[tuple[str, str], bytearray] = field(default_factory=dict)  # (path, generation tag)
    unavailable: bool = False
    interrupt_after: int | None = None
    bytes_sent: int = 0
    uploads: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock)
    _refused: list[Callable[[str], bool]] = field(default_factory=list)

    def refuse(self, predicate: Callable[[str], bool]) -> None:
        self._refused.append(predicate)

    def read(self, path: str) -> bytes:
        return self.files[path].data


_STORES: dict[str, MemoryStore] = {}
_STORES_LOCK = threading.Lock()


def named_store(name: str) -> MemoryStore:
    """The process-wide store called ``name`` (created on first use): ``memory://name``."""
    with _STORES_LOCK:
        return _STORES.setdefault(name, MemoryStore())


class MemoryBackend(Backend):
    scheme = "memory"
    capabilities = Capabilities(server_side_move=True, dir_move=True, resumable=True, exact_generation=True)

    def __init__(self, store: MemoryStore | None = None, name: str = "test") -> None:
        self.store = store if store is not None else MemoryStore()
        self.name = name

    def _up(self) -> None:
        if self.store.unavailable:
            raise RemoteUnavailable(f"memory://{self.name} is unavailable")

    def describe(self, path: str) -> str:
        return f"memory://{self.name}/{path}"

    def check(self) -> None:
        self._up()

    def stat(self, path: str) -> RemoteEntry | None:
        validate_rel_path(path)
        self._up()
        with self.store.lock:
            f = self.store.files.get(path)
            if f is None:
                return None
            return RemoteEntry(path=path, size=len(f.data), mtime=f.mtime, generation=f.generation)

    def upload(self, path: str, local_file: str, generation: Generation, progress: ProgressFn) -> UploadResult:
        validate_rel_path(path)
        self._up()
        if any(p(path) for p in self.store._refused):
            raise RemoteRefused(f"memory://{self.name} refuses {path!r}")
        try:
            with open(local_file, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise LocalFileError(f"cannot read {local_file}: {exc.strerror or exc}") from exc
        tag = _partial.generation_tag(generation)
        with self.store.lock:
            self.store.uploads += 1
            for key in [k for k in self.store.partials if k[0] == path and k[1] != tag]:
                del self.store.partials[key]
            buf = self.store.partials.setdefault((path, tag), bytearray())
            offset = _partial.resume_offset(len(buf), CHUNK)
            if bytes(buf[:offset]) != data[:offset]:
                offset = 0
            del buf[offset:]
            limit = self.store.interrupt_after
            self.store.interrupt_after = None
        sent = 0
        progress(offset)
        for start in range(offset, len(data), CHUNK):
            block = data[start : start + CHUNK]
            if limit is not None and sent + len(block) > limit:
                raise RemoteUnavailable(f"memory://{self.name}: upload of {path!r} interrupted")
            with self.store.lock:
                buf.extend(block)
                self.store.bytes_sent += len(block)
            sent += len(block)
            progress(start + len(block))
        with self.store.lock:
            self.store.partials.pop((path, tag), None)
            self.store.files[path] = StoredFile(bytes(buf), generation, generation.mtime_ns / 1e9)
        return UploadResult(bytes_sent=sent, resumed_from=offset)

    def delete(self, path: str) -> bool:
        validate_rel_path(path)
        self._up()
        with self.store.lock:
            return self.store.files.pop(path, None) is not None

    def move(self, src: str, dst: str) -> None:
        validate_rel_path(src)
        validate_rel_path(dst)
        self._up()
        with self.store.lock:
            if src not in self.store.files:
                raise RemoteRefused(f"cannot move {src!r}: it is not on the target")
            self.store.files[dst] = self.store.files.pop(src)

    def move_dir(self, src: str, dst: str) -> None:
        with self.store.lock:
            super().move_dir(src, dst)

    def list(self, prefix: str = "") -> Iterator[RemoteEntry]:
        validate_rel_path(prefix)
        self._up()
        with self.store.lock:
            paths = sorted(p for p in self.store.files if not prefix or p.startswith(prefix + "/"))
        for p in paths:
            entry = self.stat(p)
            if entry is not None:
                yield entry

    def uploads_under(self, prefix: str) -> Sequence[str]:
        self._up()
        with self.store.lock:
            return sorted({p for p, _tag in self.store.partials if not prefix or p.startswith(prefix + "/")})

    def cleanup(self, path: str) -> None:
        with self.store.lock:
            for key in [k for k in self.store.partials if k[0] == path]:
                del self.store.partials[key]


def open_backend(target: str, settings: BackendSettings) -> MemoryBackend:
    """``memory://name``: a backend on the process-wide store ``name``."""
    name = urlsplit(target).netloc or "default"
    return MemoryBackend(named_store(name), name)
