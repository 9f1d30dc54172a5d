"""The fault-injection table: one row per scenario run, where the worker kills struck,
and the time spent in the fault-injection tests.

It lives in pytest's session store (``config.stash[FAULTS]``, set up by
tests/conftest.py, which prints it at the end of the session; tests reach it
through the ``fault_table`` fixture)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from contract import MigrationResult
from devenv.observer import Observer


@dataclass
class FaultTable:
    # (scenario, faults injected, completed, observer violations) of each run
    runs: list[tuple[str, int, bool, int]] = field(default_factory=list)
    # scenario -> where each worker kill struck ("ordinal/step+delay")
    kill_points: dict[str, list[str]] = field(default_factory=dict)
    # Seconds spent in the fault-injection tests (setup, call, teardown), by test.
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, scenario: str, faults: int, completed: bool, violations: int) -> None:
        self.runs.append((scenario, faults, completed, violations))

    def judge(
        self,
        scenario: str,
        observer: Observer,
        result: MigrationResult,
        moved: list[int],
        source_slice: tuple[int, int],
        destination_slice: tuple[int, int],
        *,
        faults: int = 1,
    ) -> None:
        """The end of a scenario run: the observer's verdict (``moved`` ordinals, final
        slices) and whether the run moved exactly ``moved`` make its row of the table;
        then both must hold."""
        violations = observer.verdict(moved, source_slice, destination_slice)
        completed = [o.ordinal for o in result.moved] == moved
        self.add(scenario, faults, completed, len(violations))
        assert violations == [] and completed

    def report(self) -> list[str]:
        """The table (one row per scenario: migrations run, faults injected, runs that
        ended as they should, observer violations), the time spent, and where the
        worker kills struck; no lines when no scenario ran."""
        if not self.runs:
            return []
        rows: dict[str, list[int]] = {}
        for scenario, faults, completed, violations in self.runs:
            row = rows.setdefault(scenario, [0, 0, 0, 0])
            for i, n in enumerate((1, faults, int(completed), violations)):
                row[i] += n
        lines = [
            "",
            f"{'scenario':32} {'runs':>4} {'faults':>6} {'completed':>9} {'violations':>10}",
        ]
        for scenario, (runs, faults, completed, violations) in rows.items():
            lines.append(
                f"{scenario:32} {runs:>4} {faults:>6} {f'{completed}/{runs}':>9} {violations:>10}"
            )
        lines.append(
            f"fault-injection tests: {len(self.seconds)} run in "
            f"{sum(self.seconds.values()):.1f} s (setup, call and teardown)"
        )
        if self.kill_points:
            points = {f"{s}:{p}" for s, struck in self.kill_points.items() for p in struck}
            kills = sum(len(struck) for struck in self.kill_points.values())
            lines.append(f"worker kills: {kills}, at {len(points)} distinct points")
            for scenario, struck in self.kill_points.items():
                lines.append(f"  {scenario}: {', '.join(struck)}")
        return lines


FAULTS = pytest.StashKey[FaultTable]()
