"""Bad input the destination refuses although the source accepted it: volumes pinned to
zones it lacks, quotas on cpu and memory, PodSecurity, admission policies,
PriorityClass, RuntimeClass, LimitRange, CSI drivers and their Secrets, claims
outside the claim templates, pull secrets, an empty destination of the wrong start.
Preflight sees each (most through a server-side dry run) before anything changes;
every case compares both clusters before and after."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from temporalio.testing import WorkflowEnvironment

from tests.support.apps import apply_statefulset, statefulset
from tests.support.bad_input import APP, refused_in_state
from tests.support.cluster_state import ready_replicas
from tests.support.processes import WorkerProcess
from tests.support.waits import wait_for, wait_ready

pytestmark = [pytest.mark.cluster, pytest.mark.field]

# A case's set-up: the cluster state in a fresh namespace; cleanups of cluster-scoped
# objects go on the stack, closed after the case whatever happened.
Setup = Callable[[dict[str, client.ApiClient], str, contextlib.ExitStack], dict[str, Any]]


def app(replicas: int = 2, **pod: Any) -> dict[str, Any]:
    """The app without claim templates (cheap), with ``pod`` merged into its pod spec."""
    manifest = statefulset(APP, replicas, ready_delay="100ms")
    manifest["spec"]["template"]["spec"].update(pod)
    return manifest


def with_resources(requests: dict[str, str], limits: dict[str, str]) -> dict[str, Any]:
    manifest = app()
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    container["resources"] = {
        **({"requests": requests} if requests else {}),
        **({"limits": limits} if limits else {}),
    }
    return manifest


def static_claim(
    api: client.ApiClient, ns: str, claim: str, source: dict[str, Any], **spec: Any
) -> None:
    """A PV of ``source`` (hostPath, csi...) pre-bound to ``claim``, and the claim."""
    core = client.CoreV1Api(api)
    core.create_persistent_volume(
        {
            "metadata": {"name": f"{ns}-{claim}"},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "claimRef": {"namespace": ns, "name": claim},
                **source,
                **spec,
            },
        }
    )
    core.create_namespaced_persistent_volume_claim(
        ns,
        {
            "metadata": {"name": claim},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "",
                "volumeName": f"{ns}-{claim}",
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )


def running(api: client.ApiClient, ns: str, manifest: dict[str, Any]) -> None:
    """Apply and wait for every pod Ready: a pod on a CSI volume is scheduled and attached
    later than ``settled`` would notice."""
    apply_statefulset(api, ns, manifest)
    replicas = manifest["spec"]["replicas"]
    wait_ready(api, ns, lambda: ready_replicas(api, ns, APP) == replicas, f"{replicas} Ready")


def zone_pinned(
    kube: dict[str, client.ApiClient], ns: str, _: contextlib.ExitStack
) -> dict[str, Any]:
    """A static PV required in zone-a, which no destination node is in. (Its pod may stay
    Pending in the source too: the refusal asked for is the destination's.)"""
    in_zone = {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["zone-a"]}
    static_claim(
        kube["source"],
        ns,
        f"data-{APP}-0",
        {"hostPath": {"path": f"/srv/{ns}"}},
        nodeAffinity={"required": {"nodeSelectorTerms": [{"matchExpressions": [in_zone]}]}},
    )
    manifest = statefulset(APP, 1, ready_delay="100ms", templates={"data": ""})
    apply_statefulset(kube["source"], ns, manifest)
    core = client.CoreV1Api(kube["source"])

    def bound() -> bool:
        claim: Any = core.read_namespaced_persistent_volume_claim(f"data-{APP}-0", ns)
        return bool(claim.status.phase == "Bound")

    wait_for(bound, 60, "the zone-pinned claim Bound")
    return {}


def cpu_quota(
    kube: dict[str, client.ApiClient], ns: str, _: contextlib.ExitStack
) -> dict[str, Any]:
    apply_statefulset(kube["source"], ns, with_resources({"cpu": "500m"}, {}))
    client.CoreV1Api(kube["destination"]).create_namespaced_resource_quota(
        ns, {"metadata": {"name": "cpu"}, "spec": {"hard": {"requests.cpu": "600m"}}}
    )
    return {}


def memory_quota(
    kube: dict[str, client.ApiClient], ns: str, _: contextlib.ExitStack
) -> dict[str, Any]:
    apply_statefulset(kube["source"], ns, with_resources({}, {"memory": "64Mi"}))
    client.CoreV1Api(kube["destination"]).create_namespaced_resource_quota(
        ns,
        {
            "metadata": {"name": "memory"},
            "spec": {"hard": {"limits.memory": "100Mi", "requests.memory": "1Gi"}},
        },
    )
    return {}


def pod_security(
    kube: dict[str, client.ApiClient], ns: str, _: contextlib.ExitStack
) -> dict[str, Any]:
    apply_statefulset(kube["source"], ns, app())
    client.CoreV1Api(kube["destination"]).patch_namespace(
        ns, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )
    return {}


def _refuses_pods(api: client.ApiClient, ns: str) -> bool:
    pod = {
        "metadata": {"name": "probe"},
        "spec": {"containers": [{"name": "c", "image": "registry.invalid/x:1"}]},
    }
    try:
        client.CoreV1Api(api).create_namespaced_pod(ns, pod, dry_run="All")
    except client.exceptions.ApiException:
        return True
    return False


def admission_policy(
    kube: dict[str, client.ApiClient], ns: str, cleanup: contextlib.ExitStack
) -> dict[str, Any]:
    apply_statefulset(kube["source"], ns, app())
    reg = client.AdmissionregistrationV1Api(kube["destination"])
    reg.create_validating_admission_policy(
        {
            "metadata": {"name": ns},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE"],
                            "resources": ["pods"],
                        }
                    ]
                },
                "validations": [
                    {"expression": "false", "message": "pods of this namespace are frozen"}
                ],
            },
        }
    )
    cleanup.callback(reg.delete_validating_admission_policy, ns)
    reg.create_validating_admission_policy_binding(
        {
            "metadata": {"name": ns},
            "spec": {
                "policyName": ns,
                "validationActions": ["Deny"],
                "matchResources": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}
                },
            },
        }
    )
    cleanup.callback(reg.delete_validating_admission_policy_binding, ns)
    # The API server loads policies asynchronously.
    wait_for(lambda: _refuses_pods(kube["destination"], ns), 30, "the policy in force")
    return {}


