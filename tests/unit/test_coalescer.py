from skynet.watcher.coalescer import Coalescer


def test_a_burst_of_events_on_one_path_becomes_due_once_after_the_settle_period() -> None:
    c = Coalescer(settle_s=0.5, max_open_wait_s=60)
    for i in range(100):
        c.touch("a.txt", now=i * 0.01)
    assert c.due(1.0) == []  # last event at 0.99
    assert c.due(1.5) == ["a.txt"]


def test_a_file_open_for_writing_is_not_due_until_closed_or_idle_for_long() -> None:
    c = Coalescer(settle_s=0.5, max_open_wait_s=60)
    c.touch("slow.log", now=0.0, writing=True)
    assert c.due(5.0) == []
    c.touch("slow.log", now=5.0, writing=False)  # closed
    assert c.due(5.6) == ["slow.log"]
    c.touch("open.log", now=0.0, writing=True)
    assert "open.log" in c.due(61.0)


def test_folder_entries_are_taken_together_and_postpone_delays() -> None:
    c = Coalescer(settle_s=0.1, max_open_wait_s=60)
    for p in ("d/a", "d/b", "d2/c", "e"):
        c.touch(p, now=0.0)
    assert sorted(c.take_under("d")) == ["d/a", "d/b"]
    c.postpone("e", until=5.0)
    assert c.due(1.0) == ["d2/c"]
    assert c.next_deadline() == 0.1
