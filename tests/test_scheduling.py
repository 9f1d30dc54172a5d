"""The destination's pod template against its nodes, as the scheduler's NodeAffinity,
TaintToleration and NodeUnschedulable filters judge them (no cluster needed)."""

from __future__ import annotations

from typing import Any

import pytest

from activities.preflight.findings import Findings
from activities.preflight.scheduling import (
    check_scheduling,
    fitting_nodes,
    tolerates,
    untolerated,
)

READY = [{"type": "Ready", "status": "True"}]


def node(
    name: str,
    labels: dict[str, str] | None = None,
    taints: list[dict[str, Any]] | None = None,
    *,
    ready: bool = True,
    cordoned: bool = False,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"taints": taints or []}
    if cordoned:
        spec["unschedulable"] = True
    conditions = READY if ready else [{"type": "Ready", "status": "False"}]
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
        "spec": spec,
        "status": {"conditions": conditions},
    }


def taint(key: str, effect: str = "NoSchedule", value: str = "") -> dict[str, Any]:
    return {"key": key, "effect": effect, **({"value": value} if value else {})}


def tol(key: str = "", op: str = "Equal", value: str = "", effect: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"operator": op}
    for k, v in (("key", key), ("value", value), ("effect", effect)):
        if v:
            out[k] = v
    return out


TOLERATIONS: list[tuple[str, dict[str, Any], dict[str, Any], bool]] = [
    ("equal value", tol("pool", "Equal", "redis"), taint("pool", value="redis"), True),
    ("equal other value", tol("pool", "Equal", "web"), taint("pool", value="redis"), False),
    ("default operator is Equal", {"key": "pool", "value": "x"}, taint("pool", value="x"), True),
    ("equal without value", tol("pool"), taint("pool"), True),
    ("exists any value", tol("pool", "Exists"), taint("pool", value="redis"), True),
    ("other key", tol("zone", "Exists"), taint("pool"), False),
    ("empty key exists tolerates all", tol("", "Exists"), taint("anything", "NoExecute"), True),
    ("empty key equal tolerates none", tol("", "Equal"), taint("pool"), False),
    ("same effect", tol("pool", "Exists", effect="NoSchedule"), taint("pool"), True),
    (
        "other effect",
        tol("pool", "Exists", effect="NoExecute"),
        taint("pool", "NoSchedule"),
        False,
    ),
    ("empty effect any effect", tol("pool", "Exists"), taint("pool", "NoExecute"), True),
    ("unknown operator", tol("pool", "Gt", "1"), taint("pool", value="1"), False),
]


@pytest.mark.parametrize(
    ("toleration", "the_taint", "expected"),
    [c[1:] for c in TOLERATIONS],
    ids=[c[0] for c in TOLERATIONS],
)
def test_a_toleration_tolerates_a_taint_as_kubernetes_does(
    toleration: dict[str, Any], the_taint: dict[str, Any], expected: bool
) -> None:
    assert tolerates(toleration, the_taint) is expected


def test_prefer_no_schedule_never_blocks_and_a_cordon_does() -> None:
    soft = node("n", taints=[taint("pool", "PreferNoSchedule")])
    assert untolerated({}, soft) == []
    cordoned = node("c", cordoned=True)
    assert [t["key"] for t in untolerated({}, cordoned)] == ["node.kubernetes.io/unschedulable"]
    tolerant = {"tolerations": [tol("node.kubernetes.io/unschedulable", "Exists")]}
    assert untolerated(tolerant, cordoned) == []


NODES = [
    node("a", {"pool": "redis", "zone": "z1"}, [taint("dedicated", value="redis")]),
    node("b", {"pool": "web", "zone": "z2"}),
    node("c", {"pool": "redis", "zone": "z3"}, ready=False),
    node("d", {"zone": "z1"}, cordoned=True),
]


