"""Preflight refuses bad requests and cluster states before anything changes."""

from __future__ import annotations

import json
import shlex
import time
import uuid

import pytest
from kubernetes import client
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.migration import MigrationActivities
from contract import MigrationRequest, MigrationResult, PlanInput
from tests.support.apps import apply_statefulset, deploy_app, statefulset
from tests.support.cluster_state import snapshot
from tests.support.commands import temporal_cli
from tests.support.paths import REPO
from tests.support.processes import WorkerProcess

pytestmark = pytest.mark.cluster


async def refused(
    env: WorkflowEnvironment, worker: WorkerProcess, request: MigrationRequest
) -> ApplicationError:
    with pytest.raises(WorkflowFailureError) as failure:
        await env.client.execute_workflow(
            "MigrateStatefulSet",
            request,
            id=f"refuse-{uuid.uuid4().hex[:8]}",
            task_queue=worker.task_queue,
            result_type=MigrationResult,
        )
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == "PreflightFailed" and cause.non_retryable
    return cause


async def test_preflight_refusals_change_nothing(
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    worker: WorkerProcess,
    namespace: str,
) -> None:
    deploy_app(
        kube["source"],
        namespace,
        "db",
        2,
        secret_value="x",
        ready_delay="100ms",
        when_scaled="Delete",
    )
    base = {
        "statefulset": "db",
        "namespace": namespace,
        "source_context": "source",
        "destination_context": "destination",
    }
    cases = [
        (base, "whenScaled is Delete"),
        ({**base, "statefulset": "nothere"}, "source StatefulSet"),
        (
            {
                **base,
                "fix_retention_policy": True,
                "storage_class_mapping": {"local-csi": "fast-ssd"},
            },
            "storage class fast-ssd",
        ),
        ({**base, "source_context": "elsewhere"}, "context 'elsewhere'"),
        ({**base, "fix_retention_policy": True, "stop_at_ordinal": 7}, "stop_at_ordinal"),
    ]
    before = snapshot(kube, namespace)
    for fields, expected in cases:
        error = await refused(temporal_env, worker, MigrationRequest(**fields))
        assert expected in error.message, error.message
        assert "fix:" in error.message
    assert snapshot(kube, namespace) == before, "a refused request changed a cluster"
    # An incompatible destination StatefulSet (another serviceName) is refused too.
    other = statefulset("db", 0, start=2, templates={"data": None, "logs": "local-csi"})
    other["spec"]["serviceName"] = "something-else"
    apply_statefulset(kube["destination"], namespace, other)
    before = snapshot(kube, namespace)
    error = await refused(temporal_env, worker, MigrationRequest(**base, fix_retention_policy=True))
    assert "serviceName 'something-else'" in error.message
    # Several problems come back together, each with its fix.
    assert error.message.count("fix:") >= 1
    assert snapshot(kube, namespace) == before


async def test_dry_run_returns_the_plan_and_changes_nothing(
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    worker: WorkerProcess,
    namespace: str,
) -> None:
    deploy_app(kube["source"], namespace, "db", 3, secret_value="x", ready_delay="100ms")
    before = snapshot(kube, namespace)
    result = await temporal_env.client.execute_workflow(
        "MigrateStatefulSet",
        MigrationRequest(
            statefulset="db",
            namespace=namespace,
            source_context="source",
            destination_context="destination",
            dry_run=True,
        ),
        id=f"dry-{uuid.uuid4().hex[:8]}",
        task_queue=worker.task_queue,
        result_type=MigrationResult,
    )
    assert snapshot(kube, namespace) == before
    assert result.dry_run and result.plan is not None and result.moved == []
    plan = result.plan
    assert [o.ordinal for o in plan.ordinals] == [2, 1, 0]
    assert [len(o.volumes) for o in plan.ordinals] == [2, 2, 2]
    assert plan.ordinals[0].volumes[0].claim == "data-db-2"
    assert {(d.kind, d.action) for d in plan.dependencies} >= {
        ("Secret", "copy"),
        ("Service", "copy"),
    }
    assert any("hostPath" in w for w in plan.warnings)


async def test_readme_migration_commands_work_as_written(
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    worker: WorkerProcess,
    namespace: str,
) -> None:
    """The README's `temporal workflow start` / `result` lines (a dry run), run by the CLI."""
    deploy_app(kube["source"], namespace, "redis", 2, secret_value="x", ready_delay="100ms")
    readme = (REPO / "README.md").read_text()
    block = readme.split("temporal workflow start --type MigrateStatefulSet", 1)[1]
    block = "temporal workflow start --type MigrateStatefulSet" + block.split("```", 1)[0]
    workflow_id = f"readme-{uuid.uuid4().hex[:8]}"
    text = (
        block.replace("\\\n", " ")
        .replace("prod-a", "source")
        .replace("prod-b", "destination")
        .replace('"shop"', f'"{namespace}"')
        .replace("stsmigrate/source/shop/redis", workflow_id)
        .replace("statefulset-migration", worker.task_queue)
    )
    address = temporal_env.client.service_client.config.target_host
    outputs = []
    for line in [ln for ln in text.splitlines() if ln.strip()]:
        args = shlex.split(line)
        assert args[0] == "temporal"
        outputs.append(await temporal_cli(address, *args[1:]))
    assert len(outputs) == 3
    result = json.loads(outputs[1])["result"]
    assert '"phase": "done"' in outputs[2].replace('":"', '": "')
    assert result["dry_run"] is True
    assert [o["ordinal"] for o in result["plan"]["ordinals"]] == [1, 0]


def test_a_source_locked_by_another_migration_is_a_problem(
    kube: dict[str, client.ApiClient], namespace: str
) -> None:
    """The lock (lock_statefulset's annotation) of another migration id is a problem
    naming the holder and how to clear it; the same id is a restart of this migration."""
    api = kube["source"]
    apply_statefulset(api, namespace, statefulset("db", 0))
    client.AppsV1Api(api).patch_namespaced_stateful_set(
        "db", namespace, {"metadata": {"annotations": {"stsmigrate.dev/locked-by": "mig-old"}}}
    )
    request = MigrationRequest(
        statefulset="db",
        namespace=namespace,
        source_context="source",
        destination_context="destination",
    )
    acts, env = MigrationActivities(kube), ActivityEnvironment()
    # The StatefulSet controller writes the status after the annotation: let it settle
    # first, so the comparison below sees only what preflight might change.
    before = snapshot(kube, namespace)
    for _ in range(50):
        time.sleep(0.5)
        now = snapshot(kube, namespace)
        if now == before:
            break
        before = now
    plan = env.run(acts.plan_migration, PlanInput(request=request, migration_id="mig-new"))
    locked = [p for p in plan.problems if "locked by migration" in p.message]
    assert len(locked) == 1, plan.problems
    assert locked[0].object == f"source StatefulSet {namespace}/db"
    assert "'mig-old'" in locked[0].message
    assert "wait for migration 'mig-old' to end" in locked[0].fix
    assert (
        f"kubectl --context source -n {namespace} annotate statefulset db "
        "stsmigrate.dev/locked-by-" in locked[0].fix
    )
    same = env.run(acts.plan_migration, PlanInput(request=request, migration_id="mig-old"))
    assert not [p for p in same.problems if "locked" in p.message], same.problems
    assert snapshot(kube, namespace) == before
