"""What one pod of a template asks of a ResourceQuota (pure): the effective requests
and limits of cpu and memory by Kubernetes' rule (``resourcehelper.PodRequests``):
the larger of the app containers (plus restartable init containers, the sidecars)
and of each init container (plus the sidecars started before it)."""

from __future__ import annotations

from decimal import Decimal

from kubernetes.utils import parse_quantity

from activities.kube import Obj

RESOURCES = ("cpu", "memory")


def _amounts(container: Obj, which: str) -> dict[str, Decimal]:
    resources = container.get("resources") or {}
    limits = resources.get("limits") or {}
    # The API defaults a missing request to the limit.
    given = {**limits, **(resources.get("requests") or {})} if which == "requests" else limits
    return {r: Decimal(parse_quantity(given[r])) for r in RESOURCES if r in given}


def _add(a: dict[str, Decimal], b: dict[str, Decimal]) -> dict[str, Decimal]:
    return {r: a.get(r, Decimal(0)) + b.get(r, Decimal(0)) for r in {*a, *b}}


def _max(a: dict[str, Decimal], b: dict[str, Decimal]) -> dict[str, Decimal]:
    return {r: max(a.get(r, Decimal(0)), b.get(r, Decimal(0))) for r in {*a, *b}}


def effective(pod_spec: Obj, which: str) -> dict[str, Decimal]:
    """The pod's effective ``which`` ("requests" or "limits") of cpu and memory."""
    total: dict[str, Decimal] = {}
    for container in pod_spec.get("containers") or []:
        total = _add(total, _amounts(container, which))
    sidecars: dict[str, Decimal] = {}
    init_peak: dict[str, Decimal] = {}
    for container in pod_spec.get("initContainers") or []:
        amounts = _amounts(container, which)
        if container.get("restartPolicy") == "Always":
            sidecars = _add(sidecars, amounts)
            init_peak = _max(init_peak, sidecars)
        else:
            init_peak = _max(init_peak, _add(amounts, sidecars))
    pod = _max(_add(total, sidecars), init_peak)
    overhead = {r: Decimal(parse_quantity(v)) for r, v in (pod_spec.get("overhead") or {}).items()}
    return _add(pod, {r: overhead[r] for r in RESOURCES if r in overhead})


def quota_usage(pod_spec: Obj, pods: int) -> dict[str, Decimal]:
    """What ``pods`` pods of this spec add to a quota, by quota resource name (``cpu``
    and ``memory`` are the quota's names for the requests)."""
    requests, limits = effective(pod_spec, "requests"), effective(pod_spec, "limits")
    out = {"pods": Decimal(pods), "count/pods": Decimal(pods)}
    for r in RESOURCES:
        if r in requests:
            out[f"requests.{r}"] = out[r] = requests[r] * pods
        if r in limits:
            out[f"limits.{r}"] = limits[r] * pods
    return out
