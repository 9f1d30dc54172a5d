"""The clean finish on the real clusters: the source StatefulSet deleted and held, the
source's Released PV objects removed, each destination PV its original reclaim policy
back; judged by the observer (no storage lost), and by a GitOps-style re-apply of the
original manifest that must recreate nothing in the source."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from contract import CleanupResult, MigrationResult
from stsmigrate.api import StillRunning, start_cleanup
from tests.cluster.test_migration import migrate, our_events, reasons
from tests.support.apps import deploy_app, statefulset
from tests.support.cluster_state import ready_replicas, release_fence, snapshot
from tests.support.processes import WorkerProcess
from tests.support.scenarios import observing, request_for
from tests.support.waits import wait_for

pytestmark = pytest.mark.cluster

FENCE = "stsmigrate.dev/fence"


def volumes_of(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    """The PVs claimed from ``namespace``, by name."""
    pvs: Any = client.CoreV1Api(api).list_persistent_volume()
    return {
        pv.metadata.name: pv
        for pv in pvs.items
        if pv.spec.claim_ref is not None and pv.spec.claim_ref.namespace == namespace
    }


def pods_of(api: client.ApiClient, namespace: str, name: str) -> list[str]:
    pods: Any = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=f"app={name}")
    return sorted(p.metadata.name for p in pods.items)


def app_state(kube: dict[str, client.ApiClient], namespace: str) -> dict[str, str]:
    """The snapshot without the canary StatefulSet (its status may still settle)."""
    return {k: v for k, v in snapshot(kube, namespace).items() if "canary" not in k}


async def test_a_clean_finish_leaves_nothing_a_resync_could_start_and_loses_no_storage(
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    worker: WorkerProcess,
    namespace: str,
) -> None:
    name = "cf"
    deploy_app(kube["source"], namespace, name, 2, secret_value="x", ready_delay="200ms")
    before = volumes_of(kube["source"], namespace)
    assert {pv.spec.persistent_volume_reclaim_policy for pv in before.values()} == {"Delete"}
    try:
        with observing(kube, namespace, namespace, name) as observer:
            migration_id, result = await migrate(
                temporal_env, worker, request_for(name, namespace, cleanup=True)
            )
            assert [o.ordinal for o in result.moved] == [1, 0] and result.cleanup_skipped == ""
            assert observer.verdict([1, 0], (0, 0), (0, 2), cleaned_up=True) == []

            # What it did, step by step, and the clusters agree.
            assert result.cleanup is not None
            done = {s.object: s.action for s in result.cleanup.steps}
            assert done.pop(f"source StatefulSet {namespace}/{name}") == "fenced"
            assert done == {
                **{f"source PersistentVolume {v}": "removed" for v in before},
                **{f"destination PersistentVolume {v}": "restored Delete" for v in before},
            }
            sts: Any = client.AppsV1Api(kube["source"]).read_namespaced_stateful_set(
                name, namespace
            )
            assert sts.metadata.deletion_timestamp is not None
            assert FENCE in sts.metadata.finalizers
            assert volumes_of(kube["source"], namespace) == {}
            after = volumes_of(kube["destination"], namespace)
            assert set(after) == set(before)
            for v, pv in after.items():
                assert pv.spec.persistent_volume_reclaim_policy == "Delete"
                assert pv.status.phase == "Bound"
                # What the provisioner needs to own (and one day delete) it again.
                annotations = pv.metadata.annotations
                provisioned_by = before[v].metadata.annotations["pv.kubernetes.io/provisioned-by"]
                assert annotations["pv.kubernetes.io/provisioned-by"] == provisioned_by

            # A GitOps sync re-applies the original manifest: replicas 2 from ordinal 0.
            manifest = statefulset(name, 2, templates={"data": None, "logs": "local-csi"})
            apps = client.AppsV1Api(kube["source"])
            apps.patch_namespaced_stateful_set(
                name,
                namespace,
                manifest,
                field_manager="argocd-controller",
                force=True,
                _content_type="application/apply-patch+yaml",
            )
            with pytest.raises(client.exceptions.ApiException) as created:
                apps.create_namespaced_stateful_set(namespace, manifest)
            assert created.value.status == 409  # AlreadyExists: it cannot be made anew
            resynced: Any = apps.read_namespaced_stateful_set(name, namespace)
            assert resynced.spec.replicas == 2  # the sync "won" ...
            # ... and the controller has acted since: a StatefulSet made after it got its
            # pod (a held one is never synced through: its revisions cannot be adopted).
            apps.create_namespaced_stateful_set(
                namespace, statefulset("canary", 1, templates={}, ready_delay="0s")
            )
            wait_for(
                lambda: ready_replicas(kube["source"], namespace, "canary") == 1,
                timeout=30,
                what="the StatefulSet controller to act on a later StatefulSet",
            )
            assert pods_of(kube["source"], namespace, name) == []  # ... but starts nothing
            assert pods_of(kube["destination"], namespace, name) == [f"{name}-0", f"{name}-1"]
            assert observer.verdict([1, 0], (0, 0), (0, 2), cleaned_up=True) == []

        src_events = reasons(our_events(kube["source"], namespace, migration_id))
        dst_events = reasons(our_events(kube["destination"], namespace, migration_id))
        assert src_events["SourceFenced"] == 1 and src_events["SourceVolumesRemoved"] == 1
        assert dst_events["ReclaimPolicyRestored"] == len(before)

        # Again (stsmigrate cleanup after the run): it converges and changes nothing.
        unchanged = app_state(kube, namespace)
        handle = await start_cleanup(
            temporal_env.client, migration_id, task_queue=worker.task_queue
        )
        again: CleanupResult = await handle.result()
        assert {s.action for s in again.steps} == {"fenced", "removed", "kept Delete"}
        assert app_state(kube, namespace) == unchanged
        # The README's release lets it go: the StatefulSet is gone, its dependents kept.
        release_fence(kube["source"], namespace, name)
        with pytest.raises(client.exceptions.ApiException) as gone:
            client.AppsV1Api(kube["source"]).read_namespaced_stateful_set(name, namespace)
        assert gone.value.status == 404
        assert pods_of(kube["source"], namespace, name) == []
    finally:
        release_fence(kube["source"], namespace, name)


async def test_cleanup_is_refused_while_the_source_runs_an_ordinal_then_finishes_later(
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    worker: WorkerProcess,
    namespace: str,
) -> None:
    name = "cl"
    deploy_app(kube["source"], namespace, name, 2, secret_value="x", ready_delay="200ms")
    try:
        with observing(kube, namespace, namespace, name) as observer:
            # Half of it moved: ordinal 0 still runs in the source.
            migration_id, split = await migrate(
                temporal_env, worker, request_for(name, namespace, stop_at_ordinal=1)
            )
            assert [o.ordinal for o in split.moved] == [1] and split.cleanup is None
            unchanged = snapshot(kube, namespace)
            handle = await start_cleanup(
                temporal_env.client, migration_id, task_queue=worker.task_queue
            )
            with pytest.raises(WorkflowFailureError) as refused:
                await handle.result()
            message = str(refused.value.cause.cause)
            assert "still owns ordinals [0, 1)" in message, message
            assert snapshot(kube, namespace) == unchanged  # refused: nothing changed

            # The rest moves (a second run of the same migration, as `stsmigrate start`
            # of the same StatefulSet is), then the command cleans up after both runs.
            rest = await temporal_env.client.execute_workflow(
                "MigrateStatefulSet",
                request_for(name, namespace),
                id=migration_id,
                task_queue=worker.task_queue,
                result_type=MigrationResult,
            )
            assert [o.ordinal for o in rest.moved] == [0] and rest.cleanup is None
            done = await (
                await start_cleanup(temporal_env.client, migration_id, task_queue=worker.task_queue)
            ).result()
            actions = sorted((s.object.split(" ")[0], s.action) for s in done.steps)
            assert actions == sorted(
                [("source", "fenced")]
                + [("source", "removed"), ("destination", "restored Delete")] * 4
            ), actions
            assert volumes_of(kube["source"], namespace) == {}
            assert observer.verdict([1, 0], (0, 0), (0, 2), cleaned_up=True) == []
        # A migration that is still running (here: no worker polls its queue) gets no
        # clean finish: refused before anything starts.
        running = await temporal_env.client.start_workflow(
            "MigrateStatefulSet",
            request_for(name, namespace),
            id=f"{migration_id}-running",
            task_queue=f"nobody-polls-{migration_id}",
        )
        with pytest.raises(StillRunning):
            await start_cleanup(temporal_env.client, running.id, task_queue=worker.task_queue)
        await running.terminate("test over")
    finally:
        release_fence(kube["source"], namespace, name)
