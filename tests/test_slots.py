"""Slots that scale: the long steps run on a task queue of their own with slots of their
own (worker.build_workers, workflows/options.py WAITS_QUEUE), so a quick step is
served while every wait slot is held. The worker's own wiring, with the in-memory
fakes for activities, on the shared local Temporal server."""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from temporalio.api.enums.v1 import PendingActivityState
from temporalio.testing import WorkflowEnvironment

import worker
from contract import (
    SEARCH_ATTRIBUTES,
    MigrationRequest,
    ordinal_workflow_id,
    waits_queue,
)
from stsmigrate.api import start_migration
from tests.support.fakes import ORDINALS, FakeClusters, start
from tests.support.histories import histories, pending_activities, record

STARTED = PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
SCHEDULED = PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED


async def test_a_quick_step_is_served_while_every_wait_slot_is_held(
    temporal_env: WorkflowEnvironment,
) -> None:
    client = temporal_env.client
    clusters = FakeClusters(list(SEARCH_ATTRIBUTES))
    # A second app, in clusters of its own, so the two migrations never meet.
    clusters.slices.update({"source-b": (0, 3), "destination-b": (3, 0)})
    task_queue = f"slots-{uuid.uuid4().hex[:8]}"
    settings = worker.Settings(
        kubeconfig=Path("/nonexistent/kubeconfig"),
        task_queue=task_queue,
        max_activities=2,
        max_waits=2,
    )
    with ThreadPoolExecutor(2) as executor, ThreadPoolExecutor(2) as waits_executor:
        quick, waits = worker.build_workers(
            client, settings, clusters.activities(), executor, waits_executor
        )
        async with quick, waits:
            # Migration A's ordinal 2 waits for both slices to be healthy: two waits,
            # which hold both wait slots until the fake clusters answer.
            clusters.healthy.clear()
            held, _ = await start(client, task_queue)
            child = ordinal_workflow_id(held.id, ORDINALS[0])
            for _ in range(300):
                running = [
                    a
                    for a in await pending_activities(client, child)
                    if a.activity_type.name == "wait_for_slice_ready" and a.state == STARTED
                ]
                if len(running) == settings.max_waits:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"the waits of {child} never held both wait slots")

            # Migration B's first step is a quick one: served while the waits hold.
            clusters.asked_for_attributes.clear()
            request = MigrationRequest(
                statefulset=f"app-{uuid.uuid4().hex[:6]}",
                namespace="shop",
                source_context="source-b",
                destination_context="destination-b",
            )
            other = await start_migration(
                client, request, migration_id=f"slots-{uuid.uuid4().hex[:8]}", task_queue=task_queue
            )
            await asyncio.wait_for(clusters.asked_for_attributes.wait(), 10)

            # Its preflight, a long step, waits for a wait slot (none is free).
            for _ in range(100):
                plans = [
                    a
                    for a in await pending_activities(client, other.id)
                    if a.activity_type.name == "plan_migration"
                ]
                if plans:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("migration B never scheduled its preflight")
            await asyncio.sleep(1)
            plans = [
                a
                for a in await pending_activities(client, other.id)
                if a.activity_type.name == "plan_migration"
            ]
            assert [a.state for a in plans] == [SCHEDULED]

            clusters.healthy.set()
            results = await asyncio.wait_for(
                asyncio.gather(held.handle.result(), other.handle.result()), 60
            )
    assert [[r.ordinal for r in result.moved] for result in results] == [ORDINALS, ORDINALS]
    assert clusters.slices == {
        "source": (0, 0),
        "destination": (0, 3),
        "source-b": (0, 0),
        "destination-b": (0, 3),
    }
    parent, *children = await histories(temporal_env, held.id)
    queues = {
        (
            e.activity_task_scheduled_event_attributes.activity_type.name,
            e.activity_task_scheduled_event_attributes.task_queue.name,
        )
        for history in (parent, children[0])
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    }
    # Every step of workflows/options.py's preflight or wait_options (no health gates).
    long_steps = {
        "plan_migration",
        "wait_for_slice_ready",
        "wait_for_pod_gone",
        "release_source_claims",
        "import_volumes",
        "wait_for_claims_bound",
        "wait_for_pod_ready",
    }
    assert {(name, queue) for name, queue in queues if name in long_steps} == {
        (name, waits_queue(task_queue)) for name in long_steps
    }
    assert {queue for name, queue in queues if name not in long_steps} == {task_queue}
    record("slots_waits_queue_parent", parent)
    record("slots_waits_queue_ordinal_2", children[0])
