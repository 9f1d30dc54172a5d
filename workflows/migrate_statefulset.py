"""MigrateStatefulSet: the whole migration, durable.

Preflight, then prepare the destination, then one child per ordinal, highest
first, with the deterministic id ``<migration id>/ordinal-<k>`` (MigrateOrdinal);
a rollback runs ``<migration id>/rollback-<k>`` (RollbackOrdinal). Every step is an
activity recorded in history, so a worker (or, with persistent storage, a server)
that dies resumes at the exact step of the exact ordinal. Orchestration only: all
I/O is in activities, and no Secret value, manifest or credential ever enters a
payload (docs/design.md, invariant I5).
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from activities.migration import MigrationActivities
    from activities.temporal import TemporalActivities
    from contract import (
        PAUSED_AT_SAFE_POINT,
        SEARCH_ATTRIBUTES,
        Control,
        EnsureDestinationInput,
        MigrationRequest,
        MigrationResult,
        OrdinalResult,
        Plan,
        PlanInput,
        Progress,
        SliceRef,
        StepReport,
    )
    from contract.errors import HEALTH_GATE_FAILED, PREFLIGHT_FAILED


# Our own workflow code is imported inside the sandbox, so its checks apply to it.
from workflows.handover import ORDINAL_BLOCKED, ORDINAL_STEP
from workflows.options import KEEP_EARLY_APPROVAL, preflight, quick
from workflows.progress import placement
from workflows.safe_points import SafePoints


# A request that does not validate (e.g. raw JSON from the Temporal CLI) fails the
# run at once with pydantic's message, instead of failing workflow tasks forever.
@workflow.defn(name="MigrateStatefulSet", failure_exception_types=[ValidationError])
class MigrateStatefulSet(SafePoints):
    """Move a StatefulSet from the source to the destination cluster, ordinal by ordinal.

    Operators send ``pause``, ``resume``, ``approve``, ``abort``, ``set_approval`` and
    ``rollback`` (workflows/operator_messages.py), each as a signal or as an update.
    """

    @workflow.init
    def __init__(self, request: MigrationRequest) -> None:
        # Set from the request before any handler runs, so an operator message that
        # arrives during the first activity sees (and keeps) the request's state.
        self._request = request
        self._progress = Progress(approval=request.approval)
        self._plan: Plan | None = None
        self._search_attributes: set[str] = set()
        self._control = Control()
        self._forwarded = Control()
        self._child = None
        self._forwarding = asyncio.Lock()
        self._moved: list[OrdinalResult] = []  # moved by this run and not rolled back

    @workflow.query
    def progress(self) -> Progress:
        return self._progress

    @workflow.query
    def plan(self) -> Plan | None:
        return self._plan

    # -- from the children ----------------------------------------------------------------

    @workflow.signal(name=ORDINAL_BLOCKED)
    async def ordinal_blocked(self, report: StepReport) -> None:
        if self._child is None or report.ordinal != self._progress.current_ordinal:
            return
        why = f"ordinal {report.ordinal} {report.step} is blocked: {report.detail}"
        await self._apply_control(
            self._control.model_copy(update={"paused": True}),
            blocked=why,
            step=report.step,
            phase="paused",
            pause_reason=f"{why}. Fix the cause, then resume to retry the step.",
        )

    @workflow.signal(name=ORDINAL_STEP)
    def ordinal_step(self, report: StepReport) -> None:
        if self._child is None or report.ordinal != self._progress.current_ordinal:
            return  # late news of an ordinal already done
        if report.step == PAUSED_AT_SAFE_POINT:
            phase = "paused"
        else:
            phase = "rolling_back" if self._progress.rollback else "moving"
        self._update_progress(step=report.step, phase=phase)

    async def _health_failed(self, result: OrdinalResult) -> None:
        """A health gate failed on an ordinal that now runs in the destination."""
        assert result.health is not None
        on_failure = self._request.health.on_failure
        why = f"health gate failed on ordinal {result.ordinal}: {result.health.failures}"
        workflow.logger.warning("%s (on_failure: %s)", why, on_failure)
        if on_failure == "fail":
            await workflow.wait_condition(workflow.all_handlers_finished)
            raise ApplicationError(
                f"{why}. Ordinal {result.ordinal} runs in the destination; ordinals "
                f"{self._progress.remaining} are still in the source. Start the migration again "
                "to continue once the app is healthy.",
                result.health,
                type=HEALTH_GATE_FAILED,
                non_retryable=True,
            )
        if on_failure in ("rollback_ordinal", "rollback_all"):
            self._update_progress(rollback="all" if on_failure == "rollback_all" else "ordinal")
            return
        # pause: a human looks; resume accepts and goes on, abort ends here.
        await self._apply_control(
            self._control.model_copy(update={"paused": True}), pause_reason=why
        )

    # -- the run ----------------------------------------------------------------------------

    async def _preflight(self, migration_id: str) -> Plan:
        """Register what the namespace allows, then check both clusters and plan."""
        request = self._request
        self._search_attributes = set(
            await workflow.execute_activity_method(
                TemporalActivities.registered_search_attributes,
                **quick("which search attributes the namespace has"),
            )
        )
        if missing := sorted(set(SEARCH_ATTRIBUTES) - self._search_attributes):
            workflow.logger.warning(
                "search attributes %s are not registered in this namespace; the migration runs "
                "without them (see: temporal operator search-attribute create --help)",
                ", ".join(missing),
            )
        self._upsert_search_attributes(
            StsmigrateStatefulSet=request.statefulset,
            StsmigrateNamespace=request.namespace,
            StsmigrateSourceContext=request.source_context,
            StsmigrateDestinationContext=request.destination_context,
        )
        # Runs started before KEEP_EARLY_APPROVAL reset the policy here; replaying them
        # must do the same, or their approvals (and commands) would differ.
        reset = {} if workflow.patched(KEEP_EARLY_APPROVAL) else {"approval": request.approval}
        self._update_progress(phase="preflight", **reset)
        plan = await workflow.execute_activity_method(
            MigrationActivities.plan_migration,
            PlanInput(request=request, migration_id=migration_id),
            **preflight("preflight: check both clusters and build the plan"),
        )
        self._plan = plan
        self._update_progress(warnings=plan.warnings, remaining=[o.ordinal for o in plan.ordinals])
        for warning in plan.warnings:
            workflow.logger.warning("preflight: %s", warning)
        return plan

    async def _prepare(self, migration_id: str, plan: Plan, src: SliceRef, dst: SliceRef) -> Any:
        """The destination StatefulSet (owning nothing yet) and the app's dependencies."""
        request = self._request
        self._update_progress(phase="preparing")
        if plan.fix_retention_policy:
            await workflow.execute_activity_method(
                MigrationActivities.ensure_retention_policy,
                src,
                **quick(f"{src.context}: whenScaled Retain"),
            )
        if plan.ordinals:
            start = plan.destination_start if plan.destination_exists else plan.end
            await workflow.execute_activity_method(
                MigrationActivities.ensure_destination_statefulset,
                EnsureDestinationInput(request=request, migration_id=migration_id, start=start),
                **quick(f"{dst.context}: StatefulSet {dst.statefulset} owning [{start}, {start})"),
            )
        return await workflow.execute_activity_method(
            MigrationActivities.ensure_dependencies,
            PlanInput(request=request, migration_id=migration_id),
            **quick(f"{dst.context}: copy Secrets, ConfigMaps, Service, PDB"),
        )

    async def _move_ordinals(self, plan: Plan, first: int | None) -> None:
        """Every ordinal in turn, highest first, each behind its safe point."""
        self._update_progress(phase="moving")
        by_ordinal = {o.ordinal: o for o in plan.ordinals}
        while True:
            if not self._progress.remaining:
                # A pause asked during the last ordinal (or by its failed health gate)
                # holds here too, so a human decides before the run reports done; a
                # rollback done here puts ordinals back into remaining.
                if not await self._wait_at_safe_point(None, first):
                    return
                if not self._progress.remaining:
                    return
                continue
            k = self._progress.remaining[0]
            self._update_progress(current_ordinal=k, step=None)
            if not await self._wait_at_safe_point(k, first):
                return
            if self._progress.remaining[:1] != [k]:
                continue  # a rollback at the safe point changed what is next
            result = await self._move(by_ordinal[k])
            self._update_progress(
                current_ordinal=None,
                step=None,
                finished=[*self._progress.finished, result],
                remaining=[o for o in self._progress.remaining if o != k],
            )
            if not result.moved:
                return
            self._moved.append(result)
            if result.health is not None and not result.health.ok:
                await self._health_failed(result)

    @workflow.run
    async def run(self, request: MigrationRequest) -> MigrationResult:
        migration_id = workflow.info().workflow_id
        begun = workflow.now()
        src = SliceRef(
            context=request.source_context,
            namespace=request.namespace,
            statefulset=request.statefulset,
        )
        dst = SliceRef(
            context=request.destination_context,
            namespace=request.target_namespace,
            statefulset=request.statefulset,
        )
        plan = await self._preflight(migration_id)
        if plan.problems:
            listing = "\n".join(f"- {p.object}: {p.message} (fix: {p.fix})" for p in plan.problems)
            await workflow.wait_condition(workflow.all_handlers_finished)
            raise ApplicationError(
                f"preflight found {len(plan.problems)} problem(s); nothing was changed:\n{listing}",
                plan,
                type=PREFLIGHT_FAILED,
                non_retryable=True,
            )
        if request.dry_run:
            self._update_progress(phase="done")
            await workflow.wait_condition(workflow.all_handlers_finished)
            return MigrationResult(migration_id=migration_id, dry_run=True, plan=plan)

        first = plan.ordinals[0].ordinal if plan.ordinals else None
        deps = None
        if await self._wait_at_safe_point(None, first):
            deps = await self._prepare(migration_id, plan, src, dst)
            await self._move_ordinals(plan, first)

        source_state = await workflow.execute_activity_method(
            MigrationActivities.read_statefulset,
            src,
            **quick(f"{src.context}: final state"),
        )
        destination_state = await workflow.execute_activity_method(
            MigrationActivities.read_statefulset,
            dst,
            **quick(f"{dst.context}: final state"),
        )
        seconds = round((workflow.now() - begun).total_seconds(), 3)
        aborted = self._control.aborting
        self._update_progress(
            phase="aborted" if aborted else "done", current_ordinal=None, step=None
        )
        workflow.logger.info(
            "migration %s: %d ordinal(s) moved in %.1f s",
            "aborted" if aborted else "done",
            len(self._moved),
            seconds,
        )
        await workflow.wait_condition(workflow.all_handlers_finished)
        return MigrationResult(
            migration_id=migration_id,
            plan=plan,
            moved=self._moved,
            rolled_back=self._progress.rolled_back,
            dependencies=deps.dependencies if deps else [],
            source=source_state,
            destination=destination_state,
            seconds=seconds,
            aborted=aborted,
            abort_reason=self._progress.abort_reason,
            placement=placement(source_state, destination_state),
        )
