"""A PersistentVolume's required node affinity against a cluster's nodes, as the
scheduler evaluates it (pure, no I/O): ``nodeSelectorTerms`` are ORed, the
``matchExpressions`` and ``matchFields`` of one term ANDed, and an empty term
matches no node (k8s.io/component-helpers/scheduling/corev1/nodeaffinity)."""

from __future__ import annotations

from activities.kube import Obj

HOSTNAME = "kubernetes.io/hostname"


def required_terms(pv: Obj) -> list[Obj]:
    """The PV's ``nodeAffinity.required.nodeSelectorTerms`` (empty: any node will do)."""
    affinity = ((pv.get("spec") or {}).get("nodeAffinity") or {}).get("required") or {}
    return list(affinity.get("nodeSelectorTerms") or [])


def _integer(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def requirement_matches(expr: Obj, fields: dict[str, str]) -> bool:
    """One NodeSelectorRequirement against a node's labels (or its fields)."""
    key, op = expr.get("key") or "", expr.get("operator") or ""
    values = [str(v) for v in expr.get("values") or []]
    present, value = key in fields, fields.get(key)
    if op == "In":
        return present and value in values
    if op == "NotIn":
        return not present or value not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt") and len(values) == 1:
        have, bound = _integer(value), _integer(values[0])
        if have is None or bound is None:
            return False
        return have > bound if op == "Gt" else have < bound
    return False  # an operator the API would have refused: match nothing, like the scheduler


def term_matches(term: Obj, node: Obj) -> bool:
    meta = node.get("metadata") or {}
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    fields = {"metadata.name": str(meta.get("name") or "")}
    expressions, field_exprs = term.get("matchExpressions") or [], term.get("matchFields") or []
    if not expressions and not field_exprs:
        return False
    return all(requirement_matches(e, labels) for e in expressions) and all(
        requirement_matches(e, fields) for e in field_exprs
    )


def matching_nodes(terms: list[Obj], nodes: list[Obj]) -> list[str]:
    """Names of the nodes some term matches (every node when there are no terms)."""
    return [
        str((n.get("metadata") or {}).get("name"))
        for n in nodes
        if not terms or any(term_matches(t, n) for t in terms)
    ]


def _requirement(expr: Obj) -> str:
    key, op = expr.get("key") or "", expr.get("operator") or ""
    values = [str(v) for v in expr.get("values") or []]
    if key == HOSTNAME and op == "In":
        return ", ".join(values)  # "pinned to node-a, node-b" reads better than the rule
    if op in ("Exists", "DoesNotExist"):
        return f"{key} {op}"
    return f"{key} {op} [{', '.join(values)}]"


def describe(terms: list[Obj]) -> str:
    """The terms as a reader would write them: ``zone In [a] and disk Exists or ...``."""
    return " or ".join(
        " and ".join(
            _requirement(e)
            for e in [*(t.get("matchExpressions") or []), *(t.get("matchFields") or [])]
        )
        or "(an empty term)"
        for t in terms
    )
