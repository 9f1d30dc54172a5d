"""The objects a StatefulSet's pods need besides their volumes (Secrets, ConfigMaps,
ServiceAccount, headless Service, PodDisruptionBudgets), and the preflight check
that each is in the destination or can be copied there.

One present in the destination is trusted only if it is the source's
(``activities.sameness``): a Secret or ConfigMap with the same data, a Service with
the same selector, ports and clusterIP None. Values are compared inside this
activity only; what differs is named by key, never by value."""

from __future__ import annotations

from activities import manifests, sameness
from activities.kube import Kube, Obj
from activities.preflight.findings import Findings
from contract import Dependency, MigrationRequest


def dependency_names(source: Kube, sts: Obj) -> list[tuple[str, str]]:
    ns = sts["metadata"]["namespace"]
    template = sts["spec"]["template"]
    refs = manifests.referenced_dependencies(template.get("spec") or {})
    names = [
        (kind, n) for kind in ("Secret", "ConfigMap", "ServiceAccount") for n in sorted(refs[kind])
    ]
    if sts["spec"].get("serviceName"):
        names.append(("Service", sts["spec"]["serviceName"]))
    labels = (template.get("metadata") or {}).get("labels") or {}
    for pdb in source.pdbs(ns):
        if manifests.selector_matches((pdb.get("spec") or {}).get("selector") or {}, labels):
            names.append(("PodDisruptionBudget", pdb["metadata"]["name"]))
    return names


def check_dependencies(
    source: Kube, dest: Kube, sts: Obj, request: MigrationRequest, f: Findings
) -> list[Dependency]:
    """Each dependency present in the destination or copyable from the source."""
    out = []
    for kind, name in dependency_names(source, sts):
        present = dest.dependency(kind, request.target_namespace, name)
        original = source.dependency(kind, request.namespace, name)
        if present is not None:
            out.append(Dependency(kind=kind, name=name, action="present"))
            if original is not None:
                check_same(kind, name, original, present, dest.context, request, f)
        elif original is not None:
            out.append(Dependency(kind=kind, name=name, action="copy"))
        elif kind == "Service":
            f.warnings.append(
                f"headless Service {name} exists in neither cluster: pods will "
                "have no stable DNS names"
            )
        else:
            f.problem(
                f"{kind} {request.namespace}/{name}",
                "the pod template needs it but it exists in neither cluster",
                f"create the {kind} in the source (or the destination) first",
            )
    return out


def check_same(
    kind: str,
    name: str,
    original: Obj,
    present: Obj,
    context: str,
    request: MigrationRequest,
    f: Findings,
) -> None:
    """The destination's object of that name is the source's (the pods there use it)."""
    why = sameness.difference(kind, original, present)
    if why is None:
        return
    ns = request.target_namespace
    what = "selector and ports" if kind == "Service" else "data"
    f.problem(
        f"destination {kind} {ns}/{name}",
        f"exists but is not the source's: {why}",
        f"delete it in the destination (kubectl --context {context} -n {ns} delete "
        f"{kind.lower()} {name}) so the migration copies the source's, or give it the "
        f"source's {what}",
    )