def affinity(*expressions: dict[str, Any]) -> dict[str, Any]:
    terms = [{"matchExpressions": [e]} for e in expressions]  # ORed
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}
        }
    }


def expr(key: str, op: str, *values: str) -> dict[str, Any]:
    return {"key": key, "operator": op, **({"values": list(values)} if values else {})}


REDIS = {"tolerations": [tol("dedicated", "Equal", "redis", "NoSchedule")]}
PODS: list[tuple[str, dict[str, Any], list[str]]] = [
    ("no constraints: the untainted Ready node", {}, ["b"]),
    ("tolerating the taint", REDIS, ["a", "b"]),
    ("nodeSelector without the toleration", {"nodeSelector": {"pool": "redis"}}, []),
    ("nodeSelector and toleration", {"nodeSelector": {"pool": "redis"}, **REDIS}, ["a"]),
    ("a label no node has", {"nodeSelector": {"pool": "kafka"}, **REDIS}, []),
    ("affinity In", {"affinity": affinity(expr("zone", "In", "z2", "z3"))}, ["b"]),
    ("affinity NotIn", {"affinity": affinity(expr("zone", "NotIn", "z2")), **REDIS}, ["a"]),
    ("affinity Exists", {"affinity": affinity(expr("pool", "Exists")), **REDIS}, ["a", "b"]),
    ("affinity DoesNotExist", {"affinity": affinity(expr("pool", "DoesNotExist"))}, []),
    (
        "affinity terms ORed",
        {"affinity": affinity(expr("zone", "In", "z1"), expr("pool", "In", "web")), **REDIS},
        ["a", "b"],
    ),
    (
        "selector and affinity ANDed",
        {"nodeSelector": {"pool": "web"}, "affinity": affinity(expr("zone", "In", "z1"))},
        [],
    ),
]


@pytest.mark.parametrize(("pod", "expected"), [c[1:] for c in PODS], ids=[c[0] for c in PODS])
def test_the_nodes_a_pod_fits(pod: dict[str, Any], expected: list[str]) -> None:
    assert fitting_nodes(pod, NODES) == expected


def sts(pod_spec: dict[str, Any]) -> dict[str, Any]:
    return {"spec": {"template": {"spec": pod_spec}}}


def test_no_node_that_fits_is_a_problem_that_says_why() -> None:
    f = Findings()
    check_scheduling(sts({"nodeSelector": {"pool": "redis"}, **REDIS}), NODES, "b", f)
    assert not f.problems
    check_scheduling(sts({"nodeSelector": {"pool": "redis"}}), NODES, "b", f)
    (problem,) = f.problems
    assert problem.object == "destination pod template"
    assert "no Ready node of b can run the destination's pods" in problem.message
    assert "(it asks for nodeSelector pool=redis)" in problem.message
    assert "of its 4 node(s), 1 not Ready; 2 not matched" in problem.message
    assert "1 tainted dedicated (not tolerated)" in problem.message
    assert "the first moved pod would stay Pending" in problem.message
    assert "destination_overrides" in problem.fix
    # A taint's value never appears (it can name anything); its key does.
    assert "redis" not in problem.message.replace("pool=redis", "")


def test_a_destination_without_nodes_fits_no_pod() -> None:
    f = Findings()
    check_scheduling(sts({}), [], "b", f)
    assert "can run the destination's pods: it has no node;" in f.problems[0].message


def test_pods_of_another_scheduler_are_not_judged() -> None:
    pods = {
        "spec": {
            "template": {
                "spec": {"schedulerName": "fargate-scheduler", "nodeSelector": {"pool": "x"}}
            }
        }
    }
    f = Findings()
    check_scheduling(pods, [], "destination", f)
    assert f.problems == []
    pods["spec"]["template"]["spec"]["schedulerName"] = "default-scheduler"
    check_scheduling(pods, [], "destination", f)
    assert len(f.problems) == 1 and "it has no node" in f.problems[0].message
