from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import EventTap, RemoteView, Stack
from tests.e2e.remotes import S3Remote, SftpRemote


@pytest.fixture(params=["sftp", "s3"])
def remote(request: pytest.FixtureRequest) -> RemoteView:
    if request.param == "sftp":
        return SftpRemote(request.getfixturevalue("sftp_target"))
    return S3Remote(request.getfixturevalue("s3_target"))


@pytest.fixture
def tap(amqp_url: str) -> Iterator[EventTap]:
    t = EventTap(amqp_url).start()
    yield t
    t.stop()


@pytest.fixture
def stack(tmp_path: Path, amqp_url: str, remote: RemoteView) -> Iterator[Stack]:
    s = Stack(tmp_path, amqp_url, remote)
    yield s
    s.stop_all()
