"""Operator controls of MigrateStatefulSet (pause, resume, approve, abort,
set_approval; signals and updates) on the real local Temporal server, with the
cluster activities replaced by an in-memory fake that records every change.

These prove the ordering rules only; tests/cluster/test_operations.py proves the
same controls against the real clusters.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from google.protobuf.duration_pb2 import Duration
from temporalio import activity
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.temporal import TemporalActivities
from contract import (
    SEARCH_ATTRIBUTES,
    ApprovalPolicy,
    DependenciesResult,
    EnsureDestinationInput,
    ImportInput,
    MigrationRequest,
    OrdinalPlan,
    Plan,
    PlanInput,
    PodRef,
    PodState,
    Progress,
    ReleaseClaimsInput,
    RetainInput,
    RetainResult,
    SetSliceInput,
    SliceReadyInput,
    SliceRef,
    StatefulSetState,
)
from stsmigrate.api import Migration, Rejected, start_migration
from tests.helpers import histories, record
from workflows import MigrateOrdinal, MigrateStatefulSet, RollbackOrdinal

ORDINALS = [2, 1, 0]


class FakeClusters:
    """Both clusters as two slices; every change is appended to ``changes``."""

    def __init__(self, search_attributes: list[str]) -> None:
        self.slices = {"source": (0, 3), "destination": (3, 0)}
        self.changes: list[str] = []
        self.search_attributes = search_attributes
        # Cleared to hold the health wait of the next ordinal (an ordinal "in progress").
        self.healthy = asyncio.Event()
        self.healthy.set()
        self.waiting_for_health = asyncio.Event()
        # Somebody else's change, made just before the named change of ours.
        self.before: dict[str, Callable[[], None]] = {}

    def activities(self) -> list[Any]:
        @activity.defn(name="registered_search_attributes")
        async def registered_search_attributes() -> list[str]:
            return self.search_attributes

        @activity.defn(name="plan_migration")
        async def plan_migration(task: PlanInput) -> Plan:
            r = task.request
            return Plan(
                migration_id=task.migration_id,
                source_context=r.source_context,
                destination_context=r.destination_context,
                namespace=r.namespace,
                destination_namespace=r.target_namespace,
                statefulset=r.statefulset,
                source_replicas=3,
                end=3,
                ordinals=[OrdinalPlan(ordinal=k, pod=f"{r.statefulset}-{k}") for k in ORDINALS],
            )

        @activity.defn(name="ensure_destination_statefulset")
        async def ensure_destination_statefulset(task: EnsureDestinationInput) -> None:
            self.changes.append("destination statefulset")

        @activity.defn(name="ensure_dependencies")
        async def ensure_dependencies(task: PlanInput) -> DependenciesResult:
            self.changes.append("dependencies")
            return DependenciesResult()

        @activity.defn(name="wait_for_slice_ready")
        async def wait_for_slice_ready(task: SliceReadyInput) -> None:
            self.waiting_for_health.set()
            await self.healthy.wait()

        @activity.defn(name="ensure_volumes_retained")
        async def ensure_volumes_retained(task: RetainInput) -> RetainResult:
            self.changes.append("retain")
            return RetainResult()

        @activity.defn(name="read_pod")
        async def read_pod(task: PodRef) -> PodState:
            return PodState(name=task.pod, exists=True, uid="uid", ready=True)

        @activity.defn(name="set_statefulset_slice")
        async def set_statefulset_slice(task: SetSliceInput) -> None:
            # The real activity's contract: no-op at the target, change only from the
            # expected slice, else a conflicting change (nothing written).
            current, target = self.slices[task.ref.context], (task.start, task.replicas)
            if current == target:
                return
            if current != (task.from_start, task.from_replicas):
                raise ApplicationError(
                    f"{task.ref.context} owns {current}, expected "
                    f"{(task.from_start, task.from_replicas)}",
                    type="ConflictingChange",
                    non_retryable=True,
                )
            self.slices[task.ref.context] = target
            self.changes.append(f"{task.ref.context} [{task.start}, {task.start + task.replicas})")

        @activity.defn(name="release_source_claims")
        async def release_source_claims(task: ReleaseClaimsInput) -> None:
            self.changes.append("release")

        @activity.defn(name="import_volumes")
        async def import_volumes(task: ImportInput) -> None:
            self.before.pop(f"import {task.ordinal.ordinal}", lambda: None)()
            self.changes.append(f"import {task.ordinal.ordinal}")

        @activity.defn(name="reclaim_volumes")
        async def reclaim_volumes(task: ImportInput) -> None:
            self.before.pop(f"reclaim {task.ordinal.ordinal}", lambda: None)()
            self.changes.append(f"reclaim {task.ordinal.ordinal}")

        @activity.defn(name="read_statefulset")
        async def read_statefulset(ref: SliceRef) -> StatefulSetState:
            start, replicas = self.slices[ref.context]
            return StatefulSetState(exists=True, start=start, replicas=replicas)

        def waits_for_nothing(name: str) -> Any:
            async def nothing(task: Any) -> None:
                return None

            return activity.defn(name=name)(nothing)

        waits = [
            waits_for_nothing(name)
            for name in ("wait_for_pod_gone", "wait_for_claims_bound", "wait_for_pod_ready")
        ]
        return [
            registered_search_attributes, plan_migration, ensure_destination_statefulset,
            ensure_dependencies, wait_for_slice_ready, ensure_volumes_retained, read_pod,
            set_statefulset_slice, release_source_claims, import_volumes, reclaim_volumes,
            read_statefulset, *waits,
        ]  # fmt: skip


@pytest_asyncio.fixture
async def fake(temporal_env: WorkflowEnvironment) -> AsyncIterator[tuple[FakeClusters, str]]:
    clusters = FakeClusters(list(SEARCH_ATTRIBUTES))
    task_queue = f"controls-{uuid.uuid4().hex[:8]}"
    async with Worker(
        temporal_env.client,
        task_queue=task_queue,
        workflows=[MigrateStatefulSet, MigrateOrdinal, RollbackOrdinal],
        activities=clusters.activities(),
    ):
        yield clusters, task_queue
        clusters.healthy.set()


async def start(
    client: Client, task_queue: str, **fields: Any
) -> tuple[Migration, MigrationRequest]:
    request = MigrationRequest(
        statefulset=f"app-{uuid.uuid4().hex[:6]}",
        namespace="shop",
        source_context="source",
        destination_context="destination",
        **fields,
    )
    migration = await start_migration(
        client, request, migration_id=f"controls-{uuid.uuid4().hex[:8]}", task_queue=task_queue
    )
    return migration, request


def at(phase: str, ordinal: int | None = None) -> Any:
    def check(p: Progress) -> bool:
        return p.phase == phase and (ordinal is None or p.current_ordinal == ordinal)

    return check


async def test_each_ordinal_waits_for_its_approval_in_turn(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, str]
) -> None:
    clusters, task_queue = fake
    migration, _ = await start(
        temporal_env.client, task_queue, approval=ApprovalPolicy(mode="each")
    )
    waiting = await migration.wait_until(at("awaiting_approval", 2), within=30)
    assert waiting.waiting_for_approval == 2
    assert clusters.slices == {"source": (0, 3), "destination": (3, 0)}
    with pytest.raises(Rejected, match="ordinal 1 is not next; the next ordinal to move is 2"):
        await migration.approve(1)
    progress = await migration.approve()  # the next one: 2
    assert progress.approved == [2]
    await migration.wait_until(at("awaiting_approval", 1), within=30)
    assert clusters.slices == {"source": (0, 2), "destination": (2, 1)}
    await migration.approve(1)
    await migration.wait_until(at("awaiting_approval", 0), within=30)
    await migration.approve(all=True)
    result = await migration.result()
    assert [r.ordinal for r in result.moved] == ORDINALS
    assert result.placement == {"2": "destination", "1": "destination", "0": "destination"}
    record("controls_approvals_parent", (await histories(temporal_env, migration.id))[0])
    with pytest.raises(Rejected, match="has ended"):
        await migration.pause()


async def test_pause_between_ordinals_and_during_one_changes_nothing_until_resume(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, str]
) -> None:
    clusters, task_queue = fake
    migration, _ = await start(
        temporal_env.client, task_queue, approval=ApprovalPolicy(mode="ordinals", ordinals=[1])
    )
    # Between ordinals: ordinal 2 moved, 1 waits for its approval; pause there.
    await migration.wait_until(at("awaiting_approval", 1), within=30)
    with pytest.raises(Rejected, match="not paused"):
        await migration.resume()
    await migration.pause("change freeze")
    paused = await migration.wait_until(at("paused", 1), within=30)
    assert paused.pause_reason == "change freeze"
    with pytest.raises(Rejected, match="already paused"):
        await migration.pause()
    # Approving while paused is accepted but does not move anything.
    await migration.approve(1)
    before = list(clusters.changes)
    await asyncio.sleep(1.5)
    assert clusters.changes == before
    assert (await migration.progress()).phase == "paused"

    # During an ordinal: hold ordinal 1's health wait, pause, then let it go on: it
    # stops at the safe point before the source gives up pod 1.
    clusters.healthy.clear()
    clusters.waiting_for_health.clear()
    await migration.resume()
    await asyncio.wait_for(clusters.waiting_for_health.wait(), 30)
    await migration.pause()
    clusters.healthy.set()
    held = await migration.wait_until(lambda p: p.step == "paused", within=30)
    assert (held.phase, held.current_ordinal) == ("paused", 1)
    before = list(clusters.changes)
    await asyncio.sleep(1.5)
    assert clusters.changes == before
    assert clusters.slices == {"source": (0, 2), "destination": (2, 1)}

    await migration.resume()
    result = await migration.result()
    assert [r.ordinal for r in result.moved] == ORDINALS
    assert clusters.slices == {"source": (0, 0), "destination": (0, 3)}
    found = await histories(temporal_env, migration.id)
    record("controls_pause_parent", found[0])
    record("controls_pause_ordinal_1", found[2])


async def test_abort_while_an_ordinal_waits_for_health_leaves_it_in_the_source(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, str]
) -> None:
    clusters, task_queue = fake
    migration, _ = await start(
        temporal_env.client, task_queue, approval=ApprovalPolicy(mode="ordinals", ordinals=[1])
    )
    await migration.wait_until(at("awaiting_approval", 1), within=30)
    clusters.healthy.clear()
    clusters.waiting_for_health.clear()
    await migration.approve()
    await asyncio.wait_for(clusters.waiting_for_health.wait(), 30)
    progress = await migration.abort("wrong cluster")
    assert progress.aborting
    result = await migration.result()
    assert result.aborted and result.abort_reason == "wrong cluster"
    assert [r.ordinal for r in result.moved] == [2]
    assert result.placement == {"2": "destination", "1": "source", "0": "source"}
    assert not any("import 1" in c for c in clusters.changes)
    assert clusters.slices == {"source": (0, 2), "destination": (2, 1)}
    found = await histories(temporal_env, migration.id)
    record("controls_abort_parent", found[0])
    record("controls_abort_ordinal_1", found[2])
    with pytest.raises(Rejected, match="has ended"):
        await migration.abort()


async def test_signals_that_make_no_sense_are_ignored_and_set_approval_applies(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, str]
) -> None:
    _, task_queue = fake
    migration, _ = await start(
        temporal_env.client, task_queue, approval=ApprovalPolicy(mode="each")
    )
    await migration.wait_until(at("awaiting_approval", 2), within=30)
    handle = migration.handle
    await handle.signal("resume")  # not paused: ignored
    await handle.signal("approve", {"ordinal": 0})  # out of turn: ignored
    with pytest.raises(Rejected, match=r"ordinals \[7\] are not part of this migration"):
        await migration.set_approval(ApprovalPolicy(mode="ordinals", ordinals=[7]))
    progress = await migration.wait_until(lambda p: True)
    assert (progress.phase, progress.approved) == ("awaiting_approval", [])
    await handle.signal("set_approval", ApprovalPolicy(mode="none"))
    result = await migration.result()
    assert [r.ordinal for r in result.moved] == ORDINALS


async def test_abort_signal_while_paused_before_anything_changed(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, str]
) -> None:
    clusters, task_queue = fake
    migration, _ = await start(
        temporal_env.client, task_queue, approval=ApprovalPolicy(mode="first")
    )
    await migration.wait_until(at("awaiting_approval", 2), within=30)
    await migration.handle.signal("abort", {"reason": "not today"})
    result = await migration.result()
    assert result.aborted and result.moved == []
    assert result.placement == {"2": "source", "1": "source", "0": "source"}
    assert not any(c.startswith(("source", "import")) for c in clusters.changes)


async def test_search_attributes_find_a_waiting_migration(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, str]
) -> None:
    _, task_queue = fake
    migration, request = await start(
        temporal_env.client, task_queue, approval=ApprovalPolicy(mode="each")
    )
    await migration.wait_until(at("awaiting_approval", 2), within=30)
    query = (
        f"StsmigrateStatefulSet = '{request.statefulset}' AND "
        "StsmigratePhase = 'awaiting_approval' AND StsmigrateOrdinal = 2"
    )
    found: list[str] = []
    for _ in range(50):  # visibility is eventually consistent
        found = [w.id async for w in temporal_env.client.list_workflows(query)]
        if found:
            break
        await asyncio.sleep(0.2)
    assert found == [migration.id]
    description = await migration.handle.describe()
    summary = await description.static_summary()
    assert summary is not None and request.statefulset in summary
    await migration.abort()
    assert (await migration.result()).aborted
    assert (await migration.status()) == WorkflowExecutionStatus.COMPLETED


async def test_missing_search_attributes_are_reported_not_fatal(
    temporal_env: WorkflowEnvironment, caplog: pytest.LogCaptureFixture
) -> None:
    """The real activity against a namespace without our search attributes."""
    namespace = f"bare-{uuid.uuid4().hex[:6]}"
    await temporal_env.client.workflow_service.register_namespace(
        RegisterNamespaceRequest(
            namespace=namespace, workflow_execution_retention_period=Duration(seconds=86400)
        )
    )
    bare = await Client.connect(
        temporal_env.client.service_client.config.target_host, namespace=namespace
    )
    assert await TemporalActivities(bare).registered_search_attributes() == []
    assert sorted(await TemporalActivities(temporal_env.client).registered_search_attributes()) == (
        sorted(SEARCH_ATTRIBUTES)
    )

    # A migration that finds none runs to the end without upserting any.
    clusters = FakeClusters([])
    task_queue = f"bare-{uuid.uuid4().hex[:8]}"
    async with Worker(
        temporal_env.client,
        task_queue=task_queue,
        workflows=[MigrateStatefulSet, MigrateOrdinal, RollbackOrdinal],
        activities=clusters.activities(),
    ):
        migration, _ = await start(temporal_env.client, task_queue)
        result = await migration.result()
    assert [r.ordinal for r in result.moved] == ORDINALS
    history = await migration.handle.fetch_history()
    assert not any(
        e.HasField("upsert_workflow_search_attributes_event_attributes") for e in history.events
    )
    said = [r.getMessage() for r in caplog.records if "are not registered" in r.getMessage()]
    assert len(said) == 1
    assert "StsmigratePhase" in said[0]


async def test_a_foreign_scale_up_of_the_source_keeps_the_destination_from_taking_the_pod(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, str]
) -> None:
    """After pod 1 went and its claims were released, somebody (a GitOps sync putting
    replicas back, say) scales the source up again: the destination must not start a
    second pod 1. The run pauses, explains, and goes on once the change is undone."""
    clusters, task_queue = fake
    clusters.before["import 1"] = lambda: clusters.slices.update(source=(0, 2))
    migration, _ = await start(temporal_env.client, task_queue)
    held = await migration.wait_until(lambda p: bool(p.blocked), within=30)
    assert (held.phase, held.current_ordinal) == ("paused", 1)
    assert "ordinal 1 destination_scaled_up is blocked: source owns (0, 2), expected (0, 1)" in (
        held.blocked
    )
    await asyncio.sleep(1)
    assert clusters.slices == {"source": (0, 2), "destination": (2, 1)}  # no second pod 1
    with pytest.raises(Rejected, match="half-moved"):
        await migration.abort()
    clusters.slices["source"] = (0, 1)  # a human undoes the foreign change
    await migration.resume()
    result = await migration.result()
    assert [r.ordinal for r in result.moved] == ORDINALS
    assert clusters.slices == {"source": (0, 0), "destination": (0, 3)}
    found = await histories(temporal_env, migration.id)
    record("controls_source_guard_parent", found[0])
    record("controls_source_guard_ordinal_1", found[2])
