"""End to end: MigrateStatefulSet on a real worker process between the real clusters,
judged by the independent observer."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.testing import WorkflowEnvironment

from contract import (
    MigrationRequest,
    MigrationResult,
    OrdinalResult,
    Plan,
    Progress,
    ordinal_workflow_id,
)
from devenv.clusters import LocalClusters
from tests.support.apps import deploy_app
from tests.support.cluster_state import budgets
from tests.support.histories import histories, record, runs
from tests.support.processes import WorkerProcess, total
from tests.support.scenarios import STEPS, observing, request_for

pytestmark = pytest.mark.cluster


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


MOVED = "stsmigrate_ordinals_moved_total"
STEP_COUNT = "stsmigrate_step_duration_seconds_count"


async def migrate_scraping(
    env: WorkflowEnvironment, worker: WorkerProcess, request: MigrationRequest
) -> tuple[str, MigrationResult, dict[str, float], list[float], dict[str, float]]:
    """``migrate``, scraping the worker's metrics before, every 0.3 s during (ordinals
    moved so far) and after the run."""
    before = worker.metrics()
    run = asyncio.ensure_future(migrate(env, worker, request))
    moved: list[float] = []
    while not run.done():
        moved.append(total(worker.metrics(), MOVED) - total(before, MOVED))
        await asyncio.wait({run}, timeout=0.3)
    migration_id, result = await run
    return migration_id, result, before, moved, worker.metrics()


def our_events(kube: client.ApiClient, namespace: str, migration_id: str) -> list[Any]:
    """The Events the worker wrote in ``namespace`` about ``migration_id``, oldest first."""
    # Raw: the client's model refuses the core Events of controllers (no eventTime).
    resp = client.EventsV1Api(kube).list_namespaced_event(namespace, _preload_content=False)
    ours = [
        e
        for e in json.loads(resp.data)["items"]
        if e.get("reportingController") == "stsmigrate.dev/worker"
        and (e["metadata"].get("annotations") or {}).get("stsmigrate.dev/migration-id")
        == migration_id
    ]
    return sorted(ours, key=lambda e: e["eventTime"])


def reasons(events: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for e in events:
        counts[e["reason"]] = counts.get(e["reason"], 0) + 1
    return counts


async def test_six_replicas_move_keeping_every_invariant(
    clusters: LocalClusters,
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    worker: WorkerProcess,
    namespace: str,
    tmp_path: Path,
) -> None:
    secret_value = f"pw-{uuid.uuid4().hex}"
    deploy_app(kube["source"], namespace, "redis", 6, secret_value=secret_value)
    with observing(kube, namespace, namespace, "redis") as observer:
        migration_id, result, before, moved, after = await migrate_scraping(
            temporal_env, worker, request_for("redis", namespace)
        )
    assert observer.verdict([5, 4, 3, 2, 1, 0], (0, 0), (0, 6)) == []

    # The metrics moved while it ran: ordinals one by one, each step's histogram.
    assert moved == sorted(moved) and any(0 < m < 6 for m in moved), moved
    assert total(after, MOVED) - total(before, MOVED) == 6
    for activity, per_ordinal in (("take_ordinal", 1), ("wait_for_pod_ready", 1)):
        grew = total(after, STEP_COUNT, activity_type=activity, result="ok") - total(
            before, STEP_COUNT, activity_type=activity, result="ok"
        )
        assert grew == 6 * per_ordinal, (activity, grew)
    ended = "stsmigrate_migrations_ended_total"
    assert total(after, ended, phase="done") - total(before, ended, phase="done") == 1
    assert total(after, "temporal_activity_execution_latency_count") > 0  # the SDK's own
    samples = sorted(
        k for k in after if k.startswith(("stsmigrate_", "temporal_worker_task_slots"))
    )
    print("\nmetrics after the run:\n" + "\n".join(f"{k} {after[k]}" for k in samples))

    # Kubernetes Events about every step, in both clusters, naming the migration.
    source = reasons(our_events(kube["source"], namespace, migration_id))
    dest = reasons(our_events(kube["destination"], namespace, migration_id))
    claims = 2 * 6  # two claim templates
    assert source == {
        "MigrationStarted": 1,
        "OrdinalGivenUp": 6,
        "ClaimReleased": claims,
        "MigrationFinished": 1,
    }, source
    assert dest == {
        "StatefulSetCreated": 1,
        "VolumeImported": claims,
        "OrdinalTaken": 6,
        "OrdinalReady": 6,
    }, dest
    described = clusters.kubectl("destination", "-n", namespace, "describe", "statefulset", "redis")
    assert "OrdinalTaken" in described and migration_id in described, described[-2000:]
    listing = {
        side: clusters.kubectl(side, "-n", namespace, "events", "--for", "statefulset/redis")
        for side in ("source", "destination")
    }
    assert "OrdinalGivenUp" in listing["source"] and "OrdinalReady" in listing["destination"]
    print("\n".join(f"kubectl --context {s} events:\n{text}" for s, text in listing.items()))

    assert [o.ordinal for o in result.moved] == [5, 4, 3, 2, 1, 0]
    # The result is a summary; each ordinal's steps are in its child's result.
    children = [
        await temporal_env.client.get_workflow_handle(
            ordinal_workflow_id(migration_id, o.ordinal), result_type=OrdinalResult
        ).result()
        for o in result.moved
    ]
    for ordinal, child in zip(result.moved, children, strict=True):
        assert ordinal.steps == [] and ordinal.seconds == child.seconds
        assert [s.step for s in child.steps] == STEPS
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
        o.ordinal: {s.step: s.seconds for s in o.steps} | {"total": o.seconds} for o in children
    }
    (tmp_path / "timings.json").write_text(json.dumps(timings, indent=1))
    print("\nper-ordinal seconds:", json.dumps(timings, indent=1))
    print("history events: parent", len(found[0].events), "child", len(found[1].events))


def no_events_for_us(namespace: str) -> str:
    """An admission policy refusing (403) every Event the worker writes in ``namespace``:
    as if its role there had no ``create events``."""
    name = f"no-stsmigrate-events-{namespace}"
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {
                    "apiVersion": "admissionregistration.k8s.io/v1",
                    "kind": "ValidatingAdmissionPolicy",
                    "metadata": {"name": name},
                    "spec": {
                        "failurePolicy": "Fail",
                        "matchConstraints": {
                            "resourceRules": [
                                {
                                    "apiGroups": ["events.k8s.io", ""],
                                    "apiVersions": ["*"],
                                    "operations": ["CREATE"],
                                    "resources": ["events"],
                                }
                            ]
                        },
                        "matchConditions": [
                            {
                                "name": "ours",
                                "expression": "has(object.reportingController) && "
                                "object.reportingController == 'stsmigrate.dev/worker'",
                            }
                        ],
                        "validations": [
                            {"expression": "false", "reason": "Forbidden", "message": "no"}
                        ],
                    },
                },
                {
                    "apiVersion": "admissionregistration.k8s.io/v1",
                    "kind": "ValidatingAdmissionPolicyBinding",
                    "metadata": {"name": name},
                    "spec": {
                        "policyName": name,
                        "validationActions": ["Deny"],
                        "matchResources": {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": namespace}
                            }
                        },
                    },
                },
            ],
        }
    )


async def test_into_another_destination_namespace_fixing_the_retention_policy(
    clusters: LocalClusters,
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    worker: WorkerProcess,
    namespace: str,
    second_namespace: str,
) -> None:
    """... where the worker may not write Events in the destination: the run goes on."""
    # whenScaled: Delete would delete each moved claim on scale-down; the request asks the
    # migration to fix it first.
    deploy_app(
        kube["source"],
        namespace,
        "kv",
        3,
        secret_value="x",
        ready_delay="200ms",
        when_scaled="Delete",
    )
    denial = no_events_for_us(second_namespace)
    clusters.kubectl("destination", "apply", "-f", "-", input=denial)
    try:
        with observing(kube, namespace, second_namespace, "kv") as observer:
            migration_id, result = await migrate(
                temporal_env,
                worker,
                request_for(
                    "kv",
                    namespace,
                    destination_namespace=second_namespace,
                    fix_retention_policy=True,
                ),
            )
    finally:
        clusters.kubectl("destination", "delete", "--ignore-not-found", "-f", "-", input=denial)
    assert observer.verdict([2, 1, 0], (0, 0), (0, 3)) == []
    # No Event of ours could be written in the destination; each refusal is a warning.
    assert our_events(kube["destination"], second_namespace, migration_id) == []
    refused = [
        line
        for line in worker.log.read_text().splitlines()
        if '"event_not_written"' in line
        and "KubernetesForbidden" in line
        and second_namespace in line
    ]
    assert len(refused) >= 3 + 3 * 2, refused  # taken and Ready per ordinal, each claim
    assert reasons(our_events(kube["source"], namespace, migration_id))["OrdinalGivenUp"] == 3
    source: Any = client.AppsV1Api(kube["source"]).read_namespaced_stateful_set("kv", namespace)
    assert source.spec.persistent_volume_claim_retention_policy.when_scaled == "Retain"
    plan = await temporal_env.client.get_workflow_handle(migration_id).query(
        "plan", result_type=Plan
    )
    assert plan.fix_retention_policy and result.plan is None  # the result: a summary
    assert any("whenScaled" in w for w in plan.warnings)
    assert [o.ordinal for o in result.moved] == [2, 1, 0]
    assert {d.name for d in result.dependencies if d.action == "copied"} >= {"kv-auth", "kv"}


async def test_a_source_slice_that_starts_at_ordinal_2(
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    worker: WorkerProcess,
    namespace: str,
) -> None:
    deploy_app(kube["source"], namespace, "zk", 4, start=2, secret_value="x", ready_delay="200ms")
    with observing(kube, namespace, namespace, "zk") as observer:
        handle = await temporal_env.client.start_workflow(
            "MigrateStatefulSet",
            request_for("zk", namespace),
            id=f"test-{uuid.uuid4().hex[:8]}",
            task_queue=worker.task_queue,
            result_type=MigrationResult,
        )
        # Mid-run, the progress query says where the migration is.
        for _ in range(600):
            progress = await handle.query("progress", result_type=Progress)
            if progress.current_ordinal == 4:
                break
            await asyncio.sleep(0.05)
        assert progress.phase == "moving"
        assert [r.ordinal for r in progress.finished] == [5]
        assert progress.remaining == [4, 3, 2]
        result = await handle.result()
    assert observer.verdict([5, 4, 3, 2], (2, 0), (2, 4)) == []
    plan = await handle.query("plan", result_type=Plan)
    assert (plan.source_start, plan.end) == (2, 6)
    assert [o.ordinal for o in result.moved] == [5, 4, 3, 2]
    done = await handle.query("progress", result_type=Progress)
    assert (done.phase, done.remaining, len(done.finished)) == ("done", [], 4)
    # The Temporal UI shows the current details: a markdown table of the ordinals.
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    details = metadata.current_details
    assert "**phase:** done" in details
    for k in (5, 4, 3, 2):
        assert f"| {k} | moved |" in details


async def test_partial_migration_stops_at_ordinal_3_and_a_later_start_finishes_it(
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    worker: WorkerProcess,
    namespace: str,
) -> None:
    deploy_app(kube["source"], namespace, "pg", 5, secret_value="x", ready_delay="200ms", grace=1)
    request = request_for("pg", namespace, stop_at_ordinal=3)
    with observing(kube, namespace, namespace, "pg") as observer:
        _, split = await migrate(temporal_env, worker, request)
        # The StatefulSet now runs split: [0, 3) in the source, [3, 5) in the destination.
        assert [o.ordinal for o in split.moved] == [4, 3]
        assert observer.verdict([4, 3], (0, 3), (3, 2)) == []
        # Split across the clusters, the app keeps one budget of 1 between them.
        assert budgets(kube, namespace, "pg") == {"source": 1, "destination": 0}
        rest_id, rest = await migrate(
            temporal_env, worker, request.model_copy(update={"stop_at_ordinal": None})
        )
    rest_plan = await temporal_env.client.get_workflow_handle(rest_id).query(
        "plan", result_type=Plan
    )
    assert (rest_plan.destination_exists, rest_plan.destination_start, rest_plan.end) == (
        True,
        3,
        5,
    )
    assert [o.ordinal for o in rest.moved] == [2, 1, 0]
    assert observer.verdict([4, 3, 2, 1, 0], (0, 0), (0, 5)) == []
    assert budgets(kube, namespace, "pg") == {"source": 1, "destination": 1}  # its own


async def test_a_migration_that_continues_as_new_after_every_ordinal(
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    worker: WorkerProcess,
    namespace: str,
) -> None:
    deploy_app(kube["source"], namespace, "cn", 3, secret_value="x", ready_delay="200ms")
    request = request_for("cn", namespace, continue_as_new_events=1)
    with observing(kube, namespace, namespace, "cn") as observer:
        migration_id, result = await migrate(temporal_env, worker, request)
    assert observer.verdict([2, 1, 0], (0, 0), (0, 3)) == []
    assert [o.ordinal for o in result.moved] == [2, 1, 0] and not result.aborted
    assert {d.name for d in result.dependencies if d.action == "copied"} >= {"cn-auth", "cn"}
    found = await runs(temporal_env.client, migration_id)
    assert len(found) == 3  # each run planned again from the clusters, then moved one
    progress = await temporal_env.client.get_workflow_handle(migration_id).query(
        "progress", result_type=Progress
    )
    assert (progress.phase, progress.run, [r.ordinal for r in progress.finished]) == (
        "done",
        3,
        [2, 1, 0],
    )
    # Restored at the very end, by the last run; the lock gone.
    assert budgets(kube, namespace, "cn") == {"source": 1, "destination": 1}
    source: Any = client.AppsV1Api(kube["source"]).read_namespaced_stateful_set("cn", namespace)
    assert "stsmigrate.dev/locked-by" not in (source.metadata.annotations or {})
    print("\nevents per run:", [len(h.events) for h in found])


async def test_ten_ordinals_move_at_once_within_the_budget(
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    worker: WorkerProcess,
    namespace: str,
) -> None:
    """max_unavailable 10 on 12 replicas (podManagementPolicy Parallel, a PDB allowing
    10): two blocks, 11..2 and 1..0, each one child with one slice patch a side; the
    observer sees no identity twice and no volume lost."""
    deploy_app(
        kube["source"],
        namespace,
        "wide",
        12,
        secret_value="x",
        ready_delay="200ms",
        grace=1,
        max_unavailable=10,
        parallel=True,
    )
    every = list(range(11, -1, -1))
    with observing(kube, namespace, namespace, "wide") as observer:
        migration_id, result = await migrate(
            temporal_env, worker, request_for("wide", namespace, max_unavailable=10)
        )
    assert observer.verdict(every, (0, 0), (0, 12)) == []
    assert [o.ordinal for o in result.moved] == every and not result.aborted
    blocks = [
        await temporal_env.client.get_workflow_handle(
            ordinal_workflow_id(migration_id, k), result_type=OrdinalResult
        ).result()
        for k in (11, 1)
    ]
    assert [[r.ordinal for r in b.block()] for b in blocks] == [every[:10], [1, 0]]
    assert [s.step for s in blocks[0].steps] == STEPS
    # Every moved ordinal's own volumes, each Retain from Delete.
    for moved in result.moved:
        assert len(moved.volumes) == 2
        assert set(moved.original_reclaim_policies) == set(moved.volumes)
    # Each fence left in the source (one release for the block) names its own ordinal.
    fences: Any = client.CoreV1Api(kube["source"]).list_namespaced_persistent_volume_claim(
        namespace, label_selector="stsmigrate.dev/fence"
    )
    assert sorted(
        (c.metadata.name, c.metadata.labels["stsmigrate.dev/ordinal"]) for c in fences.items
    ) == sorted((f"{t}-wide-{k}", str(k)) for k in every for t in ("data", "logs"))
    assert budgets(kube, namespace, "wide") == {"source": 10, "destination": 10}  # its own
    found = await histories(temporal_env, migration_id)
    assert len(found) == 3
    record("parallel_ten_parent", found[0])
    record("parallel_ten_block_11", found[1])


async def test_destination_overrides_reach_the_destination_pods_only(
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    worker: WorkerProcess,
    namespace: str,
) -> None:
    """Another registry, env, a node of the destination's and a toleration: the
    destination StatefulSet is made with them, and its pods run with them; the source's
    template is untouched. A Secret only the override names is copied too."""
    deploy_app(kube["source"], namespace, "ov", 2, secret_value="x", ready_delay="200ms")
    core, apps = client.CoreV1Api(kube["source"]), client.AppsV1Api(kube["source"])
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "ov-extra"}, "stringData": {"token": "t"}}
    )
    source_template = apps.read_namespaced_stateful_set("ov", namespace).to_dict()["spec"][
        "template"
    ]
    node = "destination-node-1"
    toleration = {"key": "stsmigrate.dev/real", "operator": "Exists", "effect": "NoSchedule"}
    overrides = [
        {
            "type": "json",
            "patch": [
                {"op": "test", "path": "/spec/containers/0/name", "value": "app"},
                {"op": "replace", "path": "/spec/containers/0/image", "value": "reg.b/app:2"},
                {
                    "op": "add",
                    "path": "/spec/containers/0/env/-",
                    "value": {"name": "REDIS_NODES", "value": "ov-0,ov-1"},
                },
                {
                    "op": "add",
                    "path": "/spec/containers/0/env/-",
                    "value": {
                        "name": "EXTRA_TOKEN",
                        "valueFrom": {"secretKeyRef": {"name": "ov-extra", "key": "token"}},
                    },
                },
            ],
        },
        {
            "type": "merge",
            "patch": {
                "spec": {
                    "nodeSelector": {"kubernetes.io/hostname": node},
                    "tolerations": [toleration],
                }
            },
        },
    ]
    with observing(kube, namespace, namespace, "ov") as observer:
        migration_id, result = await migrate(
            temporal_env, worker, request_for("ov", namespace, destination_overrides=overrides)
        )
    assert observer.verdict([1, 0], (0, 0), (0, 2)) == []
    plan = await temporal_env.client.get_workflow_handle(migration_id).query(
        "plan", result_type=Plan
    )
    assert 'replace /spec/containers/0/image "reg.b/app:2"' in plan.destination_overrides
    assert f'add /spec/nodeSelector {{"kubernetes.io/hostname":"{node}"}}' in (
        plan.destination_overrides
    )
    assert any("ov-extra" in d.name for d in result.dependencies if d.action == "copied")

    def wanted(spec: Any, where: str) -> None:
        (container,) = spec.containers
        env = {e.name: e for e in container.env}
        assert container.image == "reg.b/app:2", where
        assert env["REDIS_NODES"].value == "ov-0,ov-1", where
        assert env["EXTRA_TOKEN"].value_from.secret_key_ref.name == "ov-extra", where
        assert "REDIS_PASSWORD" in env, where  # the source's own env is kept
        assert spec.node_selector == {"kubernetes.io/hostname": node}, where
        assert [t.to_dict() for t in spec.tolerations or []][:1] == [
            {**toleration, "value": None, "toleration_seconds": None}
        ], where

    dest_apps, dest_core = (
        client.AppsV1Api(kube["destination"]),
        client.CoreV1Api(kube["destination"]),
    )
    made = dest_apps.read_namespaced_stateful_set("ov", namespace)
    wanted(made.spec.template.spec, "destination StatefulSet")
    assert made.spec.selector.match_labels == {"app": "ov"}
    for k in (0, 1):
        pod = dest_core.read_namespaced_pod(f"ov-{k}", namespace)
        wanted(pod.spec, f"destination pod ov-{k}")
        assert pod.spec.node_name == node
    after = apps.read_namespaced_stateful_set("ov", namespace).to_dict()["spec"]["template"]
    assert after == source_template
    assert after["spec"]["containers"][0]["image"] == "registry.invalid/app:1"
