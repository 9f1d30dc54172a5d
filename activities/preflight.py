"""Preflight: read both clusters, check everything a migration needs, build the plan.

Read-only by contract (the activity is ``plan_migration``). Every problem is
collected, each naming the object and the fix, so an operator fixes them all in
one round; the workflow refuses to change anything while any remain.

``build_plan`` runs the ``check_*`` steps in a fixed order (the order of the
problems and warnings in the plan, and of the reads). Each step records what it
finds in ``Findings`` and returns the typed part of the plan it learned.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal

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
class Findings:
    """Problems (each blocks the run) and warnings, in the order the checks found them."""

    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def problem(self, obj: str, message: str, fix: str) -> None:
        self.problems.append(Problem(object=obj, message=message, fix=fix))


# -- the typed parts of a plan ---------------------------------------------------------
@dataclass(frozen=True)
class Versions:
    source: str = ""
    destination: str = ""


@dataclass(frozen=True)
class SourceSlice:
    """The source StatefulSet and the ordinals it owns: [start, start + replicas)."""

    sts: Obj = field(default_factory=dict)
    start: int = 0
    replicas: int = 0
    templates: dict[str, str | None] = field(default_factory=dict)  # claim template -> class

    @property
    def service_name(self) -> str:
        return str((self.sts.get("spec") or {}).get("serviceName") or "")


@dataclass(frozen=True)
class DestinationSlice:
    exists: bool = False
    start: int = 0
    replicas: int = 0
    end: int = 0  # one past the highest ordinal of the whole StatefulSet


# What a plan holds of the checks it never reached (Plan's own defaults).
NO_VERSIONS, NO_SOURCE, NO_DESTINATION = Versions(), SourceSlice(), DestinationSlice()


def build_plan(
    source: Kube | None, destination: Kube | None, request: MigrationRequest, migration_id: str
) -> Plan:
    """Read both clusters and return the plan with every problem found.

    ``None`` for a side means the worker has no such context; that is a problem too.
    A failed check that later checks depend on returns the plan found so far.
    """
    found = Findings()
    check_contexts(source, destination, request, found)
    if source is None or destination is None or not check_not_itself(request, found):
        return _plan(request, migration_id, found)
    versions = check_versions(source, destination, found)
    check_permissions(source, destination, request, found)
    if found.problems:
        return _plan(request, migration_id, found, versions)
    namespace_exists = check_destination_namespace(destination, request, found)
    source_slice = check_source(source, request, found)
    if source_slice is None:
        return _plan(request, migration_id, found, versions)
    check_source_health(source, source_slice, found)
    fix_retention_policy = check_retention_policy(source_slice, request, found)
    destination_slice = check_destination(destination, source_slice, request, found)
    moving = check_stop_at_ordinal(source_slice, request, found)
    ordinals = check_volumes(
        source, destination, source_slice, request, migration_id, moving, found
    )
    check_storage_classes(destination, source_slice, ordinals, request, found)
    dependencies = check_dependencies(source, destination, source_slice.sts, request, found)
    if namespace_exists:
        check_quota(destination, request.target_namespace, ordinals, found)
    return _plan(
        request,
        migration_id,
        found,
        versions,
        source_slice,
        destination_slice,
        ordinals=ordinals,
        dependencies=dependencies,
        fix_retention_policy=fix_retention_policy,
    )


def _plan(
    request: MigrationRequest,
    migration_id: str,
    found: Findings,
    versions: Versions = NO_VERSIONS,
    source: SourceSlice = NO_SOURCE,
    destination: DestinationSlice = NO_DESTINATION,
    *,
    ordinals: list[OrdinalPlan] | None = None,
    dependencies: list[Dependency] | None = None,
    fix_retention_policy: bool = False,
) -> Plan:
    """The plan from its parts; the parts of checks never reached are empty."""
    return Plan(
        migration_id=migration_id,
        source_context=request.source_context,
        destination_context=request.destination_context,
        namespace=request.namespace,
        destination_namespace=request.target_namespace,
        statefulset=request.statefulset,
        source_version=versions.source,
        destination_version=versions.destination,
        source_start=source.start,
        source_replicas=source.replicas,
        end=destination.end,
        destination_exists=destination.exists,
        destination_start=destination.start,
        destination_replicas=destination.replicas,
        claim_templates=list(source.templates),
        service_name=source.service_name,
        ordinals=ordinals or [],
        dependencies=dependencies or [],
        fix_retention_policy=fix_retention_policy,
        warnings=found.warnings,
        problems=found.problems,
    )


# -- the checks, in the order build_plan runs them -------------------------------------
def check_contexts(
    source: Kube | None, destination: Kube | None, request: MigrationRequest, f: Findings
) -> None:
    for side, kube, context in (
        ("source", source, request.source_context),
        ("destination", destination, request.destination_context),
    ):
        if kube is None:
            f.problem(
                f"{side} context {context!r}",
                "the worker's kubeconfig has no such context",
                "name a context the worker holds, or add it to the worker's "
                "kubeconfig (STSMIGRATE_KUBECONFIG)",
            )


def check_not_itself(request: MigrationRequest, f: Findings) -> bool:
    """The destination is another StatefulSet than the source."""
    if request.source_context == request.destination_context and (
        request.namespace == request.target_namespace
    ):
        f.problem(
            "request",
            "source and destination are the same StatefulSet",
            "name another destination context or namespace",
        )
        return False
    return True


def check_versions(source: Kube, destination: Kube, f: Findings) -> Versions:
    return Versions(
        source=_check_version("source", source, f),
        destination=_check_version("destination", destination, f),
    )


def _check_version(side: str, kube: Kube, f: Findings) -> str:
    version = kube.version()
    parsed = minor_version(version)
    if parsed is None or parsed < (1, MIN_MINOR):
        f.problem(
            f"{side} cluster {kube.context}",
            f"Kubernetes {version} is too old: StatefulSet .spec.ordinals needs "
            f"1.{MIN_MINOR} or later",
            "upgrade the control plane to 1.27+ (1.31+ recommended, where the feature is GA)",
        )
    return version


def check_permissions(
    source: Kube, destination: Kube, request: MigrationRequest, f: Findings
) -> None:
    # Permissions before anything else is read: without them the reads below would
    # only fail one by one, while this names every missing permission at once.
    for side, kube, perms, namespace in (
        ("source", source, SOURCE_PERMISSIONS, request.namespace),
        ("destination", destination, DESTINATION_PERMISSIONS, request.target_namespace),
    ):
        missing = [
            f"{verb} {resource}"
            for verb, resource, group, namespaced in perms
            if not kube.can(verb, resource, group, namespace if namespaced else None)
        ]
        if missing:
            f.problem(
                f"{side} cluster {kube.context}",
                f"the worker's credentials may not: {', '.join(missing)}",
                "grant them (deploy/rbac.yaml has the role this run needs)",
            )


def check_destination_namespace(destination: Kube, request: MigrationRequest, f: Findings) -> bool:
    tns = request.target_namespace
    if destination.namespace(tns) is not None:
        return True
    f.problem(
        f"destination namespace {tns}",
        f"does not exist in {destination.context}",
        f"kubectl --context {destination.context} create namespace {tns}",
    )
    return False


def check_source(source: Kube, request: MigrationRequest, f: Findings) -> SourceSlice | None:
    """The source StatefulSet exists; ``None`` (a problem) if not."""
    ns, name = request.namespace, request.statefulset
    sts = source.statefulset(ns, name)
    if sts is None:
        f.problem(
            f"source StatefulSet {ns}/{name}",
            f"not found in {source.context}",
            "check the StatefulSet name, its namespace and the source context",
        )
        return None
    start, replicas = slice_of(sts)
    return SourceSlice(sts=sts, start=start, replicas=replicas, templates=_templates(sts))


def check_source_health(kube: Kube, source_slice: SourceSlice, f: Findings) -> None:
    """Every pod of the slice Ready, and no rollout in progress."""
    sts = source_slice.sts
    ns, name = sts["metadata"]["namespace"], sts["metadata"]["name"]
    pods = {p["metadata"]["name"]: p for p in kube.pods(ns, selector_string(sts))}
    not_ready = [
        f"{name}-{k}"
        for k in range(source_slice.start, source_slice.start + source_slice.replicas)
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


def check_retention_policy(
    source_slice: SourceSlice, request: MigrationRequest, f: Findings
) -> bool:
    """Scaling down keeps the claims; ``True`` if the migration is to set that itself."""
    spec = source_slice.sts["spec"]
    when_scaled = (spec.get("persistentVolumeClaimRetentionPolicy") or {}).get(
        "whenScaled"
    ) or "Retain"
    if when_scaled != "Delete":
        return False
    if request.fix_retention_policy:
        f.warnings.append(
            "persistentVolumeClaimRetentionPolicy.whenScaled will be set "
            "from Delete to Retain on the source StatefulSet"
        )
        return True
    f.problem(
        f"source StatefulSet {request.namespace}/{request.statefulset}",
        "persistentVolumeClaimRetentionPolicy.whenScaled is Delete: scaling "
        "down would delete the claims of the ordinals being moved",
        "set whenScaled to Retain, or pass fix_retention_policy=true to let the migration do it",
    )
    return False


def check_destination(
    destination: Kube, source_slice: SourceSlice, request: MigrationRequest, f: Findings
) -> DestinationSlice:
    """The destination StatefulSet absent, or compatible and owning the slice just above
    the source's."""
    tns, name = request.target_namespace, request.statefulset
    start, end = source_slice.start, source_slice.start + source_slice.replicas
    dest_sts = destination.statefulset(tns, name)
    if dest_sts is None:
        return DestinationSlice(exists=False, start=end, replicas=0, end=end)
    d_start, d_replicas = slice_of(dest_sts)
    check_compatible(source_slice.sts, dest_sts, request, f)
    if source_slice.replicas > 0 and d_replicas > 0 and d_start != end:
        f.problem(
            f"destination StatefulSet {tns}/{name}",
            f"owns ordinals [{d_start}, {d_start + d_replicas}) but the source "
            f"owns [{start}, {end}): the slices must meet (an earlier run may have "
            "stopped mid-move)",
            "bring the ordinal in between back to one cluster, then start again",
        )
    if d_replicas > 0:
        end = d_start + d_replicas
    return DestinationSlice(exists=True, start=d_start, replicas=d_replicas, end=end)


