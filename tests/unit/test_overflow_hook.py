import logging

from skynet.watcher.observer import install_overflow_hook


def test_an_inotify_overflow_reported_by_watchdog_requests_a_rescan() -> None:
    calls: list[str] = []
    install_overflow_hook(lambda: calls.append("rescan"))
    logging.getLogger("watchdog.observers.inotify_c").warning("Inotify queue overflowed; filesystem events were lost")
    logging.getLogger("watchdog.observers.inotify_c").warning("something else")
    assert calls == ["rescan"]
