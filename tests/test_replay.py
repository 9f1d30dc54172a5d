"""Replay recorded histories against today's workflow code.

Histories in tests/histories/ were recorded from real runs (the 6-replica migration
and the crash-and-resume runs: ``STSMIGRATE_RECORD_HISTORIES=1 make test``). A change
to workflow control flow that is not guarded by ``workflow.patched`` fails here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows import (
    CleanupMigration,
    DescribeClusters,
    MigrateOrdinal,
    MigrateStatefulSet,
    RollbackOrdinal,
)

HISTORIES = {
    path.stem: path.read_text()
    for path in sorted((Path(__file__).parent / "histories").glob("*.json"))
}


def test_histories_are_checked_in() -> None:
    names = set(HISTORIES)
    assert "six_replicas_parent" in names and "six_replicas_ordinal_3" in names
    assert any(n.startswith("crash_") for n in names)


@pytest.mark.parametrize("name", sorted(HISTORIES))
async def test_replay(name: str) -> None:
    replayer = Replayer(
        workflows=[
            MigrateStatefulSet,
            MigrateOrdinal,
            RollbackOrdinal,
            DescribeClusters,
            CleanupMigration,
        ],
        data_converter=pydantic_data_converter,
    )
    recorded = json.loads(HISTORIES[name])
    history = WorkflowHistory.from_json(recorded["workflow_id"], recorded["history"])
    await replayer.replay_workflow(history)
