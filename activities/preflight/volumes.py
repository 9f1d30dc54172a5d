"""Preflight checks of the moving volumes: every claim Bound to a PV that exists, that
the destination's nodes can reach and whose names are free there; the storage
classes present in the destination; room in its ResourceQuotas."""

from __future__ import annotations

from decimal import Decimal

from kubernetes.utils import parse_quantity

from activities import manifests
from activities.kube import Kube, Obj
from activities.preflight.findings import DestinationSlice, Findings, SourceSlice
from contract import MigrationRequest, OrdinalPlan, VolumePlan


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


def moved_ordinals(
    source: Kube,
    dest: Kube,
    source_slice: SourceSlice,
    destination: DestinationSlice,
    request: MigrationRequest,
    migration_id: str,
) -> list[OrdinalPlan]:
    """The ordinals the destination owns that a rollback can give back, read from the
    clusters (not from a run's memory, so a later run of the same migration can give
    back what an earlier one moved): each claim ours and Bound in the destination, to a
    volume the source still holds as Retain. Lowest first, the order a rollback takes
    them, up to the first that cannot be given back."""
    ns, name = request.target_namespace, request.statefulset
    found: list[OrdinalPlan] = []
    if not source_slice.templates:
        return found  # no claims to tell which ordinals this migration moved
    for k in range(destination.start, destination.start + destination.replicas):
        volumes = []
        for template in source_slice.templates:
            claim = f"{template}-{name}-{k}"
            pvc = dest.pvc(ns, claim)
            pv_name = str(((pvc or {}).get("spec") or {}).get("volumeName") or "")
            bound = ((pvc or {}).get("status") or {}).get("phase") == "Bound"
            if pvc is None or not bound or not manifests.is_ours(pvc, migration_id):
                return found
            pv, dest_pv = source.pv(pv_name), dest.pv(pv_name)
            if pv is None or pv["spec"].get("persistentVolumeReclaimPolicy") != "Retain":
                return found
            if dest_pv is None or not manifests.same_storage(dest_pv, pv):
                return found  # not the same storage under that name: not ours to give back
            storage_class = pv["spec"].get("storageClassName") or ""
            volumes.append(
                VolumePlan(
                    template=template,
                    claim=claim,
                    volume=pv_name,
                    storage_class=storage_class,
                    destination_storage_class=request.mapped_class(storage_class) or "",
                    storage=manifests.storage_identity(pv),
                    reclaim_policy="Retain",
                    size=str(
                        ((pvc["spec"].get("resources") or {}).get("requests") or {}).get("storage")
                        or ""
                    ),
                )
            )
        found.append(OrdinalPlan(ordinal=k, pod=f"{name}-{k}", volumes=volumes))
    return found


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