def check_compatible(sts: Obj, dest: Obj, request: MigrationRequest, f: Findings) -> None:
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


def check_stop_at_ordinal(
    source_slice: SourceSlice, request: MigrationRequest, f: Findings
) -> list[int]:
    """The ordinals to move, highest first: down to ``stop_at_ordinal``, if it is inside."""
    start, end = source_slice.start, source_slice.start + source_slice.replicas
    lowest = start
    if request.stop_at_ordinal is not None:
        if not start <= request.stop_at_ordinal <= end:
            f.problem(
                "request stop_at_ordinal",
                f"{request.stop_at_ordinal} is outside the source slice [{start}, {end})",
                f"choose an ordinal from {start} to {end}",
            )
        lowest = max(start, request.stop_at_ordinal)
    return list(range(end - 1, lowest - 1, -1))


def check_volumes(
    source: Kube,
    dest: Kube,
    source_slice: SourceSlice,
    request: MigrationRequest,
    migration_id: str,
    moving: list[int],
    f: Findings,
) -> list[OrdinalPlan]:
    """Every claim of every moving ordinal, with its volume."""
    dest_nodes = dest.node_names()
    ordinals = []
    for k in moving:
        volumes = []
        for template in source_slice.templates:
            volume = check_volume(source, dest, request, migration_id, template, k, dest_nodes, f)
            if volume is not None:
                volumes.append(volume)
        ordinals.append(OrdinalPlan(ordinal=k, pod=f"{request.statefulset}-{k}", volumes=volumes))
    return ordinals


