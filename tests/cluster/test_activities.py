"""Activities against the real clusters: they converge, and refuse what is not theirs."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
import structlog.testing
from kubernetes import client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.kube import Kube, Obj
from activities.migration import MigrationActivities
from activities.volumes import RELEASED_UID
from contract import (
    ClaimsBoundInput,
    EnsureDestinationInput,
    ImportInput,
    LockInput,
    MigrationRequest,
    OrdinalPlan,
    PlanInput,
    ReleaseClaimsInput,
    RetainInput,
    SetSliceInput,
    SliceRef,
    TakeInput,
    VolumePlan,
    slice_change,
)
from devenv.clusters import HOSTPATH_CLASS, LocalClusters
from tests.support.apps import apply_statefulset, statefulset
from tests.support.cluster_state import pod_names, ready_replicas
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


class Killed(Exception):
    """The worker killed at an instant of a test's choosing."""


class KilledBefore(MigrationActivities):
    """Activities whose worker dies just before its first ``create`` of ``kind`` or,
    with kind ``patch_pv``, its first PV patch: the state a crash there leaves."""

    def __init__(self, clients: Mapping[str, client.ApiClient], kind: str):
        super().__init__(clients)
        self.kind = kind

    def kube(self, context: str) -> Kube:
        return KillingKube(self._clients[context], context, self.kind)


class KillingKube(Kube):
    def __init__(self, api: client.ApiClient, context: str, kind: str):
        super().__init__(api, context)
        self._kind = kind

    def create(self, kind: str, ns: str | None, body: Obj) -> Obj | None:
        if kind == self._kind:
            raise Killed(f"killed before creating {kind} {body['metadata']['name']}")
        return super().create(kind, ns, body)

    def patch_pv(self, name: str, patch: Obj) -> Obj:
        if self._kind == "patch_pv":
            raise Killed(f"killed before patching PersistentVolume {name}")
        return super().patch_pv(name, patch)


def converge(env: ActivityEnvironment, fn: Callable[[Any], Any], task: Any) -> None:
    """Run ``fn`` as Temporal would: again after a retryable failure (a 409 when the PV
    controller wrote an object in the moment between our read and our write)."""
    for _ in range(4):
        try:
            env.run(fn, task)
            return
        except ApplicationError as exc:
            if exc.non_retryable:
                raise
    env.run(fn, task)


def assert_bound_by_uid(api: client.ApiClient, namespace: str, claim: str, volume: str) -> Any:
    """Both sides of the binding agree and neither is the PV controller's own binding
    (one it would undo); the volume is Retain. Returns the claim."""
    pvc: Any = client.CoreV1Api(api).read_namespaced_persistent_volume_claim(claim, namespace)
    pv: Any = client.CoreV1Api(api).read_persistent_volume(volume)
    assert pvc.status.phase == "Bound" and pvc.spec.volume_name == volume
    assert (pv.spec.claim_ref.namespace, pv.spec.claim_ref.name) == (namespace, claim)
    assert pv.spec.claim_ref.uid == pvc.metadata.uid
    assert pv.status.phase == "Bound"
    assert pv.spec.persistent_volume_reclaim_policy == "Retain"
    assert (pvc.metadata.annotations or {}).get("pv.kubernetes.io/bind-completed") == "yes"
    for obj in (pvc, pv):
        assert "pv.kubernetes.io/bound-by-controller" not in (obj.metadata.annotations or {})
    return pvc


def import_task(namespace: str, volume: str, migration_id: str = "mig-a") -> ImportInput:
    request = MigrationRequest(
        statefulset="db",
        namespace=namespace,
        source_context="source",
        destination_context="destination",
    )
    plan = VolumePlan(
        template="data",
        claim="data-db-0",
        volume=volume,
        storage_class=HOSTPATH_CLASS,
        destination_storage_class=HOSTPATH_CLASS,
        size="1Gi",
    )
    ordinal = OrdinalPlan(ordinal=0, pod="db-0", volumes=[plan])
    return ImportInput(request=request, migration_id=migration_id, ordinal=ordinal)


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
        made = read_claim(kube["destination"], namespace, "data-db-0")
        env.run(acts.import_volumes, task)  # a retry: same objects, no error
        bound = ClaimsBoundInput(
            context="destination", namespace=namespace, claims=["data-db-0"], timeout=30
        )
        env.run(acts.wait_for_claims_bound, bound)
        pvc = assert_bound_by_uid(kube["destination"], namespace, "data-db-0", name)
        assert pvc.metadata.uid == made.metadata.uid
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


