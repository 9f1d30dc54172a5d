"""Never half-moved, against the in-memory fakes on the real Temporal server: every
error after the point of no return pauses, abort and rollback of a blocked ordinal
put it back, a cancel is an abort, children outlive a terminated parent, a slow
``slices_healthy`` holds, a request with nothing to move changes nothing, and a
StatefulSet another migration holds is refused. tests/cluster/test_never_half_moved.py
proves the same against the real clusters; these prove the ordering rules."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from contract import (
    SEARCH_ATTRIBUTES,
    ApprovalPolicy,
    MigrationRequest,
    Progress,
    ordinal_workflow_id,
)
from stsmigrate.api import start_migration
from tests.support.fakes import ORDINALS, FakeClusters, fake_worker, start
from tests.support.histories import histories, record


@pytest_asyncio.fixture
async def fake(temporal_env: WorkflowEnvironment) -> AsyncIterator[tuple[FakeClusters, str]]:
    clusters = FakeClusters(list(SEARCH_ATTRIBUTES))
    task_queue = f"undo-{uuid.uuid4().hex[:8]}"
    async with fake_worker(temporal_env.client, task_queue, clusters.activities()):
        yield clusters, task_queue
        clusters.healthy.set()


def fails(kind: str, message: str) -> Callable[[], None]:
    """A hook for FakeClusters.before: the activity fails once, non-retryable."""

    def hook() -> None:
        raise ApplicationError(message, type=kind, non_retryable=True)

    return hook


def blocked(p: Progress) -> bool:
    return bool(p.blocked)


async def test_a_403_after_the_point_of_no_return_pauses_and_resume_finishes(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, str]
) -> None:
    clusters, task_queue = fake
    denied = (
        "create PersistentVolumeClaim shop/data-app-1 in destination: 403 persistentvolumeclaims "
        'is forbidden: User "worker" cannot create resource "persistentvolumeclaims"'
    )
    clusters.before["import 1"] = fails("KubernetesForbidden", denied)
    migration, _ = await start(temporal_env.client, task_queue)
    held = await migration.wait_until(blocked, within=30)
    assert (held.phase, held.current_ordinal, held.step) == ("paused", 1, "volumes_imported")
    assert held.blocked.startswith(f"ordinal 1 volumes_imported is blocked: {denied}")
    assert "[KubernetesForbidden; to fix: grant the worker's identity this verb" in held.blocked
    assert "resume to retry the step" in held.pause_reason
    assert clusters.slices == {"source": (0, 1), "destination": (2, 1)}  # 1 runs nowhere, held
    await migration.resume()
    result = await migration.result()
    assert [r.ordinal for r in result.moved] == ORDINALS
    assert result.placement == {"2": "destination", "1": "destination", "0": "destination"}
    assert (await migration.progress()).placement == result.placement
    found = await histories(temporal_env, migration.id)
    record("never_half_moved_forbidden_parent", found[0])
    record("never_half_moved_forbidden_ordinal_1", found[2])


async def test_abort_of_a_blocked_take_puts_the_ordinal_back_in_the_source(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, str]
) -> None:
    """Blocked at destination_scaled_up (the source grew): abort reverses exactly what
    was done (the destination's claims released, the source's volumes re-bound, the
    source owning k again) and the run ends aborted, every ordinal whole."""
    clusters, task_queue = fake
    clusters.before["import 1"] = lambda: clusters.slices.update(source=(0, 2))
    migration, _ = await start(temporal_env.client, task_queue)
    held = await migration.wait_until(blocked, within=30)
    assert held.step == "destination_scaled_up"
    before = len(clusters.changes)
    progress = await migration.abort("the destination cannot run it")
    assert progress.phase == "rolling_back"
    assert progress.pause_reason == "putting ordinal 1 back where it was (abort of a blocked step)"
    result = await migration.result()
    assert result.aborted and result.abort_reason == "the destination cannot run it"
    assert [r.ordinal for r in result.moved] == [2]
    assert result.placement == {"2": "destination", "1": "source", "0": "source"}
    # Undone: the destination gave up its claims of 1, the source re-bound its volumes;
    # the source already owned [0, 2) again, so no slice change was needed.
    assert clusters.changes[before:] == ["release", "reclaim 1"]
    assert clusters.slices == {"source": (0, 2), "destination": (2, 1)}
    found = await histories(temporal_env, migration.id)
    record("never_half_moved_undo_parent", found[0])
    record("never_half_moved_undo_ordinal_1", found[2])


async def test_rollback_of_a_blocked_ordinal_puts_it_back_then_resume_moves_it_again(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, str]
) -> None:
    clusters, task_queue = fake
    clusters.before["import 1"] = fails("KubernetesInvalid", "create PersistentVolume: 422 denied")
    migration, _ = await start(temporal_env.client, task_queue)
    await migration.wait_until(blocked, within=30)
    await migration.rollback()
    back = await migration.wait_until(lambda p: p.rolled_back == [1] and p.paused, within=30)
    assert back.pause_reason == (
        "ordinal 1 was put back in the source after a blocked step: resume moves it again, "
        "abort ends here"
    )
    assert clusters.slices == {"source": (0, 2), "destination": (2, 1)}
    await migration.resume()
    result = await migration.result()
    assert [r.ordinal for r in result.moved] == ORDINALS
    assert clusters.slices == {"source": (0, 0), "destination": (0, 3)}


async def test_cancel_while_blocked_puts_the_ordinal_back_and_ends_cancelled(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, str]
) -> None:
    clusters, task_queue = fake
    clusters.before["import 1"] = fails("KubernetesForbidden", "quota exceeded")
    migration, _ = await start(temporal_env.client, task_queue)
    await migration.wait_until(blocked, within=30)
    handle = temporal_env.client.get_workflow_handle(migration.id)
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    assert await migration.status() == WorkflowExecutionStatus.CANCELED
    progress = await migration.progress()
    assert progress.phase == "cancelled"
    assert progress.placement == {"2": "destination", "1": "source", "0": "source"}
    assert clusters.slices == {"source": (0, 2), "destination": (2, 1)}


async def test_cancel_mid_move_lets_the_ordinal_finish_and_ends_cancelled(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, str]
) -> None:
    """The Temporal UI's Cancel while ordinal 1 is between its source scale-down and
    the import: the move finishes (no identity left running nowhere), nothing more
    moves, the run ends CANCELED and its progress says where each ordinal is."""
    clusters, task_queue = fake
    importing = asyncio.Event()
    go_on = asyncio.Event()
    migration, _ = await start(temporal_env.client, task_queue)

    def hold() -> None:
        importing.set()

    clusters.before["import 1"] = hold
    await asyncio.wait_for(importing.wait(), 30)
    await temporal_env.client.get_workflow_handle(migration.id).cancel()
    go_on.set()
    with pytest.raises(WorkflowFailureError):
        await temporal_env.client.get_workflow_handle(migration.id).result()
    progress = await migration.progress()
    assert progress.phase == "cancelled"
    assert progress.aborting
    assert progress.placement == {"2": "destination", "1": "destination", "0": "source"}
    assert clusters.slices == {"source": (0, 1), "destination": (1, 2)}
    child = temporal_env.client.get_workflow_handle(ordinal_workflow_id(migration.id, 1))
    assert (await child.describe()).status == WorkflowExecutionStatus.COMPLETED


async def test_cancel_waiting_for_approval_changes_nothing(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, str]
) -> None:
    clusters, task_queue = fake
    migration, _ = await start(
        temporal_env.client, task_queue, approval=ApprovalPolicy(mode="each")
    )
    await migration.wait_until(lambda p: p.phase == "awaiting_approval", within=30)
    await temporal_env.client.get_workflow_handle(migration.id).cancel()
    with pytest.raises(WorkflowFailureError):
        await temporal_env.client.get_workflow_handle(migration.id).result()
    assert (await migration.progress()).phase == "cancelled"
    assert clusters.slices == {"source": (0, 3), "destination": (3, 0)}


async def test_a_terminated_parent_leaves_its_child_to_finish_the_ordinal(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, str]
) -> None:
    clusters, task_queue = fake
    importing = asyncio.Event()
    migration, _ = await start(temporal_env.client, task_queue)
    clusters.before["import 1"] = importing.set
    await asyncio.wait_for(importing.wait(), 30)
    await temporal_env.client.get_workflow_handle(migration.id).terminate("test")
    child = temporal_env.client.get_workflow_handle(ordinal_workflow_id(migration.id, 1))
    result = await child.result()
    assert result["moved"] if isinstance(result, dict) else result.moved
    assert clusters.slices == {"source": (0, 1), "destination": (1, 2)}


async def test_a_slow_slices_healthy_holds_and_resume_waits_again(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, str]
) -> None:
    clusters, task_queue = fake
    clusters.before["healthy source"] = fails(
        "WaitTimeout", "pods 0..2 Ready in source: not within 300 s"
    )
    migration, _ = await start(temporal_env.client, task_queue)
    held = await migration.wait_until(blocked, within=30)
    assert (held.phase, held.current_ordinal, held.step) == ("paused", 2, "slices_healthy")
    assert "abort puts the ordinal back where it was and ends the run" in held.pause_reason
    assert clusters.slices == {"source": (0, 3), "destination": (3, 0)}
    await migration.resume()
    result = await migration.result()
    assert [r.ordinal for r in result.moved] == ORDINALS


async def test_abort_while_slices_healthy_holds_ends_with_nothing_moved(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, str]
) -> None:
    clusters, task_queue = fake
    clusters.before["healthy destination"] = fails("WaitTimeout", "not within 300 s")
    migration, _ = await start(temporal_env.client, task_queue)
    await migration.wait_until(blocked, within=30)
    await migration.abort()
    result = await migration.result()
    assert result.aborted and result.moved == []
    assert clusters.slices == {"source": (0, 3), "destination": (3, 0)}


async def test_a_statefulset_locked_by_another_migration_is_refused_before_any_change(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, str]
) -> None:
    clusters, task_queue = fake
    clusters.locks["source"] = "stsmigrate/source/shop/other"
    migration, _ = await start(temporal_env.client, task_queue)
    with pytest.raises(WorkflowFailureError):
        await migration.result()
    progress = await migration.progress()
    assert progress.phase == "failed"
    assert "locked by migration 'stsmigrate/source/shop/other'" in progress.error
    assert clusters.changes == []
    assert clusters.locks == {"source": "stsmigrate/source/shop/other"}  # not ours to clear


async def test_the_lock_is_held_while_moving_and_released_at_the_end(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, str]
) -> None:
    clusters, task_queue = fake
    migration, _ = await start(
        temporal_env.client, task_queue, approval=ApprovalPolicy(mode="each")
    )
    await migration.wait_until(lambda p: p.phase == "awaiting_approval", within=30)
    assert clusters.locks == {"source": migration.id}  # taken before the first change
    assert clusters.changes == ["destination statefulset", "dependencies"]
    await migration.approve(all=True)
    await migration.result()
    assert clusters.locks == {}


async def test_a_child_left_running_by_a_terminated_run_is_refused_before_any_change(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, str]
) -> None:
    """A run of the migration was terminated while its child moved ordinal 2 (the
    child outlives it); a new run of the same id must not start moving beside it."""
    clusters, task_queue = fake
    migration_id = f"orphans-{uuid.uuid4().hex[:8]}"
    clusters.running = {f"{migration_id}/ordinal-2"}
    request = MigrationRequest(
        statefulset="app", namespace="shop", source_context="source", destination_context="dest"
    )
    migration = await start_migration(
        temporal_env.client, request, migration_id=migration_id, task_queue=task_queue
    )
    with pytest.raises(WorkflowFailureError) as failed:
        await migration.result()
    assert getattr(failed.value.cause, "type", "") == "PreflightFailed"
    assert f"workflow {migration_id}/ordinal-2: is still running" in str(failed.value.cause)
    assert clusters.asked_for_running == [f"{migration_id}/ordinal-2", f"{migration_id}/rollback-2"]
    assert clusters.changes == [] and clusters.locks == {}
