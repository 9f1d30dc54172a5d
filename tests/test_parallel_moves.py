"""Parallel moves (max_unavailable d > 1), against the in-memory fakes on the real
Temporal server: up to d ordinals, highest first, handed over together by one child
(one slice patch on each side, the pods' and claims' steps all at once), within the
app's budget; approval, abort of a blocked block, a health gate's rollback and a
continue-as-new keep their meaning. tests/cluster/test_migration.py moves a block of
10 on the real clusters under the observer."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from contract import (
    SEARCH_ATTRIBUTES,
    ApprovalPolicy,
    HealthGates,
    MigrationRequest,
    OrdinalResult,
    Probe,
    Progress,
    ordinal_workflow_id,
)
from stsmigrate.api import start_migration
from tests.support.fakes import FakeClusters, FakeProbes, at, fake_worker, start
from tests.support.histories import histories, record, runs

SEVEN = [6, 5, 4, 3, 2, 1, 0]


@pytest_asyncio.fixture
async def fake(
    temporal_env: WorkflowEnvironment,
) -> AsyncIterator[tuple[FakeClusters, FakeProbes, str]]:
    clusters, probes = FakeClusters(list(SEARCH_ATTRIBUTES), replicas=7), FakeProbes()
    task_queue = f"parallel-{uuid.uuid4().hex[:8]}"
    activities = [*clusters.activities(), *probes.activities()]
    async with fake_worker(temporal_env.client, task_queue, activities):
        yield clusters, probes, task_queue


def fails(message: str) -> Callable[[], None]:
    def hook() -> None:
        raise ApplicationError(message, type="KubernetesInvalid", non_retryable=True)

    return hook


def blocked(p: Progress) -> bool:
    return bool(p.blocked)


async def test_blocks_of_three_move_with_one_slice_patch_a_side(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, FakeProbes, str]
) -> None:
    clusters, _, task_queue = fake
    clusters.wait_seconds = 0.3  # long enough for the block's waits to overlap
    migration, _ = await start(temporal_env.client, task_queue, max_unavailable=3)
    result = await migration.result()
    assert [r.ordinal for r in result.moved] == SEVEN
    # Blocks 6..4, 3..1, 0: each side changes once per block, never one ordinal at a time.
    assert [c for c in clusters.changes if c.startswith(("source [", "destination ["))] == [
        "source [0, 4)",
        "destination [4, 7)",
        "source [0, 1)",
        "destination [1, 7)",
        "source [0, 0)",
        "destination [0, 7)",
    ]
    assert clusters.in_flight == [3, 3, 1]  # the budget shared for the whole block
    imports = [c for c in clusters.changes if c.startswith("import")]
    assert sorted(imports) == sorted(f"import {k}" for k in SEVEN)  # each once, all at once
    # The block's pods go, its claims bind and its pods start all at once.
    assert clusters.most_at_once == {
        "wait_for_pod_gone": 3,
        "wait_for_claims_bound": 1,  # one wait for all of the block's claims
        "wait_for_pod_ready": 3,
    }
    children = [
        await temporal_env.client.get_workflow_handle(
            ordinal_workflow_id(migration.id, k), result_type=OrdinalResult
        ).result()
        for k in (6, 3, 0)
    ]
    assert [[r.ordinal for r in c.block()] for c in children] == [[6, 5, 4], [3, 2, 1], [0]]
    assert children[0].steps and all(r.steps == [] for r in children[0].together)
    progress = await migration.progress()
    assert [r.ordinal for r in progress.finished] == SEVEN and progress.moving_together == []
    found = await histories(temporal_env, migration.id)
    assert len(found) == 4  # the parent and three children
    record("parallel_parent", found[0])
    record("parallel_block_6", found[1])


async def test_an_ordinal_that_waits_for_approval_starts_a_block_of_its_own(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, FakeProbes, str]
) -> None:
    clusters, _, task_queue = fake
    migration, _ = await start(
        temporal_env.client,
        task_queue,
        max_unavailable=3,
        approval=ApprovalPolicy(mode="ordinals", ordinals=[4]),
    )
    held = await migration.wait_until(at("awaiting_approval", 4), within=30)
    assert held.remaining == [4, 3, 2, 1, 0]  # 6 and 5 moved; 4 is never moved unasked
    assert clusters.slices == {"source": (0, 5), "destination": (5, 2)}
    await migration.approve()
    result = await migration.result()
    assert [r.ordinal for r in result.moved] == SEVEN
    # 6..5, then 4 alone (approved on its own, it moves on its own), then 3..1, then 0.
    assert clusters.in_flight == [2, 1, 3, 1]


async def test_abort_of_a_blocked_block_puts_all_its_ordinals_back(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, FakeProbes, str]
) -> None:
    clusters, _, task_queue = fake
    clusters.before["import 5"] = fails("create PersistentVolume data-5: 422 denied")
    migration, _ = await start(temporal_env.client, task_queue, max_unavailable=3)
    held = await migration.wait_until(blocked, within=30)
    assert (held.current_ordinal, held.moving_together, held.step) == (
        6,
        [5, 4],
        "volumes_imported",
    )
    assert clusters.slices == {"source": (0, 4), "destination": (7, 0)}  # 6..4 run nowhere
    result = await migration.abort("the destination refuses it")
    assert result.phase == "rolling_back"
    final = await migration.result()
    assert final.aborted and final.moved == []
    assert final.placement == {str(k): "source" for k in SEVEN}
    assert clusters.slices == {"source": (0, 7), "destination": (7, 0)}
    # Every ordinal of the block re-bound in the source.
    assert sorted(c for c in clusters.changes if c.startswith("reclaim")) == [
        "reclaim 4",
        "reclaim 5",
        "reclaim 6",
    ]
    found = await histories(temporal_env, migration.id)
    record("parallel_undo_parent", found[0])
    record("parallel_undo_block_6", found[1])


async def test_a_failed_health_gate_in_a_block_rolls_back_up_to_that_ordinal(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, FakeProbes, str]
) -> None:
    """The destination gives back its lowest ordinal first: ordinal 5 failed in the
    block 6..4, so 4 and 5 go back, 6 stays, and the run pauses."""
    clusters, probes, task_queue = fake
    probes.failing = {5}
    migration, _ = await start(
        temporal_env.client,
        task_queue,
        max_unavailable=3,
        health=HealthGates(probes=[Probe(kind="ready")], on_failure="rollback_ordinal"),
    )
    held = await migration.wait_until(lambda p: p.paused and bool(p.rolled_back), within=30)
    assert held.rolled_back == [4, 5]
    assert held.remaining == [5, 4, 3, 2, 1, 0]
    assert clusters.slices == {"source": (0, 6), "destination": (6, 1)}
    probes.failing = set()
    await migration.resume()
    result = await migration.result()
    assert [r.ordinal for r in result.moved] == SEVEN
    assert clusters.slices == {"source": (0, 0), "destination": (0, 7)}


async def test_blocks_continue_as_new_between_them(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, FakeProbes, str]
) -> None:
    clusters, _, task_queue = fake
    migration, _ = await start(
        temporal_env.client, task_queue, max_unavailable=3, continue_as_new_events=1
    )
    result = await migration.result()
    assert [r.ordinal for r in result.moved] == SEVEN
    assert len(await runs(temporal_env.client, migration.id)) == 3  # one run per block
    assert clusters.in_flight == [3, 3, 1]
    assert (await migration.progress()).run == 3


async def test_a_block_child_left_running_by_another_run_is_refused(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, FakeProbes, str]
) -> None:
    """A run with max_unavailable 4 was terminated after its child ``ordinal-6`` took
    the block 6..3 (it still waits for the pods); a new run with max_unavailable 1
    must see that child too, though 6 is far from its border."""
    clusters, _, task_queue = fake
    clusters.slices = {"source": (0, 3), "destination": (3, 4)}
    migration_id = f"orphans-{uuid.uuid4().hex[:8]}"
    clusters.running = {f"{migration_id}/ordinal-6"}
    request = MigrationRequest(
        statefulset="app", namespace="shop", source_context="source", destination_context="dest"
    )
    migration = await start_migration(
        temporal_env.client, request, migration_id=migration_id, task_queue=task_queue
    )
    with pytest.raises(WorkflowFailureError) as failed:
        await migration.result()
    assert f"workflow {migration_id}/ordinal-6: is still running" in str(failed.value.cause)
    assert clusters.changes == [] and clusters.locks == {}


async def test_an_approval_asked_during_a_block_is_for_the_ordinal_after_it(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, FakeProbes, str]
) -> None:
    clusters, _, task_queue = fake
    clusters.healthy.clear()  # the block 6..4 holds in slices_healthy
    migration, _ = await start(
        temporal_env.client,
        task_queue,
        max_unavailable=3,
        approval=ApprovalPolicy(mode="ordinals", ordinals=[3]),
    )
    await migration.wait_until(lambda p: p.moving_together == [5, 4], within=30)
    ack = await migration.approve()
    assert ack.approved_ordinal == 3  # not 5, which is in flight
    assert (await migration.progress()).approved == [3]
    clusters.healthy.set()
    result = await migration.result()
    assert [r.ordinal for r in result.moved] == SEVEN
    assert clusters.in_flight == [3, 1, 3]  # 3 was held for approval: it moves alone


async def test_a_rollback_at_a_block_health_pause_gives_back_up_to_the_failed_ordinal(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, FakeProbes, str]
) -> None:
    clusters, probes, task_queue = fake
    probes.failing = {5, 4}
    migration, _ = await start(
        temporal_env.client,
        task_queue,
        max_unavailable=3,
        health=HealthGates(probes=[Probe(kind="ready")], on_failure="pause"),
    )
    held = await migration.wait_until(lambda p: p.phase == "paused", within=30)
    assert held.pause_reason.startswith("health gate failed on ordinal 5: ")
    assert "; on ordinal 4: " in held.pause_reason  # every failure of the block named
    await migration.rollback()
    back = await migration.wait_until(lambda p: p.rolled_back == [4, 5] and p.paused, within=30)
    assert back.remaining[:2] == [5, 4]
    assert clusters.slices == {"source": (0, 6), "destination": (6, 1)}
    await migration.abort()
    final = await migration.result()
    assert final.aborted and [r.ordinal for r in final.moved] == [6]