def test_an_import_killed_midway_or_left_half_done_converges(
    kube: dict[str, client.ApiClient],
    acts: MigrationActivities,
    namespace: str,
    clusters: LocalClusters,
) -> None:
    """The claim comes first, then its PV bound to it by uid. Whatever is left half
    done (the claim without its PV; the PV without its claim, bound to a claim that is
    gone or, from an older worker, pre-bound by name only), the next run ends with the
    claim Bound and the PV's claimRef holding that claim's uid."""
    env = ActivityEnvironment()
    src, dst = client.CoreV1Api(kube["source"]), client.CoreV1Api(kube["destination"])
    api = kube["destination"]
    name = f"{namespace}-half"
    src.create_persistent_volume(retained_volume(clusters, name))
    task = import_task(namespace, name)
    bound = ClaimsBoundInput(
        context="destination", namespace=namespace, claims=["data-db-0"], timeout=30
    )

    def volume() -> Any:
        return dst.read_persistent_volume(name)

    def release_the_claim() -> None:
        dst.delete_namespaced_persistent_volume_claim("data-db-0", namespace)
        wait_for(lambda: "data-db-0" not in claim_names(api, namespace), 30, "claim gone")
        wait_for(lambda: volume().status.phase == "Released", 30, "volume Released")

    try:
        # Killed after the claim, before its PV: the claim waits, naming no volume here.
        with pytest.raises(Killed):
            env.run(KilledBefore(kube, "PersistentVolume").import_volumes, task)
        first = read_claim(api, namespace, "data-db-0")
        assert first.status.phase == "Pending" and first.spec.volume_name == name
        assert name not in {pv.metadata.name for pv in dst.list_persistent_volume().items}
        converge(env, acts.import_volumes, task)
        env.run(acts.wait_for_claims_bound, bound)
        assert assert_bound_by_uid(api, namespace, "data-db-0", name).metadata.uid == (
            first.metadata.uid
        )

        # The PV without its claim, its claimRef holding the uid of the claim that is gone
        # (as a rollback leaves it): bound to the new claim's uid instead.
        release_the_claim()
        converge(env, acts.import_volumes, task)
        env.run(acts.wait_for_claims_bound, bound)
        second = assert_bound_by_uid(api, namespace, "data-db-0", name)
        assert second.metadata.uid != first.metadata.uid

        # An older worker's half: the PV pre-bound by name only, no claim yet.
        release_the_claim()
        dst.patch_persistent_volume(name, {"spec": {"claimRef": {"uid": None}}})
        wait_for(lambda: volume().status.phase == "Available", 30, "volume Available")
        converge(env, acts.import_volumes, task)
        env.run(acts.wait_for_claims_bound, bound)
        third = assert_bound_by_uid(api, namespace, "data-db-0", name)
        assert third.metadata.uid not in (first.metadata.uid, second.metadata.uid)
    finally:
        if "data-db-0" in claim_names(api, namespace):
            dst.delete_namespaced_persistent_volume_claim("data-db-0", namespace)
        for core in (src, dst):
            if name in {pv.metadata.name for pv in core.list_persistent_volume().items}:
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


# -- release, fences and adoption ------------------------------------------------------
FENCE = "stsmigrate.dev/fence"


@pytest.fixture
def retained(kube: dict[str, client.ApiClient], namespace: str) -> Iterator[list[str]]:
    """Source volumes a test made Retain, deleted at the end: the namespace's removal
    leaves Retain volumes behind (a volume still bound goes once its claim has)."""
    names: list[str] = []
    yield names
    remove_volumes(kube["source"], names)


def given_up(
    kube: dict[str, client.ApiClient],
    acts: MigrationActivities,
    namespace: str,
    name: str,
    retained: list[str],
) -> tuple[str, str]:
    """A one-pod StatefulSet in the source that has given ordinal 0 up as a move leaves
    it before the release: its volume Retain, scaled to 0, pod gone. (volume, claim uid)."""
    api = kube["source"]
    core = client.CoreV1Api(api)
    apply_statefulset(api, namespace, statefulset(name, 1, templates={"data": None}))
    wait_for(lambda: ready_replicas(api, namespace, name) == 1, 60, f"{name}-0 Ready")
    pvc: Any = core.read_namespaced_persistent_volume_claim(f"data-{name}-0", namespace)
    volume = pvc.spec.volume_name
    retained.append(volume)
    task = RetainInput(context="source", volumes=[volume], migration_id="m")
    ActivityEnvironment().run(acts.ensure_volumes_retained, task)
    scale(api, namespace, name, 0)
    wait_for(lambda: f"{name}-0" not in pod_names(api, namespace), 60, f"{name}-0 gone")
    return volume, pvc.metadata.uid


