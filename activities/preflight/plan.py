"""``build_plan``: the preflight checks in their fixed order, and the plan from their
parts. The order is that of the problems and warnings in the plan, and of the reads."""

from __future__ import annotations

from activities import manifests
from activities.budget import check_budget, check_pod_management
from activities.kube import Kube
from activities.preflight.access import (
    check_contexts,
    check_destination_namespace,
    check_not_itself,
    check_permissions,
    check_versions,
)
from activities.preflight.csi import check_csi
from activities.preflight.dependencies import (
    check_default_account_pull_secrets,
    check_dependencies,
)
from activities.preflight.dry_runs import check_dry_runs
from activities.preflight.findings import (
    NO_DESTINATION,
    NO_SOURCE,
    NO_VERSIONS,
    DestinationSlice,
    Findings,
    SourceSlice,
    Versions,
)
from activities.preflight.hooks import check_hooks
from activities.preflight.listing import list_volumes
from activities.preflight.overrides import check_overrides, check_overrides_keep_selectors
from activities.preflight.scheduling import check_scheduling
from activities.preflight.statefulsets import (
    check_destination,
    check_lock,
    check_retention_policy,
    check_source,
    check_source_health,
    check_stop_at_ordinal,
    check_template_claims,
    destination_pods,
)
from activities.preflight.volumes import (
    check_quota,
    check_storage_classes,
    check_volumes,
    moved_ordinals,
)
from activities.preflight.writers import check_writers
from contract import Dependency, MigrationRequest, OrdinalPlan, Plan


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
    check_lock(source_slice, migration_id, found, source.context)
    overridden, overrides = check_overrides(source_slice.sts, request, found)
    check_writers(source, destination, source_slice.sts, request, found)
    check_source_health(source, source_slice, found)
    fix_retention_policy = check_retention_policy(source_slice, request, found)
    destination_slice = check_destination(destination, source_slice, request, found)
    # What the destination's pods are made from (an existing destination's template, or
    # the source's overridden): hooks, dependencies, quota, scheduling and dry runs use it.
    checked = destination_pods(source_slice.sts, overridden, destination_slice)
    pods = checked or source_slice.sts
    check_hooks(source_slice.sts, pods, request, found)
    moving = check_stop_at_ordinal(source_slice, request, found)
    # Listed once per cluster: preflight's cost must not grow with the ordinals.
    source_volumes = list_volumes(source, request.namespace)
    destination_volumes = list_volumes(destination, request.target_namespace)
    destination_nodes = destination.nodes()
    if checked is not None and moving:
        check_scheduling(checked, destination_nodes, destination.context, found)
    ordinals = check_volumes(
        source_volumes,
        destination_volumes,
        destination_nodes,
        source_slice,
        request,
        migration_id,
        moving,
        found,
    )
    check_template_claims(source_slice, destination_volumes, request, found)
    check_storage_classes(destination, source_slice, ordinals, request, found)
    check_csi(destination, source_volumes, ordinals, found)
    dependencies = check_dependencies(source, destination, pods, request, found)
    check_overrides_keep_selectors(source, source_slice.sts, overridden, request, found)
    pdbs = [
        pdb
        for d in dependencies
        if d.kind == "PodDisruptionBudget"
        and (pdb := source.dependency(d.kind, request.namespace, d.name)) is not None
    ]
    total = destination_slice.end - source_slice.start
    check_budget(pdbs, total, found.warnings, found, request.max_unavailable)
    check_pod_management(
        source_slice.sts, request.max_unavailable, found.warnings, request.approval.mode
    )
    check_default_account_pull_secrets(source, destination, pods, request, found)
    if namespace_exists:
        pod_spec = pods["spec"]["template"].get("spec") or {}
        check_quota(destination, request.target_namespace, pod_spec, ordinals, found)
        check_dry_runs(
            destination,
            source_slice,
            checked,
            destination_slice,
            ordinals,
            source_volumes,
            dependencies,
            request,
            migration_id,
            found,
        )
    moved = moved_ordinals(
        source_volumes, destination_volumes, source_slice, destination_slice, request, migration_id
    )
    return _plan(
        request,
        migration_id,
        found,
        versions,
        source_slice,
        destination_slice,
        ordinals=ordinals,
        moved=moved,
        dependencies=dependencies,
        fix_retention_policy=fix_retention_policy,
        overrides=overrides,
        digest=manifests.template_digest(checked["spec"]["template"]) if checked else "",
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
    moved: list[OrdinalPlan] | None = None,
    dependencies: list[Dependency] | None = None,
    fix_retention_policy: bool = False,
    overrides: list[str] | None = None,
    digest: str = "",
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
        destination_overrides=overrides or [],
        destination_template_digest=digest,
        ordinals=ordinals or [],
        moved=moved or [],
        dependencies=dependencies or [],
        fix_retention_policy=fix_retention_policy,
        warnings=found.warnings,
        problems=found.problems,
    )
