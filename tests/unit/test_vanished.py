"""How long the delete of a file reported gone waits for the other half of its move."""

from __future__ import annotations

from skynet.watcher.vanished import PAIR_WAIT_MAX_S, PAIR_WINDOW_S, Vanished


def test_a_delete_waits_a_moment_and_longer_while_a_folder_is_listed() -> None:
    v = Vanished()
    v.note("a.bin", now=10.0)
    assert v.should_wait("a.bin", 10.0 + PAIR_WINDOW_S / 2, listing=False)
    assert v.should_wait("a.bin", 10.0 + PAIR_WINDOW_S + 0.1, listing=True)
    assert not v.should_wait("a.bin", 10.0 + PAIR_WAIT_MAX_S + 0.1, listing=True)
    # Once it has waited enough it is forgotten: a later listing does not hold it again.
    assert not v.should_wait("a.bin", 10.0 + PAIR_WINDOW_S / 2, listing=True)


def test_a_path_never_reported_gone_or_forgotten_does_not_wait() -> None:
    v = Vanished()
    assert not v.should_wait("never.bin", 0.0, listing=True)
    v.note("b.bin", now=0.0)
    v.forget("b.bin")
    assert not v.should_wait("b.bin", 0.0, listing=True)


def test_the_first_report_counts() -> None:
    v = Vanished()
    v.note("c.bin", now=0.0)
    v.note("c.bin", now=PAIR_WINDOW_S)  # a second event for the same disappearance
    assert not v.should_wait("c.bin", PAIR_WINDOW_S + 0.01, listing=False)
