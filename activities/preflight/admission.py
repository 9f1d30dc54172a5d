"""Pure parts of the destination's dry runs: the Pod the destination's StatefulSet
controller will create for an ordinal, and what to tell the operator about a
refusal (the fix is read from the API server's Status message)."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

from activities.kube import Obj, Refusal

POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"


def ordinal_pod(sts: Obj, namespace: str, ordinal: int, service_account: str | None) -> Obj:
    """Pod ``<sts>-<ordinal>`` as the StatefulSet controller makes it from the template:
    its identity labels, hostname and subdomain, and one claim volume per claim
    template (replacing a template volume of the same name, as the controller does).

    ``service_account``: the name to use instead of the template's, for an account
    the run will copy but that is not in the destination yet (ServiceAccount
    admission refuses a pod whose account does not exist)."""
    name = sts["metadata"]["name"]
    pod_name = f"{name}-{ordinal}"
    template = copy.deepcopy((sts.get("spec") or {}).get("template") or {})
    meta = template.get("metadata") or {}
    spec = template.get("spec") or {}
    claims = [
        vct["metadata"]["name"] for vct in (sts.get("spec") or {}).get("volumeClaimTemplates") or []
    ]
    volumes = [v for v in spec.get("volumes") or [] if v.get("name") not in claims]
    volumes += [
        {"name": t, "persistentVolumeClaim": {"claimName": f"{t}-{pod_name}"}} for t in claims
    ]
    spec["volumes"] = volumes
    spec["hostname"] = pod_name
    if (sts.get("spec") or {}).get("serviceName"):
        spec["subdomain"] = sts["spec"]["serviceName"]
    if service_account is not None:
        spec["serviceAccountName"] = service_account
        spec.pop("serviceAccount", None)
    labels = {
        **(meta.get("labels") or {}),
        POD_NAME_LABEL: pod_name,
        POD_INDEX_LABEL: str(ordinal),
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name,
            "namespace": namespace,
            "labels": labels,
            "annotations": dict(meta.get("annotations") or {}),
        },
        "spec": spec,
    }


@dataclass(frozen=True)
class Advice:
    """What a refusal means for the run: ``blocking`` (a problem) or a warning."""

    blocking: bool
    fix: str


# (pattern of the Status message, the fix; {0}.. are the pattern's groups, {ns} the
# destination namespace, {kind} the object's kind). First match wins.
_ADVICE: list[tuple[str, str]] = [
    (
        r'violates PodSecurity "([^"]+)"',
        "the destination namespace {ns} enforces PodSecurity {0}: make the pod template "
        "meet it, or label the namespace (kubectl label namespace {ns} "
        "pod-security.kubernetes.io/enforce=<a level the pod meets>)",
    ),
    (
        r"exceeded quota: ([\w.-]+)",
        "raise ResourceQuota {ns}/{0} in the destination or free some room",
    ),
    (
        r"no PriorityClass with name ([\w.-]+)",
        "create PriorityClass {0} in the destination (as in the source)",
    ),
    (
        r'RuntimeClass "([\w.-]+)" not found',
        "create RuntimeClass {0} in the destination, with a handler its nodes have",
    ),
    (
        r"(maximum|minimum) (cpu|memory|ephemeral-storage|storage) usage per "
        r"(Container|Pod|PersistentVolumeClaim)",
        "the destination's LimitRange in {ns} sets a {0} {1} per {2}: change it "
        "(kubectl -n {ns} get limitrange) or the template's requests and limits",
    ),
    (
        r"ValidatingAdmissionPolicy '([^']+)'",
        "ValidatingAdmissionPolicy {0} of the destination denies it: change the policy "
        "or its binding, or the source object so it passes",
    ),
    (
        r'admission webhook "([^"]+)" denied the request',
        "the destination's admission webhook {0} denies it: ask its owner, or change "
        "the source object so it passes",
    ),
]


def advice(refusal: Refusal, ns: str, kind: str) -> Advice:
    """The fix for a dry run's refusal."""
    message = refusal.message
    if "does not support dry run" in message:
        # A webhook with sideEffects Unknown/Some: the real request may still pass.
        return Advice(False, "the webhook could not be dry-run; check it admits the object")
    if refusal.status == 403 and "cannot create resource" in message:
        return Advice(
            False,
            f"grant the worker create {kind.lower()}s in {ns} of the destination (a dry "
            "run needs the create verb), so preflight can check what admission refuses",
        )
    for pattern, fix in _ADVICE:
        found = re.search(pattern, message)
        if found:
            return Advice(True, fix.format(*found.groups(), ns=ns, kind=kind))
    return Advice(
        True,
        f"make the destination accept the {kind} (its admission configuration in {ns}), "
        "or change the source object so it passes",
    )
