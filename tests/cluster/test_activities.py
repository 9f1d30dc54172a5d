"""Activities against the real clusters: they converge, and refuse what is not theirs."""

from __future__ import annotations

from typing import Any

import pytest
import structlog.testing
from kubernetes import client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.migration import MigrationActivities
from contract import (
    ImportInput,
    MigrationRequest,
    OrdinalPlan,
    ReleaseClaimsInput,
    RetainInput,
    SetSliceInput,
    SliceRef,
    VolumePlan,
)
from devenv.clusters import HOSTPATH_CLASS, LocalClusters
from tests.support.apps import apply_statefulset, statefulset
from tests.support.cluster_state import ready_replicas
from tests.support.waits import wait_for

pytestmark = pytest.mark.cluster


@pytest.fixture
def acts(kube: dict[str, client.ApiClient]) -> MigrationActivities:
    return MigrationActivities(kube)


def test_set_slice_converges_and_refuses_a_foreign_change(
    kube: dict[str, client.ApiClient], acts: MigrationActivities, namespace: str
) -> None:
    env = ActivityEnvironment()
    apply_statefulset(kube["destination"], namespace, statefulset("s", 0, start=5))
    ref = SliceRef(context="destination", namespace=namespace, statefulset="s")
    take = SetSliceInput(ref=ref, start=4, replicas=1, from_start=5, from_replicas=0)
    state = env.run(acts.set_statefulset_slice, take)
    assert (state.start, state.replicas) == (4, 1)
    # Run again (a retry after a crash): already there, so no write at all.
    with structlog.testing.capture_logs() as logs:
        again = env.run(acts.set_statefulset_slice, take)
    assert (again.start, again.replicas) == (4, 1)
    assert [e for e in logs if e["event"] == "statefulset_slice_set"] == []
    # Somebody else scales it: neither the target nor the expected start -> refused.
    client.AppsV1Api(kube["destination"]).patch_namespaced_stateful_set(
        "s", namespace, {"spec": {"replicas": 3}}
    )
    with pytest.raises(ApplicationError) as refused:
        env.run(
            acts.set_statefulset_slice,
            SetSliceInput(ref=ref, start=3, replicas=2, from_start=4, from_replicas=1),
        )
    assert refused.value.type == "ConflictingChange" and refused.value.non_retryable
    assert "owns [4, 7)" in refused.value.message


def test_retain_reports_the_true_original_on_a_retry_and_release_waits_for_the_pod(
    kube: dict[str, client.ApiClient], acts: MigrationActivities, namespace: str
) -> None:
    env = ActivityEnvironment()
    api = kube["source"]
    apply_statefulset(api, namespace, statefulset("r", 1, templates={"data": None}))
    wait_for(lambda: ready_replicas(api, namespace, "r") == 1, 60, "pod Ready")
    core = client.CoreV1Api(api)
    pvc: Any = core.read_namespaced_persistent_volume_claim("data-r-0", namespace)
    pv_name = pvc.spec.volume_name
    request = RetainInput(context="source", volumes=[pv_name], migration_id="m")
    assert env.run(acts.ensure_volumes_retained, request).original_policies == {pv_name: "Delete"}
    assert env.run(acts.ensure_volumes_retained, request).original_policies == {pv_name: "Delete"}
    pv: Any = core.read_persistent_volume(pv_name)
    assert pv.spec.persistent_volume_reclaim_policy == "Retain"
    # The pod still uses the claim: releasing it is refused and nothing is deleted.
    release = ReleaseClaimsInput(
        context="source", namespace=namespace, claims=["data-r-0"], volumes=[pv_name]
    )
    with pytest.raises(ApplicationError) as refused:
        env.run(acts.release_claims, release)
    assert refused.value.type == "ConflictingChange"
    assert core.read_namespaced_persistent_volume_claim("data-r-0", namespace) is not None


def retained_volume(clusters: LocalClusters, name: str) -> dict[str, Any]:
    """A source PV as the migration leaves it before the import: Retain, hostPath."""
    return {
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": HOSTPATH_CLASS,
            "hostPath": {"path": str(clusters.volume_root / name)},
        },
    }


