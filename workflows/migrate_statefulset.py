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
import contextlib
from typing import Any

from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    FailureError,
    WorkflowAlreadyStartedError,
)

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from activities.migration import MigrationActivities
    from activities.temporal import TemporalActivities
    from contract import (
        MAX_BLOCK,
        PAUSED_AT_SAFE_POINT,
        SEARCH_ATTRIBUTES,
        AbortRequest,
        BudgetInput,
        Carried,
        CleanupInput,
        CleanupResult,
        Control,
        Dependency,
        EnsureDestinationInput,
        LockInput,
        MigrationRequest,
        MigrationResult,
        OrdinalResult,
        Plan,
        PlanInput,
        Problem,
        Progress,
        SliceRef,
        StepReport,
        cleanup_workflow_id,
        ordinal_workflow_id,
        rollback_workflow_id,
    )
    from contract.errors import HEALTH_GATE_FAILED, PREFLIGHT_FAILED, RUNS_IN_BOTH


# Our own workflow code is imported inside the sandbox, so its checks apply to it.
from workflows.cleanup import CleanupMigration
from workflows.handover import ORDINAL_BLOCKED, ORDINAL_STEP, outliving_cancel
from workflows.options import (
    ABORTABLE_SHARE,
    CLEAN_FINISH,
    CONTINUE_AS_NEW,
    KEEP_EARLY_APPROVAL,
    LEAN_HISTORY,
    LOSSLESS_REPORTS,
    NOTHING_TO_MOVE,
    ORPHAN_CHECK,
    PARALLEL_MOVES,
    SHARED_BUDGET,
    STATEFULSET_LOCK,
    best_effort,
    preflight,
    quick,
)
from workflows.progress import placement
from workflows.safe_points import SafePoints


def failure_text(err: BaseException) -> str:
    """What failed, for the progress of a failed run: the innermost cause's message and
    type, and the activity or child that failed on the way (not "Activity task failed")."""
    where, cause = [], err
    while isinstance(cause, (ActivityError, ChildWorkflowError)) and cause.cause is not None:
        where.append(
            cause.activity_type if isinstance(cause, ActivityError) else cause.workflow_type
        )
        cause = cause.cause
    kind = cause.type if isinstance(cause, ApplicationError) and cause.type else ""
    message = cause.message if isinstance(cause, FailureError) else str(cause)
    text = f"{' > '.join(where)}: " if where else ""
    return (text + (f"{kind}: " if kind else "") + message)[:2000]


def typed(request: Any, carried: Any) -> tuple[MigrationRequest, Carried | None]:
    """The run's arguments as models. The SDK decodes by the run's type hints only when
    as many arguments came as it has parameters: a start with the request alone (the
    CLI, the UI) gives plain JSON here, a continue-as-new (request, carried) the models."""
    if not isinstance(request, MigrationRequest):
        request = MigrationRequest.model_validate(request)
    if carried is not None and not isinstance(carried, Carried):
        carried = Carried.model_validate(carried)
    return request, carried


