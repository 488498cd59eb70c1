"""The watcher's gate on its own (real folder, real SQLite, no broker): a full scan asked for while
another scan of the whole tree runs is not dropped, it runs right after."""

from __future__ import annotations

import threading
from pathlib import Path

from skynet.common.messages import PathChanged, decode_action
from skynet.watcher.engine import START_UP, VERIFY, Engine
from skynet.watcher.settings import WatcherSettings
from skynet.watcher.store import Store
from tests.fixtures.common import wait_for, write_old_files


def test_a_full_scan_asked_for_during_the_start_up_scan_runs_once_it_is_done(tmp_path: Path) -> None:
    watch = tmp_path / "watched"
    names = write_old_files(watch, (f"d{i % 9}/f{i:04}.bin" for i in range(3000)))
    settings = WatcherSettings(watch_dir=watch, state_dir=tmp_path / "state")
    store = Store(settings.resolved_state_dir)
    engine = Engine(settings, store, emit=lambda _event: None, wake_pump=lambda: None)
    gate = threading.Thread(target=engine.run, daemon=True)
    try:
        engine.request_scan(START_UP)
        engine.request_scan(VERIFY, full=True)  # handled while the start-up scan is under way
        gate.start()
        # The start-up scan finds every file new (published from memory, no outbox row); the full
        # scan then sends each for a check, without a generation.
        wait_for(lambda: store.pending_count() == len(names), 30, what="a check of every file in the outbox")
        actions = [decode_action(row.body) for row in store.pending(10 * len(names))]
        assert len(engine.discovered) == len(names)
        assert {a.path for a in actions if isinstance(a, PathChanged)} == names
        assert all(isinstance(a, PathChanged) and a.generation is None for a in actions)
    finally:
        engine.stop()
        gate.join(10)
        store.close()
