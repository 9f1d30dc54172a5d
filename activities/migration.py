"""``MigrationActivities``: every cluster change and wait of a migration, in one class
the worker registers and the workflows call, assembled from one mixin per object
it converges (``slices``, ``pods``, ``volumes``, ``dependencies``, ``budget``,
``cleanup``; their contract
is in ``activities.converging``). Its own activity is the preflight.
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog
from kubernetes import client
from temporalio import activity

from activities.budget import BudgetActivities
from activities.cleanup import CleanupActivities
from activities.dependencies import DependencyActivities
from activities.health import COMMANDS_ALLOWED
from activities.pods import PodActivities
from activities.preflight import build_plan
from activities.slices import SliceActivities
from activities.volumes import VolumeActivities
from contract import MigrationRequest, Plan, PlanInput, Problem

log = structlog.get_logger(__name__)


class MigrationActivities(
    SliceActivities,
    PodActivities,
    VolumeActivities,
    DependencyActivities,
    BudgetActivities,
    CleanupActivities,
):
    def __init__(
        self, clients: Mapping[str, client.ApiClient], allow_command_probes: bool = False
    ) -> None:
        super().__init__(clients)
        self._allow_command_probes = allow_command_probes

    @activity.defn
    def plan_migration(self, request: PlanInput) -> Plan:
        r = request.request
        plan = build_plan(
            self._maybe_kube(r.source_context),
            self._maybe_kube(r.destination_context),
            r,
            request.migration_id,
        )
        if not self._allow_command_probes and any(p.kind == "command" for p in r.health.probes):
            refused = Problem(
                object="request health.probes",
                message="command probes are off on this worker",
                fix=f"set {COMMANDS_ALLOWED}=1 on the worker (it lets workflow inputs run "
                "commands there), or use a ready, http, tcp or redis_cluster probe",
            )
            plan = plan.model_copy(update={"problems": [*plan.problems, refused]})
        if missing := self._missing_passwords(r, plan):
            plan = plan.model_copy(update={"problems": [*plan.problems, *missing]})
        log.info(
            "plan_built",
            migration_id=request.migration_id,
            ordinals=len(plan.ordinals),
            problems=len(plan.problems),
            warnings=len(plan.warnings),
        )
        return plan

    def _missing_passwords(self, r: MigrationRequest, plan: Plan) -> list[Problem]:
        """Each redis_cluster probe's password_secret is in the destination namespace
        with its key, or is a Secret the run copies there. Only key names are looked at."""
        dest = self._maybe_kube(r.destination_context)
        copied = {d.name for d in plan.dependencies if d.kind == "Secret"}
        problems = []
        for probe in r.health.probes:
            ref = probe.password_secret
            if ref is None or ref.name in copied or dest is None:
                continue
            secret = dest.dependency("Secret", r.target_namespace, ref.name)
            if secret is not None and ref.key in (secret.get("data") or {}):
                continue
            problems.append(
                Problem(
                    object=f"destination Secret {r.target_namespace}/{ref.name}",
                    message=f"the password of health probe {probe.label} (key {ref.key}) "
                    + ("is not in it" if secret else "is missing"),
                    fix=f"create the Secret with key {ref.key} in {r.destination_context}, "
                    "or name another one in password_secret",
                )
            )
        return problems
