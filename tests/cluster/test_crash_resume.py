"""SIGKILL the worker process at chosen points of a migration; a new worker finishes it
with no observer violation and without redoing finished ordinals."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from temporalio.testing import WorkflowEnvironment

from contract import MigrationResult
from devenv.observer import Observer
from tests.support.apps import deploy_app
from tests.support.histories import histories, record
from tests.support.processes import WorkerProcess
from tests.support.scenarios import TEMPLATES, request_for

pytestmark = pytest.mark.cluster


def _source_replicas(api: client.ApiClient, ns: str) -> int:
    sts: Any = client.AppsV1Api(api).read_namespaced_stateful_set("app", ns)
    return int(sts.spec.replicas)


def _terminating_for(api: client.ApiClient, ns: str, pod: str, seconds: float) -> bool:
    import datetime as dt

    try:
        p: Any = client.CoreV1Api(api).read_namespaced_pod(pod, ns)
    except client.exceptions.ApiException:
        return False
    deadline = p.metadata.deletion_timestamp
    grace = p.metadata.deletion_grace_period_seconds or 0
    if deadline is None:
        return False
    asked = deadline - dt.timedelta(seconds=grace)
    return bool((dt.datetime.now(dt.UTC) - asked).total_seconds() >= seconds)


def _destination_has_pv_of(api: client.ApiClient, claim: str) -> bool:
    pvs: Any = client.CoreV1Api(api).list_persistent_volume()
    return any(pv.spec.claim_ref and pv.spec.claim_ref.name == claim for pv in pvs.items)


async def _preflight_scheduled(env: WorkflowEnvironment, migration_id: str) -> bool:
    history = await env.client.get_workflow_handle(migration_id).fetch_history()
    return any(
        e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == "plan_migration"
        for e in history.events
    )


# The two after the point of no return run in make test; the other two, in make faults
# (make test's 20-minute bound: about 75 s between them).
SLOW = (pytest.mark.slow, pytest.mark.faults)
KILL_POINTS = [
    pytest.param("preflight", marks=SLOW),
    "after_source_scale_down",
    pytest.param("waiting_for_pod_to_go", marks=SLOW),
    "destination_import",
]


@pytest.mark.parametrize("point", KILL_POINTS)
async def test_worker_killed_mid_migration_resumes_at_the_same_step(
    point: str,
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    worker: WorkerProcess,
    namespace: str,
) -> None:
    await killed_and_resumed(point, 1, kube, temporal_env, worker, namespace)


@pytest.mark.slow
@pytest.mark.faults
@pytest.mark.parametrize("point", ["after_source_scale_down", "destination_import"])
async def test_worker_killed_mid_block_resumes_at_the_same_step(
    point: str,
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    worker: WorkerProcess,
    namespace: str,
) -> None:
    """max_unavailable 3: the block 3..1 in one child, killed in its hand-over."""
    await killed_and_resumed(point, 3, kube, temporal_env, worker, namespace)


async def killed_and_resumed(
    point: str,
    d: int,
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    worker: WorkerProcess,
    namespace: str,
) -> None:
    src, dst = kube["source"], kube["destination"]
    # Ordinal 3 moves first; a 4 s grace period leaves room to kill mid-wait.
    deploy_app(
        src,
        namespace,
        "app",
        4,
        secret_value="x",
        ready_delay="300ms",
        grace=4,
        max_unavailable=d,
        parallel=d > 1,
    )
    observer = Observer(kube, namespace, namespace, "app", TEMPLATES)
    observer.start()
    migration_id = f"crash-{point}-{uuid.uuid4().hex[:6]}"
    blocks = [[3, 2, 1], [0]] if d == 3 else [[3], [2], [1], [0]]
    triggers: dict[str, Callable[[], bool]] = {
        "after_source_scale_down": lambda: _source_replicas(src, namespace) == 4 - d,
        "waiting_for_pod_to_go": lambda: _terminating_for(src, namespace, "app-3", 1.5),
        "destination_import": lambda: _destination_has_pv_of(dst, "data-app-3"),
    }
    try:
        handle = await temporal_env.client.start_workflow(
            "MigrateStatefulSet",
            request_for("app", namespace, max_unavailable=d),
            id=migration_id,
            task_queue=worker.task_queue,
            result_type=MigrationResult,
        )
        for _ in range(1200):
            if point == "preflight":
                hit = await _preflight_scheduled(temporal_env, migration_id)
            else:
                hit = await asyncio.to_thread(triggers[point])
            if hit:
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail(f"kill point {point} never reached")
        worker.kill()
        await asyncio.sleep(1)
        worker.start()
        result = await asyncio.wait_for(handle.result(), 240)
    finally:
        observer.stop()
    assert worker.starts == 2
    assert observer.verdict([3, 2, 1, 0], (0, 0), (0, 4)) == []
    assert [o.ordinal for o in result.moved] == [3, 2, 1, 0]
    # Nothing redone: one child per ordinal, each cluster change scheduled exactly once.
    found = await histories(temporal_env, migration_id)
    assert len(found) == 1 + len(blocks)
    for child, block in zip(found[1:], blocks, strict=True):
        scheduled = [
            e.activity_task_scheduled_event_attributes.activity_type.name
            for e in child.events
            if e.HasField("activity_task_scheduled_event_attributes")
        ]
        # the source's scale-down; the destination's take (with its check that the
        # source still gives k up) in one activity
        assert scheduled.count("set_statefulset_slice") == 1, scheduled
        assert scheduled.count("take_ordinal") == 1, scheduled
        assert scheduled.count("import_volumes") == len(block)
    # Destination pods, once created, were never replaced.
    assert observer.watchers["destination/pods"].of("app-3", "DELETED") == []
    name = f"crash_{point}" if d == 1 else f"crash_block_{point}"
    record(f"{name}_parent", found[0])
    record(f"{name}_ordinal_3", found[1])