# A request that does not validate (e.g. raw JSON from the Temporal CLI) fails the
# run at once with pydantic's message, instead of failing workflow tasks forever.
@workflow.defn(name="MigrateStatefulSet", failure_exception_types=[ValidationError])
class MigrateStatefulSet(SafePoints):
    """Move a StatefulSet from the source to the destination cluster, ordinal by ordinal.

    Operators send ``pause``, ``resume``, ``approve``, ``abort``, ``set_approval`` and
    ``rollback`` (workflows/operator_messages.py), each as a signal or as an update.
    """

    @workflow.init
    def __init__(self, request: MigrationRequest, carried: Carried | None = None) -> None:
        # Set from the request before any handler runs, so an operator message that
        # arrives during the first activity sees (and keeps) the request's state; a run
        # that continues an earlier one starts from what that one carried.
        request, carried = typed(request, carried)
        self._request = request
        self._carried = carried
        self._progress = Progress(approval=request.approval)
        if carried is not None:
            self._progress = Progress(
                phase="moving",
                remaining=carried.remaining,
                run=carried.run + 1,
                approval=carried.approval,
                approved=carried.approved,
                approve_all=carried.approve_all,
                rolled_back=carried.rolled_back,
                finished=carried.finished,
                warnings=carried.warnings,
                paused=carried.control.paused,
                aborting=carried.control.aborting,
            )
        self._plan: Plan | None = None
        self._search_attributes: set[str] = set()
        self._control = carried.control if carried is not None else Control()
        self._forwarded = Control()
        self._deps: list[Dependency] = carried.dependencies if carried is not None else []
        self._child = None
        self._forwarding = asyncio.Lock()
        # In the destination and not rolled back, newest last: what a rollback gives back
        # (moved by this run, or by an earlier run of this migration: _moved_before).
        self._moved: list[OrdinalResult] = []
        self._moved_before: set[int] = set()
        self._giving_back = False
        self._cancel_requested = False
        self._locked = False
        self._keep_lock = False
        self._in_child = False
        self._budget_shared = False
        self._ran = 0  # ordinals this run moved (a continue-as-new waits for one)
        # A failed health gate in a block: a rollback gives back up to this ordinal.
        self._rollback_down_to: int | None = None
        if carried is not None:
            # Held since the first run: a failure of this one releases them too.
            self._locked = self._budget_shared = True
            # The rollback stack as it was, so a rollback asked before this run's
            # preflight is accepted (preflight then keeps only what the clusters confirm).
            done = {r.ordinal: r for r in carried.finished}
            self._moved = [done.get(k) or OrdinalResult(ordinal=k) for k in carried.stack]
            self._moved_before = set(carried.stack) - set(carried.moved)

    @workflow.query
    def progress(self) -> Progress:
        return self._progress

    @workflow.query
    def plan(self) -> Plan | None:
        return self._plan

    # -- from the children ----------------------------------------------------------------

    def _late(self, report: StepReport) -> bool:
        """News of an ordinal that is not the current one (already done). A report that
        arrives before the child's handle (the SDK applies signals before the start's
        resolution in one activation) is the current ordinal's, and is applied."""
        if report.ordinal != self._progress.current_ordinal or not self._in_child:
            return True  # (not in a child: a child a terminated run left, reporting here)
        return self._child is None and not workflow.patched(LOSSLESS_REPORTS)

    @workflow.signal(name=ORDINAL_BLOCKED)
    async def ordinal_blocked(self, report: StepReport) -> None:
        if self._late(report):
            return
        if report.resumes is not None and report.resumes < self._control.resumes:
            return  # a report again, made before the operator's latest resume
        together = self._progress.moving_together
        if together:  # a block: all of it is blocked, and all of it would go back
            what = f"ordinals {report.ordinal}..{together[-1]}"
            why, back = f"{what} {report.step} is blocked: {report.detail}", f"{what} back"
        else:
            why = f"ordinal {report.ordinal} {report.step} is blocked: {report.detail}"
            back = "the ordinal back"
        undo = (
            f"abort puts {back} where it was and ends the run"
            if report.step == "slices_healthy"
            else f"abort (or rollback) puts {back} where it was"
        )
        await self._apply_control(
            self._control.model_copy(update={"paused": True}),
            blocked=why,
            step=report.step,
            phase="paused",
            pause_reason=f"{why}. Fix the cause, then resume to retry the step; {undo}.",
        )
        if self._cancel_requested and not self._control.undo:  # cancelled meanwhile: put back
            await self._undo_blocked("cancel of a blocked step", aborting=True)

    @workflow.signal(name=ORDINAL_STEP)
    def ordinal_step(self, report: StepReport) -> None:
        if self._late(report):
            return  # late news of an ordinal already done
        if report.step == PAUSED_AT_SAFE_POINT:
            if not self._control.paused and workflow.patched(LEAN_HISTORY):
                return  # resumed before the report landed: the child goes on
            phase = "paused"
        else:
            phase = "rolling_back" if self._progress.rollback else "moving"
        self._update_progress(step=report.step, phase=phase)

    async def _health_failed(self, result: OrdinalResult, also: list[OrdinalResult]) -> None:
        """A health gate failed on an ordinal that now runs in the destination (and on
        ``also``, moved in the same block)."""
        assert result.health is not None
        on_failure = self._request.health.on_failure
        why = f"health gate failed on ordinal {result.ordinal}: {result.health.failures}"
        for other in also:
            assert other.health is not None
            why += f"; on ordinal {other.ordinal}: {other.health.failures}"
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
        if self._carried is None:  # a continued run plans between two ordinals: moving
            self._update_progress(phase="preflight", **reset)
        plan = await workflow.execute_activity_method(
            MigrationActivities.plan_migration,
            PlanInput(request=request, migration_id=migration_id),
            **preflight("preflight: check both clusters and build the plan"),
        )
        if workflow.patched(ORPHAN_CHECK):
            plan = await self._refuse_orphans(plan, migration_id)
        self._plan = plan
        warnings = plan.warnings
        if self._carried is not None:
            # The stack carried, less what the clusters no longer show as given back-able
            # (a claim not Bound on the same storage in both): never roll that back.
            candidates = {o.ordinal for o in plan.moved}
            if gone := [r.ordinal for r in self._moved if r.ordinal not in candidates]:
                warnings = [
                    *warnings,
                    f"ordinals {gone} moved earlier are no longer rollback candidates (their "
                    "claims are not Bound on the same storage in both clusters); a rollback "
                    "skips them",
                ]
                self._moved = [r for r in self._moved if r.ordinal in candidates]
            warnings = list(dict.fromkeys([*self._carried.warnings, *warnings]))
        elif not self._moved:
            # What an earlier run of this migration moved, read from the clusters, so a
            # rollback can give it back (the last moved, the destination's lowest, last).
            self._moved_before = {o.ordinal for o in plan.moved}
            self._moved = [
                OrdinalResult(ordinal=o.ordinal, volumes=[v.volume for v in o.volumes])
                for o in reversed(plan.moved)
            ]
        self._update_progress(warnings=warnings, remaining=[o.ordinal for o in plan.ordinals])
        for warning in plan.warnings:
            workflow.logger.warning("preflight: %s", warning)
        return plan

    async def _lock(self) -> None:
        """One migration per StatefulSet: taken before the first change (preflight refuses
        a StatefulSet another migration holds; this settles two started at once)."""
        if self._locked or not workflow.patched(STATEFULSET_LOCK):
            return
        request = self._request
        src = SliceRef(
            context=request.source_context,
            namespace=request.namespace,
            statefulset=request.statefulset,
        )
        migration_id = workflow.info().workflow_id
        self._locked = True
        await workflow.execute_activity_method(
            MigrationActivities.lock_statefulset,
            LockInput(ref=src, migration_id=migration_id),
            **quick(f"{src.context}: lock StatefulSet {src.statefulset} for {migration_id}"),
        )

    async def _refuse_orphans(self, plan: Plan, migration_id: str) -> Plan:
        """A child a terminated or reset run of this migration left running still moves
        (or gives back) its ordinal: a problem, found before anything changes. Only the
        ordinals at the border of the two slices can be in flight."""
        top = plan.source_start + plan.source_replicas - 1
        border = {top, top + 1}
        if plan.destination_exists:
            border |= {plan.destination_start - 1, plan.destination_start}
        ids = [
            child(migration_id, k)
            for k in sorted(k for k in border if 0 <= k < plan.end)
            for child in (ordinal_workflow_id, rollback_workflow_id)
        ]
        # A block's child is named after its highest ordinal: up to the largest block
        # above the border (a run of this migration with another max_unavailable).
        blocks = {*range(top + 2, top + 1 + MAX_BLOCK)}
        if plan.destination_exists:
            blocks |= {*range(plan.destination_start + 1, plan.destination_start + MAX_BLOCK)}
        ids += [
            ordinal_workflow_id(migration_id, k) for k in sorted(blocks - border) if k < plan.end
        ]
        if not ids:
            return plan
        running = await workflow.execute_activity_method(
            TemporalActivities.running_workflows,
            ids,
            **quick("children of an earlier run still running?"),
        )
        found = [
            Problem(
                object=f"workflow {workflow_id}",
                message="is still running: a run of this migration that was terminated or "
                "reset left it, and it still moves its ordinal",
                fix=f"wait until it has ended (temporal workflow describe --workflow-id "
                f"{workflow_id}), then start the migration again",
            )
            for workflow_id in running
        ]
        return plan.model_copy(update={"problems": [*plan.problems, *found]}) if found else plan

    async def _prepare(self, migration_id: str, plan: Plan, src: SliceRef, dst: SliceRef) -> None:
        """The destination StatefulSet (owning nothing yet) and the app's dependencies."""
        request = self._request
        self._update_progress(phase="preparing")
        await self._lock()
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
                EnsureDestinationInput(
                    request=request,
                    migration_id=migration_id,
                    start=start,
                    template_digest=plan.destination_template_digest,
                ),
                **quick(f"{dst.context}: StatefulSet {dst.statefulset} owning [{start}, {start})"),
            )
        deps = await workflow.execute_activity_method(
            MigrationActivities.ensure_dependencies,
            PlanInput(request=request, migration_id=migration_id),
            **quick(f"{dst.context}: copy Secrets, ConfigMaps, Service, PDB"),
        )
        self._deps = deps.dependencies

    async def _move_ordinals(self, plan: Plan, first: int | None) -> None:
        """Every ordinal in turn, highest first, each behind its safe point."""
        self._update_progress(phase="moving")
        by_ordinal = {o.ordinal: o for o in [*plan.moved, *plan.ordinals]}
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
            if self._continue_as_new_due() and await self._may_continue_as_new():
                self._continue_as_new(first)
            self._update_progress(current_ordinal=k, step=None)
            if not await self._wait_at_safe_point(k, first):
                return
            if self._progress.remaining[:1] != [k]:
                continue  # a rollback at the safe point changed what is next
            block = self._next_block(first)
            self._rollback_down_to = None  # (a rollback was the safe point's to do)
            self._update_progress(moving_together=block[1:])
            result = await self._move(by_ordinal[k], [by_ordinal[j] for j in block[1:]])
            results = result.block()
            if result.undone:
                if await self._put_back(block, touched=bool(result.steps)):
                    continue
                return
            self._ran += 1
            self._update_progress(
                current_ordinal=None,
                step=None,
                moving_together=[],
                finished=[*self._progress.finished, *results],
                remaining=[o for o in self._progress.remaining if o not in block],
            )
            if not result.moved:
                if not self._control.aborting:  # its own workflow was cancelled
                    await self._abort(AbortRequest(reason=f"ordinal {k}'s workflow was cancelled"))
                return
            self._moved.extend(results)
            failed = [r for r in results if r.health is not None and not r.health.ok]
            if failed:
                # The highest that failed: a rollback of "the ordinal" (on_failure's, or
                # the operator's at this pause) gives back the block's ordinals from the
                # lowest (the destination's) up to it.
                if len(results) > 1:
                    self._rollback_down_to = failed[0].ordinal
                await self._health_failed(failed[0], failed[1:])

    def _next_block(self, first: int | None) -> list[int]:
        """The ordinals the next child moves, highest first: the next one, and with
        max_unavailable d > 1 the contiguous ones below it, up to d, cut before one
        that waits for its own approval (each is approved at its own safe point); an
        ordinal that was held for approval moves alone."""
        d = self._request.max_unavailable
        remaining = self._progress.remaining
        block = remaining[:1]
        p = self._progress
        if p.approval.needs(block[0], first) and not p.approve_all:
            return block  # approved on its own, it moves on its own (a canary stays one)
        if d > 1 and workflow.patched(PARALLEL_MOVES):
            for j in remaining[1:d]:
                if j != block[-1] - 1 or self._needs_approval(j, first):
                    break
                block.append(j)
        return block

    # -- continue-as-new ---------------------------------------------------------------

    async def _replan_until_clean(self, migration_id: str, plan: Plan, first: int | None) -> Plan:
        """A continued run's preflight, between two ordinals (none half-moved): a problem
        it finds (a new HPA, a rotated Secret, a pod not Ready) pauses the run with the
        list; resume plans again, abort ends the run here."""
        while plan.problems:
            listing = "; ".join(f"{p.object}: {p.message} (fix: {p.fix})" for p in plan.problems)
            why = f"preflight of run {self._progress.run} found {len(plan.problems)} problem(s)"
            workflow.logger.warning("%s: %s", why, listing)
            await self._apply_control(
                self._control.model_copy(update={"paused": True}),
                pause_reason=f"{why} between two ordinals: {listing}. Fix them and resume "
                "(preflight runs again), or abort",
            )
            if not await self._wait_at_safe_point(None, first):
                return plan  # aborted
            plan = await self._preflight(migration_id)
        return plan

    def _quiet(self) -> bool:
        """Nothing asked that a safe point must do first, nothing in flight."""
        p, c = self._progress, self._control
        return not (
            c.paused
            or c.aborting
            or c.undo
            or p.rollback
            or p.blocked
            or self._cancel_requested
            or self._in_child
        )

    def _continue_as_new_due(self) -> bool:
        """Between two ordinals: the history is long enough to start afresh (and this
        run moved one at least, so a bound set low still gets somewhere)."""
        if not self._ran:
            return False
        info = workflow.info()
        due = (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() >= self._request.continue_as_new_events
        )
        return due and self._quiet() and workflow.patched(CONTINUE_AS_NEW)

    async def _may_continue_as_new(self) -> bool:
        """Every message handler finished (an update's reply is never lost) and still
        nothing asked meanwhile."""
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._quiet()

    def _continue_as_new(self, first: int | None) -> None:
        """Start the next run of this migration (same workflow id; children report to it
        by id) with what it must carry; it plans again from the clusters."""
        p = self._progress
        carried = Carried(
            run=p.run,
            begun=self._begun,
            first=first,
            control=self._control,
            approval=p.approval,
            approved=p.approved,
            approve_all=p.approve_all,
            rolled_back=p.rolled_back,
            finished=[r.model_copy(update={"steps": []}) for r in p.finished],
            moved=[r.ordinal for r in self._moved_now()],
            stack=[r.ordinal for r in self._moved],
            remaining=p.remaining,
            dependencies=self._deps,
            warnings=p.warnings,
        )
        workflow.logger.info(
            "run %d continues as new after %d events (%d ordinal(s) remain)",
            p.run,
            workflow.info().get_current_history_length(),
            len(p.remaining),
        )
        workflow.continue_as_new(args=[self._request, carried])

    def _moved_now(self) -> list[OrdinalResult]:
        """What this run moved (and did not give back)."""
        return [r for r in self._moved if r.ordinal not in self._moved_before]

    async def _put_back(self, block: list[int], touched: bool) -> bool:
        """Ordinal k (the block k..) was blocked and put back in the source. An abort ends the run
        (False); a rollback pauses here (``all``: the ordinals moved before go back at
        the safe point); a cancel of its own workflow is an abort. Undone before it
        changed anything (``touched`` False), a rollback still gives back the last
        ordinal moved, at the safe point."""
        k = block[0]
        self._update_progress(current_ordinal=None, step=None, moving_together=[])
        if self._control.aborting:
            return False
        mode = self._progress.rollback
        if not mode:
            await self._abort(AbortRequest(reason=f"ordinal {k}'s workflow was cancelled"))
            return False
        if not touched:
            return True
        self._update_progress(rolled_back=[*self._progress.rolled_back, *block])
        if mode == "ordinal":
            self._update_progress(rollback="")
            which = f"ordinal {k} was" if len(block) == 1 else f"ordinals {block} were"
            await self._apply_control(
                self._control.model_copy(update={"paused": True}),
                pause_reason=f"{which} put back in the source after a blocked step: "
                "resume moves it again, abort ends here",
            )
        return True

    def _cancel(self) -> Any:
        """A cancel of the migration (the Temporal UI's Cancel, the CLI, the API) is an
        abort: the ordinal in flight finishes, or is put back if it is blocked; then the
        run ends cancelled, the progress saying where every ordinal runs."""
        if self._finished():
            workflow.logger.warning("cancel requested after the migration ended: nothing to do")
            return None
        workflow.logger.warning("cancel requested: the migration aborts at the next safe point")
        self._cancel_requested = True
        if self._control.aborting and not self._progress.blocked:
            return None
        return self._abort(AbortRequest(reason="cancel requested from the Temporal UI, CLI or API"))

    @workflow.run
    async def run(
        self, request: MigrationRequest, carried: Carried | None = None
    ) -> MigrationResult:
        result = await outliving_cancel(self._whole(self._request), self._cancel)
        if self._cancel_requested:
            raise asyncio.CancelledError(
                "cancelled: see the progress query for where each ordinal runs"
            )
        return result

    async def _whole(self, request: MigrationRequest) -> MigrationResult:
        """The run, its lock released at the end however it ends, and its progress saying
        ``failed`` (with the error and where each ordinal runs) when it fails."""
        try:
            result = await self._run(request)
        except (FailureError, ValidationError) as err:
            # Only what fails the run: any other exception is a bug that fails the
            # workflow task (retried), and must add no command on its way.
            where = await self._placement_if_known(request)
            self._update_progress(
                phase="failed",
                error=failure_text(err),
                current_ordinal=None,
                moving_together=[],
                child=None,
                placement=where,
            )
            await self._end(request)
            raise
        await self._end(request)
        if self._cancel_requested:
            self._update_progress(phase="cancelled")
        return result

    async def _placement_if_known(self, request: MigrationRequest) -> dict[str, str]:
        """Where every ordinal runs, for a run that fails: a few tries only, so a run
        failing because a cluster is unreachable still ends."""
        if not self._locked:  # nothing was changed
            return {}
        states = []
        for context, namespace in (
            (request.source_context, request.namespace),
            (request.destination_context, request.target_namespace),
        ):
            try:
                states.append(
                    await workflow.execute_activity_method(
                        MigrationActivities.read_statefulset,
                        SliceRef(
                            context=context, namespace=namespace, statefulset=request.statefulset
                        ),
                        **best_effort(f"{context}: state at the failure"),
                    )
                )
            except ActivityError:
                return {}
        return placement(states[0], states[1])

    async def _share_budget(self) -> None:
        """The budget shared for one more ordinal in flight. It retries while a cluster is
        unreachable; an abort (or a cancel) meanwhile ends the wait, and the child then
        starts aborted and changes nothing (the budgets are restored at the end)."""
        self._budget_shared = True
        r = self._request
        share = asyncio.ensure_future(
            workflow.execute_activity_method(
                MigrationActivities.share_disruption_budget,
                BudgetInput(request=r, migration_id=workflow.info().workflow_id),
                **quick(f"share the disruption budget of {r.statefulset} between the clusters"),
            )
        )
        await workflow.wait_condition(lambda: share.done() or self._control.aborting)
        if share.done() or not workflow.patched(ABORTABLE_SHARE):
            await share
            return
        share.cancel()
        with contextlib.suppress(asyncio.CancelledError, ActivityError):
            await share

    async def _end(self, request: MigrationRequest) -> None:
        """However the run ends: each PDB its own budget back (or, with the app left in
        both clusters, one budget shared between them), the StatefulSet unlocked;
        neither while a child of another run still moves an ordinal. A run that held the
        lock settles the budgets even if it moved nothing: an earlier run of this
        migration (terminated, or whose restore failed) may have left them shared."""
        settle = self._budget_shared or (self._locked and workflow.patched(SHARED_BUDGET))
        if settle and not self._keep_lock:
            try:
                await workflow.execute_activity_method(
                    MigrationActivities.restore_disruption_budget,
                    BudgetInput(request=request, migration_id=workflow.info().workflow_id),
                    **best_effort(f"restore the disruption budgets of {request.statefulset}"),
                )
            except ActivityError as err:  # tighter budgets stay: safe, and named
                workflow.logger.warning(
                    "the PodDisruptionBudgets of %s keep their shared budget (%s): set them "
                    "back from their annotation stsmigrate.dev/disruption-budget by hand",
                    request.statefulset,
                    failure_text(err),
                )
        await self._unlock(request)

    async def _unlock(self, request: MigrationRequest) -> None:
        """The StatefulSet is free for another migration once this one has ended."""
        if not self._locked:
            return
        src = SliceRef(
            context=request.source_context,
            namespace=request.namespace,
            statefulset=request.statefulset,
        )
        if self._keep_lock:
            return
        try:
            await workflow.execute_activity_method(
                MigrationActivities.unlock_statefulset,
                LockInput(ref=src, migration_id=workflow.info().workflow_id),
                **best_effort(f"{src.context}: unlock StatefulSet {src.statefulset}", tries=10),
            )
        except ActivityError as err:  # the run's own outcome stands; the lock is named
            workflow.logger.warning(
                "StatefulSet %s/%s stays locked by this migration (%s): remove the "
                "annotation stsmigrate.dev/locked-by by hand",
                src.namespace,
                src.statefulset,
                failure_text(err),
            )

    async def _run(self, request: MigrationRequest) -> MigrationResult:
        migration_id = workflow.info().workflow_id
        carried = self._carried
        begun = carried.begun if carried is not None else workflow.now()
        self._begun = begun
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
        if carried is not None:
            plan = await self._replan_until_clean(migration_id, plan, carried.first)
        if plan.problems and carried is None:
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
        if carried is not None:
            first = carried.first
            if plan.problems:
                pass  # aborted while preflight's problems held the run: nothing more moves
            elif plan.fix_retention_policy:  # set back to Delete since (a sync, say)
                await workflow.execute_activity_method(
                    MigrationActivities.ensure_retention_policy,
                    src,
                    **quick(f"{src.context}: whenScaled Retain"),
                )
            if not plan.problems:
                await self._move_ordinals(plan, first)
        elif not plan.ordinals and workflow.patched(NOTHING_TO_MOVE):
            pass  # nothing to move: nothing changes in either cluster
        elif await self._wait_at_safe_point(None, first):
            await self._prepare(migration_id, plan, src, dst)
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
        where = placement(source_state, destination_state)
        if both := [k for k, side in where.items() if side == "both"]:
            await workflow.wait_condition(workflow.all_handlers_finished)
            raise ApplicationError(
                f"ordinals {both} are owned by both StatefulSets at the end: somebody scaled "
                "one up while the migration ran. Each of these identities may run twice; scale "
                "the side that should not own them down by hand (kubectl scale / patch "
                "spec.ordinals), then check the app",
                where,
                type=RUNS_IN_BOTH,
                non_retryable=True,
            )
        cleanup, cleanup_skipped = None, ""
        if request.cleanup:
            cleanup, cleanup_skipped = await self._clean_finish(migration_id, where, aborted)
        self._update_progress(
            phase="aborted" if aborted else "done", current_ordinal=None, step=None, placement=where
        )
        workflow.logger.info(
            "migration %s: %d ordinal(s) moved in %.1f s",
            "aborted" if aborted else "done",
            len(self._moved_now()),
            seconds,
        )
        await workflow.wait_condition(workflow.all_handlers_finished)
        # A summary: the plan stays in the ``plan`` query and the history, each
        # ordinal's step timings in its child's result (a result near the 2 MB payload
        # limit at 1,000 ordinals otherwise).
        return MigrationResult(
            migration_id=migration_id,
            moved=[r.model_copy(update={"steps": []}) for r in self._moved_now()],
            rolled_back=self._progress.rolled_back,
            dependencies=self._deps,
            source=source_state,
            destination=destination_state,
            seconds=seconds,
            aborted=aborted,
            abort_reason=self._progress.abort_reason,
            placement=where,
            cleanup=cleanup,
            cleanup_skipped=cleanup_skipped,
        )

    async def _clean_finish(
        self, migration_id: str, where: dict[str, str], aborted: bool
    ) -> tuple[CleanupResult | None, str]:
        """The clean finish (workflows/cleanup.py), a child, once every ordinal runs in the
        destination; the run holds the lock meanwhile. It is the run's last step, so a
        refusal or a failure leaves the moved app as it is and is named in the result:
        ``stsmigrate cleanup`` runs it again. Only a request with ``cleanup`` gets here,
        so no history recorded before it existed meets these commands."""
        left = sorted(int(k) for k, side in where.items() if side != "destination")
        if aborted or self._cancel_requested or left or not where:
            why = (
                "the run was aborted or cancelled"
                if aborted or self._cancel_requested
                else f"ordinals {left} still run in the source"
                if left
                else "the destination owns no ordinal"
            )
            workflow.logger.warning("no clean finish for %s: %s", migration_id, why)
            return None, f"{why}: run `stsmigrate cleanup {migration_id}` once every ordinal moved"
        if not workflow.patched(CLEAN_FINISH):  # never: no older run asks for cleanup
            return None, "recorded before the clean finish existed"
        self._update_progress(phase="cleaning_up", current_ordinal=None, step=None)
        try:
            done = await workflow.execute_child_workflow(
                CleanupMigration.run,
                CleanupInput(request=self._request, migration_id=migration_id),
                id=cleanup_workflow_id(migration_id),
                # Like the ordinals' children: a terminated parent does not cut a step.
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                static_summary=f"clean finish of {migration_id}",
            )
        except (ChildWorkflowError, WorkflowAlreadyStartedError) as err:
            why = failure_text(err)
            workflow.logger.warning("the clean finish of %s did not finish: %s", migration_id, why)
            return None, f"the clean finish failed ({why}): `stsmigrate cleanup {migration_id}`"
        return done, ""
