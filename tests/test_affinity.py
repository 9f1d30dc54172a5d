"""A PV's required node affinity against node labels, as the scheduler evaluates it."""

from __future__ import annotations

from typing import Any

import pytest

from activities.preflight.affinity import describe, matching_nodes, required_terms

ZONE = "topology.kubernetes.io/zone"


def node(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}}


def expr(key: str, op: str, *values: str) -> dict[str, Any]:
    return {"key": key, "operator": op, **({"values": list(values)} if values else {})}


NODES = [
    node("a-1", **{ZONE: "zone-a", "disk": "ssd", "gen": "3"}),
    node("b-1", **{ZONE: "zone-b", "gen": "5"}),
    node("b-2", **{ZONE: "zone-b"}),
]

CASES: list[tuple[str, list[dict[str, Any]], list[str]]] = [
    ("In", [{"matchExpressions": [expr(ZONE, "In", "zone-a")]}], ["a-1"]),
    ("In, none", [{"matchExpressions": [expr(ZONE, "In", "zone-c")]}], []),
    (
        "NotIn (absent label matches)",
        [{"matchExpressions": [expr("disk", "NotIn", "ssd")]}],
        ["b-1", "b-2"],
    ),
    ("Exists", [{"matchExpressions": [expr("disk", "Exists")]}], ["a-1"]),
    ("DoesNotExist", [{"matchExpressions": [expr("gen", "DoesNotExist")]}], ["b-2"]),
    ("Gt", [{"matchExpressions": [expr("gen", "Gt", "4")]}], ["b-1"]),
    ("Lt", [{"matchExpressions": [expr("gen", "Lt", "4")]}], ["a-1"]),
    ("Gt, not a number", [{"matchExpressions": [expr("gen", "Gt", "four")]}], []),
    (
        "expressions ANDed",
        [{"matchExpressions": [expr(ZONE, "In", "zone-b"), expr("gen", "Exists")]}],
        ["b-1"],
    ),
    (
        "terms ORed",
        [
            {"matchExpressions": [expr("disk", "Exists")]},
            {"matchExpressions": [expr("gen", "DoesNotExist")]},
        ],
        ["a-1", "b-2"],
    ),
    ("matchFields on the name", [{"matchFields": [expr("metadata.name", "In", "b-2")]}], ["b-2"]),
    (
        "fields and labels ANDed",
        [
            {
                "matchExpressions": [expr(ZONE, "In", "zone-b")],
                "matchFields": [expr("metadata.name", "NotIn", "b-2")],
            }
        ],
        ["b-1"],
    ),
    ("an empty term matches nothing", [{}], []),
    ("an unknown operator matches nothing", [{"matchExpressions": [expr(ZONE, "Near", "x")]}], []),
    ("no terms: every node", [], ["a-1", "b-1", "b-2"]),
]


@pytest.mark.parametrize(("terms", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_matching_nodes(terms: list[dict[str, Any]], expected: list[str]) -> None:
    assert matching_nodes(terms, NODES) == expected


def test_required_terms_of_a_pv() -> None:
    terms = [{"matchExpressions": [expr(ZONE, "In", "zone-a")]}]
    pv = {"spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": terms}}}}
    assert required_terms(pv) == terms
    assert required_terms({"spec": {}}) == []


def test_describe_names_the_expressions() -> None:
    terms = [
        {"matchExpressions": [expr(ZONE, "In", "zone-a"), expr("disk", "Exists")]},
        {"matchExpressions": [expr("kubernetes.io/hostname", "In", "n-1", "n-2")]},
    ]
    assert describe(terms) == f"{ZONE} In [zone-a] and disk Exists or n-1, n-2"
