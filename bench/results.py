# ruff: noqa: RUF001
"""Collected figures: one series of runs per (workload, tool), with medians and ratios."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass
class Series:
    workload: str
    tool: str
    unit: str
    higher_better: bool = True
    values: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    def span(self) -> str:
        if not self.values:
            return "–"
        return f"{fmt(min(self.values))}–{fmt(max(self.values))}"


def fmt(v: float) -> str:
    if v != v:  # NaN
        return "–"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


@dataclass
class Results:
    series: list[Series] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # (workload, minutes, % of the machine's CPU time the hypervisor gave to other guests)
    steal: list[tuple[str, float, float]] = field(default_factory=list)

    def get(self, workload: str, tool: str, unit: str, higher_better: bool = True, note: str = "") -> Series:
        for s in self.series:
            if s.workload == workload and s.tool == tool:
                return s
        s = Series(workload, tool, unit, higher_better, note=note)
        self.series.append(s)
        return s

    def find(self, workload: str, tool: str) -> Series | None:
        for s in self.series:
            if s.workload == workload and s.tool == tool and s.values:
                return s
        return None

    def ratio(self, workload: str, tool: str, peer: str) -> float | None:
        """``tool`` / ``peer`` medians (throughputs: > 1 is better; times: < 1 is better)."""
        a, b = self.find(workload, tool), self.find(workload, peer)
        if a is None or b is None or not b.median:
            return None
        return a.median / b.median


def cpu_ticks() -> tuple[int, int]:
    """(all CPU ticks, ticks stolen by the hypervisor) since boot, from /proc/stat (0, 0 elsewhere)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    steal = fields[7] if len(fields) > 7 else 0
    return sum(fields[:8]), steal
