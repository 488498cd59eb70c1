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


def test_an_attribute_change_marks_the_path_for_a_recheck_that_later_writes_keep() -> None:
    c = Coalescer(settle_s=0.1, max_open_wait_s=60)
    c.touch("plain", now=0.0)
    c.touch("chmodded", now=0.0, recheck=True)
    c.touch("chmodded", now=0.05, writing=True)
    c.touch("chmodded", now=0.06, writing=False)
    assert sorted(c.due(1.0)) == ["chmodded", "plain"]
    entry, plain = c.get("chmodded"), c.get("plain")
    assert entry is not None and entry.recheck and not entry.writing
    assert plain is not None and not plain.recheck
