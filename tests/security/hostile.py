"""Helpers for the hostile-input tests: making nasty files, and reading what users were told."""

from __future__ import annotations

import os
from pathlib import Path

from tests.e2e.harness import EventTap, Stack
from tests.fixtures.common import wait_for

REFUSED_STATES = ("failed", "skipped", "dead")


def write_bytes_name(folder: Path, name: bytes, data: bytes) -> str:
    """Create ``folder/name`` from a raw byte name; return the name as Python sees it on disk."""
    fd = os.open(bytes(folder) + b"/" + name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return os.fsdecode(name)


def shown(name: str) -> str:
    """How an event names a file whose name is not valid UTF-8: replacement characters."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def reasons(tap: EventTap, path: str, states: tuple[str, ...] = REFUSED_STATES) -> str:
    return " | ".join(str(e.get("reason")) for s in states for e in tap.of(s, path))


def wait_refusal(tap: EventTap, path: str, *words: str, timeout: float = 60) -> str:
    """Wait for a failed/skipped/dead event for ``path`` whose reason holds every one of ``words``."""

    def told() -> str:
        text = reasons(tap, path)
        return text if text and all(w in text for w in words) else ""

    return str(wait_for(told, timeout, what=f"an event refusing {path!r} with {words}"))


def assert_all_alive(stack: Stack) -> None:
    dead = [p.name for p in stack.procs if not p.alive()]
    assert not dead, f"{dead} died on hostile input:\n{stack.tail_logs()}"
