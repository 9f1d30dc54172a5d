"""Bad input, other writers and dependencies of the same name: an autoscaler (HPA, KEDA
ScaledObject, VPA) or an operator (a controller ownerReference) that would fight the
move, and a Secret, ConfigMap or Service in the destination that only has the
source's name. Each is refused before anything changes, with a message naming the
object and the fix, both clusters compared before and after; GitOps ownership and a
paused owner pass with a warning. KEDA and VPA are CRDs: the module installs minimal
ones in the source cluster and removes them at the end."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.migration import MigrationActivities
from contract import MigrationRequest, MigrationResult, Plan, PlanInput
from tests.support.apps import deploy_app
from tests.support.bad_input import APP, Setup, base, refused_in_state, settled
from tests.support.cluster_state import snapshot
from tests.support.processes import WorkerProcess
from tests.support.waits import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.field]

# Values that must never reach a message: distinctive, so a leak is found.
SOURCE_PASSWORD = "source-pass-7f3a9c"
OTHER_PASSWORD = "other-pass-2b8e4d"
TARGET = {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": APP}
# (group, version, plural, kind) of the CRDs the module installs.
CRDS = [
    ("keda.sh", "v1alpha1", "scaledobjects", "ScaledObject"),
    ("autoscaling.k8s.io", "v1", "verticalpodautoscalers", "VerticalPodAutoscaler"),
]


def crd(group: str, version: str, plural: str, kind: str) -> dict[str, Any]:
    """A CRD that serves its kind with any content (the real ones' schemas are not needed
    to be read)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{group}",
            # A *.k8s.io group is protected: the apiserver wants the approval the real
            # VPA CRD carries.
            "annotations": {
                "api-approved.kubernetes.io": "https://github.com/kubernetes/kubernetes/pull/63797"
            },
        },
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": kind.lower(), "kind": kind},
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


@pytest.fixture(scope="module", autouse=True)
def autoscaler_crds(kube: dict[str, client.ApiClient]) -> Iterator[None]:
    extensions = client.ApiextensionsV1Api(kube["source"])
    names: list[str] = []

    def established(name: str) -> bool:
        found: Any = extensions.read_custom_resource_definition(name)
        conditions = (found.status and found.status.conditions) or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    try:
        for group, version, plural, kind in CRDS:
            extensions.create_custom_resource_definition(crd(group, version, plural, kind))
            names.append(f"{plural}.{group}")
        for name in names:
            wait_for(lambda name=name: established(name), 30, f"CRD {name} established")
        yield
    finally:
        for name in names:
            extensions.delete_custom_resource_definition(name)


def app(kube: dict[str, client.ApiClient], ns: str) -> None:
    deploy_app(kube["source"], ns, APP, 2, secret_value=SOURCE_PASSWORD, ready_delay="100ms")


def custom(api: client.ApiClient, ns: str, plural: str, body: dict[str, Any]) -> None:
    group, version, _, kind = next(c for c in CRDS if c[2] == plural)
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        group, version, ns, plural, {"apiVersion": f"{group}/{version}", "kind": kind, **body}
    )


def hpa(api: client.ApiClient, ns: str) -> None:
    # minReplicas = maxReplicas = the app's replicas: the controller has nothing to
    # scale (and no metrics server), yet preflight must still refuse it.
    client.AutoscalingV2Api(api).create_namespaced_horizontal_pod_autoscaler(
        ns,
        {
            "metadata": {"name": f"{APP}-hpa"},
            "spec": {"scaleTargetRef": TARGET, "minReplicas": 2, "maxReplicas": 2},
        },
    )


def source_hpa(kube: dict[str, client.ApiClient], ns: str) -> dict[str, Any]:
    app(kube, ns)
    hpa(kube["source"], ns)
    return {}


def destination_hpa(kube: dict[str, client.ApiClient], ns: str) -> dict[str, Any]:
    app(kube, ns)
    hpa(kube["destination"], ns)
    return {}


def scaled_object(kube: dict[str, client.ApiClient], ns: str) -> dict[str, Any]:
    app(kube, ns)
    body = {"metadata": {"name": f"{APP}-so"}, "spec": {"scaleTargetRef": TARGET}}
    custom(kube["source"], ns, "scaledobjects", body)
    return {}