def scale(api: client.ApiClient, namespace: str, name: str, replicas: int) -> None:
    client.AppsV1Api(api).patch_namespaced_stateful_set(
        name, namespace, {"spec": {"replicas": replicas}}
    )


def read_claim(api: client.ApiClient, namespace: str, name: str) -> Any:
    return client.CoreV1Api(api).read_namespaced_persistent_volume_claim(name, namespace)


def claim_names(api: client.ApiClient, namespace: str) -> set[str]:
    claims = client.CoreV1Api(api).list_namespaced_persistent_volume_claim(namespace).items
    return {c.metadata.name for c in claims}


def remove_volumes(api: client.ApiClient, names: list[str]) -> None:
    core = client.CoreV1Api(api)
    existing = {pv.metadata.name for pv in core.list_persistent_volume().items}
    for name in names:
        if name in existing:
            core.delete_persistent_volume(name)


def release_of(namespace: str, name: str, volume: str, **fields: Any) -> ReleaseClaimsInput:
    return ReleaseClaimsInput(
        context="source",
        namespace=namespace,
        claims=[f"data-{name}-0"],
        volumes=[volume],
        **fields,
    )


def test_delete_pvc_deletes_only_the_claim_that_was_read(
    kube: dict[str, client.ApiClient], namespace: str
) -> None:
    api = kube["source"]
    pending = {
        "metadata": {"name": "c"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "nobody-provisions-this",
            "resources": {"requests": {"storage": "1Mi"}},
        },
    }
    made: Any = client.CoreV1Api(api).create_namespaced_persistent_volume_claim(namespace, pending)
    k = Kube(api, "source")
    for wrong in ({"uid": "not-its-uid"}, {"resource_version": "1"}):
        with pytest.raises(ApplicationError) as refused:
            k.delete_pvc(namespace, "c", **wrong)
        assert refused.value.type == "KubernetesConflict" and not refused.value.non_retryable
        assert read_claim(api, namespace, "c").metadata.deletion_timestamp is None
    meta = made.metadata
    k.delete_pvc(namespace, "c", uid=meta.uid, resource_version=meta.resource_version)
    wait_for(lambda: "c" not in claim_names(api, namespace), 30, "claim c gone")
    k.delete_pvc(namespace, "c", uid=meta.uid)  # absent: success


def test_release_refuses_a_claim_made_again_on_another_volume(
    kube: dict[str, client.ApiClient],
    acts: MigrationActivities,
    namespace: str,
    retained: list[str],
) -> None:
    """Review finding 6: the claim was released, then made again under its name on a new
    volume (a GitOps scale-up after a worker crash inside the release), and that pod
    wrote to it. The retried release refuses it and deletes nothing."""
    api, env = kube["source"], ActivityEnvironment()
    core = client.CoreV1Api(api)
    volume, _ = given_up(kube, acts, namespace, "r", retained)
    core.delete_namespaced_persistent_volume_claim("data-r-0", namespace)
    wait_for(lambda: "data-r-0" not in claim_names(api, namespace), 30, "claim released")
    scale(api, namespace, "r", 1)  # the foreign scale-up: a new claim, a new volume
    wait_for(lambda: ready_replicas(api, namespace, "r") == 1, 60, "r-0 Ready again")
    scale(api, namespace, "r", 0)  # a human scales it down again and resumes
    wait_for(lambda: "r-0" not in pod_names(api, namespace), 60, "r-0 gone again")
    again = read_claim(api, namespace, "data-r-0")
    other = again.spec.volume_name
    assert other and other != volume
    retained.append(other)
    task = release_of(namespace, "r", volume, migration_id="mig-6", ordinal=0, fence=True)
    with pytest.raises(ApplicationError) as refused:
        env.run(acts.release_claims, task)
    assert refused.value.type == "NotOurs" and refused.value.non_retryable
    message = refused.value.message
    for part in ("data-r-0", "in source", f"bound to {other}", f"planned volume {volume}"):
        assert part in message, message
    assert "it was not deleted" in message
    after = read_claim(api, namespace, "data-r-0")
    assert after.metadata.uid == again.metadata.uid
    assert after.metadata.deletion_timestamp is None
    assert core.read_persistent_volume(other).status.phase == "Bound"  # type: ignore[union-attr]


