"""Can the destination's pods be scheduled at all? The pod template's ``nodeSelector``,
required node affinity and tolerations against the destination's nodes, as the
scheduler's NodeAffinity, TaintToleration and NodeUnschedulable filters judge them
(pure, no I/O; resources, pod (anti-)affinity and topology spread are not judged).

No Ready node that fits is a **problem**, not a warning: the first moved pod would stay
Pending after the source gave its ordinal up, an identity down until ``pod_ready``
times out and a human puts it back (the downtime the migrator exists to avoid), and
what causes it is nearly always bad input (a misspelt or stale ``nodeSelector`` or
toleration in ``destination_overrides``, a pool the destination lacks). A destination
whose matching nodes an autoscaler makes only for a Pending pod (a node group scaled
to zero) gets the fix of starting one such node first; a node that fits and is only
full is no problem here (the quota and the scheduler judge resources). Pods of another
``schedulerName`` (EKS Fargate's, a batch scheduler) are not judged: that scheduler's
rules are not the default one's."""

from __future__ import annotations

from activities.kube import Obj, is_ready
from activities.preflight import affinity
from activities.preflight.findings import Findings

# The scheduler's NodeUnschedulable filter treats a cordoned node as tainted so.
UNSCHEDULABLE = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
_BLOCKING = ("NoSchedule", "NoExecute")


def tolerates(toleration: Obj, taint: Obj) -> bool:
    """One toleration against one taint (``v1.Toleration.ToleratesTaint``): an empty
    effect tolerates every effect, an empty key with ``Exists`` every taint, ``Exists``
    any value, ``Equal`` (the default operator) only the taint's own."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    operator = toleration.get("operator") or "Equal"
    if key and key != taint.get("key"):
        return False
    if operator == "Exists":
        return True
    if not key:
        return False  # an empty key needs Exists (the API refuses anything else)
    return operator == "Equal" and str(toleration.get("value") or "") == str(
        taint.get("value") or ""
    )


def untolerated(pod_spec: Obj, node: Obj) -> list[Obj]:
    """The node's NoSchedule and NoExecute taints (a cordon counted as one) the pod does
    not tolerate."""
    spec = node.get("spec") or {}
    taints = [t for t in spec.get("taints") or [] if t.get("effect") in _BLOCKING]
    if spec.get("unschedulable"):
        taints.append(UNSCHEDULABLE)
    tolerations = pod_spec.get("tolerations") or []
    return [t for t in taints if not any(tolerates(x, t) for x in tolerations)]


def selected(pod_spec: Obj, node: Obj) -> bool:
    """The node has every label of the pod's ``nodeSelector`` and meets a term of its
    required node affinity (terms ORed, the expressions of one ANDed)."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    wanted = pod_spec.get("nodeSelector") or {}
    if any(labels.get(k) != v for k, v in wanted.items()):
        return False
    terms = required_terms(pod_spec)
    return not terms or any(affinity.term_matches(t, node) for t in terms)


def required_terms(pod_spec: Obj) -> list[Obj]:
    node_affinity = (pod_spec.get("affinity") or {}).get("nodeAffinity") or {}
    required = node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    return list(required.get("nodeSelectorTerms") or [])


def fitting_nodes(pod_spec: Obj, nodes: list[Obj]) -> list[str]:
    """Names of the Ready nodes the pod may be scheduled on (before resources)."""
    return [
        str((n.get("metadata") or {}).get("name"))
        for n in nodes
        if is_ready(n) and selected(pod_spec, n) and not untolerated(pod_spec, n)
    ]


def _why_not(pod_spec: Obj, nodes: list[Obj]) -> str:
    """Why each node is out, counted by reason (names of neither labels' values nor
    taints' values: a reason names keys only)."""
    reasons: dict[str, int] = {}
    for node in nodes:
        if not is_ready(node):
            why = "not Ready"
        elif not selected(pod_spec, node):
            why = "not matched by the nodeSelector or required node affinity"
        else:
            keys = sorted({str(t.get("key")) for t in untolerated(pod_spec, node)})
            why = f"tainted {', '.join(keys)} (not tolerated)"
        reasons[why] = reasons.get(why, 0) + 1
    listed = "; ".join(f"{n} {why}" for why, n in sorted(reasons.items()))
    return f"of its {len(nodes)} node(s), {listed}" if nodes else "it has no node"


def check_scheduling(pods: Obj, nodes: list[Obj], context: str, f: Findings) -> None:
    """A problem when no Ready node of the destination fits the pod template of
    ``pods`` (the StatefulSet the destination's pods are made from)."""
    pod_spec = ((pods.get("spec") or {}).get("template") or {}).get("spec") or {}
    if pod_spec.get("schedulerName", "default-scheduler") != "default-scheduler":
        return  # another scheduler (EKS Fargate's, a batch one) places them: not judged
    if fitting_nodes(pod_spec, nodes):
        return
    wanted = []
    if selector := pod_spec.get("nodeSelector"):
        wanted.append(f"nodeSelector {', '.join(f'{k}={v}' for k, v in sorted(selector.items()))}")
    if terms := required_terms(pod_spec):
        wanted.append(f"required node affinity {affinity.describe(terms)}")
    asks = f" (it asks for {'; '.join(wanted)})" if wanted else ""
    f.problem(
        "destination pod template",
        f"no Ready node of {context} can run the destination's pods{asks}: "
        f"{_why_not(pod_spec, nodes)}; the first moved pod would stay Pending after the "
        "source gave it up",
        "fix the nodeSelector, node affinity or tolerations (destination_overrides), or "
        "give the destination a Ready node that has those labels and whose taints the "
        "pods tolerate (with an autoscaler that starts such nodes only for a Pending pod, "
        "start one first)",
    )
