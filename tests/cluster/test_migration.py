"""End to end: MigrateStatefulSet on a real worker process between the real clusters,
judged by the independent observer."""

from __future__ import annotations

import base64
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment

from activities.models import MigrationRequest, MigrationResult, WaitTimeouts
from devenv.observer import Observer
from tests.helpers import WorkerProcess, deploy_app

pytestmark = pytest.mark.cluster

TEMPLATES = ["data", "logs"]
STEPS = [
    "slices_healthy", "volumes_retained", "source_scaled_down", "source_pod_gone",
    "source_claims_released", "volumes_imported", "claims_bound", "destination_scaled_up",
    "destination_pod_ready",
]  # fmt: skip
HISTORIES = Path(__file__).resolve().parents[1] / "histories"
# Short bounds: a test that hangs should fail fast, not after the production defaults.
TIMEOUTS = WaitTimeouts(healthy=60, pod_gone=60, detach=60, bound=60, pod_ready=60)


async def histories(env: WorkflowEnvironment, migration_id: str) -> list[WorkflowHistory]:
    """The parent's history and every child's, found by their deterministic ids."""
    parent = await env.client.get_workflow_handle(migration_id).fetch_history()
    out = [parent]
    for event in parent.events:
        if event.HasField("start_child_workflow_execution_initiated_event_attributes"):
            child_id = event.start_child_workflow_execution_initiated_event_attributes.workflow_id
            out.append(await env.client.get_workflow_handle(child_id).fetch_history())
    return out


def record(name: str, history: WorkflowHistory) -> None:
    """Keep a history for the replay test when STSMIGRATE_RECORD_HISTORIES=1."""
    if os.environ.get("STSMIGRATE_RECORD_HISTORIES") == "1":
        HISTORIES.mkdir(exist_ok=True)
        (HISTORIES / f"{name}.json").write_text(history.to_json())


async def migrate(
    env: WorkflowEnvironment, worker: WorkerProcess, request: MigrationRequest
) -> tuple[str, MigrationResult]:
    migration_id = f"test-{uuid.uuid4().hex[:8]}"
    result = await env.client.execute_workflow(
        "MigrateStatefulSet",
        request,
        id=migration_id,
        task_queue=worker.task_queue,
        result_type=MigrationResult,
    )
    return migration_id, result


async def test_six_replicas_move_keeping_every_invariant(
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    worker: WorkerProcess,
    namespace: str,
    tmp_path: Path,
) -> None:
    secret_value = f"pw-{uuid.uuid4().hex}"
    deploy_app(kube["source"], namespace, "redis", 6, secret_value=secret_value)
    observer = Observer(kube, namespace, namespace, "redis", TEMPLATES)
    observer.start()
    try:
        migration_id, result = await migrate(
            temporal_env,
            worker,
            MigrationRequest(
                statefulset="redis",
                namespace=namespace,
                source_context="source",
                destination_context="destination",
                timeouts=TIMEOUTS,
            ),
        )
    finally:
        observer.stop()
    assert observer.verdict([5, 4, 3, 2, 1, 0], (0, 0), (0, 6)) == []

    assert [o.ordinal for o in result.moved] == [5, 4, 3, 2, 1, 0]
    for ordinal in result.moved:
        assert [s.step for s in ordinal.steps] == STEPS
        assert set(ordinal.original_reclaim_policies.values()) == {"Delete"}
    assert result.source is not None and result.destination is not None
    assert (result.source.replicas, result.destination.start, result.destination.replicas) == (
        0,
        0,
        6,
    )
    copied = {(d.kind, d.name) for d in result.dependencies if d.action == "copied"}
    assert copied == {
        ("Secret", "redis-auth"),
        ("ConfigMap", "redis-config"),
        ("Service", "redis"),
        ("PodDisruptionBudget", "redis"),
    }
    secret: Any = client.CoreV1Api(kube["destination"]).read_namespaced_secret(
        "redis-auth", namespace
    )
    assert base64.b64decode(secret.data["password"]).decode() == secret_value

    # Invariant 5: the Secret's value is nowhere in any history or in the worker's log.
    found = await histories(temporal_env, migration_id)
    assert len(found) == 7
    encoded = base64.b64encode(secret_value.encode()).decode()
    for history in found:
        text = history.to_json()
        assert secret_value not in text and encoded not in text
    log = worker.log.read_text()
    assert secret_value not in log and encoded not in log
    record("six_replicas_parent", found[0])
    record("six_replicas_ordinal_3", found[3])

    timings = {
        o.ordinal: {s.step: s.seconds for s in o.steps} | {"total": o.seconds} for o in result.moved
    }
    (tmp_path / "timings.json").write_text(json.dumps(timings, indent=1))
    print("\nper-ordinal seconds:", json.dumps(timings, indent=1))
    print("history events: parent", len(found[0].events), "child", len(found[1].events))