def priority_class(
    kube: dict[str, client.ApiClient], ns: str, cleanup: contextlib.ExitStack
) -> dict[str, Any]:
    scheduling = client.SchedulingV1Api(kube["source"])
    scheduling.create_priority_class({"metadata": {"name": ns}, "value": 1000})
    cleanup.callback(scheduling.delete_priority_class, ns)
    apply_statefulset(kube["source"], ns, app(priorityClassName=ns))
    return {}


def runtime_class(
    kube: dict[str, client.ApiClient], ns: str, cleanup: contextlib.ExitStack
) -> dict[str, Any]:
    node = client.NodeV1Api(kube["source"])
    node.create_runtime_class({"metadata": {"name": ns}, "handler": "runc"})
    cleanup.callback(node.delete_runtime_class, ns)
    apply_statefulset(kube["source"], ns, app(runtimeClassName=ns))
    return {}


def limit_range(
    kube: dict[str, client.ApiClient], ns: str, _: contextlib.ExitStack
) -> dict[str, Any]:
    apply_statefulset(kube["source"], ns, with_resources({"cpu": "200m"}, {"cpu": "200m"}))
    client.CoreV1Api(kube["destination"]).create_namespaced_limit_range(
        ns,
        {
            "metadata": {"name": "small"},
            "spec": {"limits": [{"type": "Container", "max": {"cpu": "100m"}}]},
        },
    )
    return {}


def csi_driver_missing(
    kube: dict[str, client.ApiClient], ns: str, cleanup: contextlib.ExitStack
) -> dict[str, Any]:
    driver = f"{ns}.csi.example.com"
    storage = client.StorageV1Api(kube["source"])
    storage.create_csi_driver({"metadata": {"name": driver}, "spec": {"attachRequired": False}})
    cleanup.callback(storage.delete_csi_driver, driver)
    static_claim(
        kube["source"], ns, f"data-{APP}-0", {"csi": {"driver": driver, "volumeHandle": ns}}
    )
    running(kube["source"], ns, statefulset(APP, 1, ready_delay="100ms", templates={"data": ""}))
    return {}


def csi_secret_missing(
    kube: dict[str, client.ApiClient], ns: str, _: contextlib.ExitStack
) -> dict[str, Any]:
    """The local clusters' own CSI driver (present in both), with a stage secret that
    only the source has."""
    client.CoreV1Api(kube["source"]).create_namespaced_secret(
        ns, {"metadata": {"name": "csi-creds"}, "stringData": {"key": "x"}}
    )
    csi = {
        "driver": "hostpath.csi.stsmigrate.dev",
        "volumeHandle": ns,
        "nodeStageSecretRef": {"namespace": ns, "name": "csi-creds"},
    }
    static_claim(kube["source"], ns, f"data-{APP}-0", {"csi": csi})
    running(kube["source"], ns, statefulset(APP, 1, ready_delay="100ms", templates={"data": ""}))
    return {}


