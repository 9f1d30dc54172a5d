"""A thousand ordinals: the parent's history stays lean and continues as new between
ordinals, on the real local Temporal server with the clusters faked in memory
(tests/support/fakes.py). Event counts are deterministic here (the fakes never fail),
so they are asserted; wall times are the benchmark's (make bench)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError, WorkflowHistory
from temporalio.testing import WorkflowEnvironment

from contract import SEARCH_ATTRIBUTES, ApprovalPolicy, Problem, plan_ordinals
from stsmigrate.api import Migration
from tests.support.fakes import ORDINALS, FakeClusters, at, fake_worker, start
from tests.support.histories import histories, record, runs

CHILD_STARTED = EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED


@pytest_asyncio.fixture
async def fake(temporal_env: WorkflowEnvironment) -> AsyncIterator[tuple[FakeClusters, str]]:
    clusters = FakeClusters(list(SEARCH_ATTRIBUTES))
    task_queue = f"lean-{uuid.uuid4().hex[:8]}"
    async with fake_worker(temporal_env.client, task_queue, clusters.activities()):
        yield clusters, task_queue


def per_ordinal(history: WorkflowHistory) -> list[int]:
    """Events from one child's start to the next one's: what one ordinal costs."""
    starts = [i for i, e in enumerate(history.events) if e.event_type == CHILD_STARTED]
    return [b - a for a, b in itertools.pairwise(starts)]


async def continuing_after_the_first(
    env: WorkflowEnvironment, task_queue: str, then: Callable[[], None]
) -> Migration:
    """A migration that continues as new after every ordinal, each approved: ``then``
    runs while ordinal 2 waits for approval, before run 2's preflight."""
    migration, _ = await start(
        env.client,
        task_queue,
        approval=ApprovalPolicy(mode="each"),
        continue_as_new_events=1,
    )
    await migration.wait_until(at("awaiting_approval", 2), within=30)
    then()
    await migration.approve()
    return migration


async def test_the_parent_records_at_most_12_events_per_ordinal(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, str]
) -> None:
    clusters, task_queue = fake
    migration, _ = await start(temporal_env.client, task_queue)
    result = await migration.result()
    assert [r.ordinal for r in result.moved] == ORDINALS
    # The result is a summary: no plan, no step timings (the children's results have them).
    assert result.plan is None and all(r.steps == [] for r in result.moved)
    assert clusters.budgets[:3] == [
        "share {'source': (0, 3), 'destination': (3, 0)}",
        "share {'source': (0, 2), 'destination': (2, 1)}",
        "share {'source': (0, 1), 'destination': (1, 2)}",
    ], clusters.budgets  # each child shared the budget first
    (parent,) = await runs(temporal_env.client, migration.id)
    costs = per_ordinal(parent)
    print(f"\nparent events per ordinal: {costs}, {len(parent.events)} in all")
    assert len(costs) == 2 and max(costs) <= 12, costs
    signals = [
        e.workflow_execution_signaled_event_attributes.signal_name
        for e in parent.events
        if e.HasField("workflow_execution_signaled_event_attributes")
    ]
    assert signals == []  # no step reports
    record("lean_parent", parent)
    record("lean_ordinal_2", (await histories(temporal_env, migration.id))[1])


async def test_an_update_replies_with_a_short_acknowledgement(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, str]
) -> None:
    _, task_queue = fake
    migration, _ = await start(
        temporal_env.client, task_queue, approval=ApprovalPolicy(mode="each")
    )
    sizes = []
    for k in ORDINALS:
        await migration.wait_until(at("awaiting_approval", k), within=30)
        ack = await migration.approve()
        assert (ack.message, ack.approved_ordinal) == ("approve", k)
        sizes.append(len(ack.model_dump_json()))
    await migration.result()
    # The reply does not grow with the ordinals done (a progress would: finished).
    assert len(set(sizes)) == 1 and sizes[0] < 600, sizes
    assert (await migration.progress()).approved == ORDINALS


