"""Server-side dry runs (``dryRun=All``) in the destination of what the run will create
there: the StatefulSet, one PV and one claim per claim template, and the Pod the
StatefulSet controller will make (both with the request's destination_overrides
applied). Every admission step runs (PodSecurity, quotas,
LimitRanges, PriorityClass, RuntimeClass, webhooks, admission policies); nothing is
stored, so preflight stays read-only. A refusal seen now is one that would otherwise
stop the run after the source gave up a pod."""

from __future__ import annotations

import jsonpointer

from activities import manifests
from activities.kube import Kube, Obj, Refusal
from activities.preflight.admission import advice, ordinal_pod
from activities.preflight.findings import DestinationSlice, Findings, SourceSlice
from activities.preflight.listing import Volumes
from contract import Dependency, MigrationRequest, OrdinalPlan

_WHERE = "request destination_overrides"


def check_dry_runs(
    dest: Kube,
    source_slice: SourceSlice,
    pods: Obj | None,
    destination: DestinationSlice,
    ordinals: list[OrdinalPlan],
    source_volumes: Volumes,
    dependencies: list[Dependency],
    request: MigrationRequest,
    migration_id: str,
    f: Findings,
) -> None:
    """Dry-run in the destination what the first move creates; each refusal a problem
    (or a warning where the real request may still pass). ``pods``: the StatefulSet the
    pods are made from (``check_overrides``), ``None`` when the overrides were refused:
    then neither the StatefulSet nor a pod is dry-run (the refusal is the problem)."""
    tns = request.target_namespace
    if pods is not None and not destination.exists:
        sts = manifests.destination_statefulset(
            source_slice.sts, request, migration_id, destination.start
        )
        stored = _dry_run(dest, "StatefulSet", tns, sts, f)
        if stored is not None:
            check_ordinals_kept(stored, destination.start, dest.context, tns, f)
            check_overrides_stored(stored, source_slice.sts, sts, request, dest.context, f)
    if not ordinals:
        return
    first = ordinals[0]
    for volume in first.volumes:
        source_pv = source_volumes.volume(volume.volume)
        if source_pv is None:
            continue  # check_volume named it
        pv = manifests.destination_pv(source_pv, request, migration_id, volume.claim, first.ordinal)
        _dry_run(dest, "PersistentVolume", None, pv, f)
        pvc = manifests.destination_pvc(source_pv, volume, request, migration_id, first.ordinal)
        _dry_run(dest, "PersistentVolumeClaim", tns, pvc, f)
    if pods is None:
        return
    copied = {d.name for d in dependencies if d.kind == "ServiceAccount" and d.action == "copy"}
    account = _account(pods)
    # The account is copied only when the move starts; "default" stands in for it
    # (ServiceAccount admission refuses a pod whose account is missing).
    pod = ordinal_pod(pods, tns, first.ordinal, "default" if account in copied else None)
    _dry_run(dest, "Pod", tns, pod, f)


def _account(sts: Obj) -> str:
    spec = ((sts.get("spec") or {}).get("template") or {}).get("spec") or {}
    return str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default")


def _dry_run(dest: Kube, kind: str, ns: str | None, body: Obj, f: Findings) -> Obj | None:
    """The object as the destination would store it; ``None`` if refused (recorded)."""
    answer = dest.dry_run(kind, ns, body)
    if not isinstance(answer, Refusal):
        return answer
    name = body["metadata"]["name"]
    if answer.status == 409:
        return None  # already there (an earlier run): check_names_free judges whose it is
    where = f"destination {kind} {ns}/{name}" if ns else f"destination {kind} {name}"
    said = advice(answer, ns or "", kind)
    if said.blocking:
        f.problem(where, f"a dry run in {dest.context} was refused: {answer.message}", said.fix)
    else:
        f.warnings.append(
            f"{where}: a dry run in {dest.context} was not possible ({answer.message}); {said.fix}"
        )
    return None


def check_ordinals_kept(stored: Obj, start: int, context: str, ns: str, f: Findings) -> None:
    """A 1.27-1.30 API server with the StatefulSetStartOrdinal gate off accepts the
    StatefulSet and silently drops ``spec.ordinals``: every pod would start at 0."""
    kept = ((stored.get("spec") or {}).get("ordinals") or {}).get("start")
    if int(kept or 0) != start:
        f.problem(
            f"destination StatefulSet {ns}/{stored['metadata']['name']}",
            f"{context} dropped spec.ordinals.start={start} in a dry run (kept: {kept!r}): "
            "the StatefulSetStartOrdinal feature gate is off there",
            "enable the StatefulSetStartOrdinal feature gate on the destination's API "
            "server and controller manager (or upgrade it to 1.31+)",
        )


def check_overrides_stored(
    stored: Obj, source: Obj, sent: Obj, request: MigrationRequest, context: str, f: Findings
) -> None:
    """Each field an override sets is in the StatefulSet as the destination would store
    it: an API server drops a field it does not know (one of a newer version than its
    own; a misspelt one the client's pod model already refused, ``check_overrides``)
    with no more than a warning, and the pods would run without it."""
    template = (sent.get("spec") or {}).get("template") or {}
    kept = (stored.get("spec") or {}).get("template") or {}
    for op in manifests.override_operations(source, request):
        path = op["path"]
        sent_value = jsonpointer.resolve_pointer(template, path, None)
        # A zero value (false, "", 0, [], {}) is one the server omits (omitempty) when
        # it stores the object: there, not dropped.
        if op["op"] == "remove" or sent_value is None or manifests.omitted_zero(sent_value):
            continue
        if jsonpointer.resolve_pointer(kept, path, None) is None:
            f.problem(
                _WHERE,
                f"{context} dropped {path} of the overridden pod template in a dry run of "
                "the destination StatefulSet: it is no field the API server knows there",
                "check the spelling and the place of that field in a pod template "
                "(kubectl explain pod.spec)",
            )
