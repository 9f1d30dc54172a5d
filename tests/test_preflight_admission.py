"""Pure parts of preflight's destination checks: a pod's effective cpu and memory as
a quota counts them, the ordinal's Pod built from the template, and the fix read
from a dry run's refusal."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from activities.kube import Refusal
from activities.preflight.admission import advice, ordinal_pod
from activities.preflight.resources import effective, quota_usage


def container(
    requests: dict[str, str] | None = None, limits: dict[str, str] | None = None, **extra: Any
) -> dict[str, Any]:
    resources = {
        **({"requests": requests} if requests else {}),
        **({"limits": limits} if limits else {}),
    }
    return {"name": "c", "image": "i", "resources": resources, **extra}


EFFECTIVE: list[tuple[str, dict[str, Any], str, dict[str, Decimal]]] = [
    (
        "containers summed",
        {"containers": [container({"cpu": "250m"}), container({"cpu": "500m", "memory": "1Gi"})]},
        "requests",
        {"cpu": Decimal("0.75"), "memory": Decimal(2**30)},
    ),
    (
        "an init container larger than the app wins",
        {"containers": [container({"cpu": "1"})], "initContainers": [container({"cpu": "2"})]},
        "requests",
        {"cpu": Decimal(2)},
    ),
    (
        "a smaller init container does not add",
        {"containers": [container({"cpu": "1"})], "initContainers": [container({"cpu": "500m"})]},
        "requests",
        {"cpu": Decimal(1)},
    ),
    (
        "sidecars add to the app and to later init containers",
        {
            "containers": [container({"cpu": "1"})],
            "initContainers": [
                container({"cpu": "1"}, restartPolicy="Always"),
                container({"cpu": "1500m"}),
            ],
        },
        "requests",
        {"cpu": Decimal("2.5")},
    ),
    (
        "a missing request defaults to the limit",
        {"containers": [container(limits={"memory": "64Mi"})]},
        "requests",
        {"memory": Decimal(64 * 2**20)},
    ),
    (
        "limits",
        {"containers": [container({"cpu": "1"}, {"cpu": "2"}), container(limits={"cpu": "1"})]},
        "limits",
        {"cpu": Decimal(3)},
    ),
    (
        "overhead added",
        {"containers": [container({"cpu": "1"})], "overhead": {"cpu": "100m"}},
        "requests",
        {"cpu": Decimal("1.1")},
    ),
]


@pytest.mark.parametrize(
    ("spec", "which", "expected"), [c[1:] for c in EFFECTIVE], ids=[c[0] for c in EFFECTIVE]
)
def test_effective(spec: dict[str, Any], which: str, expected: dict[str, Decimal]) -> None:
    assert effective(spec, which) == expected


def test_quota_usage_counts_every_name_a_quota_uses() -> None:
    spec = {"containers": [container({"cpu": "500m", "memory": "1Gi"}, {"cpu": "1"})]}
    assert quota_usage(spec, 3) == {
        "pods": 3,
        "count/pods": 3,
        "requests.cpu": Decimal("1.5"),
        "cpu": Decimal("1.5"),
        "requests.memory": 3 * Decimal(2**30),
        "memory": 3 * Decimal(2**30),
        "limits.cpu": 3,
    }


def test_ordinal_pod_has_the_controllers_names_and_claims() -> None:
    sts = {
        "metadata": {"name": "db"},
        "spec": {
            "serviceName": "db-headless",
            "template": {
                "metadata": {"labels": {"app": "db"}},
                "spec": {
                    "serviceAccountName": "db-sa",
                    "containers": [container()],
                    "volumes": [{"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {}}],
                },
            },
            "volumeClaimTemplates": [{"metadata": {"name": "data"}}],
        },
    }
    pod = ordinal_pod(sts, "shop", 4, "default")
    assert pod["metadata"]["name"] == "db-4" and pod["metadata"]["namespace"] == "shop"
    assert pod["metadata"]["labels"] == {
        "app": "db",
        "statefulset.kubernetes.io/pod-name": "db-4",
        "apps.kubernetes.io/pod-index": "4",
    }
    assert pod["spec"]["hostname"] == "db-4" and pod["spec"]["subdomain"] == "db-headless"
    assert pod["spec"]["volumes"] == [
        {"name": "cfg", "configMap": {}},
        {"name": "data", "persistentVolumeClaim": {"claimName": "data-db-4"}},
    ]
    assert pod["spec"]["serviceAccountName"] == "default"
    assert sts["spec"]["template"]["spec"]["volumes"][0] == {"name": "data", "emptyDir": {}}


ADVICE: list[tuple[str, int, str, bool, str]] = [
    (
        "PodSecurity",
        403,
        'pods "db-1" is forbidden: violates PodSecurity "restricted:latest": runAsNonRoot != true',
        True,
        "enforces PodSecurity restricted:latest",
    ),
    (
        "quota",
        403,
        'pods "db-1" is forbidden: exceeded quota: tight, requested: cpu=1',
        True,
        "raise ResourceQuota shop/tight",
    ),
    (
        "PriorityClass",
        403,
        'pods "db-1" is forbidden: no PriorityClass with name high was found',
        True,
        "create PriorityClass high",
    ),
    (
        "RuntimeClass",
        403,
        'pod rejected: RuntimeClass "gvisor" not found',
        True,
        "create RuntimeClass gvisor",
    ),
    (
        "LimitRange",
        403,
        'pods "db-1" is forbidden: maximum cpu usage per Container is 100m, but limit is 1',
        True,
        "LimitRange in shop sets a maximum cpu per Container",
    ),
    (
        "admission policy",
        422,
        "pods \"db-1\" is forbidden: ValidatingAdmissionPolicy 'no-db' with binding 'b' denied",
        True,
        "ValidatingAdmissionPolicy no-db",
    ),
    (
        "webhook",
        400,
        'admission webhook "v.example.com" denied the request: no',
        True,
        "admission webhook v.example.com denies it",
    ),
    (
        "webhook without dry run",
        400,
        'admission webhook "v.example.com" does not support dry run',
        False,
        "could not be dry-run",
    ),
    (
        "RBAC",
        403,
        'pods is forbidden: User "w" cannot create resource "pods"',
        False,
        "grant the worker create pods",
    ),
    ("anything else", 422, "spec.foo: Invalid value", True, "make the destination accept the Pod"),
]


@pytest.mark.parametrize(
    ("status", "message", "blocking", "fix"), [c[1:] for c in ADVICE], ids=[c[0] for c in ADVICE]
)
def test_advice(status: int, message: str, blocking: bool, fix: str) -> None:
    said = advice(Refusal(status, "", message), "shop", "Pod")
    assert said.blocking is blocking
    assert fix in said.fix, said.fix