def vpa(kube: dict[str, client.ApiClient], ns: str) -> dict[str, Any]:
    app(kube, ns)
    body = {
        "metadata": {"name": f"{APP}-vpa"},
        "spec": {"targetRef": TARGET, "updatePolicy": {"updateMode": "Recreate"}},
    }
    custom(kube["source"], ns, "verticalpodautoscalers", body)
    return {}


def owned(kube: dict[str, client.ApiClient], ns: str) -> dict[str, Any]:
    """Any object will do as the controller; the garbage collector keeps what it owns
    while it exists."""
    app(kube, ns)
    core = client.CoreV1Api(kube["source"])
    owner: Any = core.create_namespaced_config_map(ns, {"metadata": {"name": "operator"}})
    ref = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "operator",
        "uid": owner.metadata.uid,
        "controller": True,
    }
    client.AppsV1Api(kube["source"]).patch_namespaced_stateful_set(
        APP, ns, {"metadata": {"ownerReferences": [ref]}}
    )
    return {}


def secret_differs(kube: dict[str, client.ApiClient], ns: str) -> dict[str, Any]:
    app(kube, ns)
    client.CoreV1Api(kube["destination"]).create_namespaced_secret(
        ns, {"metadata": {"name": f"{APP}-auth"}, "stringData": {"password": OTHER_PASSWORD}}
    )
    return {}


def config_map_differs(kube: dict[str, client.ApiClient], ns: str) -> dict[str, Any]:
    app(kube, ns)
    client.CoreV1Api(kube["destination"]).create_namespaced_config_map(
        ns,
        {"metadata": {"name": f"{APP}-config"}, "data": {"redis.conf": "cluster-enabled no\n"}},
    )
    return {}


def service_differs(kube: dict[str, client.ApiClient], ns: str) -> dict[str, Any]:
    app(kube, ns)
    client.CoreV1Api(kube["destination"]).create_namespaced_service(
        ns,
        {
            "metadata": {"name": APP},
            "spec": {
                "clusterIP": "None",
                "selector": {"app": "other"},
                "ports": [{"name": "redis", "port": 6379}],
            },
        },
    )
    return {}


def leaked(text: str) -> list[str]:
    values = [SOURCE_PASSWORD, OTHER_PASSWORD]
    return [
        v for v in [*values, *(base64.b64encode(v.encode()).decode() for v in values)] if v in text
    ]


STATES: list[tuple[str, Setup, list[str]]] = [
    (
        "HPA in the source",
        source_hpa,
        [
            f"source HorizontalPodAutoscaler {{ns}}/{APP}-hpa",
            f"targets StatefulSet {APP}",
            "fix: delete it for the migration",
        ],
    ),
    (
        "HPA in the destination",
        destination_hpa,
        [f"destination HorizontalPodAutoscaler {{ns}}/{APP}-hpa", "fix: delete it"],
    ),
    (
        "KEDA ScaledObject",
        scaled_object,
        [f"source KEDA ScaledObject {{ns}}/{APP}-so", 'autoscaling.keda.sh/paused="true"', "fix:"],
    ),
    (
        "VPA not Off",
        vpa,
        [
            f"source VerticalPodAutoscaler {{ns}}/{APP}-vpa",
            "updateMode Recreate",
            "fix: set updateMode Off",
        ],
    ),
    (
        "controller ownerReference",
        owned,
        [
            f"source StatefulSet {{ns}}/{APP}",
            "controlled by ConfigMap operator",
            "then set owner_paused: true",
        ],
    ),
    (
        "Secret differs in the destination",
        secret_differs,
        [
            f"destination Secret {{ns}}/{APP}-auth",
            "its data differs (keys password)",
            "fix: delete it in the destination",
        ],
    ),
    (
        "ConfigMap differs in the destination",
        config_map_differs,
        [
            f"destination ConfigMap {{ns}}/{APP}-config",
            "its data differs (keys redis.conf)",
            "fix: delete it in the destination",
        ],
    ),
    (
        "Service selector differs in the destination",
        service_differs,
        [f"destination Service {{ns}}/{APP}", "its selector differs", "selector and ports"],
    ),
]


