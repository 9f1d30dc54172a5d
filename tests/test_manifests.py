"""Pure manifest rules: what is stripped, kept and mapped (no cluster needed)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from activities import manifests
from activities.kube import slice_of
from activities.preflight import minor_version
from contract import MigrationRequest, VolumePlan

REQUEST = MigrationRequest(
    statefulset="redis",
    namespace="shop",
    source_context="a",
    destination_context="b",
    destination_namespace="shop2",
    storage_class_mapping={"fast": "ssd"},
)
SERVER_FIELDS = {
    "uid": "u1",
    "resourceVersion": "42",
    "generation": 3,
    "creationTimestamp": "2026-01-01T00:00:00Z",
    "managedFields": [{}],
    "ownerReferences": [{"kind": "X"}],
    "finalizers": ["f"],
}


def source_sts() -> dict[str, Any]:
    return {
        "metadata": {
            "name": "redis",
            "namespace": "shop",
            "labels": {"app": "redis"},
            "annotations": {"team": "db", "kubectl.kubernetes.io/last-applied-configuration": "{}"},
            **SERVER_FIELDS,
        },
        "spec": {
            "replicas": 6,
            "serviceName": "redis",
            "selector": {"matchLabels": {"app": "redis"}},
            "template": {"metadata": {"labels": {"app": "redis"}}, "spec": {"containers": []}},
            "persistentVolumeClaimRetentionPolicy": {
                "whenScaled": "Delete",
                "whenDeleted": "Delete",
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data", "creationTimestamp": None},
                    "spec": {"storageClassName": "fast"},
                    "status": {"phase": "Pending"},
                },
                {"metadata": {"name": "logs"}, "spec": {}},
            ],
        },
        "status": {"replicas": 6},
    }


def test_destination_statefulset_owns_an_empty_slice_and_drops_server_fields() -> None:
    out = manifests.destination_statefulset(source_sts(), REQUEST, "mig/1", start=6)
    meta = out["metadata"]
    assert not set(SERVER_FIELDS) & set(meta)
    assert meta["namespace"] == "shop2"
    assert meta["annotations"]["team"] == "db"
    assert "kubectl.kubernetes.io/last-applied-configuration" not in meta["annotations"]
    assert meta["annotations"]["stsmigrate.dev/migration-id"] == "mig/1"
    assert meta["labels"]["app"] == "redis" and manifests.is_ours(out, "mig/1")
    assert not manifests.is_ours(out, "mig/2")
    assert "status" not in out
    spec = out["spec"]
    assert (spec["replicas"], spec["ordinals"]) == (0, {"start": 6})
    assert spec["persistentVolumeClaimRetentionPolicy"] == {
        "whenScaled": "Retain",
        "whenDeleted": "Delete",
    }
    data, logs = spec["volumeClaimTemplates"]
    assert data == {"metadata": {"name": "data"}, "spec": {"storageClassName": "ssd"}}
    assert logs["spec"] == {}


def test_destination_pv_keeps_storage_and_prebinds_to_the_claim() -> None:
    pv = {
        "metadata": {
            "name": "pvc-1",
            "annotations": {"pv.kubernetes.io/provisioned-by": "x"},
            **SERVER_FIELDS,
        },
        "spec": {
            "capacity": {"storage": "1Gi"},
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": "fast",
            "csi": {"driver": "d", "volumeHandle": "h"},
            "claimRef": {"namespace": "shop", "name": "data-redis-5", "uid": "old"},
        },
        "status": {"phase": "Released"},
    }
    out = manifests.destination_pv(pv, REQUEST, "mig/1", "data-redis-5", 5)
    assert out["spec"]["claimRef"] == {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "namespace": "shop2",
        "name": "data-redis-5",
    }
    assert out["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert out["spec"]["storageClassName"] == "ssd"
    assert manifests.storage_identity(out) == manifests.storage_identity(pv) == "csi d h"
    assert "namespace" not in out["metadata"] and "status" not in out
    assert out["metadata"]["annotations"].keys() == {
        "stsmigrate.dev/migration-id",
        "stsmigrate.dev/source",
    }
    assert out["metadata"]["labels"]["stsmigrate.dev/ordinal"] == "5"
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete", "input was mutated"
    # Made once its claim exists: bound to that claim by uid too (never the source's).
    bound = manifests.destination_pv(pv, REQUEST, "mig/1", "data-redis-5", 5, claim_uid="u-1")
    assert bound["spec"]["claimRef"] == {**out["spec"]["claimRef"], "uid": "u-1"}
    assert pv["spec"]["claimRef"]["uid"] == "old", "input was mutated"


def test_destination_pvc_names_its_volume() -> None:
    pv = {
        "metadata": {"name": "pvc-1", **SERVER_FIELDS},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "fast",
            "capacity": {"storage": "3Gi"},
            "claimRef": {"name": "data-redis-5", "uid": "old"},
            "hostPath": {"path": "/v"},
        },
    }
    volume = VolumePlan(template="data", claim="data-redis-5", volume="pvc-1", size="2Gi")
    out = manifests.destination_pvc(pv, volume, REQUEST, "mig/1", 5)
    assert out["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "storageClassName": "ssd",
        "resources": {"requests": {"storage": "2Gi"}},
        "volumeName": "pvc-1",
        "volumeMode": "Filesystem",
    }
    assert out["metadata"]["namespace"] == "shop2"


def test_reclaimed_pvc_is_the_claim_the_rollback_built_from_a_faked_request() -> None:
    pv = {
        "metadata": {"name": "pvc-1", **SERVER_FIELDS},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "fast",
            "capacity": {"storage": "3Gi"},
            "claimRef": {"namespace": "shop", "name": "data-redis-5", "uid": "old"},
            "hostPath": {"path": "/v"},
        },
    }
    volume = VolumePlan(template="data", claim="data-redis-5", volume="pvc-1", size="2Gi")
    # What reclaim_volumes built before: the destination claim of a request pointed back
    # at the source namespace with no class mapping.
    faked = REQUEST.model_copy(
        update={"destination_namespace": REQUEST.namespace, "storage_class_mapping": {}}
    )
    before = manifests.destination_pvc(pv, volume, faked, "mig/1", 5)
    out = manifests.reclaimed_pvc(pv, volume, REQUEST, "mig/1", 5)
    assert out == before
    # REQUEST maps fast -> ssd into shop2: the reclaimed claim keeps the source's own.
    assert out["metadata"]["namespace"] == "shop"
    assert out["spec"]["storageClassName"] == "fast"
    assert manifests.is_ours(out, "mig/1")
    assert out["metadata"]["annotations"]["stsmigrate.dev/source"] == "a/shop/redis"


def test_every_kind_of_dependency_reference_is_found() -> None:
    pod = {
        "serviceAccountName": "redis-sa",
        "imagePullSecrets": [{"name": "pull"}],
        "initContainers": [{"envFrom": [{"configMapRef": {"name": "init-cm"}}]}],
        "containers": [
            {
                "env": [
                    {"name": "P", "valueFrom": {"secretKeyRef": {"name": "env-secret"}}},
                    {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "env-cm"}}},
                    {"name": "X", "value": "plain"},
                ],
                "envFrom": [{"secretRef": {"name": "envfrom-secret"}}],
            }
        ],
        "volumes": [
            {"name": "a", "secret": {"secretName": "vol-secret"}},
            {"name": "b", "configMap": {"name": "vol-cm"}},
            {
                "name": "c",
                "projected": {
                    "sources": [
                        {"secret": {"name": "proj-secret"}},
                        {"configMap": {"name": "proj-cm"}},
                        {"downwardAPI": {}},
                    ]
                },
            },
            {"name": "d", "persistentVolumeClaim": {"claimName": "x"}},
        ],
    }
    found = manifests.referenced_dependencies(pod)
    assert found["Secret"] == {"pull", "env-secret", "envfrom-secret", "vol-secret", "proj-secret"}
    assert found["ConfigMap"] == {"init-cm", "env-cm", "vol-cm", "proj-cm"}
    assert found["ServiceAccount"] == {"redis-sa"}
    assert manifests.referenced_dependencies({"serviceAccountName": "default"}) == {
        "Secret": set(),
        "ConfigMap": set(),
        "ServiceAccount": set(),
    }


@pytest.mark.parametrize(("cluster_ip", "kept"), [("None", "None"), ("10.96.0.7", None)])
def test_services_lose_per_cluster_addresses(cluster_ip: str, kept: str | None) -> None:
    svc = {
        "metadata": {"name": "redis", "namespace": "shop", **SERVER_FIELDS},
        "spec": {
            "clusterIP": cluster_ip,
            "clusterIPs": [cluster_ip],
            "healthCheckNodePort": 3,
            "ports": [{"port": 6379, "nodePort": 30001}],
        },
        "status": {},
    }
    out = manifests.copy_object(copy.deepcopy(svc), "Service", REQUEST, "mig/1")
    assert out["spec"].get("clusterIP") == kept
    assert "healthCheckNodePort" not in out["spec"]
    assert out["spec"]["ports"] == [{"port": 6379}]
    assert "status" not in out and out["metadata"]["namespace"] == "shop2"


def test_secrets_are_copied_whole_and_service_accounts_without_token_refs() -> None:
    secret = {"metadata": {"name": "s", **SERVER_FIELDS}, "type": "Opaque", "data": {"k": "dg=="}}
    assert manifests.copy_object(secret, "Secret", REQUEST, "m")["data"] == {"k": "dg=="}
    account = {"metadata": {"name": "sa"}, "secrets": [{"name": "sa-token"}]}
    assert "secrets" not in manifests.copy_object(account, "ServiceAccount", REQUEST, "m")


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ({"matchLabels": {"app": "redis"}}, True),
        ({"matchLabels": {"app": "other"}}, False),
        ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["redis", "x"]}]}, True),
        ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["redis"]}]}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, True),
        ({}, False),
    ],
)
def test_selector_matches(selector: dict[str, Any], matches: bool) -> None:
    assert manifests.selector_matches(selector, {"app": "redis"}) is matches


def test_storage_identity_tells_storage_apart() -> None:
    def pv(**spec: Any) -> dict[str, Any]:
        return {"spec": {"capacity": {"storage": "1Gi"}, **spec}}

    assert manifests.storage_identity(pv(hostPath={"path": "/a"})) == "hostPath /a"
    assert manifests.storage_identity(pv(nfs={"server": "n", "path": "/e"})) == "nfs n:/e"
    assert manifests.storage_identity(pv(hostPath={"path": "/a"})) != manifests.storage_identity(
        pv(hostPath={"path": "/b"})
    )


# Every secret-bearing field a PV source can carry, each holding a marker that must not
# reach a plan (the storage identity), while the destination PV still gets it all.
SECRET = "s3cr3t-marker"
SECRET_SOURCES: list[tuple[str, dict[str, Any], str]] = [
    (
        "csi",
        {
            "driver": "ebs.csi.aws.com",
            "volumeHandle": "vol-1",
            "fsType": "ext4",
            "volumeAttributes": {"password": SECRET, "token": SECRET},
            "nodePublishSecretRef": {"name": SECRET, "namespace": SECRET},
            "nodeStageSecretRef": {"name": SECRET, "namespace": "kube-system"},
            "controllerPublishSecretRef": {"name": SECRET, "namespace": "kube-system"},
            "controllerExpandSecretRef": {"name": SECRET, "namespace": "kube-system"},
            "nodeExpandSecretRef": {"name": SECRET, "namespace": "kube-system"},
        },
        "csi ebs.csi.aws.com vol-1",
    ),
    (
        "iscsi",
        {
            "targetPortal": "10.0.0.1:3260",
            "iqn": "iqn.2001-04.com.example:storage",
            "lun": 0,
            "chapAuthDiscovery": True,
            "chapAuthSession": True,
            "secretRef": {"name": SECRET},
            "initiatorName": SECRET,
        },
        "iscsi targetPortal=10.0.0.1:3260 iqn=iqn.2001-04.com.example:storage lun=0",
    ),
    (
        "rbd",
        {
            "monitors": ["10.0.0.1:6789", "10.0.0.2:6789"],
            "pool": "kube",
            "image": "img-1",
            "user": SECRET,
            "keyring": f"/etc/ceph/{SECRET}",
            "secretRef": {"name": SECRET, "namespace": "ceph"},
        },
        "rbd monitors=10.0.0.1:6789,10.0.0.2:6789 pool=kube image=img-1",
    ),
    (
        "cephfs",
        {
            "monitors": ["10.0.0.1:6789"],
            "path": "/volumes/a",
            "user": SECRET,
            "secretFile": f"/etc/ceph/{SECRET}",
            "secretRef": {"name": SECRET, "namespace": "ceph"},
        },
        "cephfs monitors=10.0.0.1:6789 path=/volumes/a",
    ),
    (
        "flexVolume",
        {
            "driver": "example.com/lvm",
            "options": {"volumeID": "v1", "password": SECRET},
            "secretRef": {"name": SECRET, "namespace": "x"},
        },
        "flexVolume driver=example.com/lvm",
    ),
    (
        "scaleIO",
        {"gateway": "gw", "system": "sys", "volumeName": "v", "secretRef": {"name": SECRET}},
        "scaleIO system=sys volumeName=v",
    ),
    ("futureVolume", {"id": "v1", "credentials": SECRET}, "futureVolume"),
]


@pytest.mark.parametrize(("kind", "source", "identity"), SECRET_SOURCES)
def test_storage_identity_keeps_only_identifying_fields(
    kind: str, source: dict[str, Any], identity: str
) -> None:
    pv = {
        "metadata": {"name": "pv-1"},
        "spec": {"capacity": {"storage": "1Gi"}, "claimRef": {"name": "c"}, kind: source},
    }
    assert manifests.storage_identity(pv) == identity
    assert SECRET not in identity
    volume = VolumePlan(template="data", claim="c", volume="pv-1", storage=identity)
    assert SECRET not in volume.model_dump_json()
    # The move itself still needs the whole source in the destination cluster.
    assert manifests.destination_pv(pv, REQUEST, "mig/1", "c", 1)["spec"][kind] == source


def test_same_storage_sees_what_the_identity_leaves_out() -> None:
    def pv(kind: str, **source: Any) -> dict[str, Any]:
        return {"spec": {"capacity": {"storage": "1Gi"}, kind: source}}

    flex = pv("flexVolume", driver="d", options={"volumeID": "v1"})
    other_flex = pv("flexVolume", driver="d", options={"volumeID": "v2"})
    assert manifests.storage_identity(flex) == manifests.storage_identity(other_flex)
    assert manifests.same_storage(flex, copy.deepcopy(flex))
    assert not manifests.same_storage(flex, other_flex)
    assert not manifests.same_storage(pv("futureVolume", id="a"), pv("futureVolume", id="b"))
    # Known kinds compare on their identity: how it is mounted does not matter.
    csi = pv("csi", driver="d", volumeHandle="h", readOnly=False)
    assert manifests.same_storage(csi, pv("csi", driver="d", volumeHandle="h", readOnly=True))
    assert not manifests.same_storage(csi, pv("csi", driver="d", volumeHandle="h2"))
    assert not manifests.same_storage(pv("nfs", server="n", path="/a"), pv("hostPath", path="/a"))


def test_migration_label_is_label_safe() -> None:
    label = manifests.migration_label("stsmigrate/" + "x" * 300)
    assert len(label) == 16 and label.isalnum()


@pytest.mark.parametrize(
    ("version", "parsed"), [("v1.34.4", (1, 34)), ("v1.26.15-eks-1", (1, 26)), ("garbage", None)]
)
def test_minor_version(version: str, parsed: tuple[int, int] | None) -> None:
    assert minor_version(version) == parsed


def test_slice_of_defaults() -> None:
    assert slice_of({"spec": {}}) == (0, 1)
    assert slice_of({"spec": {"replicas": 0, "ordinals": {"start": 4}}}) == (4, 0)


@pytest.mark.parametrize("field", ["statefulset", "namespace", "destination_namespace"])
@pytest.mark.parametrize("bad", ["", "Upper", "-lead", "a" * 64, "under_score"])
def test_requests_with_invalid_names_are_refused(field: str, bad: str) -> None:
    fields = {
        "statefulset": "redis",
        "namespace": "shop",
        "source_context": "a",
        "destination_context": "b",
        field: bad,
    }
    with pytest.raises(ValueError, match=field):
        MigrationRequest(**fields)


def test_requests_with_invalid_numbers_are_refused() -> None:
    base = {
        "statefulset": "redis",
        "namespace": "shop",
        "source_context": "a",
        "destination_context": "b",
    }
    with pytest.raises(ValueError, match="stop_at_ordinal"):
        MigrationRequest(**base, stop_at_ordinal=-1)
    with pytest.raises(ValueError, match="pod_gone"):
        MigrationRequest(**base, timeouts={"pod_gone": 0})
    with pytest.raises(ValueError, match="source_context"):
        MigrationRequest(**{**base, "source_context": ""})


def released_pv(storage_class: str | None = "hostpath") -> dict[str, Any]:
    spec: dict[str, Any] = {
        "capacity": {"storage": "2Gi"},
        "accessModes": ["ReadWriteOnce"],
        "volumeMode": "Block",
        "hostPath": {"path": "/v/pv-1"},
        "claimRef": {"namespace": "shop", "name": "data-redis-4", "uid": "old-uid"},
    }
    if storage_class:
        spec["storageClassName"] = storage_class
    return {"metadata": {"name": "pv-1"}, "spec": spec}


def test_a_fence_asks_for_exactly_the_released_volume() -> None:
    fence = manifests.fence_pvc(released_pv(), "data-redis-4", "shop", "mig/1", "a/shop/x", 4)
    assert fence["metadata"]["name"] == "data-redis-4"
    assert fence["metadata"]["namespace"] == "shop"
    labels = fence["metadata"]["labels"]
    assert labels["stsmigrate.dev/fence"] == "true"
    assert labels["stsmigrate.dev/ordinal"] == "4" and manifests.is_ours(fence, "mig/1")
    assert fence["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "2Gi"}},
        "storageClassName": "hostpath",
        "volumeMode": "Block",
        "volumeName": "pv-1",
    }
    # A volume of no class: "" (not absent), so no default class is filled in.
    classless = manifests.fence_pvc(released_pv(None), "c", "shop", "mig/1", "a/shop/x", 4)
    assert classless["spec"]["storageClassName"] == ""


def claim(
    labels: dict[str, str], volume: str = "pv-1", phase: str = "Pending", uid: str = "u2"
) -> dict[str, Any]:
    return {
        "metadata": {"name": "data-redis-4", "uid": uid, "labels": labels},
        "spec": {"volumeName": volume},
        "status": {"phase": phase},
    }


def test_a_fence_is_only_our_unbound_fence_on_that_volume() -> None:
    fence = manifests.fence_pvc(released_pv(), "data-redis-4", "shop", "mig/1", "a/shop/x", 4)
    labels = fence["metadata"]["labels"]
    assert manifests.is_fence(claim(labels), "mig/1", "pv-1")
    assert not manifests.is_fence(claim(labels), "mig/2", "pv-1")  # another migration's
    assert not manifests.is_fence(claim(labels), "", "pv-1")  # an old input: no id
    assert not manifests.is_fence(claim(labels, volume="pv-2"), "mig/1", "pv-1")
    assert not manifests.is_fence(claim(labels, phase="Bound"), "mig/1", "pv-1")
    unlabelled = {k: v for k, v in labels.items() if k != "stsmigrate.dev/fence"}
    assert not manifests.is_fence(claim(unlabelled), "mig/1", "pv-1")


def test_bound_to_needs_both_sides_of_the_binding() -> None:
    pv = copy.deepcopy(released_pv())
    pv["spec"]["claimRef"]["uid"] = "u2"
    assert manifests.is_bound_to(claim({}, phase="Bound"), pv)
    assert not manifests.is_bound_to(claim({}, phase="Pending"), pv)
    assert not manifests.is_bound_to(claim({}, phase="Bound", uid="u3"), pv)  # a new claim
    assert not manifests.is_bound_to(claim({}, phase="Bound", volume="pv-2"), pv)
    assert not manifests.is_bound_to(claim({}, phase="Bound"), None)
    assert not manifests.is_bound_to(claim({}, phase="Bound"), released_pv())  # old uid


# GitOps and Helm tracking on the source's own metadata; none may reach a copy.
TRACKING_LABELS = {
    "app.kubernetes.io/instance": "shop-redis",
    "app.kubernetes.io/managed-by": "Helm",
    "kustomize.toolkit.fluxcd.io/name": "apps",
    "kustomize.toolkit.fluxcd.io/namespace": "flux-system",
    "helm.toolkit.fluxcd.io/name": "redis",
    "helm.toolkit.fluxcd.io/namespace": "shop",
}
TRACKING_ANNOTATIONS = {
    "argocd.argoproj.io/tracking-id": "shop:apps/StatefulSet:shop/redis",
    "argocd.argoproj.io/sync-options": "Prune=false",
    "meta.helm.sh/release-name": "redis",
    "meta.helm.sh/release-namespace": "shop",
    "kustomize.toolkit.fluxcd.io/reconcile": "enabled",
}


def tracked(obj: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    meta = obj["metadata"]
    meta["labels"] = {**(meta.get("labels") or {}), **TRACKING_LABELS}
    meta["annotations"] = {**(meta.get("annotations") or {}), **TRACKING_ANNOTATIONS}
    return obj


def assert_untracked(meta: dict[str, Any]) -> None:
    for key in TRACKING_LABELS:
        assert meta["labels"].get(key) != TRACKING_LABELS[key], key
    assert not set(TRACKING_ANNOTATIONS) & set(meta["annotations"])


def test_the_destination_statefulset_carries_no_gitops_tracking() -> None:
    source = tracked(source_sts())
    source["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/instance"] = "shop-redis"
    out = manifests.destination_statefulset(source, REQUEST, "mig/1", start=6)
    assert_untracked(out["metadata"])
    # Its own labels and annotations stay, ours are added, the pod template is untouched
    # (the selector matches its labels).
    assert out["metadata"]["labels"]["app"] == "redis" and manifests.is_ours(out, "mig/1")
    assert out["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "statefulset-migrator"
    assert out["metadata"]["annotations"]["team"] == "db"
    template_labels = out["spec"]["template"]["metadata"]["labels"]
    assert template_labels == {"app": "redis", "app.kubernetes.io/instance": "shop-redis"}


@pytest.mark.parametrize("kind", ["Secret", "ConfigMap", "Service", "ServiceAccount"])
def test_copied_dependencies_carry_no_gitops_tracking(kind: str) -> None:
    obj = tracked({"metadata": {"name": "x", "labels": {"tier": "db"}}, "spec": {}})
    out = manifests.copy_object(obj, kind, REQUEST, "mig/1")
    assert_untracked(out["metadata"])
    assert out["metadata"]["labels"]["tier"] == "db"


def test_a_managed_by_label_other_than_helm_is_left_to_the_ownership_labels() -> None:
    meta = manifests.clean_metadata(
        {"name": "x", "labels": {"app.kubernetes.io/managed-by": "kustomize", "a": "b"}},
        "shop2",
        {},
        {},
    )
    assert meta["labels"] == {"app.kubernetes.io/managed-by": "kustomize", "a": "b"}


def test_the_destination_statefulset_carries_no_copy_of_the_source_lock() -> None:
    """The source is locked before the destination is made from it: a copy of the lock
    would refuse an onward migration of the destination for good."""
    source = source_sts()
    source["metadata"]["annotations"]["stsmigrate.dev/locked-by"] = "mig/1"
    out = manifests.destination_statefulset(source, REQUEST, "mig/1", start=6)
    assert "stsmigrate.dev/locked-by" not in out["metadata"]["annotations"]
    assert out["metadata"]["annotations"]["team"] == "db"
