"""Preflight checks of the StatefulSets: the source present, not locked by another
migration, healthy and keeping its claims on scale-down; the destination absent or
compatible and owning the slice just above the source's; ``stop_at_ordinal`` inside
the source slice."""

from __future__ import annotations

from activities.kube import Kube, Obj, is_ready, selector_string, slice_of
from activities.preflight.findings import DestinationSlice, Findings, SourceSlice
from activities.preflight.listing import Volumes
from activities.preflight.overrides import check_overrides_kept
from contract import ANNOTATION_LOCK, MigrationRequest


def _templates(sts: Obj) -> dict[str, str | None]:
    return {
        vct["metadata"]["name"]: (vct.get("spec") or {}).get("storageClassName")
        for vct in (sts.get("spec") or {}).get("volumeClaimTemplates") or []
    }


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


def check_lock(source_slice: SourceSlice, migration_id: str, f: Findings, context: str) -> None:
    """No other migration holds the source's lock (``lock_statefulset``): two migrations
    of one StatefulSet would each take the other's changes for their own. The same id
    holding it is a restart of this migration."""
    meta = source_slice.sts.get("metadata") or {}
    holder = (meta.get("annotations") or {}).get(ANNOTATION_LOCK) or ""
    if not holder or holder == migration_id:
        return
    ns, name = meta.get("namespace"), meta.get("name")
    f.problem(
        f"source StatefulSet {ns}/{name}",
        f"is locked by migration {holder!r} (annotation {ANNOTATION_LOCK}): one migration "
        "at a time may change it",
        f"wait for migration {holder!r} to end; once it has, if its lock is still there, "
        f"kubectl --context {context} -n {ns} annotate statefulset {name} {ANNOTATION_LOCK}-",
    )


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
    check_overrides_kept(source_slice.sts, dest_sts, request, f)
    if source_slice.replicas > 0 and d_replicas > 0 and d_start != end:
        f.problem(
            f"destination StatefulSet {tns}/{name}",
            f"owns ordinals [{d_start}, {d_start + d_replicas}) but the source "
            f"owns [{start}, {end}): the slices must meet (an earlier run may have "
            "stopped mid-move)",
            "bring the ordinal in between back to one cluster, then start again",
        )
    if source_slice.replicas > 0 and d_replicas == 0 and d_start != end:
        f.problem(
            f"destination StatefulSet {tns}/{name}",
            f"owns no ordinals and its ordinals.start is {d_start}, not {end} where the "
            f"source's slice [{start}, {end}) ends: it was not left by a run of this "
            "migration, whose empty destination always starts there",
            "delete it (it runs no pods) so the migration creates it, or patch its "
            f"spec.ordinals.start to {end} (replicas staying 0)",
        )
    if d_replicas > 0:
        end = d_start + d_replicas
    template = (dest_sts.get("spec") or {}).get("template") or {}
    return DestinationSlice(
        exists=True, start=d_start, replicas=d_replicas, end=end, template=template
    )


def destination_pods(sts: Obj, overridden: Obj | None, destination: DestinationSlice) -> Obj | None:
    """The StatefulSet the destination's pods are made from, as the checks of what they
    need see it: the source's with the pod template of an existing destination
    StatefulSet (a later run: it is taken as it is, the overrides applied only when it
    is created), else the source's overridden (``None``: the overrides were refused)."""
    if destination.template is not None:
        return {**sts, "spec": {**sts["spec"], "template": destination.template}}
    return overridden


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


def check_template_claims(
    source_slice: SourceSlice, dest_claims: Volumes, request: MigrationRequest, f: Findings
) -> None:
    """Claims the pod template mounts by name (not from a claim template) are not moved:
    each must already be in the destination, or the moved pods stay Pending."""
    spec = ((source_slice.sts.get("spec") or {}).get("template") or {}).get("spec") or {}
    tns, name = request.target_namespace, request.statefulset
    for volume in spec.get("volumes") or []:
        claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
        if not claim or volume.get("name") in source_slice.templates:
            continue
        if dest_claims.claim(claim) is not None:
            f.warnings.append(
                f"the pod template mounts claim {claim} (volume {volume.get('name')!r}), not "
                f"from a claim template: the moved pods use the destination's {tns}/{claim}"
            )
            continue
        f.problem(
            f"source StatefulSet {request.namespace}/{name}",
            f"its pod template mounts claim {claim} (volume {volume.get('name')!r}), which "
            "is not from a volumeClaimTemplate: the migration does not move it, and it "
            f"does not exist in the destination namespace {tns}",
            f"create PersistentVolumeClaim {tns}/{claim} in the destination first (on "
            "storage the destination reaches), or make it a volumeClaimTemplate",
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
