"""The ``stsmigrate`` command run as a user runs it (the installed script, no terminal,
configured through the environment), against the real local Temporal server with the
clusters faked in memory (tests/support/fakes.py): what it prints once a migration has
ended, after ``start --wait``, and ``describe`` and ``list``."""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote

import pytest_asyncio
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from contract import SEARCH_ATTRIBUTES, ApprovalPolicy, HealthGates, Probe, Progress
from stsmigrate.describe import Description, Listed, list_query
from tests.support.commands import stsmigrate
from tests.support.fakes import FakeClusters, FakeProbes, at, fake_worker, start


@dataclass
class Fake:
    clusters: FakeClusters
    probes: FakeProbes
    task_queue: str
    run: Callable[..., Awaitable[tuple[int, str, str]]]  # stsmigrate ARGS...


@pytest_asyncio.fixture
async def fake(temporal_env: WorkflowEnvironment) -> AsyncIterator[Fake]:
    clusters, probes = FakeClusters(list(SEARCH_ATTRIBUTES)), FakeProbes()
    task_queue = f"commands-{uuid.uuid4().hex[:8]}"
    address = temporal_env.client.service_client.config.target_host
    activities = [*clusters.activities(), *probes.activities()]
    async with fake_worker(temporal_env.client, task_queue, activities):
        run = functools.partial(stsmigrate, address, task_queue)
        yield Fake(clusters, probes, task_queue, run)


async def test_status_json_of_an_ended_migration_is_json(
    temporal_env: WorkflowEnvironment, fake: Fake
) -> None:
    migration, _ = await start(temporal_env.client, fake.task_queue)
    await migration.result()
    code, out, err = await fake.run("status", "--json", migration.id)
    assert code == 0, err
    progress = Progress.model_validate_json(out)
    assert progress.phase == "done"
    assert progress.placement == {"2": "destination", "1": "destination", "0": "destination"}
    assert [r.ordinal for r in progress.finished] == [2, 1, 0]


async def test_start_wait_without_a_terminal_ends_each_line(fake: Fake) -> None:
    fake.clusters.plan_warnings = ["volumes of ordinal 2 are hostPath"]
    migration_id = f"commands-{uuid.uuid4().hex[:8]}"
    code, out, err = await fake.run(
        "start",
        "--wait",
        "--id",
        migration_id,
        *("-s", f"app-{uuid.uuid4().hex[:6]}", "-n", "shop"),
        *("--from", "source", "--to", "destination"),
    )
    assert code == 0, err
    lines = out.splitlines()
    # The last progress (its warning last), then the result, each on lines of their own.
    assert "warning: volumes of ordinal 2 are hostPath" in lines, out
    assert any(line.startswith(f"{migration_id}: done, 3 ordinal(s) moved") for line in lines), out
    assert lines.index("warning: volumes of ordinal 2 are hostPath") < len(lines) - 1


def fails_once(message: str) -> Callable[[], None]:
    def hook() -> None:
        raise ApplicationError(message, type="KubernetesInvalid", non_retryable=True)

    return hook


async def test_describe_shows_blocks_rollbacks_blocked_steps_and_placement(
    temporal_env: WorkflowEnvironment, fake: Fake
) -> None:
    """Blocks of two (2 and 1, then 1 and 0), ordinal 1 given back after its health
    gate failed, and the second block blocked once at its import, then resumed."""
    fake.probes.failing = {1}
    migration, request = await start(
        temporal_env.client,
        fake.task_queue,
        max_unavailable=2,
        health=HealthGates(probes=[Probe(kind="ready")], on_failure="rollback_ordinal"),
    )
    await migration.wait_until(lambda p: p.paused and p.rolled_back == [1], within=30)
    fake.probes.failing = set()
    fake.clusters.before["import 1"] = fails_once("create PersistentVolume: 422 denied")
    await migration.resume()
    await migration.wait_until(lambda p: bool(p.blocked), within=30)
    await migration.resume()
    await migration.result()

    code, out, err = await fake.run("describe", "--json", migration.id)
    assert code == 0, err
    d = Description.model_validate_json(out)
    assert (d.status, d.runs, d.error) == ("completed", 1, "")
    assert d.request is not None and d.request.max_unavailable == 2
    assert d.plan is not None and [o.ordinal for o in d.plan.ordinals] == [2, 1, 0]
    assert [
        (c.workflow_id.rsplit("/", 1)[1], c.kind, c.ordinals, c.status) for c in d.children
    ] == [
        ("ordinal-2", "move", [2, 1], "completed"),
        ("rollback-1", "rollback", [1], "completed"),
        ("ordinal-1", "move", [1, 0], "completed"),
    ]
    for child in d.children:
        assert child.result is not None and child.started is not None
        assert child.closed is not None and child.started <= child.closed
        assert child.ui.endswith(f"/workflows/{quote(child.workflow_id, safe='')}/{child.run_id}")
    first, back, again = (c.result for c in d.children)
    assert first is not None and back is not None and again is not None
    assert [r.ordinal for r in first.block()] == [2, 1] and first.moved
    steps = [s.step for s in first.steps]
    assert steps[:3] == ["slices_healthy", "volumes_retained", "source_scaled_down"]
    assert "health_gates" in steps and all(s.seconds >= 0 for s in first.steps)
    assert back.steps[0].step == "destination_scaled_down"
    assert [r.ordinal for r in again.block()] == [1, 0]
    assert [(b.ordinal, b.step) for b in d.blocked] == [(1, "volumes_imported")]
    assert "422 denied" in d.blocked[0].detail
    assert d.rolled_back == [1]
    assert d.placement == {"2": "destination", "1": "destination", "0": "destination"}
    assert d.result is not None and not d.result.aborted
    assert d.ui.endswith(f"/workflows/{quote(migration.id, safe='')}")

    code, out, err = await fake.run("describe", migration.id)
    assert code == 0, err
    words = " ".join(out.split())
    for shown in (
        f"StatefulSet:  shop/{request.statefulset}",
        "Max unavailable:  2",
        "Ordinals to move:  2, 1, 0",
        "rollback 1",
        "destination_scaled_down",
        "Blocked steps:",
        "ordinal 1 volumes_imported: create PersistentVolume: 422 denied",
        "Rolled back: 1",
        "Result: done, 3 ordinal(s) moved",
        f"rollback 1: {d.children[1].ui}",
    ):
        assert " ".join(shown.split()) in words, out