def test_a_fence_keeps_a_foreign_scale_up_pending_and_release_converges(
    kube: dict[str, client.ApiClient],
    acts: MigrationActivities,
    namespace: str,
    retained: list[str],
) -> None:
    api, env = kube["source"], ActivityEnvironment()
    core = client.CoreV1Api(api)
    volume, old_uid = given_up(kube, acts, namespace, "f", retained)
    task = release_of(namespace, "f", volume, migration_id="mig-f", ordinal=0, fence=True)
    env.run(acts.release_claims, task)
    fence = read_claim(api, namespace, "data-f-0")
    assert fence.metadata.uid != old_uid
    assert fence.metadata.labels[FENCE] == "true"
    assert fence.spec.volume_name == volume and fence.status.phase == "Pending"
    assert fence.spec.storage_class_name == HOSTPATH_CLASS
    pv: Any = core.read_persistent_volume(volume)
    assert pv.status.phase == "Released" and pv.spec.claim_ref.uid == old_uid
    # Run again (a retry): converged, the fence untouched.
    env.run(acts.release_claims, task)
    again = read_claim(api, namespace, "data-f-0")
    assert (again.metadata.uid, again.metadata.resource_version) == (
        fence.metadata.uid,
        fence.metadata.resource_version,
    )
    # A foreign writer scales the source back up: pod f-0 gets the fence, which
    # never binds, so the scheduler refuses it and it never runs.
    scale(api, namespace, "f", 1)

    def refused_by_scheduler() -> bool:
        pod: Any = core.read_namespaced_pod("f-0", namespace) if has_pod() else None
        conditions = (pod.status.conditions or []) if pod else []
        return any(
            c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
            for c in conditions
        )

    def has_pod() -> bool:
        return "f-0" in pod_names(api, namespace)

    wait_for(refused_by_scheduler, 30, "the scheduler refusing f-0")
    pod: Any = core.read_namespaced_pod("f-0", namespace)
    assert pod.status.phase == "Pending" and not pod.spec.node_name
    assert read_claim(api, namespace, "data-f-0").status.phase == "Pending"
    pv = core.read_persistent_volume(volume)
    assert pv.status.phase == "Released" and pv.spec.claim_ref.uid == old_uid
    # While that pod exists the release refuses (it names the claim); once it is
    # gone the release converges again, the fence unchanged.
    with pytest.raises(ApplicationError) as refused:
        env.run(acts.release_claims, task)
    assert refused.value.type == "ConflictingChange"
    scale(api, namespace, "f", 0)
    wait_for(lambda: not has_pod(), 60, "f-0 gone")
    env.run(acts.release_claims, task)
    assert read_claim(api, namespace, "data-f-0").metadata.uid == fence.metadata.uid


def test_a_release_of_what_was_never_made_changes_nothing(
    kube: dict[str, client.ApiClient], acts: MigrationActivities, namespace: str
) -> None:
    """The undo of an import that failed before it made anything: neither the claim nor
    the volume is in this cluster, so there is nothing to release (nor to fence)."""
    task = release_of(namespace, "ghost", f"{namespace}-never-made", migration_id="m", fence=True)
    ActivityEnvironment().run(acts.release_claims, task)
    assert "data-ghost-0" not in claim_names(kube["source"], namespace)


def test_a_volume_pre_bound_to_a_claim_never_made_is_released(
    kube: dict[str, client.ApiClient],
    acts: MigrationActivities,
    namespace: str,
    clusters: LocalClusters,
    retained: list[str],
) -> None:
    """The undo of an import whose claim was never made (an admission policy denied
    it): the volume is pre-bound to the claim by name only, so it would bind the next
    claim of that name (a foreign scale-up would run pod k on storage the other cluster
    uses). The release gives its claimRef a uid no claim has: Released, it binds
    nothing. No fence (there was no claim to replace, and a policy that denies claims
    would deny the fence too, blocking the undo)."""
    api = kube["source"]
    core = client.CoreV1Api(api)
    volume = f"{namespace}-unbound"
    pv = retained_volume(clusters, volume)
    pv["spec"]["claimRef"] = {"namespace": namespace, "name": "data-u-0"}
    core.create_persistent_volume(pv)
    retained.append(volume)
    task = release_of(namespace, "u", volume, migration_id="mig-u", ordinal=0, fence=True)
    ActivityEnvironment().run(acts.release_claims, task)
    released: Any = core.read_persistent_volume(volume)
    assert released.spec.claim_ref.uid == RELEASED_UID
    assert "data-u-0" not in claim_names(api, namespace)

    def released_phase() -> bool:
        now: Any = core.read_persistent_volume(volume)
        return bool(now.status.phase == "Released")

    wait_for(released_phase, 30, f"{volume} Released")
    ActivityEnvironment().run(acts.release_claims, task)  # converged
    # Somebody's claim of that name, even one asking for this very volume, never gets it.
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": "data-u-0"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": HOSTPATH_CLASS,
                "volumeName": volume,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    with pytest.raises(AssertionError):
        wait_for(lambda: read_claim(api, namespace, "data-u-0").status.phase == "Bound", 5)
    now: Any = core.read_persistent_volume(volume)
    assert now.spec.claim_ref.uid == RELEASED_UID and now.status.phase == "Released"


