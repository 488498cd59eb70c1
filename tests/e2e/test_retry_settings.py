"""``SKYNET_RETRY_DELAYS_S`` is an uploader setting: each uploader may have its own, and none of
them may stop the watcher (or another uploader) from working."""

from __future__ import annotations

import pytest

from tests.e2e.harness import Stack
from tests.fixtures.common import wait_for


@pytest.mark.parametrize("remote", ["sftp"], indirect=True)
def test_uploaders_with_their_own_retry_delays_and_a_watcher_without_any_all_keep_working(
    stack: Stack,
) -> None:
    # The watcher keeps the default delays, the uploaders are given others, each its own.
    watcher = stack.start("watcher", SKYNET_RETRY_DELAYS_S="2,10,60,300")
    first = stack.start("uploader", "uploader-a", SKYNET_RETRY_DELAYS_S="0.5,1")
    wait_for(lambda: "consumer uploader-uploader-a connected" in first.text(), 30, what="the first uploader")
    second = stack.start("uploader", "uploader-b", SKYNET_RETRY_DELAYS_S="1,3,9")
    wait_for(lambda: "consumer uploader-uploader-b connected" in second.text(), 30, what="the second uploader")
    for i in range(20):
        (stack.watch / f"f{i:02}.txt").write_text(f"file {i}\n" * 50)
    stack.wait_mirror(60)
    assert "PRECONDITION_FAILED" not in watcher.text()
    assert "already exists with other arguments than SKYNET_RETRY_DELAYS_S" in second.text()
    assert first.alive() and second.alive() and watcher.alive()
