"""The in-memory backend: a faithful twin of the real ones, with fault switches for unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from skynet.common.errors import InvalidPath, RemoteRefused, RemoteUnavailable
from skynet.common.messages import Generation
from skynet.uploader.storage.config import BackendSettings
from skynet.uploader.storage.memory import MemoryBackend, MemoryStore, open_backend


def local(tmp_path: Path, data: bytes, mtime_ns: int = 10**18) -> tuple[str, Generation]:
    p = tmp_path / "f"
    p.write_bytes(data)
    return str(p), Generation(size=len(data), mtime_ns=mtime_ns)


def test_two_backends_on_one_store_see_the_same_files(tmp_path: Path) -> None:
    store = MemoryStore()
    path, gen = local(tmp_path, b"hello")
    MemoryBackend(store).upload("a/b", path, gen, lambda n: None)
    other = MemoryBackend(store)
    entry = other.stat("a/b")
    assert entry is not None and other.matches(entry, gen)
    assert store.read("a/b") == b"hello"


def test_a_named_store_is_shared_through_its_url() -> None:
    a = open_backend("memory://shared-x", BackendSettings())
    b = open_backend("memory://shared-x", BackendSettings())
    assert a.store is b.store


def test_an_outage_makes_every_call_unavailable(tmp_path: Path) -> None:
    store = MemoryStore(unavailable=True)
    backend = MemoryBackend(store)
    path, gen = local(tmp_path, b"x")
    with pytest.raises(RemoteUnavailable):
        backend.stat("x")
    with pytest.raises(RemoteUnavailable):
        backend.upload("x", path, gen, lambda n: None)
    store.unavailable = False
    assert backend.stat("x") is None


def test_a_refused_name_is_refused(tmp_path: Path) -> None:
    store = MemoryStore()
    store.refuse(lambda p: p.endswith(".bad"))
    path, gen = local(tmp_path, b"x")
    with pytest.raises(RemoteRefused):
        MemoryBackend(store).upload("x.bad", path, gen, lambda n: None)


def test_an_interrupted_upload_resumes_and_counts_what_was_sent(tmp_path: Path) -> None:
    store = MemoryStore(interrupt_after=300_000)
    backend = MemoryBackend(store)
    data = bytes(range(256)) * 4000  # ~1 MB
    path, gen = local(tmp_path, data)
    with pytest.raises(RemoteUnavailable):
        backend.upload("big", path, gen, lambda n: None)
    assert backend.stat("big") is None

    result = backend.upload("big", path, gen, lambda n: None)

    assert result.resumed_from > 0
    assert store.read("big") == data
    assert store.bytes_sent == len(data)  # nothing sent twice
    assert store.partials == {}


def test_a_partial_of_another_generation_is_not_continued(tmp_path: Path) -> None:
    store = MemoryStore(interrupt_after=300_000)
    backend = MemoryBackend(store)
    path, old = local(tmp_path, b"a" * 1_000_000, mtime_ns=1)
    with pytest.raises(RemoteUnavailable):
        backend.upload("f", path, old, lambda n: None)
    path, new = local(tmp_path, b"b" * 1_000_000, mtime_ns=2)
    result = backend.upload("f", path, new, lambda n: None)
    assert result.resumed_from == 0 and store.read("f") == b"b" * 1_000_000


def test_paths_are_validated(tmp_path: Path) -> None:
    path, gen = local(tmp_path, b"x")
    with pytest.raises(InvalidPath):
        MemoryBackend().upload("../x", path, gen, lambda n: None)


def test_progress_is_monotonic_and_reaches_the_size(tmp_path: Path) -> None:
    seen: list[int] = []
    path, gen = local(tmp_path, b"z" * 200_000)
    MemoryBackend().upload("z", path, gen, seen.append)
    assert seen == sorted(seen) and seen[-1] == 200_000
