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
    names += [
        ("Secret", n) for n in account_pull_secrets(source, sts) if ("Secret", n) not in names
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


def _account(sts: Obj) -> str:
    spec = sts["spec"]["template"].get("spec") or {}
    return str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default")


def _pull_secrets(account: Obj | None) -> list[str]:
    return sorted(
        {str(r["name"]) for r in (account or {}).get("imagePullSecrets") or [] if r.get("name")}
    )


def account_pull_secrets(source: Kube, sts: Obj) -> list[str]:
    """The imagePullSecrets of the pods' own ServiceAccount in the source: the account is
    copied with its references, so the Secrets they name are dependencies too (the
    kubelet pulls the images with them). The "default" account is the destination's own."""
    account = _account(sts)
    if account == "default":
        return []
    return _pull_secrets(source.dependency("ServiceAccount", sts["metadata"]["namespace"], account))


def check_default_account_pull_secrets(
    source: Kube, dest: Kube, sts: Obj, request: MigrationRequest, f: Findings
) -> None:
    """Pods of the "default" account pull with its imagePullSecrets, which are each
    cluster's own: warn when the destination's lacks some the source's has."""
    if _account(sts) != "default":
        return
    here = _pull_secrets(source.dependency("ServiceAccount", request.namespace, "default"))
    there = set(
        _pull_secrets(dest.dependency("ServiceAccount", request.target_namespace, "default"))
    )
    missing = [n for n in here if n not in there]
    if missing:
        f.warnings.append(
            f"ServiceAccount default of {request.namespace} in {source.context} pulls images "
            f"with {', '.join(missing)}, which the destination's default account of "
            f"{request.target_namespace} does not name: the moved pods may fail to pull "
            "their images (add them to it, or give the pods an account of their own)"
        )
