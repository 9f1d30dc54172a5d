"""Bad input: invalid requests and cluster states, each refused before anything
changes, with a message that names the problem and the fix. Every case compares
every object a migration could touch, in both clusters, before and after."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from temporalio.testing import WorkflowEnvironment

from devenv.clusters import LocalClusters
from devenv.faultproxy import FaultProxy
from tests.support.apps import apply_statefulset, deploy_app, statefulset
from tests.support.bad_input import APP, Setup, base, refused, refused_in_state, settled
from tests.support.cluster_state import ready_replicas, snapshot
from tests.support.kubeconfigs import edited_kubeconfig, servers_replaced
from tests.support.processes import WorkerProcess, worker_with
from tests.support.waits import wait_for

pytestmark = pytest.mark.cluster

# -- requests that do not validate: failed by the workflow on decoding ------------------

REQUESTS: list[tuple[str, dict[str, Any], str]] = [
    ("uppercase name", {"statefulset": "DB"}, "'DB' is not a valid Kubernetes name"),
    ("name too long", {"statefulset": "d" * 53}, "use 1 to 52 lowercase letters"),
    ("empty namespace", {"namespace": ""}, "'' is not a valid Kubernetes name"),
    ("namespace with _", {"namespace": "shop_1"}, "'shop_1' is not a valid Kubernetes name"),
    ("bad destination namespace", {"destination_namespace": "-x"}, "'-x' is not a valid"),
    ("empty source context", {"source_context": ""}, "is not a kubeconfig context name"),
    ("context with a newline", {"destination_context": "a\nb"}, "kubectl config get-contexts"),
    ("negative stop_at_ordinal", {"stop_at_ordinal": -1}, "greater than or equal to 0"),
    ("zero timeout", {"timeouts": {"pod_ready": 0}}, "pod_ready"),
    ("approval list missing", {"approval": {"mode": "ordinals"}}, "needs a non-empty list"),
    ("unknown approval mode", {"approval": {"mode": "sometimes"}}, "'none', 'first', 'each'"),
    ("unknown field", {"replicas": 3}, "Extra inputs are not permitted"),
    ("dry_run not a bool", {"dry_run": "maybe"}, "dry_run"),
    ("mapping not strings", {"storage_class_mapping": {"a": 5}}, "storage_class_mapping"),
    ("zero max_unavailable", {"max_unavailable": 0}, "greater than or equal to 1"),
    (
        "override of the serviceName",
        {"destination_overrides": [{"type": "merge", "patch": {"spec": {"serviceName": "x"}}}]},
        "spec.serviceName is a field of the StatefulSet, not of its pod template",
    ),
    (
        "override outside the pod template",
        {"destination_overrides": [{"type": "json", "patch": [{"op": "remove", "path": "/x"}]}]},
        "/x is outside what an override may change",
    ),
    (
        "override with a password",
        {
            "destination_overrides": [
                {
                    "type": "json",
                    "patch": [
                        {
                            "op": "add",
                            "path": "/spec/containers/0/env",
                            "value": [{"name": "REDIS_PASSWORD", "value": "hunter2"}],
                        }
                    ],
                }
            ]
        },
        "env REDIS_PASSWORD has a value: the request is kept in the workflow's history",
    ),
]


@pytest.mark.parametrize(
    ("fields", "expected"), [c[1:] for c in REQUESTS], ids=[c[0] for c in REQUESTS]
)
async def test_an_invalid_request_fails_at_once(
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    shared_worker: WorkerProcess,
    app_namespace: str,
    fields: dict[str, Any],
    expected: str,
) -> None:
    request = base(app_namespace, **fields)
    before = snapshot(kube, app_namespace)
    error = await refused(temporal_env, shared_worker, request)
    assert expected in str(error), str(error)
    assert snapshot(kube, app_namespace) == before


async def test_a_missing_required_field_fails_at_once(
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    shared_worker: WorkerProcess,
    app_namespace: str,
) -> None:
    request = base(app_namespace)
    del request["destination_context"]
    error = await refused(temporal_env, shared_worker, request)
    assert "destination_context" in str(error) and "Field required" in str(error)


# -- requests preflight refuses against the shared app ----------------------------------

PREFLIGHT: list[tuple[str, dict[str, Any], list[str]]] = [
    (
        "unknown context",
        {"source_context": "elsewhere"},
        ["source context 'elsewhere'", "no such context", "fix: name a context the worker holds"],
    ),
    (
        "StatefulSet missing",
        {"statefulset": "nothere"},
        ["source StatefulSet", "not found in source", "fix: check the StatefulSet name"],
    ),
    (
        "same source and destination",
        {"destination_context": "source"},
        ["source and destination are the same StatefulSet", "fix: name another destination"],
    ),
    (
        "destination namespace missing",
        {"destination_namespace": "nowhere-ns"},
        ["destination namespace nowhere-ns", "fix: kubectl --context destination create namespace"],
    ),
    (
        "storage class missing",
        {"storage_class_mapping": {"local-csi": "fast-ssd"}},
        ["storage class fast-ssd", "missing in destination", "fix: create StorageClass fast-ssd"],
    ),
    (
        "stop_at_ordinal outside",
        {"stop_at_ordinal": 7},
        ["request stop_at_ordinal", "7 is outside the source slice [0, 2)"],
    ),
    (
        "max_unavailable over the budget",
        {"max_unavailable": 2},
        [
            f"PodDisruptionBudget {APP}: allows 1 voluntary disruption(s) of the 2 pods, but "
            "max_unavailable 2 would take 2 pods down at once",
            "fix: set max_unavailable to 1 or less, or loosen the PodDisruptionBudget",
        ],
    ),
    (
        "override of a selector label",
        {
            "destination_overrides": [
                {"type": "merge", "patch": {"metadata": {"labels": {"app": "other"}}}}
            ]
        },
        [
            "request destination_overrides: destination_overrides change the pod template's "
            f"label app ('{APP}' -> 'other'), which the StatefulSet's selector matches",
        ],
    ),
    (
        "override for another container",
        {
            "destination_overrides": [
                {
                    "type": "json",
                    "patch": [
                        {"op": "test", "path": "/spec/containers/0/name", "value": "web"},
                        {"op": "replace", "path": "/spec/containers/0/image", "value": "x:1"},
                    ],
                }
            ]
        },
        [
            "destination_overrides[0] (json) operation 0 (test /spec/containers/0/name) does "
            "not apply to the source's pod template: its test found another value there"
        ],
    ),
    (
        "override of a field a pod template lacks",
        {
            "destination_overrides": [
                {"type": "merge", "patch": {"spec": {"nodeselector": {"pool": "b"}}}}
            ]
        },
        [
            "request destination_overrides: the overridden pod template is not one: "
            "spec.nodeselector: Extra inputs are not permitted",
            "kubectl explain pod.spec",
        ],
    ),
    (
        "override to nodes the destination lacks",
        {
            "destination_overrides": [
                {
                    "type": "merge",
                    "patch": {
                        "spec": {
                            "nodeSelector": {"pool": "redis"},
                            "tolerations": [
                                {"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}
                            ],
                        }
                    },
                }
            ]
        },
        [
            "destination pod template: no Ready node of destination can run the destination's "
            "pods (it asks for nodeSelector pool=redis): of its ",
            "not matched by the nodeSelector or required node affinity",
            "fix: fix the nodeSelector, node affinity or tolerations (destination_overrides)",
        ],
    ),
]


@pytest.mark.parametrize(
    ("fields", "expected"), [c[1:] for c in PREFLIGHT], ids=[c[0] for c in PREFLIGHT]
)
async def test_preflight_refuses_the_request(
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    shared_worker: WorkerProcess,
    app_namespace: str,
    fields: dict[str, Any],
    expected: list[str],
) -> None:
    before = snapshot(kube, app_namespace)
    error = await refused(temporal_env, shared_worker, base(app_namespace, **fields))
    assert error.type == "PreflightFailed" and error.non_retryable
    for text in expected:
        assert text in error.message, error.message
    assert snapshot(kube, app_namespace) == before


# -- cluster states preflight refuses, each set up in a fresh namespace -----------------


def retention_delete(kube: dict[str, client.ApiClient], ns: str) -> dict[str, Any]:
    deploy_app(
        kube["source"], ns, APP, 2, secret_value="x", ready_delay="100ms", when_scaled="Delete"
    )
    return {}


def claim_pending(kube: dict[str, client.ApiClient], ns: str) -> dict[str, Any]:
    # A claim template whose class has no provisioner: the claim stays Pending.
    storage = client.StorageV1Api(kube["source"])
    storage.create_storage_class(
        {
            "metadata": {"name": f"{ns}-none"},
            "provisioner": "kubernetes.io/no-provisioner",
            "volumeBindingMode": "Immediate",
        }
    )
    apply_statefulset(kube["source"], ns, statefulset(APP, 1, templates={"data": f"{ns}-none"}))
    return {}


def pods_not_ready(kube: dict[str, client.ApiClient], ns: str) -> dict[str, Any]:
    apply_statefulset(kube["source"], ns, statefulset(APP, 1, ready_delay="1h"))
    return {}


def node_affinity(kube: dict[str, client.ApiClient], ns: str) -> dict[str, Any]:
    """A local PV pinned to a node only the source has, bound to the app's claim."""
    core = client.CoreV1Api(kube["source"])
    pv = f"{ns}-local"
    on_node = {"key": "kubernetes.io/hostname", "operator": "In", "values": ["source-node-0"]}
    core.create_persistent_volume(
        {
            "metadata": {"name": pv},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "local": {"path": f"/srv/{ns}"},
                "claimRef": {"namespace": ns, "name": f"data-{APP}-0"},
                "nodeAffinity": {
                    "required": {"nodeSelectorTerms": [{"matchExpressions": [on_node]}]}
                },
            },
        }
    )
    core.create_namespaced_persistent_volume_claim(
        ns,
        {
            "metadata": {"name": f"data-{APP}-0"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "",
                "volumeName": pv,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    manifest = statefulset(APP, 1, templates={"data": ""})
    apply_statefulset(kube["source"], ns, manifest)
    wait_for(lambda: ready_replicas(kube["source"], ns, APP) == 1, 60, "pod on the local PV")
    return {}


def destination_runs_the_ordinals(kube: dict[str, client.ApiClient], ns: str) -> dict[str, Any]:
    deploy_app(kube["source"], ns, APP, 2, secret_value="x", ready_delay="100ms")
    other = statefulset(APP, 2, start=0, templates={"data": None, "logs": "local-csi"})
    apply_statefulset(kube["destination"], ns, other)
    return {}


def claim_name_taken(kube: dict[str, client.ApiClient], ns: str) -> dict[str, Any]:
    deploy_app(kube["source"], ns, APP, 2, secret_value="x", ready_delay="100ms")
    client.CoreV1Api(kube["destination"]).create_namespaced_persistent_volume_claim(
        ns,
        {
            "metadata": {"name": f"data-{APP}-1"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    return {}


def volume_name_taken(kube: dict[str, client.ApiClient], ns: str) -> dict[str, Any]:
    deploy_app(kube["source"], ns, APP, 1, secret_value="x", ready_delay="100ms")
    claim: Any = client.CoreV1Api(kube["source"]).read_namespaced_persistent_volume_claim(
        f"data-{APP}-0", ns
    )
    client.CoreV1Api(kube["destination"]).create_persistent_volume(
        {
            "metadata": {"name": claim.spec.volume_name},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "hostPath": {"path": f"/srv/other-{ns}"},
                "storageClassName": "other",
            },
        }
    )
    return {}


def quota_too_small(kube: dict[str, client.ApiClient], ns: str) -> dict[str, Any]:
    deploy_app(kube["source"], ns, APP, 2, secret_value="x", ready_delay="100ms")
    client.CoreV1Api(kube["destination"]).create_namespaced_resource_quota(
        ns,
        {
            "metadata": {"name": "tight"},
            "spec": {"hard": {"persistentvolumeclaims": "1"}},
        },
    )
    return {}


def secret_missing(kube: dict[str, client.ApiClient], ns: str) -> dict[str, Any]:
    manifest = statefulset(APP, 1)
    manifest["spec"]["template"]["spec"]["containers"][0]["envFrom"] = [
        {"secretRef": {"name": "gone"}}
    ]
    apply_statefulset(kube["source"], ns, manifest)
    return {}


STATES: list[tuple[str, Setup, list[str]]] = [
    ("retention policy Delete", retention_delete, ["whenScaled is Delete", "fix:"]),
    (
        "claim Pending",
        claim_pending,
        ["source PersistentVolumeClaim", "is Pending, not Bound", "fix: wait until it is Bound"],
    ),
    (
        "pods not Ready",
        pods_not_ready,
        [f"pods not Ready: {APP}-0", "fix: wait until every pod is Ready"],
    ),
    (
        "PV pinned to a source node",
        node_affinity,
        ["node affinity pins it to source-node-0", "fix:"],
    ),
    (
        "destination already runs the ordinals",
        destination_runs_the_ordinals,
        ["owns ordinals [0, 2) but the source owns [0, 2)", "fix:"],
    ),
    (
        "claim name taken in the destination",
        claim_name_taken,
        [
            "destination PersistentVolumeClaim",
            "already exists and was not created by this migration",
            "fix: delete it if it is left over",
        ],
    ),
    (
        "volume name taken in the destination",
        volume_name_taken,
        ["destination PersistentVolume", "already exists", "fix: delete it if it is left over"],
    ),
    (
        "quota too small",
        quota_too_small,
        ["destination ResourceQuota", "tight", "fix: raise the quota"],
    ),
    (
        "Secret missing everywhere",
        secret_missing,
        ["Secret", "gone", "exists in neither cluster", "fix: create the Secret"],
    ),
]


@pytest.mark.parametrize(("setup", "expected"), [c[1:] for c in STATES], ids=[c[0] for c in STATES])
async def test_preflight_refuses_the_cluster_state(
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    shared_worker: WorkerProcess,
    namespace: str,
    setup: Setup,
    expected: list[str],
) -> None:
    fields = setup(kube, namespace)
    error = await refused_in_state(kube, temporal_env, shared_worker, namespace, fields)
    for text in expected:
        assert text in error.message, error.message


async def test_missing_permissions_are_named(
    clusters: LocalClusters,
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    namespace: str,
    tmp_path: Path,
) -> None:
    """The worker's source credentials belong to a ServiceAccount with no role."""
    deploy_app(kube["source"], namespace, APP, 1, secret_value="x", ready_delay="100ms")
    core = client.CoreV1Api(kube["source"])
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "powerless"}})
    token: Any = core.create_namespaced_service_account_token(
        "powerless", namespace, {"spec": {"expirationSeconds": 3600}}
    )

    def powerless(config: dict[str, Any]) -> None:
        config["users"].append({"name": "powerless", "user": {"token": token.status.token}})
        config["contexts"].append(
            {"name": "powerless", "context": {"cluster": "source", "user": "powerless"}}
        )

    kubeconfig = edited_kubeconfig(clusters.kubeconfig, tmp_path / "kubeconfig", powerless)
    with worker_with(temporal_env, kubeconfig, tmp_path, "powerless") as worker:
        before = snapshot(kube, namespace)
        error = await refused(temporal_env, worker, base(namespace, source_context="powerless"))
    assert error.type == "PreflightFailed", error.message
    assert "source cluster powerless" in error.message
    assert "the worker's credentials may not: get statefulsets" in error.message
    assert "fix: grant them (deploy/rbac.yaml" in error.message
    assert snapshot(kube, namespace) == before


async def test_a_server_older_than_1_27_is_refused(
    clusters: LocalClusters,
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    namespace: str,
    tmp_path: Path,
) -> None:
    """The source apiserver seen through a proxy that reports Kubernetes v1.26.0."""
    deploy_app(kube["source"], namespace, APP, 1, secret_value="x", ready_delay="100ms")
    proxy = FaultProxy(clusters.clusters["source"], rate=0, version="v1.26.0")
    kubeconfig = edited_kubeconfig(
        clusters.kubeconfig, tmp_path / "kubeconfig", servers_replaced({"source": proxy.server})
    )
    proxy.start()
    try:
        with worker_with(temporal_env, kubeconfig, tmp_path, "old-server") as worker:
            before = settled(kube, namespace)
            error = await refused(temporal_env, worker, base(namespace))
    finally:
        proxy.stop()
    assert error.type == "PreflightFailed", error.message
    assert "source cluster source: Kubernetes v1.26.0 is too old" in error.message
    assert "fix: upgrade the control plane to 1.27+" in error.message
    assert snapshot(kube, namespace) == before
