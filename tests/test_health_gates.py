"""What MigrateStatefulSet does when a health gate fails (on_failure), on the real
Temporal server with the cluster activities and the probes faked in memory. The
probes themselves are tested against real peers in tests/test_health.py."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from contract import (
    SEARCH_ATTRIBUTES,
    ApprovalPolicy,
    HealthGates,
    OrdinalResult,
    Probe,
    ordinal_workflow_id,
)
from stsmigrate.api import Rejected
from tests.support.fakes import ORDINALS, FakeClusters, FakeProbes, at, fake_worker, start
from tests.support.histories import histories, record

GATES = [Probe(kind="tcp", name="fake", host="{pod}", port=1)]


@pytest_asyncio.fixture
async def gated(
    temporal_env: WorkflowEnvironment,
) -> AsyncIterator[tuple[FakeClusters, str, set[int]]]:
    clusters = FakeClusters(list(SEARCH_ATTRIBUTES))
    probes = FakeProbes()
    task_queue = f"gates-{uuid.uuid4().hex[:8]}"
    async with fake_worker(
        temporal_env.client, task_queue, [*clusters.activities(), *probes.activities()]
    ):
        yield clusters, task_queue, probes.failing
    assert all(p.probes == GATES for p in probes.probed)


async def test_a_failed_gate_pauses_and_resume_goes_on(
    temporal_env: WorkflowEnvironment, gated: tuple[FakeClusters, str, set[int]]
) -> None:
    clusters, task_queue, failing = gated
    failing.add(1)
    migration, request = await start(
        temporal_env.client, task_queue, health=HealthGates(probes=GATES)
    )
    held = await migration.wait_until(at("paused", 0), within=30)
    assert held.pause_reason == (
        f"health gate failed on ordinal 1: fake: {request.statefulset}-1 is down"
    )
    assert clusters.slices == {"source": (0, 1), "destination": (1, 2)}
    before = list(clusters.changes)
    await asyncio.sleep(1)
    assert clusters.changes == before
    await migration.resume()  # the human accepts
    result = await migration.result()
    assert [r.ordinal for r in result.moved] == ORDINALS
    health = {r.ordinal: r.health for r in result.moved}
    assert health[2] is not None and health[2].ok
    assert health[1] is not None and not health[1].ok
    first = await migration.client.get_workflow_handle(
        ordinal_workflow_id(migration.id, 2), result_type=OrdinalResult
    ).result()
    assert [s.step for s in first.steps][-1] == "health_gates"


async def test_on_failure_fail_ends_the_run_with_the_ordinal_whole(
    temporal_env: WorkflowEnvironment, gated: tuple[FakeClusters, str, set[int]]
) -> None:
    clusters, task_queue, failing = gated
    failing.add(2)
    migration, _ = await start(
        temporal_env.client, task_queue, health=HealthGates(probes=GATES, on_failure="fail")
    )
    with pytest.raises(WorkflowFailureError) as failure:
        await migration.result()
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == "HealthGateFailed" and cause.non_retryable
    assert "health gate failed on ordinal 2" in cause.message
    assert "Ordinal 2 runs in the destination; ordinals [1, 0] are still in the source" in (
        cause.message
    )
    assert clusters.slices == {"source": (0, 2), "destination": (2, 1)}


async def test_a_failed_gate_on_the_last_ordinal_holds_before_done(
    temporal_env: WorkflowEnvironment, gated: tuple[FakeClusters, str, set[int]]
) -> None:
    _, task_queue, failing = gated
    failing.add(0)
    migration, _ = await start(temporal_env.client, task_queue, health=HealthGates(probes=GATES))
    held: Any = await migration.wait_until(lambda p: p.phase == "paused", within=30)
    assert "ordinal 0" in held.pause_reason and held.remaining == []
    await migration.abort("looking into it")
    result = await migration.result()
    assert result.aborted and [r.ordinal for r in result.moved] == ORDINALS
    assert result.placement == {"2": "destination", "1": "destination", "0": "destination"}


async def test_rollback_ordinal_gives_it_back_and_pauses(
    temporal_env: WorkflowEnvironment, gated: tuple[FakeClusters, str, set[int]]
) -> None:
    clusters, task_queue, failing = gated
    failing.add(1)
    migration, _ = await start(
        temporal_env.client,
        task_queue,
        health=HealthGates(probes=GATES, on_failure="rollback_ordinal"),
    )
    held = await migration.wait_until(at("paused", 1), within=30)
    assert held.rolled_back == [1] and held.remaining == [1, 0]
    assert held.pause_reason == "rolled back ordinal 1: resume moves it again, abort ends here"
    assert clusters.slices == {"source": (0, 2), "destination": (2, 1)}
    after_move = clusters.changes.index("import 1")
    # the move's scale-up, then the rollback: the same slices in reverse
    assert clusters.changes[after_move + 1 :] == [
        "destination [1, 3)",
        "destination [2, 3)",
        "release",
        "reclaim 1",
        "source [0, 2)",
    ]
    await migration.abort("later")
    result = await migration.result()
    assert result.aborted and [r.ordinal for r in result.moved] == [2]
    assert result.rolled_back == [1]
    assert result.placement == {"2": "destination", "1": "source", "0": "source"}


async def test_rollback_all_gives_back_everything_this_run_moved(
    temporal_env: WorkflowEnvironment, gated: tuple[FakeClusters, str, set[int]]
) -> None:
    clusters, task_queue, failing = gated
    failing.add(0)
    migration, _ = await start(
        temporal_env.client,
        task_queue,
        health=HealthGates(probes=GATES, on_failure="rollback_all"),
    )
    result = await migration.result()
    assert result.aborted and result.rolled_back == [0, 1, 2] and result.moved == []
    assert result.abort_reason == "rolled back ordinals [0, 1, 2]"
    assert result.placement == {"2": "source", "1": "source", "0": "source"}
    assert clusters.slices == {"source": (0, 3), "destination": (3, 0)}


async def test_an_operator_rollback_then_resume_moves_the_ordinal_again(
    temporal_env: WorkflowEnvironment, gated: tuple[FakeClusters, str, set[int]]
) -> None:
    clusters, task_queue, _ = gated
    migration, _ = await start(
        temporal_env.client, task_queue, approval=ApprovalPolicy(mode="ordinals", ordinals=[2, 0])
    )
    await migration.wait_until(at("awaiting_approval", 2), within=30)
    with pytest.raises(Rejected, match="nothing to roll back: the destination owns no ordinal"):
        await migration.rollback()
    await migration.approve(2)
    await migration.wait_until(at("awaiting_approval", 0), within=30)
    progress = await migration.rollback(reason="bad latency")
    assert progress.rollback == "ordinal"
    held = await migration.wait_until(at("paused", 1), within=30)
    assert held.rolled_back == [1]
    assert clusters.slices == {"source": (0, 2), "destination": (2, 1)}
    await migration.resume()
    await migration.wait_until(at("awaiting_approval", 0), within=30)
    await migration.approve(0)
    result = await migration.result()
    assert [r.ordinal for r in result.moved] == [2, 1, 0] and result.rolled_back == [1]
    assert clusters.slices == {"source": (0, 0), "destination": (0, 3)}


async def test_a_blocked_rollback_pauses_and_resume_finishes_it(
    temporal_env: WorkflowEnvironment, gated: tuple[FakeClusters, str, set[int]]
) -> None:
    """Rolling back ordinal 1, somebody scales the destination up again after pod 1
    went there: the source must not take pod 1 back meanwhile. The rollback pauses
    with the reason, and finishes once the change is undone and the operator resumes."""
    clusters, task_queue, failing = gated
    failing.add(1)
    clusters.before["reclaim 1"] = lambda: clusters.slices.update(destination=(1, 2))
    migration, _ = await start(
        temporal_env.client,
        task_queue,
        health=HealthGates(probes=GATES, on_failure="rollback_ordinal"),
    )
    held = await migration.wait_until(lambda p: bool(p.blocked), within=30)
    assert (held.phase, held.current_ordinal, held.rollback) == ("paused", 1, "ordinal")
    assert "ordinal 1 source_scaled_up is blocked: destination owns (1, 2), expected (2, 1)" in (
        held.blocked
    )
    await asyncio.sleep(1)
    assert clusters.slices == {"source": (0, 1), "destination": (1, 2)}  # no second pod 1
    clusters.slices["destination"] = (2, 1)
    await migration.resume()
    back = await migration.wait_until(lambda p: p.rolled_back == [1] and p.paused, within=30)
    assert back.pause_reason == "rolled back ordinal 1: resume moves it again, abort ends here"
    assert clusters.slices == {"source": (0, 2), "destination": (2, 1)}
    await migration.abort()
    result = await migration.result()
    assert result.placement == {"2": "destination", "1": "source", "0": "source"}
    found = await histories(temporal_env, migration.id)
    record("gates_blocked_rollback_parent", found[0])
    record("gates_blocked_rollback_1", found[-1])
