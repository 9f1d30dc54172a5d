"""Workflow histories: fetched by their deterministic ids, and recorded for the replay
test (tests/test_replay.py) when STSMIGRATE_RECORD_HISTORIES=1."""

from __future__ import annotations

import json
import os

from temporalio.api.workflow.v1 import PendingActivityInfo
from temporalio.client import Client, WorkflowHistory
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from stsmigrate.describe import runs_of
from tests.support.paths import HISTORIES


async def histories(env: WorkflowEnvironment, migration_id: str) -> list[WorkflowHistory]:
    """The parent's history and every child's, found by their deterministic ids."""
    parent = await env.client.get_workflow_handle(migration_id).fetch_history()
    out = [parent]
    for event in parent.events:
        if event.HasField("start_child_workflow_execution_initiated_event_attributes"):
            child_id = event.start_child_workflow_execution_initiated_event_attributes.workflow_id
            out.append(await env.client.get_workflow_handle(child_id).fetch_history())
    return out


async def runs(temporal: Client, migration_id: str) -> list[WorkflowHistory]:
    """Every run of a migration that continued as new, the first first (as
    ``stsmigrate describe`` reads them)."""
    return await runs_of(temporal, migration_id)


def record(name: str, history: WorkflowHistory) -> None:
    """Keep a history for the replay test when STSMIGRATE_RECORD_HISTORIES=1."""
    if os.environ.get("STSMIGRATE_RECORD_HISTORIES") == "1":
        HISTORIES.mkdir(exist_ok=True)
        # The id matters on replay: child workflow ids derive from it.
        recorded = {"workflow_id": history.workflow_id, "history": json.loads(history.to_json())}
        (HISTORIES / f"{name}.json").write_text(json.dumps(recorded))


async def pending_activities(client: Client, workflow_id: str) -> list[PendingActivityInfo]:
    """The workflow's activities scheduled or running now (type, state, attempt, the
    worker that runs it and since when), as the server describes them; none when the
    workflow does not exist yet."""
    try:
        described = await client.get_workflow_handle(workflow_id).describe()
    except RPCError:
        return []
    return list(described.raw_description.pending_activities)
