"""Preflight: read both clusters, check everything a migration needs, build the plan.

Read-only by contract (the activity is ``plan_migration``). Every problem is
collected, each naming the object and the fix, so an operator fixes them all in
one round; the workflow refuses to change anything while any remain.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from kubernetes.utils import parse_quantity

from activities import manifests
from activities.kube import Kube, Obj, is_ready, selector_string, slice_of
from contract import (
    Dependency,
    MigrationRequest,
    OrdinalPlan,
    Plan,
    Problem,
    VolumePlan,
)

MIN_MINOR = 27  # .spec.ordinals: beta and on by default in 1.27, GA in 1.31

# (verb, resource, API group, namespaced) the run needs, per side.
SOURCE_PERMISSIONS = [
    ("get", "statefulsets", "apps", True),
    ("patch", "statefulsets", "apps", True),
    ("list", "pods", "", True),
    ("watch", "pods", "", True),
    ("get", "pods", "", True),
    ("get", "persistentvolumeclaims", "", True),
    ("delete", "persistentvolumeclaims", "", True),
    ("list", "persistentvolumeclaims", "", True),
    ("get", "persistentvolumes", "", False),
    ("patch", "persistentvolumes", "", False),
    ("list", "volumeattachments", "storage.k8s.io", False),
    ("watch", "volumeattachments", "storage.k8s.io", False),
    ("get", "secrets", "", True),
    ("get", "configmaps", "", True),
    ("get", "services", "", True),
    ("get", "serviceaccounts", "", True),
    ("list", "poddisruptionbudgets", "policy", True),
]
DESTINATION_PERMISSIONS = [
    ("get", "statefulsets", "apps", True),
    ("create", "statefulsets", "apps", True),
    ("patch", "statefulsets", "apps", True),
    ("list", "pods", "", True),
    ("watch", "pods", "", True),
    ("get", "pods", "", True),
    ("get", "persistentvolumeclaims", "", True),
    ("create", "persistentvolumeclaims", "", True),
    ("list", "persistentvolumeclaims", "", True),
    ("watch", "persistentvolumeclaims", "", True),
    ("get", "persistentvolumes", "", False),
    ("create", "persistentvolumes", "", False),
    ("get", "storageclasses", "storage.k8s.io", False),
    ("get", "secrets", "", True),
    ("create", "secrets", "", True),
    ("get", "configmaps", "", True),
    ("create", "configmaps", "", True),
    ("get", "services", "", True),
    ("create", "services", "", True),
    ("get", "serviceaccounts", "", True),
    ("create", "serviceaccounts", "", True),
    ("get", "poddisruptionbudgets", "policy", True),
    ("create", "poddisruptionbudgets", "policy", True),
    ("list", "resourcequotas", "", True),
]


def minor_version(git_version: str) -> tuple[int, int] | None:
    match = re.match(r"v?(\d+)\.(\d+)", git_version)
    return (int(match[1]), int(match[2])) if match else None


def _templates(sts: Obj) -> dict[str, str | None]:
    return {
        vct["metadata"]["name"]: (vct.get("spec") or {}).get("storageClassName")
        for vct in (sts.get("spec") or {}).get("volumeClaimTemplates") or []
    }


def _affinity_hosts(pv: Obj) -> set[str]:
    terms = (((pv.get("spec") or {}).get("nodeAffinity") or {}).get("required") or {}).get(
        "nodeSelectorTerms"
    ) or []
    hosts: set[str] = set()
    for term in terms:
        for expr in term.get("matchExpressions") or []:
            if expr.get("key") == "kubernetes.io/hostname" and expr.get("operator") == "In":
                hosts.update(expr.get("values") or [])
    return hosts


@dataclass
class _Findings:
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def problem(self, obj: str, message: str, fix: str) -> None:
        self.problems.append(Problem(object=obj, message=message, fix=fix))


def build_plan(
    source: Kube | None, destination: Kube | None, request: MigrationRequest, migration_id: str
) -> Plan:
    """Read both clusters and return the plan with every problem found.

    ``None`` for a side means the worker has no such context; that is a problem too.
    """
    found = _Findings()
    ns, tns, name = request.namespace, request.target_namespace, request.statefulset
    plan: dict[str, Any] = {
        "migration_id": migration_id,
        "source_context": request.source_context,
        "destination_context": request.destination_context,
        "namespace": ns,
        "destination_namespace": tns,
        "statefulset": name,
        "fix_retention_policy": False,
    }
    for side, kube, context in (
        ("source", source, request.source_context),
        ("destination", destination, request.destination_context),
    ):
        if kube is None:
            found.problem(
                f"{side} context {context!r}",
                "the worker's kubeconfig has no such context",
                "name a context the worker holds, or add it to the worker's "
                "kubeconfig (STSMIGRATE_KUBECONFIG)",
            )
    if source is None or destination is None:
        return Plan(**plan, problems=found.problems)
    if request.source_context == request.destination_context and ns == tns:
        found.problem(
            "request",
            "source and destination are the same StatefulSet",
            "name another destination context or namespace",
        )
        return Plan(**plan, problems=found.problems)

    for side, kube in (("source", source), ("destination", destination)):
        version = kube.version()
        plan[f"{side}_version"] = version
        parsed = minor_version(version)
        if parsed is None or parsed < (1, MIN_MINOR):
            found.problem(
                f"{side} cluster {kube.context}",
                f"Kubernetes {version} is too old: StatefulSet .spec.ordinals needs "
                f"1.{MIN_MINOR} or later",
                "upgrade the control plane to 1.27+ (1.31+ recommended, where the feature is GA)",
            )

    # Permissions before anything else is read: without them the reads below would
    # only fail one by one, while this names every missing permission at once.
    for side, kube, perms, namespace in (
        ("source", source, SOURCE_PERMISSIONS, ns),
        ("destination", destination, DESTINATION_PERMISSIONS, tns),
    ):
        missing = [
            f"{verb} {resource}"
            for verb, resource, group, namespaced in perms
            if not kube.can(verb, resource, group, namespace if namespaced else None)
        ]
        if missing:
            found.problem(
                f"{side} cluster {kube.context}",
                f"the worker's credentials may not: {', '.join(missing)}",
                "grant them (deploy/rbac.yaml has the role this run needs)",
            )
    if found.problems:
        return Plan(**plan, problems=found.problems)

    namespace_exists = destination.namespace(tns) is not None
    if not namespace_exists:
        found.problem(
            f"destination namespace {tns}",
            f"does not exist in {destination.context}",
            f"kubectl --context {destination.context} create namespace {tns}",
        )

    sts = source.statefulset(ns, name)
    if sts is None:
        found.problem(
            f"source StatefulSet {ns}/{name}",
            f"not found in {source.context}",
            "check the StatefulSet name, its namespace and the source context",
        )
        return Plan(**plan, problems=found.problems, warnings=found.warnings)

    start, replicas = slice_of(sts)
    plan.update(source_start=start, source_replicas=replicas)
    plan["service_name"] = sts["spec"].get("serviceName") or ""
    templates = _templates(sts)
    plan["claim_templates"] = list(templates)
    _check_source_health(source, sts, start, replicas, found)

    when_scaled = (sts["spec"].get("persistentVolumeClaimRetentionPolicy") or {}).get(
        "whenScaled"
    ) or "Retain"
    if when_scaled == "Delete":
        if request.fix_retention_policy:
            plan["fix_retention_policy"] = True
            found.warnings.append(
                "persistentVolumeClaimRetentionPolicy.whenScaled will be set "
                "from Delete to Retain on the source StatefulSet"
            )
        else:
            found.problem(
                f"source StatefulSet {ns}/{name}",
                "persistentVolumeClaimRetentionPolicy.whenScaled is Delete: scaling "
                "down would delete the claims of the ordinals being moved",
                "set whenScaled to Retain, or pass fix_retention_policy=true to let "
                "the migration do it",
            )

    end = start + replicas
    dest_sts = destination.statefulset(tns, name)
    plan.update(
        destination_exists=dest_sts is not None, destination_start=end, destination_replicas=0
    )
    if dest_sts is not None:
        d_start, d_replicas = slice_of(dest_sts)
        plan.update(destination_start=d_start, destination_replicas=d_replicas)
        _check_compatible(sts, dest_sts, request, found)
        if replicas > 0 and d_replicas > 0 and d_start != end:
            found.problem(
                f"destination StatefulSet {tns}/{name}",
                f"owns ordinals [{d_start}, {d_start + d_replicas}) but the source "
                f"owns [{start}, {end}): the slices must meet (an earlier run may have "
                "stopped mid-move)",
                "bring the ordinal in between back to one cluster, then start again",
            )
        if d_replicas > 0:
            end = d_start + d_replicas
    plan["end"] = end

    lowest = start
    if request.stop_at_ordinal is not None:
        if not start <= request.stop_at_ordinal <= start + replicas:
            found.problem(
                "request stop_at_ordinal",
                f"{request.stop_at_ordinal} is outside the source slice "
                f"[{start}, {start + replicas})",
                f"choose an ordinal from {start} to {start + replicas}",
            )
        lowest = max(start, request.stop_at_ordinal)
    moving = list(range(start + replicas - 1, lowest - 1, -1))

    dest_nodes = destination.node_names()
    ordinals = [
        _plan_ordinal(source, destination, request, migration_id, k, templates, dest_nodes, found)
        for k in moving
    ]
    plan["ordinals"] = ordinals
    # Every class the destination will need, once, named after its first user.
    users: dict[str, str] = {}
    for template, storage_class in templates.items():
        if storage_class:
            users.setdefault(storage_class, f"volumeClaimTemplate {template!r}")
    for ordinal in ordinals:
        for vol in ordinal.volumes:
            if vol.storage_class:
                users.setdefault(vol.storage_class, f"volume {vol.volume}")
    _check_classes(destination, users, request, found)
    plan["dependencies"] = _plan_dependencies(source, destination, sts, request, found)
    if namespace_exists:
        _check_quota(destination, tns, ordinals, found)
    return Plan(**plan, problems=found.problems, warnings=found.warnings)


def _check_source_health(kube: Kube, sts: Obj, start: int, replicas: int, f: _Findings) -> None:
    ns, name = sts["metadata"]["namespace"], sts["metadata"]["name"]
    pods = {p["metadata"]["name"]: p for p in kube.pods(ns, selector_string(sts))}
    not_ready = [
        f"{name}-{k}"
        for k in range(start, start + replicas)
        if f"{name}-{k}" not in pods or not is_ready(pods[f"{name}-{k}"])
    ]
    if not_ready:
        f.problem(
            f"source StatefulSet {ns}/{name}",
            f"pods not Ready: {', '.join(not_ready)}",
            "wait until every pod is Ready (kubectl rollout status) and start again",
        )
    status = sts.get("status") or {}
    if status.get("updateRevision") and status.get("currentRevision") != status.get(
        "updateRevision"
    ):
        f.problem(
            f"source StatefulSet {ns}/{name}",
            "a rolling update is in progress",
            "let the rollout finish before moving pods",
        )


def _check_compatible(sts: Obj, dest: Obj, request: MigrationRequest, f: _Findings) -> None:
    where = f"destination StatefulSet {request.target_namespace}/{request.statefulset}"
    if sts["spec"].get("selector") != dest["spec"].get("selector"):
        f.problem(
            where,
            "its selector differs from the source's",
            "delete it (it owns no pods of this app) or make the selectors equal",
        )
    if sts["spec"].get("serviceName") != dest["spec"].get("serviceName"):
        f.problem(
            where,
            f"serviceName {dest['spec'].get('serviceName')!r} differs from the "
            f"source's {sts['spec'].get('serviceName')!r}",
            "use the same headless Service name in both clusters",
        )
    source_templates = {t: request.mapped_class(c) for t, c in _templates(sts).items()}
    dest_templates = _templates(dest)
    if set(source_templates) != set(dest_templates) or any(
        source_templates[t] and dest_templates[t] and source_templates[t] != dest_templates[t]
        for t in source_templates
    ):
        f.problem(
            where,
            f"volumeClaimTemplates {sorted(dest_templates.items())} differ from "
            f"the source's {sorted(source_templates.items())} (after class mapping)",
            "give both StatefulSets the same volumeClaimTemplates",
        )


def _check_classes(
    dest: Kube, users: dict[str, str], request: MigrationRequest, f: _Findings
) -> None:
    """``users`` maps each source storage class to what uses it."""
    for storage_class, user in users.items():
        mapped = request.mapped_class(storage_class)
        if mapped and dest.storage_class(mapped) is None:
            f.problem(
                f"storage class {mapped}",
                f"used by {user} but missing in {dest.context}",
                f"create StorageClass {mapped} in the destination, or map it with "
                f"storage_class_mapping {{{storage_class!r}: '<a destination class>'}}",
            )


def _plan_ordinal(
    source: Kube,
    dest: Kube,
    request: MigrationRequest,
    migration_id: str,
    k: int,
    templates: dict[str, str | None],
    dest_nodes: set[str],
    f: _Findings,
) -> OrdinalPlan:
    ns, tns, name = request.namespace, request.target_namespace, request.statefulset
    volumes = []
    for template in templates:
        claim = f"{template}-{name}-{k}"
        pvc = source.pvc(ns, claim)
        if pvc is None:
            f.problem(
                f"source PersistentVolumeClaim {ns}/{claim}",
                "not found",
                f"the pod {name}-{k} must have run once; check the StatefulSet",
            )
            continue
        phase = (pvc.get("status") or {}).get("phase")
        pv_name = pvc["spec"].get("volumeName")
        if phase != "Bound" or not pv_name:
            f.problem(
                f"source PersistentVolumeClaim {ns}/{claim}",
                f"is {phase}, not Bound",
                "wait until it is Bound (check its StorageClass provisioner)",
            )
            continue
        pv = source.pv(pv_name)
        if pv is None:
            f.problem(
                f"source PersistentVolume {pv_name}",
                f"bound to {claim} but not found",
                "repair the claim's binding before migrating",
            )
            continue
        identity = manifests.storage_identity(pv)
        kind = identity.split(" ", 1)[0]
        if kind in ("hostPath", "local"):
            f.warnings.append(
                f"volume {pv_name} ({claim}) is {kind}: the destination's nodes "
                "must see the same path"
            )
        hosts = _affinity_hosts(pv)
        if hosts and not hosts & dest_nodes:
            f.problem(
                f"source PersistentVolume {pv_name}",
                f"node affinity pins it to {', '.join(sorted(hosts))}, which the "
                f"destination {dest.context} does not have",
                "use storage reachable from the destination's nodes (or nodes of the same "
                "names there)",
            )
        elif hosts:
            f.warnings.append(f"volume {pv_name} is pinned to nodes {sorted(hosts)}")
        storage_class = pv["spec"].get("storageClassName") or ""
        mapped = request.mapped_class(storage_class) or ""
        existing_pvc = dest.pvc(tns, claim)
        if existing_pvc is not None and not manifests.is_ours(existing_pvc, migration_id):
            f.problem(
                f"destination PersistentVolumeClaim {tns}/{claim}",
                "already exists and was not created by this migration",
                "delete it if it is left over, or migrate into another namespace",
            )
        existing_pv = dest.pv(pv_name)
        if existing_pv is not None and not manifests.is_ours(existing_pv, migration_id):
            f.problem(
                f"destination PersistentVolume {pv_name}",
                "already exists and was not created by this migration",
                "delete it if it is left over (check its storage first)",
            )
        volumes.append(
            VolumePlan(
                template=template,
                claim=claim,
                volume=pv_name,
                storage_class=storage_class,
                destination_storage_class=mapped,
                storage=identity,
                reclaim_policy=pv["spec"].get("persistentVolumeReclaimPolicy") or "",
                size=str(
                    ((pvc["spec"].get("resources") or {}).get("requests") or {}).get("storage")
                    or ""
                ),
            )
        )
    return OrdinalPlan(ordinal=k, pod=f"{name}-{k}", volumes=volumes)


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


def _plan_dependencies(
    source: Kube, dest: Kube, sts: Obj, request: MigrationRequest, f: _Findings
) -> list[Dependency]:
    out = []
    for kind, name in dependency_names(source, sts):
        if dest.dependency(kind, request.target_namespace, name) is not None:
            out.append(Dependency(kind=kind, name=name, action="present"))
        elif source.dependency(kind, request.namespace, name) is not None:
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


def _check_quota(dest: Kube, ns: str, ordinals: list[OrdinalPlan], f: _Findings) -> None:
    claims = [v for o in ordinals for v in o.volumes]
    need = {
        "pods": Decimal(len(ordinals)),
        "persistentvolumeclaims": Decimal(len(claims)),
        "count/persistentvolumeclaims": Decimal(len(claims)),
    }
    for quota in dest.quotas(ns):
        hard = (
            (quota.get("status") or {}).get("hard") or (quota.get("spec") or {}).get("hard") or {}
        )
        used = (quota.get("status") or {}).get("used") or {}
        for resource, amount in need.items():
            if resource in hard:
                free = parse_quantity(hard[resource]) - parse_quantity(used.get(resource, "0"))
                if free < amount:
                    f.problem(
                        f"destination ResourceQuota {ns}/{quota['metadata']['name']}",
                        f"{resource}: {free} free, {amount} needed",
                        "raise the quota or free some room",
                    )
        if "requests.storage" in hard:
            free = parse_quantity(hard["requests.storage"]) - parse_quantity(
                used.get("requests.storage", "0")
            )
            requested = sum((parse_quantity(v.size or "0") for v in claims), Decimal(0))
            if free < requested:
                f.problem(
                    f"destination ResourceQuota {ns}/{quota['metadata']['name']}",
                    f"requests.storage: {free} bytes free, {requested} needed",
                    "raise the quota or free some room",
                )
