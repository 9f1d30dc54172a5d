"""What happens at a migration's safe points, and the children that move ordinals.

A safe point is before the first change and between two ordinals: no ordinal is
half-moved there, so a pause holds, an approval is waited for and a rollback is
done there (docs/design.md, invariant I4). An ordinal being moved finishes first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from contract import (
        MigrationRequest,
        OrdinalInput,
        OrdinalPlan,
        OrdinalResult,
        ordinal_workflow_id,
        rollback_workflow_id,
    )
    from contract.errors import ORDINAL_STILL_RUNNING


# Our own workflow code is imported inside the sandbox, so its checks apply to it.
from workflows.handover import pods
from workflows.migrate_ordinal import MigrateOrdinal
from workflows.operator_messages import OperatorMessages
from workflows.options import CHILDREN_OUTLIVE_PARENT, LEAN_HISTORY, SHARED_BUDGET
from workflows.rollback_ordinal import RollbackOrdinal


class SafePoints(OperatorMessages):
    """The parent's safe points and its per-ordinal children."""

    _request: MigrationRequest
    _keep_lock: bool  # the run ends without unlocking (a child of another run holds it)
    _moved_before: set[int]  # in _moved, moved by an earlier run of this migration
    _budget_shared: bool  # the budget was shared for an ordinal in flight
    _rollback_down_to: int | None  # a rollback of one ordinal gives back up to this one

    async def _lock(self) -> None:
        """Implemented by MigrateStatefulSet: the StatefulSet's lock, once."""

    async def _share_budget(self) -> None:
        """Implemented by MigrateStatefulSet: the app's disruption budget shared by the
        clusters, for one more ordinal in flight."""

    async def _wait_at_safe_point(self, ordinal: int | None, first: int | None) -> bool:
        """Wait while paused or waiting for approval of ``ordinal``; do a rollback that
        was asked. False when the operator aborts."""
        moving = self._progress.phase
        if moving == "paused" and workflow.patched(LEAN_HISTORY):
            moving = "moving"  # a pause that has ended is no phase to go back to
        while not self._control.aborting:
            if self._progress.rollback:
                await self._roll_back()
                return not self._control.aborting  # the caller looks again at what is next
            if self._control.paused:
                self._update_progress(phase="paused", step=None, waiting_for_approval=None)
                await workflow.wait_condition(
                    lambda: (
                        not self._control.paused
                        or self._control.aborting
                        or bool(self._progress.rollback)
                    )
                )
                continue
            if ordinal is not None and self._needs_approval(ordinal, first):
                self._update_progress(
                    phase="awaiting_approval", step=None, waiting_for_approval=ordinal
                )
                workflow.logger.info("ordinal %d waits for approval", ordinal)
                await workflow.wait_condition(
                    lambda: (
                        self._control.paused
                        or self._control.aborting
                        or bool(self._progress.rollback)
                        or not self._needs_approval(ordinal, first)
                    )
                )
                continue
            self._update_progress(phase=moving, waiting_for_approval=None)
            return True
        return False

    def _needs_approval(self, ordinal: int, first: int | None) -> bool:
        progress = self._progress
        return (
            progress.approval.needs(ordinal, first)
            and not progress.approve_all
            and ordinal not in progress.approved
        )

    async def _roll_back(self) -> None:
        """Give back the last moved ordinal (or all this run moved), newest first."""
        assert self._plan is not None
        await self._lock()  # a rollback at the first safe point comes before _prepare
        by_ordinal = {o.ordinal: o for o in [*self._plan.moved, *self._plan.ordinals]}
        mode = self._progress.rollback
        while self._moved and not self._control.aborting:
            moved = self._moved.pop()
            k = moved.ordinal
            self._update_progress(phase="rolling_back", current_ordinal=k, step=None)
            result = await self._give_back(by_ordinal[k])
            if result.undone:
                # Blocked, then aborted: k was put back in the destination.
                self._moved.append(moved)
                self._update_progress(current_ordinal=None, step=None)
                break
            self._moved_before.discard(k)  # moved again later, it is this run's
            self._update_progress(
                current_ordinal=None,
                step=None,
                finished=[r for r in self._progress.finished if r.ordinal != k],
                remaining=[k, *self._progress.remaining],
                rolled_back=[*self._progress.rolled_back, k],
            )
            if mode == "ordinal" and (self._rollback_down_to or 0) <= k:
                break  # (a block's failed health gate: up to its ordinal)
        self._rollback_down_to = None
        self._update_progress(rollback="", phase="moving")
        if self._control.aborting:
            return
        if mode == "all":
            await self._apply_control(
                self._control.model_copy(update={"aborting": True}),
                abort_reason=f"rolled back ordinals {self._progress.rolled_back}",
            )
        elif self._progress.rolled_back:
            k = self._progress.rolled_back[-1]
            await self._apply_control(
                self._control.model_copy(update={"paused": True}),
                pause_reason=f"rolled back ordinal {k}: resume moves it again, abort ends here",
            )

    # -- the children: one per ordinal moved or given back ---------------------------------

    async def _run_child(
        self,
        run: Callable[[Any, OrdinalInput], Awaitable[OrdinalResult]],
        child_id: str,
        summary: str,
        ordinal: OrdinalPlan,
        together: list[OrdinalPlan] | None = None,
    ) -> OrdinalResult:
        """Run one ordinal's (or one block's) child to its end, told the operator's
        latest control. The child outlives this run (a terminated or reset parent does
        not cut it mid-step); this run never cancels it (a cancel of the migration is an
        abort, told to it)."""
        self._forwarded = self._control
        close = (
            ParentClosePolicy.ABANDON
            if workflow.patched(CHILDREN_OUTLIVE_PARENT)
            else ParentClosePolicy.TERMINATE  # the SDK's default, before the patch
        )
        share_in_child = workflow.patched(SHARED_BUDGET) and workflow.patched(LEAN_HISTORY)
        if share_in_child:
            self._budget_shared = True  # the child shares it as its first step
        elif workflow.patched(SHARED_BUDGET):
            await self._share_budget()
        self._giving_back, self._in_child = run is RollbackOrdinal.run, True
        try:
            return await self._start_and_wait(
                run, child_id, summary, ordinal, close, share_in_child, together or []
            )
        finally:
            self._in_child = self._giving_back = False

    async def _start_and_wait(
        self,
        run: Callable[[Any, OrdinalInput], Awaitable[OrdinalResult]],
        child_id: str,
        summary: str,
        ordinal: OrdinalPlan,
        close: ParentClosePolicy,
        share_budget: bool,
        together: list[OrdinalPlan],
    ) -> OrdinalResult:
        assert self._plan is not None
        plan = self._plan
        try:
            self._update_progress(child=child_id)
            self._child = await workflow.start_child_workflow(
                run,
                OrdinalInput(
                    request=self._request,
                    migration_id=workflow.info().workflow_id,
                    ordinal=ordinal,
                    source_start=plan.source_start,
                    end=plan.end,
                    control=self._forwarded,
                    service=plan.service_name,
                    share_budget=share_budget,
                    report_steps=not workflow.patched(LEAN_HISTORY),
                    together=together,
                ),
                id=child_id,
                static_summary=summary,
                parent_close_policy=close,
            )
        except WorkflowAlreadyStartedError as err:
            # A child of a terminated run of this migration still moves that ordinal:
            # the lock stays with it (docs/design.md, "Cancel, terminate").
            self._keep_lock = True
            raise ApplicationError(
                f"{child_id} is still running (left by a terminated run of this migration): "
                "wait until it has ended (temporal workflow describe --workflow-id "
                f"{child_id}), then start the migration again",
                type=ORDINAL_STILL_RUNNING,
                non_retryable=True,
            ) from err
        await self._forward_control()  # anything asked while the child was starting
        try:
            result = await self._child
        finally:
            self._child = None  # (no workflow call here: a finally also runs on eviction)
        self._update_progress(child=None)
        # Done with that ordinal: the next child starts afresh.
        if self._control.undo:
            self._control = self._control.model_copy(update={"undo": False})
        if self._progress.blocked:
            self._update_progress(blocked="")
        return result

    async def _move(
        self, ordinal: OrdinalPlan, together: list[OrdinalPlan] | None = None
    ) -> OrdinalResult:
        """Move ``ordinal`` (and the ordinals just below it, ``together``, in one block)."""
        r = self._request
        return await self._run_child(
            MigrateOrdinal.run,
            ordinal_workflow_id(workflow.info().workflow_id, ordinal.ordinal),
            f"move {pods([ordinal, *(together or [])])} from {r.source_context} to "
            f"{r.destination_context}",
            ordinal,
            together,
        )

    async def _give_back(self, ordinal: OrdinalPlan) -> OrdinalResult:
        r = self._request
        return await self._run_child(
            RollbackOrdinal.run,
            rollback_workflow_id(workflow.info().workflow_id, ordinal.ordinal),
            f"give {ordinal.pod} back from {r.destination_context} to {r.source_context}",
            ordinal,
        )