def test_a_finished_pod_does_not_block_the_release(
    kube: dict[str, client.ApiClient],
    acts: MigrationActivities,
    namespace: str,
    retained: list[str],
) -> None:
    """Review finding 23: a backup Job's pod that has Succeeded still names the claim."""
    api, env = kube["source"], ActivityEnvironment()
    core = client.CoreV1Api(api)
    volume, _ = given_up(kube, acts, namespace, "b", retained)
    backup = {
        "metadata": {"name": "backup"},
        "spec": {
            # No scheduler picks it up, so only its status (set below) says it ran.
            "schedulerName": "nobody",
            "restartPolicy": "Never",
            "containers": [{"name": "backup", "image": "registry.invalid/backup:1"}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data-b-0"}}],
        },
    }
    core.create_namespaced_pod(namespace, backup)
    core.patch_namespaced_pod_status("backup", namespace, {"status": {"phase": "Succeeded"}})
    phase = core.read_namespaced_pod("backup", namespace).status.phase  # type: ignore[union-attr]
    assert phase == "Succeeded"
    env.run(acts.release_claims, release_of(namespace, "b", volume, migration_id="mig-b"))
    assert "data-b-0" not in claim_names(api, namespace)
    assert core.read_persistent_volume(volume).status.phase == "Released"  # type: ignore[union-attr]


def reclaim_task(namespace: str, name: str, volume: str, migration_id: str) -> ImportInput:
    request = MigrationRequest(
        statefulset=name,
        namespace=namespace,
        source_context="source",
        destination_context="destination",
    )
    plan = VolumePlan(
        template="data",
        claim=f"data-{name}-0",
        volume=volume,
        storage_class=HOSTPATH_CLASS,
        destination_storage_class=HOSTPATH_CLASS,
        size="1Gi",
    )
    ordinal = OrdinalPlan(ordinal=0, pod=f"{name}-0", volumes=[plan])
    return ImportInput(request=request, migration_id=migration_id, ordinal=ordinal)


def test_reclaim_adopts_a_fence_and_keeps_a_claim_still_bound(
    kube: dict[str, client.ApiClient],
    acts: MigrationActivities,
    namespace: str,
    retained: list[str],
) -> None:
    api, env = kube["source"], ActivityEnvironment()
    # A fence of ours: adopted as the real claim (same object), which then binds.
    volume, _ = given_up(kube, acts, namespace, "a", retained)
    task = release_of(namespace, "a", volume, migration_id="mig-a", ordinal=0, fence=True)
    env.run(acts.release_claims, task)
    fence = read_claim(api, namespace, "data-a-0")
    env.run(acts.reclaim_volumes, reclaim_task(namespace, "a", volume, "mig-a"))
    bound = ClaimsBoundInput(context="source", namespace=namespace, claims=["data-a-0"], timeout=30)
    env.run(acts.wait_for_claims_bound, bound)
    adopted = read_claim(api, namespace, "data-a-0")
    assert adopted.metadata.uid == fence.metadata.uid
    assert adopted.status.phase == "Bound" and adopted.spec.volume_name == volume
    assert FENCE not in (adopted.metadata.labels or {})
    assert_bound_by_uid(api, namespace, "data-a-0", volume)

    # The giver's original claim, never released (an undo after a partial release):
    # Bound to the planned volume, so converged; nothing is created or changed.
    apply_statefulset(api, namespace, statefulset("o", 1, templates={"data": None}))
    wait_for(lambda: ready_replicas(api, namespace, "o") == 1, 60, "o-0 Ready")
    original = read_claim(api, namespace, "data-o-0")
    retained.append(original.spec.volume_name)
    retain = RetainInput(context="source", volumes=[original.spec.volume_name], migration_id="x")
    env.run(acts.ensure_volumes_retained, retain)
    claims = claim_names(api, namespace)
    env.run(acts.reclaim_volumes, reclaim_task(namespace, "o", original.spec.volume_name, "x"))
    same = read_claim(api, namespace, "data-o-0")
    assert (same.metadata.uid, same.metadata.resource_version) == (
        original.metadata.uid,
        original.metadata.resource_version,
    )
    assert claim_names(api, namespace) == claims


def test_a_reclaim_killed_before_the_volume_is_bound_converges(
    kube: dict[str, client.ApiClient],
    acts: MigrationActivities,
    namespace: str,
    retained: list[str],
) -> None:
    """Rollback without a fence: the claim made again first; killed before its
    volume's claimRef gets that claim's uid, the claim waits (the volume still holds the
    old claim's uid, so nothing binds it) and the retry binds them by uid."""
    api, env = kube["source"], ActivityEnvironment()
    volume, old_uid = given_up(kube, acts, namespace, "c", retained)
    env.run(acts.release_claims, release_of(namespace, "c", volume, migration_id="mig-c"))
    core = client.CoreV1Api(api)

    def released() -> bool:
        pv: Any = core.read_persistent_volume(volume)
        return bool(pv.status.phase == "Released")

    wait_for(released, 30, "volume Released")
    task = reclaim_task(namespace, "c", volume, "mig-c")
    with pytest.raises(Killed):
        env.run(KilledBefore(kube, "patch_pv").reclaim_volumes, task)
    made = read_claim(api, namespace, "data-c-0")
    assert made.status.phase == "Pending" and made.spec.volume_name == volume
    pv: Any = core.read_persistent_volume(volume)
    assert pv.spec.claim_ref.uid == old_uid != made.metadata.uid
    converge(env, acts.reclaim_volumes, task)
    bound = ClaimsBoundInput(context="source", namespace=namespace, claims=["data-c-0"], timeout=30)
    env.run(acts.wait_for_claims_bound, bound)
    assert assert_bound_by_uid(api, namespace, "data-c-0", volume).metadata.uid == (
        made.metadata.uid
    )
    converge(env, acts.reclaim_volumes, task)  # converged: a retry changes nothing
    assert read_claim(api, namespace, "data-c-0").metadata.uid == made.metadata.uid


# -- the guarded take -----------------------------------------------------------------
class GiverGrowsOnSecondRead(MigrationActivities):
    """The giver grows in the moment between the take and its re-read: the test's
    ``grow`` really patches the cluster, just before the activity's second read."""

    def __init__(self, clients: Mapping[str, client.ApiClient], grow: Callable[[], None]):
        super().__init__(clients)
        self.grow = grow
        self.giver_reads = 0

    def kube(self, context: str) -> Kube:
        if context != "source":
            return super().kube(context)
        return ReadHook(self._clients[context], context, self._read)

    def _read(self) -> None:
        self.giver_reads += 1
        if self.giver_reads == 2:
            self.grow()


class ReadHook(Kube):
    def __init__(self, api: client.ApiClient, context: str, before: Callable[[], None]):
        super().__init__(api, context)
        self._before = before

    def statefulset(self, ns: str, name: str) -> Obj | None:
        self._before()
        return super().statefulset(ns, name)


def settled(api: client.ApiClient, namespace: str, name: str) -> None:
    """Until the StatefulSet controller has seen the StatefulSet's spec: its status writes
    change the resourceVersion, so an activity's patch racing them gets a 409 (retried
    by Temporal in a run; here the activity runs once)."""

    def seen() -> bool:
        sts: Any = client.AppsV1Api(api).read_namespaced_stateful_set(name, namespace)
        return bool(sts.status and sts.status.observed_generation == sts.metadata.generation)

    wait_for(seen, 30, f"StatefulSet {name} observed")


def slice_in(api: client.ApiClient, namespace: str, name: str) -> tuple[int, int]:
    sts: Any = client.AppsV1Api(api).read_namespaced_stateful_set(name, namespace)
    return (sts.spec.ordinals.start if sts.spec.ordinals else 0), sts.spec.replicas


def test_take_ordinal_takes_only_while_the_giver_has_given_it_up(
    kube: dict[str, client.ApiClient], acts: MigrationActivities, namespace: str
) -> None:
    env = ActivityEnvironment()
    src, dst = kube["source"], kube["destination"]
    apply_statefulset(src, namespace, statefulset("t", 2, start=0))  # still owns k = 1
    apply_statefulset(dst, namespace, statefulset("t", 0, start=2))
    settled(dst, namespace, "t")
    giver = SliceRef(context="source", namespace=namespace, statefulset="t")
    taker = SliceRef(context="destination", namespace=namespace, statefulset="t")
    take = TakeInput(giver=slice_change(giver, (0, 1)), taker=slice_change(taker, (1, 1), (2, 0)))
    with pytest.raises(ApplicationError) as refused:
        env.run(acts.take_ordinal, take)
    assert refused.value.type == "ConflictingChange" and refused.value.non_retryable
    assert "owns [0, 2)" in refused.value.message and "exactly [0, 1)" in refused.value.message
    assert "nothing was taken" in refused.value.message
    assert slice_in(dst, namespace, "t") == (2, 0) and slice_in(src, namespace, "t") == (0, 2)

    scale(src, namespace, "t", 1)  # the giver has given k up
    with structlog.testing.capture_logs() as logs:
        state = env.run(acts.take_ordinal, take)
    assert (state.start, state.replicas) == (1, 1) == slice_in(dst, namespace, "t")
    assert [e["ordinal"] for e in logs if e["event"] == "ordinal_taken"] == [1]
    with structlog.testing.capture_logs() as logs:  # a retry: nothing written
        again = env.run(acts.take_ordinal, take)
    assert (again.start, again.replicas) == (1, 1)
    assert [e for e in logs if e["event"] == "statefulset_slice_set"] == []


def test_take_ordinal_reverts_when_the_giver_grows_meanwhile(
    kube: dict[str, client.ApiClient], namespace: str
) -> None:
    env = ActivityEnvironment()
    src, dst = kube["source"], kube["destination"]
    apply_statefulset(src, namespace, statefulset("t", 1, start=0))
    apply_statefulset(dst, namespace, statefulset("t", 0, start=2))
    settled(dst, namespace, "t")
    acts = GiverGrowsOnSecondRead(kube, lambda: scale(src, namespace, "t", 2))
    giver = SliceRef(context="source", namespace=namespace, statefulset="t")
    taker = SliceRef(context="destination", namespace=namespace, statefulset="t")
    take = TakeInput(giver=slice_change(giver, (0, 1)), taker=slice_change(taker, (1, 1), (2, 0)))
    with structlog.testing.capture_logs() as logs, pytest.raises(ApplicationError) as refused:
        env.run(acts.take_ordinal, take)
    assert refused.value.type == "ConflictingChange" and refused.value.non_retryable
    message = refused.value.message
    assert "grew to [0, 2) while ordinal 1 was being taken; the take was reverted" in message
    assert acts.giver_reads == 2
    # The taker really took k, then gave it back at once.
    sets = [(e["start"], e["replicas"]) for e in logs if e["event"] == "statefulset_slice_set"]
    assert sets == [(1, 1), (2, 0)]
    assert [e["ordinal"] for e in logs if e["event"] == "take_reverted"] == [1]
    assert slice_in(dst, namespace, "t") == (2, 0)
    assert slice_in(src, namespace, "t") == (0, 2)


# -- the lock -------------------------------------------------------------------------
LOCK = "stsmigrate.dev/locked-by"


def test_one_migration_at_a_time_holds_the_lock(
    kube: dict[str, client.ApiClient], acts: MigrationActivities, namespace: str
) -> None:
    env = ActivityEnvironment()
    api = kube["source"]
    apply_statefulset(api, namespace, statefulset("l", 0))
    settled(api, namespace, "l")
    ref = SliceRef(context="source", namespace=namespace, statefulset="l")

    def lock() -> tuple[str | None, str]:
        sts: Any = client.AppsV1Api(api).read_namespaced_stateful_set("l", namespace)
        return (sts.metadata.annotations or {}).get(LOCK), sts.metadata.resource_version

    env.run(acts.lock_statefulset, LockInput(ref=ref, migration_id="mig-1"))
    holder, version = lock()
    assert holder == "mig-1"
    env.run(acts.lock_statefulset, LockInput(ref=ref, migration_id="mig-1"))  # a restart
    assert lock() == (holder, version)
    with pytest.raises(ApplicationError) as refused:
        env.run(acts.lock_statefulset, LockInput(ref=ref, migration_id="mig-2"))
    assert refused.value.type == "ConflictingChange" and refused.value.non_retryable
    assert "locked by migration 'mig-1'" in refused.value.message
    assert (
        f"kubectl --context source -n {namespace} annotate statefulset l {LOCK}-"
        in refused.value.message
    )
    env.run(acts.unlock_statefulset, LockInput(ref=ref, migration_id="mig-2"))  # not its lock
    assert lock() == (holder, version)
    env.run(acts.unlock_statefulset, LockInput(ref=ref, migration_id="mig-1"))
    assert lock()[0] is None
    env.run(acts.lock_statefulset, LockInput(ref=ref, migration_id="mig-2"))  # free again
    assert lock()[0] == "mig-2"
    # A StatefulSet that is gone: nothing to unlock; nothing to lock either.
    gone = ref.model_copy(update={"statefulset": "nothere"})
    env.run(acts.unlock_statefulset, LockInput(ref=gone, migration_id="mig-2"))
    with pytest.raises(ApplicationError) as missing:
        env.run(acts.lock_statefulset, LockInput(ref=gone, migration_id="mig-2"))
    assert missing.value.type == "ConflictingChange"


# -- the destination StatefulSet: made with the template preflight checked -----------


def test_the_destination_is_made_only_with_the_template_preflight_checked(
    kube: dict[str, client.ApiClient], acts: MigrationActivities, namespace: str
) -> None:
    """The source changed between preflight and the creation (an approval wait): the
    creation is refused and nothing is made; a later run's preflight checks the pods
    against the destination StatefulSet as it is, not the overrides applied again."""
    env = ActivityEnvironment()
    src_apps = client.AppsV1Api(kube["source"])
    dest_apps = client.AppsV1Api(kube["destination"])
    apply_statefulset(kube["source"], namespace, statefulset("t", 1, ready_delay="100ms"))
    wait_for(lambda: ready_replicas(kube["source"], namespace, "t") == 1, 60, "t Ready")
    request = MigrationRequest(
        statefulset="t",
        namespace=namespace,
        source_context="source",
        destination_context="destination",
    )

    def plan() -> Any:
        return env.run(acts.plan_migration, PlanInput(request=request, migration_id="mig-t"))

    before = plan()
    assert before.ok, before.problems
    assert len(before.destination_template_digest) == 64

    def create(digest: str) -> Any:
        return env.run(
            acts.ensure_destination_statefulset,
            EnsureDestinationInput(
                request=request, migration_id="mig-t", start=1, template_digest=digest
            ),
        )

    src_apps.patch_namespaced_stateful_set(
        "t", namespace, {"spec": {"template": {"metadata": {"annotations": {"changed": "yes"}}}}}
    )
    with pytest.raises(ApplicationError) as refused:
        create(before.destination_template_digest)
    assert refused.value.type == "TemplateChangedSincePreflight" and refused.value.non_retryable
    assert (
        f"the pod template of source StatefulSet {namespace}/t in source changed since preflight"
        in refused.value.message
    )
    assert "start the migration again" in refused.value.message
    assert not dest_apps.list_namespaced_stateful_set(namespace).items

    def rolled_out() -> bool:
        sts: Any = src_apps.read_namespaced_stateful_set("t", namespace)
        status = sts.status
        return bool(
            status.observed_generation == sts.metadata.generation
            and status.current_revision == status.update_revision
            and status.ready_replicas == 1
        )

    wait_for(rolled_out, 60, "t rolled out with the changed template")
    again = plan()
    assert again.destination_template_digest != before.destination_template_digest
    assert create(again.destination_template_digest).exists
    # An existing destination is not made again: no template is compared.
    assert create(before.destination_template_digest).exists

    # The later run: the destination's own template is what its pods need.
    dest_apps.patch_namespaced_stateful_set(
        "t",
        namespace,
        {
            "spec": {
                "template": {
                    "spec": {
                        "nodeSelector": {"pool": "nowhere"},
                        "volumes": [{"name": "extra", "configMap": {"name": "only-here"}}],
                    }
                }
            }
        },
    )
    later = plan()
    problems = {p.object: p.message for p in later.problems}
    assert "the pod template needs it but it exists in neither cluster" in problems.get(
        f"ConfigMap {namespace}/only-here", ""
    ), later.problems
    assert "(it asks for nodeSelector pool=nowhere)" in problems.get(
        "destination pod template", ""
    ), later.problems
    made: Any = dest_apps.read_namespaced_stateful_set("t", namespace)
    assert later.destination_template_digest != again.destination_template_digest
    assert made.spec.template.spec.node_selector == {"pool": "nowhere"}
