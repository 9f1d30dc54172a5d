"""Operator controls of MigrateStatefulSet (pause, resume, approve, abort,
set_approval; signals and updates) on the real local Temporal server, with the
cluster activities replaced by an in-memory fake that records every change
(tests/support/fakes.py).

These prove the ordering rules only; tests/cluster/test_operations.py proves the
same controls against the real clusters.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from google.protobuf.duration_pb2 import Duration
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from activities.temporal import TemporalActivities
from contract import SEARCH_ATTRIBUTES, ApprovalPolicy, Progress
from stsmigrate.api import Rejected
from tests.support.fakes import ORDINALS, FakeClusters, at, fake_worker, start
from tests.support.histories import histories, record


@pytest_asyncio.fixture
async def fake(temporal_env: WorkflowEnvironment) -> AsyncIterator[tuple[FakeClusters, str]]:
    clusters = FakeClusters(list(SEARCH_ATTRIBUTES))
    task_queue = f"controls-{uuid.uuid4().hex[:8]}"
    async with fake_worker(temporal_env.client, task_queue, clusters.activities()):
        yield clusters, task_queue
        clusters.healthy.set()


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
    ack = await migration.approve()  # the next one: 2
    assert (ack.message, ack.approved_ordinal) == ("approve", 2)
    assert (await migration.progress()).approved == [2]
    await migration.wait_until(at("awaiting_approval", 1), within=30)
    assert clusters.slices == {"source": (0, 2), "destination": (2, 1)}
    await migration.approve(1)
    await migration.wait_until(at("awaiting_approval", 0), within=30)
    await migration.approve(all=True)
    result = await migration.result()
    assert [r.ordinal for r in result.moved] == ORDINALS
    assert result.placement == {"2": "destination", "1": "destination", "0": "destination"}
    # The disruption budget is shared before each ordinal moves (with the slices of that
    # moment), and restored once, at the end.
    assert clusters.budgets == [
        "share {'source': (0, 3), 'destination': (3, 0)}",
        "share {'source': (0, 2), 'destination': (2, 1)}",
        "share {'source': (0, 1), 'destination': (1, 2)}",
        "restore",
    ]
    record(
        "controls_approvals_shared_budget_parent", (await histories(temporal_env, migration.id))[0]
    )
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
    held = await migration.wait_until(lambda p: p.step == p.phase == "paused", within=30)
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


async def test_abort_while_the_budget_cannot_be_shared_ends_the_run_with_nothing_moved(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, str]
) -> None:
    clusters, task_queue = fake
    clusters.budget_unreachable = True  # a cluster unreachable: the share retries
    migration, _ = await start(temporal_env.client, task_queue)
    await migration.wait_until(lambda p: p.current_ordinal == 2, within=30)
    await asyncio.wait_for(clusters.share_retried.wait(), 30)  # retried, not failed
    await migration.abort("cluster down")
    result = await migration.result()
    assert result.aborted and result.moved == []
    assert result.placement == {"2": "source", "1": "source", "0": "source"}
    assert clusters.slices == {"source": (0, 3), "destination": (3, 0)}
    assert not [c for c in clusters.changes if c.startswith(("import", "release"))]
    assert clusters.budgets[-1] == "restore"
    found = await histories(temporal_env, migration.id)
    record("controls_abort_while_sharing_parent", found[0])


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


async def test_an_operator_message_during_the_first_activity_is_kept(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, str]
) -> None:
    """The request's state is set before any handler runs (@workflow.init): a
    set_approval accepted while the run's first activity is still going is not
    overwritten by the request's approval policy afterwards."""
    clusters, task_queue = fake
    clusters.attributes_answered.clear()
    clusters.asked_for_attributes.clear()
    migration, _ = await start(
        temporal_env.client, task_queue, approval=ApprovalPolicy(mode="each")
    )
    await asyncio.wait_for(clusters.asked_for_attributes.wait(), 30)
    progress = await migration.set_approval(ApprovalPolicy(mode="none"))
    assert (progress.phase, progress.approval.mode) == ("starting", "none")
    assert (await migration.progress()).approval.mode == "none"
    clusters.attributes_answered.set()
    ended = await migration.wait_until(
        lambda p: p.phase in ("awaiting_approval", "done"), within=30
    )
    assert (ended.phase, ended.approval.mode) == ("done", "none")
    result = await migration.result()
    assert [r.ordinal for r in result.moved] == ORDINALS
    record("controls_first_activity_parent", (await histories(temporal_env, migration.id))[0])


