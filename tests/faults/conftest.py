"""The fault-injection suite: every case records a row; the table is printed at the end."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

ROWS: list[tuple[str, int, int, int, int]] = []


@dataclass
class FaultReport:
    def row(self, fault: str, files: int, bytes_sent: int, bytes_resent: int, lost: int) -> None:
        ROWS.append((fault, files, bytes_sent, bytes_resent, lost))


@pytest.fixture
def report() -> Iterator[FaultReport]:
    yield FaultReport()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not ROWS:
        return
    tr = terminalreporter
    tr.section("fault-injection results")
    tr.write_line(f"{'fault':<58} {'files':>6} {'bytes sent':>13} {'bytes re-sent':>13} {'lost':>5}")
    for fault, files, sent, resent, lost in ROWS:
        tr.write_line(f"{fault:<58} {files:>6} {sent:>13,} {resent:>13,} {lost:>5}")
