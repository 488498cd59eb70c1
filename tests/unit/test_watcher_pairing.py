"""A file inotify reports only as new, paired with the file the watcher holds under another name
(the gate on its own: real folder, real SQLite, no broker).

inotify pairs the two halves of a rename only when it watches both folders. Otherwise the new name
arrives alone, and the watcher knows it by its generation (size, mtime, inode): it is a move when
the old name is gone from the disk, and a new file when the old name is still there (a second
hard link shares the generation).
"""

from __future__ import annotations

import os
from pathlib import Path

from skynet.watcher.observer import RawEvent
from tests.fixtures.common import wait_for
from tests.fixtures.gate import Gate, described, outbox, published_and_sent, running_gate


def heard_new(gate: Gate, rel: str) -> list[str]:
    """What the gate publishes once it hears that ``rel`` appeared: "move S -> D" or "upload P"."""
    engine, store, watch = gate
    engine.queue.put(RawEvent("created", str(watch / rel)))
    wait_for(lambda: bool(outbox(store)), 10, what=f"{rel} published")
    return described(outbox(store))


def test_a_file_whose_old_name_is_gone_is_sent_as_a_move(tmp_path: Path) -> None:
    with running_gate(tmp_path, delete_mode="mirror") as gate:
        old = published_and_sent(gate, "incoming/clip.bin", b"c" * 5000)
        (gate[2] / "archive").mkdir()
        old.rename(gate[2] / "archive" / "clip.bin")
        assert heard_new(gate, "archive/clip.bin") == ["move incoming/clip.bin -> archive/clip.bin"]


def test_a_second_hard_link_whose_first_name_is_still_there_is_a_new_file(tmp_path: Path) -> None:
    with running_gate(tmp_path, delete_mode="mirror") as gate:
        first = published_and_sent(gate, "clip.bin", b"c" * 5000)
        os.link(first, gate[2] / "clip-link.bin")
        assert heard_new(gate, "clip-link.bin") == ["upload clip-link.bin"]