def claim_not_from_a_template(
    kube: dict[str, client.ApiClient], ns: str, _: contextlib.ExitStack
) -> dict[str, Any]:
    static_claim(kube["source"], ns, "shared", {"hostPath": {"path": f"/srv/{ns}-shared"}})
    manifest = app(
        1, volumes=[{"name": "shared", "persistentVolumeClaim": {"claimName": "shared"}}]
    )
    running(kube["source"], ns, manifest)
    return {}


def pull_secret_missing(
    kube: dict[str, client.ApiClient], ns: str, _: contextlib.ExitStack
) -> dict[str, Any]:
    client.CoreV1Api(kube["source"]).create_namespaced_service_account(
        ns, {"metadata": {"name": "puller"}, "imagePullSecrets": [{"name": "regcred"}]}
    )
    apply_statefulset(kube["source"], ns, app(serviceAccountName="puller"))
    return {}


def empty_destination_wrong_start(
    kube: dict[str, client.ApiClient], ns: str, _: contextlib.ExitStack
) -> dict[str, Any]:
    apply_statefulset(kube["source"], ns, app())
    apply_statefulset(kube["destination"], ns, statefulset(APP, 0, start=5, ready_delay="100ms"))
    return {}


STATES: list[tuple[str, Setup, list[str]]] = [
    (
        "PV pinned to a zone the destination lacks",
        zone_pinned,
        [
            "source PersistentVolume",
            "node affinity pins it to topology.kubernetes.io/zone In [zone-a], which no node "
            "of the destination destination matches",
            "fix: use storage reachable from the destination's nodes",
        ],
    ),
    (
        "cpu quota",
        cpu_quota,
        [
            "destination ResourceQuota",
            "/cpu",
            "requests.cpu: 0.6 free, 1 needed",
            "fix: raise the quota",
        ],
    ),
    (
        "memory limits quota",
        memory_quota,
        [
            "destination ResourceQuota",
            "/memory",
            "limits.memory: 104857600 free, 134217728 needed",
            "fix: raise the quota",
        ],
    ),
    (
        "PodSecurity restricted in the destination",
        pod_security,
        [
            "destination Pod ",
            f"/{APP}-1",
            'violates PodSecurity "restricted:latest"',
            "fix: the destination namespace",
            "pod-security.kubernetes.io/enforce=",
        ],
    ),
    (
        "admission policy denies the Pod",
        admission_policy,
        [f"/{APP}-1", "pods of this namespace are frozen", "fix: ValidatingAdmissionPolicy"],
    ),
    (
        "PriorityClass missing in the destination",
        priority_class,
        [f"/{APP}-1", "no PriorityClass with name", "fix: create PriorityClass"],
    ),
    (
        "RuntimeClass missing in the destination",
        runtime_class,
        [f"/{APP}-1", "RuntimeClass", "not found", "fix: create RuntimeClass"],
    ),
    (
        "LimitRange max below the request",
        limit_range,
        [
            f"/{APP}-1",
            "maximum cpu usage per Container is 100m",
            "fix: the destination's LimitRange",
        ],
    ),
    (
        "CSIDriver missing in the destination",
        csi_driver_missing,
        [
            "destination CSIDriver",
            ".csi.example.com",
            "missing in destination",
            "fix: install the CSI driver",
        ],
    ),
    (
        "CSI stage secret missing in the destination",
        csi_secret_missing,
        ["destination Secret", "/csi-creds", "nodeStageSecretRef", "fix: create Secret"],
    ),
    (
        "claim not from a claim template",
        claim_not_from_a_template,
        [
            "source StatefulSet",
            "mounts claim shared",
            "not from a volumeClaimTemplate",
            "fix: create PersistentVolumeClaim",
        ],
    ),
    (
        "ServiceAccount's pull secret missing everywhere",
        pull_secret_missing,
        ["Secret", "regcred", "exists in neither cluster", "fix: create the Secret"],
    ),
    (
        "empty destination of the wrong start",
        empty_destination_wrong_start,
        [
            "destination StatefulSet",
            "owns no ordinals and its ordinals.start is 5, not 2",
            "fix: delete it (it runs no pods)",
        ],
    ),
]


@pytest.mark.parametrize(("setup", "expected"), [c[1:] for c in STATES], ids=[c[0] for c in STATES])
async def test_preflight_refuses_what_the_destination_refuses(
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    shared_worker: WorkerProcess,
    namespace: str,
    setup: Setup,
    expected: list[str],
) -> None:
    with contextlib.ExitStack() as cleanup:
        fields = setup(kube, namespace, cleanup)
        error = await refused_in_state(kube, temporal_env, shared_worker, namespace, fields)
        for text in expected:
            assert text in error.message, error.message