async def test_malformed_or_unknown_signals_are_ignored_and_the_run_goes_on(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, str]
) -> None:
    _, task_queue = fake
    migration, _ = await start(
        temporal_env.client, task_queue, approval=ApprovalPolicy(mode="first")
    )
    await migration.wait_until(at("awaiting_approval", 2), within=30)
    handle = migration.handle
    await handle.signal("pause", {"reason": 5})  # not a string: ignored
    await handle.signal("set_approval")  # needs a policy: ignored
    await handle.signal("set_approval", None)  # null decodes to None: ignored all the same
    with pytest.raises(WorkflowUpdateFailedError):
        await handle.execute_update("set_approval", args=[None], result_type=Progress)
    await handle.signal("approve", {"ordinal": 2, "all": True})  # both: refused by its model
    await handle.signal("no_such_message", {"x": 1})  # no such message: ignored
    await asyncio.sleep(1)
    progress = await migration.progress()
    assert (progress.phase, progress.paused, progress.approved) == ("awaiting_approval", False, [])
    await handle.signal("approve")
    result = await migration.result()
    assert [r.ordinal for r in result.moved] == ORDINALS
    assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
    record("controls_malformed_signals_parent", (await histories(temporal_env, migration.id))[0])


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
    async with fake_worker(temporal_env.client, task_queue, clusters.activities()):
        migration, _ = await start(temporal_env.client, task_queue)
        result = await migration.result()
    assert [r.ordinal for r in result.moved] == ORDINALS
    history = await migration.handle.fetch_history()
    # None of ours (the SDK itself upserts TemporalChangeVersion for workflow.patched).
    upserts = [
        e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
        for e in history.events
        if e.HasField("upsert_workflow_search_attributes_event_attributes")
    ]
    upserted = {name for fields in upserts for name in fields}
    assert upserted <= {"TemporalChangeVersion"}
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
    clusters.slices["source"] = (0, 1)  # a human undoes the foreign change
    await migration.resume()
    result = await migration.result()
    assert [r.ordinal for r in result.moved] == ORDINALS
    assert clusters.slices == {"source": (0, 0), "destination": (0, 3)}
    found = await histories(temporal_env, migration.id)
    record("controls_source_guard_parent", found[0])
    record("controls_source_guard_ordinal_1", found[2])


async def test_a_template_changed_since_preflight_ends_the_run_before_any_move(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, str]
) -> None:
    """The creation of the destination StatefulSet gets the plan's digest; its refusal
    (the source's template changed after preflight) fails the run with nothing moved,
    the lock released."""
    clusters, task_queue = fake
    clusters.template_changed = True
    migration, _ = await start(temporal_env.client, task_queue)
    with pytest.raises(WorkflowFailureError) as failed:
        await migration.result()
    cause: BaseException | None = failed.value.cause
    while cause is not None and not isinstance(cause, ApplicationError):
        cause = cause.__cause__
    assert isinstance(cause, ApplicationError) and cause.type == "TemplateChangedSincePreflight"
    assert clusters.created_with == [clusters.template_digest]
    progress = await migration.progress()
    assert progress.phase == "failed" and "changed since preflight" in progress.error
    assert progress.finished == [] and progress.remaining == ORDINALS
    assert clusters.slices == {"source": (0, 3), "destination": (3, 0)}
    assert "destination statefulset" not in clusters.changes
    assert clusters.locks == {}
    record("controls_template_changed_parent", (await histories(temporal_env, migration.id))[0])
