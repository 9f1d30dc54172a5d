"""The dependency activity: Secrets, ConfigMaps, ServiceAccount, headless Service and
PDBs the pods need, copied to the destination when absent (contract:
``activities.converging``). One already there (before, or a 409 on create) is used
only if it is the source's (``activities.sameness``); otherwise the activity fails,
non-retryably, before any ordinal is given up. Secret data passes through here
only: the result, the errors and the log hold names and keys, never values."""

from __future__ import annotations

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import manifests, sameness
from activities.converging import ConvergingActivities, conflict
from activities.kube import Obj
from activities.preflight import dependency_names
from contract import DependenciesResult, Dependency, PlanInput
from contract.errors import CONFLICT, INVALID, NOT_OURS

# One logger for every migration activity, as before the split: its name is in each
# JSON log line.
log = structlog.get_logger("activities.migration")


class DependencyActivities(ConvergingActivities):
    @activity.defn
    def ensure_dependencies(self, request: PlanInput) -> DependenciesResult:
        r = request.request
        source, dest = self.kube(r.source_context), self.kube(r.destination_context)
        sts = source.statefulset(r.namespace, r.statefulset)
        if sts is None:
            raise conflict(f"source StatefulSet {r.namespace}/{r.statefulset} disappeared")
        try:
            # The destination's pods are made from the overridden template: what it
            # names (a Secret of a secretKeyRef an override added) is needed there.
            sts = manifests.with_overrides(sts, r)
        except manifests.OverrideRefused as e:
            raise ApplicationError(str(e), type=INVALID, non_retryable=True) from None
        # Every object already in the destination is judged before anything is copied,
        # so a refusal leaves the destination as it found it.
        found = [
            (kind, name, source.dependency(kind, r.namespace, name))
            for kind, name in dependency_names(source, sts)
        ]
        present: dict[tuple[str, str], Obj] = {}
        for kind, name, obj in found:
            there = dest.dependency(kind, r.target_namespace, name)
            if there is not None:
                present[kind, name] = there
                if obj is not None:
                    _refuse_if_different(kind, name, obj, there, dest.context, r.target_namespace)
        out = []
        for kind, name, obj in found:
            if (kind, name) in present:
                out.append(Dependency(kind=kind, name=name, action="present"))
                continue
            if obj is None:
                continue  # optional reference; preflight reported the required ones
            if kind == "Secret" and obj.get("type") == sameness.TOKEN_SECRET:
                continue  # minted per cluster
            body = manifests.copy_object(obj, kind, r, request.migration_id)
            if dest.create(kind, r.target_namespace, body) is not None:
                out.append(Dependency(kind=kind, name=name, action="copied"))
                continue
            # 409: made since our read, by a retry of ours or by somebody else: judged by
            # what it holds, as one that was there before.
            there = dest.dependency(kind, r.target_namespace, name)
            if there is None:
                raise ApplicationError(
                    f"destination {kind} {r.target_namespace}/{name} was created and deleted "
                    "again while it was being copied",
                    type=CONFLICT,
                )
            _refuse_if_different(kind, name, obj, there, dest.context, r.target_namespace)
            out.append(Dependency(kind=kind, name=name, action="present"))
        # Names and counts only: never values.
        log.info(
            "dependencies_ensured",
            context=dest.context,
            copied=[f"{d.kind}/{d.name}" for d in out if d.action == "copied"],
        )
        return DependenciesResult(dependencies=out)


def _refuse_if_different(
    kind: str, name: str, original: Obj, present: Obj, context: str, ns: str
) -> None:
    """Names lie: the pods in the destination would use another value silently."""
    why = sameness.difference(kind, original, present)
    if why is None:
        return
    raise ApplicationError(
        f"destination {kind} {ns}/{name} in {context} exists but is not the source's: {why}. "
        "No ordinal was moved; delete it in the destination (the migration then copies the "
        "source's) or make it equal to the source's, then start the migration again",
        type=NOT_OURS,
        non_retryable=True,
    )