async def test_continue_as_new_between_ordinals_keeps_approvals_moves_and_rollbacks(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, str]
) -> None:
    clusters, task_queue = fake
    migration, _ = await start(
        temporal_env.client,
        task_queue,
        approval=ApprovalPolicy(mode="each"),
        continue_as_new_events=1,  # after every ordinal
    )
    await migration.wait_until(at("awaiting_approval", 2), within=30)
    await migration.approve()
    # Run 2 planned again from the clusters: ordinal 2 is moved, 1 waits for approval.
    second = await migration.wait_until(at("awaiting_approval", 1), within=30)
    assert (second.run, second.approved, second.remaining) == (2, [2], [1, 0])
    assert [r.ordinal for r in second.finished] == [2]
    replanned = await migration.plan()
    assert replanned is not None and [o.ordinal for o in replanned.ordinals] == [1, 0]
    assert plan_ordinals(second, replanned) == ORDINALS  # the table still shows all three
    assert clusters.slices == {"source": (0, 2), "destination": (2, 1)}
    await migration.approve()
    third = await migration.wait_until(at("awaiting_approval", 0), within=30)
    assert (third.run, third.approved) == (3, [2, 1])
    # A rollback in run 3 gives back ordinal 1, which run 2 moved.
    await migration.rollback(reason="check it")
    held = await migration.wait_until(at("paused"), within=30)
    assert held.rolled_back == [1] and held.run == 3
    assert clusters.slices == {"source": (0, 2), "destination": (2, 1)}
    await migration.resume()  # moves 1 again (approved already), then 0 waits
    fourth = await migration.wait_until(at("awaiting_approval", 0), within=30)
    assert fourth.run == 4 and fourth.rolled_back == [1]
    await migration.approve()
    result = await migration.result()
    assert [r.ordinal for r in result.moved] == ORDINALS
    assert result.rolled_back == [1] and not result.aborted
    assert result.placement == {"2": "destination", "1": "destination", "0": "destination"}
    assert clusters.slices == {"source": (0, 0), "destination": (0, 3)}
    assert clusters.plans == 4 and clusters.locks == {}  # unlocked once, at the very end
    assert clusters.budgets[-1] == "restore" and clusters.budgets.count("restore") == 1
    found = await runs(temporal_env.client, migration.id)
    assert len(found) == 4
    record("continue_as_new_run_1", found[0])
    record("continue_as_new_run_3", found[2])


async def test_a_continued_runs_preflight_problem_pauses_and_resume_plans_again(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, str]
) -> None:
    clusters, task_queue = fake
    hpa = Problem(object="HorizontalPodAutoscaler web", message="scales it", fix="delete it")
    migration = await continuing_after_the_first(
        temporal_env, task_queue, lambda: clusters.plan_problems.append(hpa)
    )
    held = await migration.wait_until(at("paused"), within=30)
    assert held.run == 2 and "HorizontalPodAutoscaler web: scales it" in held.pause_reason
    assert clusters.slices == {"source": (0, 2), "destination": (2, 1)}
    assert clusters.locks  # still held by the migration
    plans = clusters.plans
    clusters.plan_problems = []
    await migration.resume()  # preflight runs again, clean: ordinal 1 waits for approval
    await migration.wait_until(at("awaiting_approval", 1), within=30)
    assert clusters.plans == plans + 1
    await migration.approve(all=True)
    result = await migration.result()
    assert [r.ordinal for r in result.moved] == ORDINALS and clusters.locks == {}


async def test_abort_while_a_continued_runs_preflight_holds_ends_with_all_released(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, str]
) -> None:
    clusters, task_queue = fake
    secret = Problem(object="Secret auth", message="differs", fix="copy it")
    migration = await continuing_after_the_first(
        temporal_env, task_queue, lambda: clusters.plan_problems.append(secret)
    )
    await migration.wait_until(at("paused"), within=30)
    await migration.abort("not now")
    result = await migration.result()
    assert result.aborted and [r.ordinal for r in result.moved] == [2]
    assert result.placement == {"2": "destination", "1": "source", "0": "source"}
    assert clusters.locks == {} and clusters.budgets[-1] == "restore"


async def test_a_continued_run_that_fails_releases_the_lock_and_the_budgets(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, str]
) -> None:
    clusters, task_queue = fake

    def break_preflight() -> None:
        clusters.plan_fails = True

    migration = await continuing_after_the_first(temporal_env, task_queue, break_preflight)
    with pytest.raises(WorkflowFailureError):
        await migration.result()
    failed = await migration.progress()
    assert (failed.phase, failed.run) == ("failed", 2) and "preflight broke" in failed.error
    assert failed.placement == {"2": "destination", "1": "source", "0": "source"}
    assert clusters.locks == {} and clusters.budgets[-1] == "restore"