def check_volume(
    source: Kube,
    dest: Kube,
    request: MigrationRequest,
    migration_id: str,
    template: str,
    k: int,
    dest_nodes: set[str],
    f: Findings,
) -> VolumePlan | None:
    """Ordinal k's claim of ``template``: Bound to a PV that exists, that the destination's
    nodes can reach, and whose names are free in the destination. ``None`` if it cannot
    be planned."""
    ns, name = request.namespace, request.statefulset
    claim = f"{template}-{name}-{k}"
    pvc = source.pvc(ns, claim)
    if pvc is None:
        f.problem(
            f"source PersistentVolumeClaim {ns}/{claim}",
            "not found",
            f"the pod {name}-{k} must have run once; check the StatefulSet",
        )
        return None
    phase = (pvc.get("status") or {}).get("phase")
    pv_name = pvc["spec"].get("volumeName")
    if phase != "Bound" or not pv_name:
        f.problem(
            f"source PersistentVolumeClaim {ns}/{claim}",
            f"is {phase}, not Bound",
            "wait until it is Bound (check its StorageClass provisioner)",
        )
        return None
    pv = source.pv(pv_name)
    if pv is None:
        f.problem(
            f"source PersistentVolume {pv_name}",
            f"bound to {claim} but not found",
            "repair the claim's binding before migrating",
        )
        return None
    identity = manifests.storage_identity(pv)
    check_reachable(pv_name, pv, claim, identity, dest, dest_nodes, f)
    storage_class = pv["spec"].get("storageClassName") or ""
    check_names_free(dest, request.target_namespace, claim, pv_name, migration_id, f)
    return VolumePlan(
        template=template,
        claim=claim,
        volume=pv_name,
        storage_class=storage_class,
        destination_storage_class=request.mapped_class(storage_class) or "",
        storage=identity,
        reclaim_policy=pv["spec"].get("persistentVolumeReclaimPolicy") or "",
        size=str(((pvc["spec"].get("resources") or {}).get("requests") or {}).get("storage") or ""),
    )


