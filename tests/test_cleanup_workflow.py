"""The clean finish's place in a migration (fakes on the real Temporal server): it runs
as the run's last child only when every ordinal moved, in its fixed order, and a
refusal or an abort leaves the moved app as it is, named in the result."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from pydantic import ValidationError
from temporalio.testing import WorkflowEnvironment

from contract import SEARCH_ATTRIBUTES, ApprovalPolicy, MigrationRequest, cleanup_workflow_id
from tests.support.fakes import ORDINALS, FakeClusters, at, fake_worker, start
from tests.support.histories import histories, record


@pytest_asyncio.fixture
async def fake(temporal_env: WorkflowEnvironment) -> AsyncIterator[tuple[FakeClusters, str]]:
    clusters = FakeClusters(list(SEARCH_ATTRIBUTES))
    task_queue = f"cleanup-{uuid.uuid4().hex[:8]}"
    async with fake_worker(temporal_env.client, task_queue, clusters.activities()):
        yield clusters, task_queue
        clusters.healthy.set()


def cleanup_steps(changes: list[str]) -> list[str]:
    return [c for c in changes if c.startswith("cleanup:")]


async def test_a_whole_migration_ends_with_its_clean_finish_in_order(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, str]
) -> None:
    clusters, task_queue = fake
    migration, _ = await start(temporal_env.client, task_queue, cleanup=True)
    result = await migration.result()
    assert [r.ordinal for r in result.moved] == ORDINALS and result.cleanup_skipped == ""
    assert result.cleanup is not None
    assert [s.action for s in result.cleanup.steps] == ["fenced", "removed", "restored Delete"]
    # After the last ordinal moved, before the lock goes: plan, fence, volumes, policies.
    assert cleanup_steps(clusters.changes) == [
        "cleanup: plan",
        "cleanup: fence_source_statefulset 3",
        "cleanup: remove_source_volumes 3",
        "cleanup: restore_reclaim_policies 3",
    ]
    first = clusters.changes.index("cleanup: plan")
    assert all(not c.startswith("cleanup:") for c in clusters.changes[:first])
    assert clusters.locks == {}  # unlocked after it
    found = await histories(temporal_env, migration.id)
    child = [h for h in found if h.workflow_id == cleanup_workflow_id(migration.id)]
    assert len(child) == 1
    record("cleanup_parent", found[0])
    record("cleanup_child", child[0])


async def test_an_aborted_run_skips_the_clean_finish_and_says_why(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, str]
) -> None:
    clusters, task_queue = fake
    migration, _ = await start(
        temporal_env.client,
        task_queue,
        cleanup=True,
        approval=ApprovalPolicy(mode="ordinals", ordinals=[1]),
    )
    await migration.wait_until(at("awaiting_approval", 1), within=30)
    await migration.abort("keep 1 and 0 here")
    result = await migration.result()
    assert result.aborted and result.cleanup is None
    assert "aborted" in result.cleanup_skipped and "stsmigrate cleanup" in result.cleanup_skipped
    assert cleanup_steps(clusters.changes) == []
    record("cleanup_aborted_parent", (await histories(temporal_env, migration.id))[0])


async def test_a_refused_clean_finish_leaves_the_moved_app_and_the_run_succeeds(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, str]
) -> None:
    clusters, task_queue = fake
    clusters.cleanup_refused = True
    migration, _ = await start(temporal_env.client, task_queue, cleanup=True)
    result = await migration.result()
    assert [r.ordinal for r in result.moved] == ORDINALS and result.cleanup is None
    assert "the source still owns ordinals" in result.cleanup_skipped
    assert cleanup_steps(clusters.changes) == ["cleanup: plan"]  # and nothing after it
    assert (await migration.progress()).phase == "done"


def test_cleanup_with_a_partial_migration_is_refused_before_anything_starts() -> None:
    with pytest.raises(ValidationError, match="stop_at_ordinal 2 keeps ordinals below it"):
        MigrationRequest(
            statefulset="db",
            namespace="shop",
            source_context="a",
            destination_context="b",
            stop_at_ordinal=2,
            cleanup=True,
        )