def test_import_is_idempotent_and_refuses_a_foreign_volume(
    kube: dict[str, client.ApiClient],
    acts: MigrationActivities,
    namespace: str,
    clusters: LocalClusters,
) -> None:
    env = ActivityEnvironment()
    src, dst = client.CoreV1Api(kube["source"]), client.CoreV1Api(kube["destination"])
    name = f"{namespace}-vol"
    src.create_persistent_volume(retained_volume(clusters, name))
    request = MigrationRequest(
        statefulset="db",
        namespace=namespace,
        source_context="source",
        destination_context="destination",
    )
    ordinal = OrdinalPlan(
        ordinal=0,
        pod="db-0",
        volumes=[
            VolumePlan(
                template="data",
                claim="data-db-0",
                volume=name,
                storage_class=HOSTPATH_CLASS,
                destination_storage_class=HOSTPATH_CLASS,
                size="1Gi",
            )
        ],
    )
    try:
        task = ImportInput(request=request, migration_id="mig-a", ordinal=ordinal)
        env.run(acts.import_volumes, task)
        env.run(acts.import_volumes, task)  # a retry: same objects, no error
        pvc: Any = dst.read_namespaced_persistent_volume_claim("data-db-0", namespace)
        assert pvc.spec.volume_name == name
        copy: Any = dst.read_persistent_volume(name)
        assert copy.spec.host_path.path == str(clusters.volume_root / name)
        assert copy.spec.persistent_volume_reclaim_policy == "Retain"
        # Another migration finds the volume taken and must not adopt it.
        with pytest.raises(ApplicationError) as refused:
            env.run(acts.import_volumes, task.model_copy(update={"migration_id": "mig-b"}))
        assert refused.value.type == "NotOurs" and refused.value.non_retryable
    finally:
        dst.delete_namespaced_persistent_volume_claim("data-db-0", namespace)
        for core in (src, dst):
            core.delete_persistent_volume(name)


def test_a_foreign_claim_never_gets_the_moving_volume(
    kube: dict[str, client.ApiClient],
    acts: MigrationActivities,
    namespace: str,
    clusters: LocalClusters,
) -> None:
    """Kubernetes binds a pre-bound volume to the claim of that name whatever it asks
    for (here another storage class and 1Mi). So the import refuses while a foreign
    claim of that name exists, before it pre-binds anything; and a volume that such a
    claim took anyway (it appeared in the moment before ours) is freed once it is gone."""
    env = ActivityEnvironment()
    src, dst = client.CoreV1Api(kube["source"]), client.CoreV1Api(kube["destination"])
    name = f"{namespace}-captured"
    src.create_persistent_volume(retained_volume(clusters, name))
    volume = VolumePlan(
        template="data",
        claim="data-db-0",
        volume=name,
        storage_class=HOSTPATH_CLASS,
        destination_storage_class=HOSTPATH_CLASS,
        size="1Gi",
    )
    request = MigrationRequest(
        statefulset="db",
        namespace=namespace,
        source_context="source",
        destination_context="destination",
    )
    task = ImportInput(
        request=request,
        migration_id="mig-a",
        ordinal=OrdinalPlan(ordinal=0, pod="db-0", volumes=[volume]),
    )
    foreign = {
        "metadata": {"name": "data-db-0"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "nobody-provisions-this",
            "resources": {"requests": {"storage": "1Mi"}},
        },
    }

    def claim() -> Any:
        return dst.read_namespaced_persistent_volume_claim("data-db-0", namespace)

    def gone() -> bool:
        claims = dst.list_namespaced_persistent_volume_claim(namespace).items
        return all(c.metadata.name != "data-db-0" for c in claims)

    try:
        dst.create_namespaced_persistent_volume_claim(namespace, foreign)
        with pytest.raises(ApplicationError) as refused:
            env.run(acts.import_volumes, task)
        assert refused.value.type == "NotOurs" and refused.value.non_retryable
        assert f"PersistentVolumeClaim {namespace}/data-db-0 exists in destination and is " in (
            refused.value.message
        )
        assert name not in {pv.metadata.name for pv in dst.list_persistent_volume().items}
        dst.delete_namespaced_persistent_volume_claim("data-db-0", namespace)
        wait_for(gone, 30, "foreign claim gone")

        # The capture: our volume, pre-bound by name only, and a foreign claim of that
        # name made before ours (as if in the moment between the two creations).
        env.run(acts.import_volumes, task)
        wait_for(lambda: claim().status.phase == "Bound", 30, "our claim Bound")
        dst.delete_namespaced_persistent_volume_claim("data-db-0", namespace)
        wait_for(gone, 30, "our claim gone")
        dst.patch_persistent_volume(name, {"spec": {"claimRef": {"uid": None}}})
        dst.create_namespaced_persistent_volume_claim(namespace, foreign)
        wait_for(lambda: claim().spec.volume_name == name, 30, "the foreign claim takes it")
        with pytest.raises(ApplicationError) as refused:
            env.run(acts.import_volumes, task)
        assert refused.value.type == "NotOurs"
        # Removed by a human, the volume is freed of the foreign claim's uid and binds ours.
        dst.delete_namespaced_persistent_volume_claim("data-db-0", namespace)
        wait_for(gone, 30, "foreign claim gone")
        env.run(acts.import_volumes, task)
        wait_for(lambda: claim().status.phase == "Bound", 60, "our claim Bound again")
        assert claim().spec.volume_name == name
        assert claim().metadata.labels["stsmigrate.dev/migration"]
    finally:
        if not gone():
            dst.delete_namespaced_persistent_volume_claim("data-db-0", namespace)
        for core in (src, dst):
            if name in {pv.metadata.name for pv in core.list_persistent_volume().items}:
                core.delete_persistent_volume(name)
