"""Preflight checks of the moving volumes: every claim Bound to a PV that exists, that
the destination's nodes can reach and whose names are free there; the storage
classes present in the destination; room in its ResourceQuotas."""

from __future__ import annotations

from decimal import Decimal

from kubernetes.utils import parse_quantity

from activities import manifests
from activities.kube import Kube, Obj
from activities.preflight import affinity, resources
from activities.preflight.findings import DestinationSlice, Findings, SourceSlice
from activities.preflight.listing import Volumes
from contract import MigrationRequest, OrdinalPlan, VolumePlan


def check_volumes(
    source: Volumes,
    dest: Volumes,
    dest_nodes: list[Obj],
    source_slice: SourceSlice,
    request: MigrationRequest,
    migration_id: str,
    moving: list[int],
    f: Findings,
) -> list[OrdinalPlan]:
    """Every claim of every moving ordinal, with its volume (from the indexes: no
    request per ordinal)."""
    ordinals = []
    for k in moving:
        volumes = []
        for template in source_slice.templates:
            volume = check_volume(source, dest, dest_nodes, request, migration_id, template, k, f)
            if volume is not None:
                volumes.append(volume)
        ordinals.append(OrdinalPlan(ordinal=k, pod=f"{request.statefulset}-{k}", volumes=volumes))
    return ordinals


def moved_ordinals(
    source: Volumes,
    dest: Volumes,
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
    name = request.statefulset
    found: list[OrdinalPlan] = []
    if not source_slice.templates:
        return found  # no claims to tell which ordinals this migration moved
    for k in range(destination.start, destination.start + destination.replicas):
        volumes = []
        for template in source_slice.templates:
            claim = f"{template}-{name}-{k}"
            pvc = dest.claim(claim)
            pv_name = str(((pvc or {}).get("spec") or {}).get("volumeName") or "")
            bound = ((pvc or {}).get("status") or {}).get("phase") == "Bound"
            if pvc is None or not bound or not manifests.is_ours(pvc, migration_id):
                return found
            pv, dest_pv = source.volume(pv_name), dest.volume(pv_name)
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
    source: Volumes,
    dest: Volumes,
    dest_nodes: list[Obj],
    request: MigrationRequest,
    migration_id: str,
    template: str,
    k: int,
    f: Findings,
) -> VolumePlan | None:
    """Ordinal k's claim of ``template``: Bound to a PV that exists, that the destination's
    nodes can reach, and whose names are free in the destination. ``None`` if it cannot
    be planned."""
    ns, name = request.namespace, request.statefulset
    claim = f"{template}-{name}-{k}"
    pvc = source.claim(claim)
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
    pv = source.volume(pv_name)
    if pv is None:
        f.problem(
            f"source PersistentVolume {pv_name}",
            f"bound to {claim} but not found",
            "repair the claim's binding before migrating",
        )
        return None
    identity = manifests.storage_identity(pv)
    check_reachable(pv_name, pv, claim, identity, request.destination_context, dest_nodes, f)
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
    pv_name: str,
    pv: Obj,
    claim: str,
    identity: str,
    context: str,
    dest_nodes: list[Obj],
    f: Findings,
) -> None:
    """Node-local storage is warned; a required node affinity that no node of the
    destination meets (hostnames, zones, regions, any label) refused."""
    kind = identity.split(" ", 1)[0]
    if kind in ("hostPath", "local"):
        f.warnings.append(
            f"volume {pv_name} ({claim}) is {kind}: the destination's nodes must see the same path"
        )
    terms = affinity.required_terms(pv)
    if not terms:
        return
    pinned = affinity.describe(terms)
    matching = affinity.matching_nodes(terms, dest_nodes)
    if not matching:
        f.problem(
            f"source PersistentVolume {pv_name}",
            f"node affinity pins it to {pinned}, which no node of the "
            f"destination {context} matches",
            "use storage reachable from the destination's nodes, or give destination "
            f"nodes that reach it the labels the affinity asks for ({pinned})",
        )
    else:
        f.warnings.append(
            f"volume {pv_name} is pinned by node affinity ({pinned}); "
            f"destination nodes that match: {', '.join(sorted(matching))}"
        )


def check_names_free(
    dest: Volumes, tns: str, claim: str, pv_name: str, migration_id: str, f: Findings
) -> None:
    """No claim or volume of these names in the destination but ours."""
    existing_pvc = dest.claim(claim)
    if existing_pvc is not None and not manifests.is_ours(existing_pvc, migration_id):
        f.problem(
            f"destination PersistentVolumeClaim {tns}/{claim}",
            "already exists and was not created by this migration",
            "delete it if it is left over, or migrate into another namespace",
        )
    existing_pv = dest.volume(pv_name)
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


def check_quota(
    dest: Kube, ns: str, pod_spec: Obj, ordinals: list[OrdinalPlan], f: Findings
) -> None:
    """Room in every ResourceQuota of the destination namespace for the moving pods (their
    count, and their cpu and memory requests and limits) and claims."""
    claims = [v for o in ordinals for v in o.volumes]
    need = {
        **resources.quota_usage(pod_spec, len(ordinals)),
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
                        f"{resource}: {_amount(free)} free, {_amount(amount)} needed",
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


def _amount(value: Decimal) -> str:
    """A count as the integer it is ("2", as before cpu was counted), cores and bytes
    without trailing zeros ("0.5")."""
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")