def check_reachable(
    pv_name: str, pv: Obj, claim: str, identity: str, dest: Kube, dest_nodes: set[str], f: Findings
) -> None:
    """Node-local storage is warned; affinity to nodes the destination lacks refused."""
    kind = identity.split(" ", 1)[0]
    if kind in ("hostPath", "local"):
        f.warnings.append(
            f"volume {pv_name} ({claim}) is {kind}: the destination's nodes must see the same path"
        )
    hosts = _affinity_hosts(pv)
    if hosts and not hosts & dest_nodes:
        f.problem(
            f"source PersistentVolume {pv_name}",
            f"node affinity pins it to {', '.join(sorted(hosts))}, which the "
            f"destination {dest.context} does not have",
            "use storage reachable from the destination's nodes (or nodes of the same names there)",
        )
    elif hosts:
        f.warnings.append(f"volume {pv_name} is pinned to nodes {sorted(hosts)}")


def check_names_free(
    dest: Kube, tns: str, claim: str, pv_name: str, migration_id: str, f: Findings
) -> None:
    """No claim or volume of these names in the destination but ours."""
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


def check_storage_classes(
    dest: Kube,
    source_slice: SourceSlice,
    ordinals: list[OrdinalPlan],
    request: MigrationRequest,
    f: Findings,
) -> None:
    """Every class the destination will need (after mapping), checked once and named
    after its first user."""
    users: dict[str, str] = {}
    for template, storage_class in source_slice.templates.items():
        if storage_class:
            users.setdefault(storage_class, f"volumeClaimTemplate {template!r}")
    for ordinal in ordinals:
        for vol in ordinal.volumes:
            if vol.storage_class:
                users.setdefault(vol.storage_class, f"volume {vol.volume}")
    for storage_class, user in users.items():
        mapped = request.mapped_class(storage_class)
        if mapped and dest.storage_class(mapped) is None:
            f.problem(
                f"storage class {mapped}",
                f"used by {user} but missing in {dest.context}",
                f"create StorageClass {mapped} in the destination, or map it with "
                f"storage_class_mapping {{{storage_class!r}: '<a destination class>'}}",
            )


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


def check_quota(dest: Kube, ns: str, ordinals: list[OrdinalPlan], f: Findings) -> None:
    """Room in every ResourceQuota of the destination namespace for the moving pods and
    claims."""
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