async def test_list_filters_by_statefulset_phase_and_namespace(
    temporal_env: WorkflowEnvironment, fake: Fake
) -> None:
    """A migration that continued as new after each ordinal and waits for the approval
    of ordinal 0, next to one that has ended: list finds each by its search attributes
    (once, not per run); describe walks the waiting one's three runs."""
    done, _ = await start(temporal_env.client, fake.task_queue)
    await done.result()
    fake.clusters.slices = {"source": (0, 3), "destination": (3, 0)}  # another app
    waiting, request = await start(
        temporal_env.client,
        fake.task_queue,
        approval=ApprovalPolicy(mode="ordinals", ordinals=[0]),
        continue_as_new_events=1,
    )
    await waiting.wait_until(at("awaiting_approval", 0), within=30)
    query = list_query(statefulset=request.statefulset, phase="awaiting_approval")
    for _ in range(50):  # visibility is eventually consistent
        if [w.id async for w in temporal_env.client.list_workflows(query)]:
            break
        await asyncio.sleep(0.2)

    code, out, err = await fake.run("list", "-s", request.statefulset, "--json")
    assert code == 0, err
    (listed,) = [Listed.model_validate(m) for m in json.loads(out)]
    assert (listed.migration_id, listed.status, listed.phase, listed.ordinal) == (
        waiting.id,
        "running",
        "awaiting_approval",
        0,
    )
    assert (listed.namespace, listed.source_context, listed.destination_context) == (
        "shop",
        "source",
        "destination",
    )
    code, out, err = await fake.run("list", "--phase", "awaiting_approval", "-n", "shop")
    assert code == 0, err
    assert waiting.id in out and done.id not in out
    code, out, err = await fake.run("list", "--context", "source", "--phase", "done", "--json")
    assert code == 0, err
    ids = [m["migration_id"] for m in json.loads(out)]
    assert done.id in ids and waiting.id not in ids

    code, out, err = await fake.run("describe", "--json", waiting.id)
    assert code == 0, err
    d = Description.model_validate_json(out)
    assert (d.status, d.runs, d.closed) == ("running", 3, None)
    assert d.progress is not None and d.progress.waiting_for_approval == 0
    assert [(c.kind, c.ordinals, c.status) for c in d.children] == [
        ("move", [2], "completed"),
        ("move", [1], "completed"),
    ]
    assert d.plan is not None and [o.ordinal for o in d.plan.ordinals] == [2, 1, 0]
    assert d.placement == {"2": "destination", "1": "destination", "0": "source"}
    code, out, err = await fake.run("describe", waiting.id)
    assert code == 0, err
    words = " ".join(out.split())
    for shown in ("Status: running (phase awaiting_approval)", "Runs: 3", "Now:"):
        assert shown in words, out
    assert "Waiting for approval of: 0" in words, out
    await waiting.abort()
    assert (await waiting.result()).aborted


async def test_status_json_of_an_ended_migration_without_a_worker_comes_from_its_result(
    temporal_env: WorkflowEnvironment,
) -> None:
    """No worker answers the query of the closed run: the result says the same."""
    clusters = FakeClusters(list(SEARCH_ATTRIBUTES))
    task_queue = f"commands-{uuid.uuid4().hex[:8]}"
    async with fake_worker(temporal_env.client, task_queue, clusters.activities()):
        migration, _ = await start(temporal_env.client, task_queue)
        await migration.result()
    address = temporal_env.client.service_client.config.target_host
    code, out, err = await stsmigrate(address, task_queue, "status", "--json", migration.id)
    assert code == 0, err
    progress = Progress.model_validate_json(out)
    assert progress.phase == "done"
    assert progress.placement == {"2": "destination", "1": "destination", "0": "destination"}
    assert [r.ordinal for r in progress.finished] == [2, 1, 0]


async def test_cleanup_prints_each_step_and_refuses_a_running_or_unfinished_migration(
    temporal_env: WorkflowEnvironment, fake: Fake
) -> None:
    migration, request = await start(temporal_env.client, fake.task_queue)
    await migration.result()
    code, out, err = await fake.run("cleanup", migration.id)
    assert code == 0, err
    assert f"started {migration.id}/cleanup" in out
    assert all(action in out for action in ("fenced", "removed", "restored Delete")), out
    # The workflow refuses (here: the fake source says it still runs): why, exit 1.
    fake.clusters.cleanup_refused = True
    code, out, err = await fake.run("cleanup", migration.id)
    assert code == 1 and "the source still owns ordinals" in err, (out, err)
    # Still running (no worker polls its queue): refused before anything starts.
    running = await temporal_env.client.start_workflow(
        "MigrateStatefulSet", request, id=f"{migration.id}-running", task_queue="nobody-polls"
    )
    code, out, err = await fake.run("cleanup", running.id)
    assert code == 2 and "is still running" in err, (out, err)
    await running.terminate("test over")