@pytest.mark.parametrize(("setup", "expected"), [c[1:] for c in STATES], ids=[c[0] for c in STATES])
async def test_preflight_refuses_another_writer_or_a_different_dependency(
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
        assert text.format(ns=namespace) in error.message, error.message
    assert not leaked(error.message), error.message


async def planned(env: WorkflowEnvironment, worker: WorkerProcess, request: dict[str, Any]) -> Plan:
    """A dry run: the plan, with no problem (else the run would have failed)."""
    result = await env.client.execute_workflow(
        "MigrateStatefulSet",
        {**request, "dry_run": True},
        id=f"dry-{uuid.uuid4().hex[:8]}",
        task_queue=worker.task_queue,
        result_type=MigrationResult,
    )
    assert result.dry_run and result.plan is not None
    assert not result.plan.problems, result.plan.problems
    return result.plan


def gitops(kube: dict[str, client.ApiClient], ns: str) -> dict[str, Any]:
    app(kube, ns)
    client.AppsV1Api(kube["source"]).patch_namespaced_stateful_set(
        APP,
        ns,
        {
            "metadata": {
                "labels": {
                    "kustomize.toolkit.fluxcd.io/name": "apps",
                    "kustomize.toolkit.fluxcd.io/namespace": "flux-system",
                },
                "annotations": {
                    "argocd.argoproj.io/tracking-id": f"shop:apps/StatefulSet:{ns}/{APP}"
                },
            }
        },
    )
    return {}


def owner_paused(kube: dict[str, client.ApiClient], ns: str) -> dict[str, Any]:
    owned(kube, ns)
    return {"owner_paused": True}


PASSING: list[tuple[str, Setup, list[str]]] = [
    (
        "GitOps-owned StatefulSet",
        gitops,
        [
            "Argo CD Application shop",
            "argocd app set shop --sync-policy none",
            "Flux Kustomization flux-system/apps",
            "flux suspend kustomization apps -n flux-system",
        ],
    ),
    ("owner paused", owner_paused, ["controlled by ConfigMap operator; taken as paused"]),
]


@pytest.mark.parametrize(
    ("setup", "expected"), [c[1:] for c in PASSING], ids=[c[0] for c in PASSING]
)
async def test_preflight_passes_with_a_warning(
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    shared_worker: WorkerProcess,
    namespace: str,
    setup: Setup,
    expected: list[str],
) -> None:
    fields = setup(kube, namespace)
    before = settled(kube, namespace)
    plan = await planned(temporal_env, shared_worker, base(namespace, **fields))
    warnings = "\n".join(plan.warnings)
    for text in expected:
        assert text in warnings, warnings
    assert snapshot(kube, namespace) == before


def test_ensure_dependencies_refuses_a_different_secret_without_its_value(
    kube: dict[str, client.ApiClient], namespace: str
) -> None:
    """The activity itself (preflight ran earlier; the Secret changed since): it fails,
    non-retryably, naming the Secret and its key, before it copies anything; once the
    Secret is the source's, it is used as present."""
    secret_differs(kube, namespace)
    request = MigrationRequest(**base(namespace))
    acts, env = MigrationActivities(kube), ActivityEnvironment()
    task = PlanInput(request=request, migration_id=f"mig-{uuid.uuid4().hex[:8]}")
    before = settled(kube, namespace)
    with pytest.raises(ApplicationError) as refusal:
        env.run(acts.ensure_dependencies, task)
    error = refusal.value
    assert error.type == "NotOurs" and error.non_retryable, error
    assert f"destination Secret {namespace}/{APP}-auth" in error.message
    assert "its data differs (keys password)" in error.message
    assert not leaked(str(error)) and not leaked(repr(error.details)), error
    assert snapshot(kube, namespace) == before, "a refusal copied something"
    client.CoreV1Api(kube["destination"]).patch_namespaced_secret(
        f"{APP}-auth", namespace, {"stringData": {"password": SOURCE_PASSWORD}}
    )
    result = env.run(acts.ensure_dependencies, task)
    actions = {(d.kind, d.name): d.action for d in result.dependencies}
    assert actions[("Secret", f"{APP}-auth")] == "present"
    assert actions[("ConfigMap", f"{APP}-config")] == "copied"
