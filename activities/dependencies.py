"""The dependency activity: Secrets, ConfigMaps, ServiceAccount, headless Service and
PDBs the pods need, copied to the destination when absent (contract:
``activities.converging``). Secret data passes through here only: the result and
the log hold names, never values."""

from __future__ import annotations

import structlog
from temporalio import activity

from activities import manifests
from activities.converging import ConvergingActivities, conflict
from activities.preflight import dependency_names
from contract import DependenciesResult, Dependency, PlanInput

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
        out = []
        for kind, name in dependency_names(source, sts):
            if dest.dependency(kind, r.target_namespace, name) is not None:
                out.append(Dependency(kind=kind, name=name, action="present"))
                continue
            obj = source.dependency(kind, r.namespace, name)
            if obj is None:
                continue  # optional reference; preflight reported the required ones
            if kind == "Secret" and obj.get("type") == "kubernetes.io/service-account-token":
                continue  # minted per cluster
            body = manifests.copy_object(obj, kind, r, request.migration_id)
            dest.create(kind, r.target_namespace, body)
            out.append(Dependency(kind=kind, name=name, action="copied"))
        # Names and counts only: never values.
        log.info(
            "dependencies_ensured",
            context=dest.context,
            copied=[f"{d.kind}/{d.name}" for d in out if d.action == "copied"],
        )
        return DependenciesResult(dependencies=out)
