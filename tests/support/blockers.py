"""Real obstacles for a moving ordinal, made of Kubernetes objects: a
ValidatingAdmissionPolicy (with its binding) that denies claims in one namespace, a
ResourceQuota with no claim left, a finalizer that keeps a pod, and the probe that
says whether the apiserver enforces them yet (a dry-run claim create)."""

from __future__ import annotations

import uuid
from typing import Any

from kubernetes import client

from tests.support.waits import wait_for

# A claim update that adds this annotation is the PV controller completing a binding.
BIND_COMPLETED = "pv.kubernetes.io/bind-completed"
HOLD = "stsmigrate.dev/test-hold"


class ClaimPolicy:
    """A ValidatingAdmissionPolicy + binding in one cluster denying PersistentVolumeClaim
    ``operations`` in ``namespace`` with ``reason`` (Forbidden: a 403, Invalid: a 422);
    ``binding_only``: only the update by which the PV controller completes a binding."""

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        reason: str,
        operations: tuple[str, ...] = ("CREATE",),
        binding_only: bool = False,
    ) -> None:
        self.admission = client.AdmissionregistrationV1Api(api)
        self.name = f"deny-claims-{uuid.uuid4().hex[:8]}"
        spec: dict[str, Any] = {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": list(operations),
                        "resources": ["persistentvolumeclaims"],
                    }
                ]
            },
            "validations": [
                {
                    "expression": "false",
                    "message": f"claims are frozen in {namespace} by policy {self.name}",
                    "reason": reason,
                }
            ],
        }
        if binding_only:
            has = (
                "has({o}.metadata.annotations) && '"
                + BIND_COMPLETED
                + "' in {o}.metadata.annotations"
            )
            spec["matchConditions"] = [
                {
                    "name": "completes-a-binding",
                    "expression": f"{has.format(o='object')} && "
                    f"!(oldObject != null && {has.format(o='oldObject')})",
                }
            ]
        self.policy = {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": self.name},
            "spec": spec,
        }
        self.binding = {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": self.name},
            "spec": {
                "policyName": self.name,
                "validationActions": ["Deny"],
                "matchResources": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
                },
            },
        }

    def apply(self) -> None:
        self.admission.create_validating_admission_policy(self.policy)
        self.admission.create_validating_admission_policy_binding(self.binding)

    def remove(self) -> None:
        for delete in (
            self.admission.delete_validating_admission_policy_binding,
            self.admission.delete_validating_admission_policy,
        ):
            try:
                delete(self.name)
            except client.exceptions.ApiException as e:
                if e.status != 404:
                    raise


def claim_create_refused(api: client.ApiClient, namespace: str) -> int | None:
    """The status with which the apiserver refuses a (dry-run) claim create in
    ``namespace`` now; None if it would accept it. Nothing is stored."""
    probe = {
        "metadata": {"name": f"probe-{uuid.uuid4().hex[:8]}"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "nobody-provisions-this",
            "resources": {"requests": {"storage": "1Mi"}},
        },
    }
    try:
        client.CoreV1Api(api).create_namespaced_persistent_volume_claim(
            namespace, probe, dry_run="All"
        )
    except client.exceptions.ApiException as e:
        return int(e.status)
    return None


def wait_claim_create(api: client.ApiClient, namespace: str, refused: int | None) -> None:
    """Until a claim create in ``namespace`` is refused with ``refused`` (None: accepted):
    admission policies and quotas reach the apiserver's caches within a second or so."""
    wait_for(
        lambda: claim_create_refused(api, namespace) == refused,
        30,
        f"claim create in {namespace} answering {refused or 'accepted'}",
        interval=0.2,
    )


def full_claim_quota(api: client.ApiClient, namespace: str) -> str:
    """A ResourceQuota allowing no claim in ``namespace`` (its usage computed by the
    quota controller before it returns); its name."""
    core = client.CoreV1Api(api)
    name = f"no-claims-{uuid.uuid4().hex[:6]}"
    core.create_namespaced_resource_quota(
        namespace, {"metadata": {"name": name}, "spec": {"hard": {"persistentvolumeclaims": "0"}}}
    )
    wait_for(
        lambda: (
            (core.read_namespaced_resource_quota(name, namespace).status.used or {}).get(
                "persistentvolumeclaims"
            )
            is not None
        ),
        30,
        f"quota {name} computed",
    )
    return name


def hold_pod(api: client.ApiClient, namespace: str, pod: str) -> None:
    """A finalizer on ``pod``: deleted, it stays Terminating until ``release_pod``."""
    client.CoreV1Api(api).patch_namespaced_pod(pod, namespace, {"metadata": {"finalizers": [HOLD]}})


def release_pod(api: client.ApiClient, namespace: str, pod: str) -> None:
    try:
        client.CoreV1Api(api).patch_namespaced_pod(
            pod, namespace, {"metadata": {"finalizers": None}}
        )
    except client.exceptions.ApiException as e:
        if e.status != 404:
            raise
