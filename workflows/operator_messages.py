"""The operator's messages to a running migration: pause, resume, approve, abort,
set_approval and rollback.

Each is an update (acknowledged: its validator refuses a message that makes no
sense now, and it returns a short Ack; the ``progress`` query has the detail) and
a signal of the same name (fire-and-forget, queued by the server while no worker runs). One table,
``OPERATOR_MESSAGES``, gives every message its argument type, the rule that
refuses it and what it does; the updates and the one dynamic signal handler both
go through it, so a rule is never written twice. Pause and abort act only at safe
points (docs/design.md, invariant I4): here they only change what is asked, the
workflows honour it when they reach one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError, FailureError

with workflow.unsafe.imports_passed_through():
    from contract import (
        AbortRequest,
        Ack,
        ApprovalPolicy,
        ApproveRequest,
        Control,
        OrdinalResult,
        PauseRequest,
        RollbackRequest,
    )
    from contract.errors import REJECTED


# Our own workflow code is imported inside the sandbox, so its checks apply to it.
from workflows.handover import OrdinalHandover
from workflows.options import LEAN_HISTORY, UNDO_BLOCKED
from workflows.progress import ProgressKeeper


class OperatorMessages(ProgressKeeper):
    """The rules and actions of the operator's messages, and the forwarding of
    pause/abort/resume to the ordinal being moved. MigrateStatefulSet sets the state."""

    _control: Control
    _forwarded: Control  # what the running child was last told
    _child: workflow.ChildWorkflowHandle[Any, OrdinalResult] | None
    _forwarding: asyncio.Lock
    _moved: list[OrdinalResult]
    _giving_back: bool  # the running child gives an ordinal back (RollbackOrdinal)
    _in_child: bool  # a child is being run (started, or starting)

    # -- the rules (None: accepted; else why not) -----------------------------------------

    def _finished(self) -> bool:
        # cleaning_up: every ordinal has moved; only the clean finish is left to run.
        return self._progress.phase in ("cleaning_up", "done", "aborted", "cancelled", "failed")

    def _next_ordinal(self) -> int | None:
        """The ordinal an approval applies to: the one waiting, else the next not begun."""
        if self._progress.waiting_for_approval is not None:
            return self._progress.waiting_for_approval
        p = self._progress
        moving = {p.current_ordinal, *p.moving_together} if self._child is not None else set()
        return next((k for k in p.remaining if k not in moving), None)

    def _pause_problem(self, _: PauseRequest | None) -> str | None:
        if self._finished():
            return f"the migration is {self._progress.phase}"
        if self._control.aborting:
            return "the migration is aborting"
        if self._control.paused:
            return "the migration is already paused"
        return None

    def _resume_problem(self, _: None = None) -> str | None:
        if not self._control.paused:
            return "the migration is not paused"
        return None

    def _ended_or_aborting(self) -> str | None:
        if self._finished() or self._control.aborting:
            phase = "aborting" if self._control.aborting else self._progress.phase
            return f"the migration is {phase}"
        return None

    def _approve_problem(self, req: ApproveRequest | None) -> str | None:
        req = req or ApproveRequest()
        if problem := self._ended_or_aborting():
            return problem
        if req.all:
            return None
        if self._plan is None and not self._progress.remaining:
            return "no ordinal to approve yet: the plan is not ready (approve all is accepted)"
        following = self._next_ordinal()
        if following is None:
            return "no ordinal remains to be approved"
        if req.ordinal is not None and req.ordinal != following:
            return f"ordinal {req.ordinal} is not next; the next ordinal to move is {following}"
        return None

    def _undo_problem(self) -> str | None:
        """A blocked ordinal is being put back already (its undo may block in turn)."""
        if self._control.undo:
            k = self._progress.current_ordinal
            return f"ordinal {k} is being put back already: resume retries its blocked step"
        return None

    def _abort_problem(self, _: AbortRequest | None) -> str | None:
        if self._finished():
            return f"the migration is {self._progress.phase}"
        if problem := self._undo_problem():
            return problem
        if self._progress.blocked:
            return None  # the blocked ordinal is put back where it was, then the run ends
        if self._control.aborting:
            return "the migration is already aborting"
        return None

    def _rollback_problem(self, _: RollbackRequest | None) -> str | None:
        if problem := self._ended_or_aborting() or self._undo_problem():
            return problem
        if self._progress.blocked and self._giving_back:
            k = self._progress.current_ordinal
            return (
                f"ordinal {k} is being given back and is blocked: resume retries the step, "
                "abort keeps it in the destination"
            )
        if not self._moved and self._child is None:
            return "nothing to roll back: the destination owns no ordinal this migration moved"
        return None

    def _approval_problem(self, policy: ApprovalPolicy | None) -> str | None:
        if not isinstance(policy, ApprovalPolicy):  # a null payload decodes to None
            return 'set_approval needs an approval policy, e.g. {"mode": "each"}'
        if self._finished():
            return f"the migration is {self._progress.phase}"
        if self._plan is not None and policy.mode == "ordinals":
            known = {o.ordinal for o in [*self._plan.moved, *self._plan.ordinals]}
            if unknown := sorted(set(policy.ordinals) - known):
                return f"ordinals {unknown} are not part of this migration ({sorted(known)})"
        return None

    # -- what they do -----------------------------------------------------------------------

    async def _apply_control(self, control: Control, **progress: Any) -> None:
        self._control = control
        self._update_progress(paused=control.paused, aborting=control.aborting, **progress)
        await self._forward_control()

    async def _forward_control(self) -> None:
        """Tell the running child the latest control; one sender at a time (this await
        yields, and the lock keeps two handlers from sending out of order)."""
        async with self._forwarding:
            while self._child is not None and self._forwarded != self._control:
                sending = self._control
                try:
                    await self._child.signal(OrdinalHandover.control, sending)
                except FailureError as err:  # the child finished meanwhile
                    workflow.logger.info("control not delivered to ordinal: %s", err)
                    return
                self._forwarded = sending

    async def _pause(self, req: PauseRequest | None) -> None:
        reason = req.reason if req else ""
        workflow.logger.info("pause asked%s", f": {reason}" if reason else "")
        await self._apply_control(
            self._control.model_copy(update={"paused": True}), pause_reason=reason
        )

    async def _resume(self, _: None = None) -> None:
        workflow.logger.info("resume asked")
        resumed = {"paused": False, "resumes": self._control.resumes + 1}
        phase = {}
        if self._in_child and self._progress.phase == "paused" and workflow.patched(LEAN_HISTORY):
            # No step report will say the child goes on (a lean history has none).
            moving = self._giving_back or self._control.undo or self._progress.rollback
            phase = {"phase": "rolling_back" if moving else "moving"}
        await self._apply_control(
            self._control.model_copy(update=resumed), pause_reason="", blocked="", **phase
        )

    def _approve(self, req: ApproveRequest | None) -> None:
        req = req or ApproveRequest()
        if req.all:
            self._update_progress(approve_all=True)
            return
        k = req.ordinal if req.ordinal is not None else self._next_ordinal()
        if k is not None and k not in self._progress.approved:
            self._update_progress(approved=[*self._progress.approved, k])

    async def _undo_blocked(self, why: str, **control: bool) -> bool:
        """Put the blocked ordinal back where it was (the child reverses exactly the
        steps it began); False for a history recorded before this could be asked."""
        if not (self._progress.blocked and self._in_child and workflow.patched(UNDO_BLOCKED)):
            return False
        k = self._progress.current_ordinal
        workflow.logger.warning("ordinal %s: putting it back (%s)", k, why)
        await self._apply_control(
            self._control.model_copy(update={"undo": True, **control}),
            blocked="",
            phase="rolling_back",
            pause_reason=f"putting ordinal {k} back where it was ({why})",
        )
        return True

    async def _abort(self, req: AbortRequest | None) -> None:
        reason = req.reason if req else ""
        workflow.logger.info("abort asked%s", f": {reason}" if reason else "")
        if self._progress.blocked and self._in_child:
            if await self._undo_blocked("abort of a blocked step", aborting=True):
                self._update_progress(abort_reason=reason)
            return  # before undo-blocked, an abort of a blocked ordinal was ignored
        await self._apply_control(
            self._control.model_copy(update={"aborting": True}), abort_reason=reason
        )

    def _set_approval(self, policy: ApprovalPolicy) -> None:
        self._update_progress(approval=policy)

    async def _ask_rollback(self, req: RollbackRequest | None) -> None:
        """Done at the next safe point (an ordinal mid-move finishes first); a blocked
        ordinal is put back first."""
        req = req or RollbackRequest()
        which = "all" if req.all or self._progress.rollback == "all" else "ordinal"
        workflow.logger.info(
            "rollback (%s) asked%s", which, f": {req.reason}" if req.reason else ""
        )
        self._update_progress(rollback=which)
        await self._undo_blocked("rollback of a blocked step")

    # -- delivery: updates and signals --------------------------------------------------------

    async def _accept(self, name: str, arg: Any) -> Ack:
        """Do what message ``name`` asks (its rule has accepted it); a short reply."""
        before = set(self._progress.approved)
        done = OPERATOR_MESSAGES[name].action(self, arg)
        if done is not None:
            await done
        approved = next((k for k in self._progress.approved if k not in before), None)
        return Ack.of(name, self._progress, approved)

    def _refuse(self, name: str, arg: Any) -> None:
        """An update's validator: refused messages never reach history."""
        if problem := OPERATOR_MESSAGES[name].rule(self, arg):
            raise ApplicationError(problem, type=REJECTED, non_retryable=True)

    # One dynamic handler, so the rules and actions are written once. Its names are not
    # listed in the workflow's metadata (the UI's signal menu) one by one; that costs
    # little: the signal is the path for when no worker runs, and then no worker answers
    # the metadata query either. With a worker, the six updates are listed.
    @workflow.signal(
        dynamic=True,
        description="Operator messages as signals: pause, resume, approve, abort, "
        "set_approval, rollback (the same input as the update of that name)",
    )
    async def operator_signal(self, name: str, args: Sequence[RawValue]) -> None:
        """Every operator message sent as a signal: checked by the same rule as its
        update, and logged and ignored when refused (a signal has nobody to answer)."""
        message = OPERATOR_MESSAGES.get(name)
        if message is None:
            workflow.logger.warning("signal %s ignored: no such operator message", name)
            return
        arg = None
        if message.model is not None and args:
            # A null payload decodes to None whatever the hint; each rule refuses what
            # its message cannot take (set_approval needs a policy).
            hint: Any = message.model | None
            try:
                arg = workflow.payload_converter().from_payload(args[0].payload, hint)
            except Exception as err:  # a malformed message must not fail the workflow task
                workflow.logger.warning("signal %s ignored: %s", name, err)
                return
        if problem := message.rule(self, arg):
            workflow.logger.warning("signal %s ignored: %s", name, problem)
            return
        await self._accept(name, arg)

    @workflow.update(name="pause")
    async def pause(self, req: PauseRequest | None = None) -> Ack:
        return await self._accept("pause", req)

    @pause.validator
    def _validate_pause(self, req: PauseRequest | None = None) -> None:
        self._refuse("pause", req)

    @workflow.update(name="resume")
    async def resume(self) -> Ack:
        return await self._accept("resume", None)

    @resume.validator
    def _validate_resume(self) -> None:
        self._refuse("resume", None)

    @workflow.update(name="approve")
    async def approve(self, req: ApproveRequest | None = None) -> Ack:
        return await self._accept("approve", req)

    @approve.validator
    def _validate_approve(self, req: ApproveRequest | None = None) -> None:
        self._refuse("approve", req)

    @workflow.update(name="abort")
    async def abort(self, req: AbortRequest | None = None) -> Ack:
        return await self._accept("abort", req)

    @abort.validator
    def _validate_abort(self, req: AbortRequest | None = None) -> None:
        self._refuse("abort", req)

    @workflow.update(name="set_approval")
    async def set_approval(self, policy: ApprovalPolicy) -> Ack:
        return await self._accept("set_approval", policy)

    @set_approval.validator
    def _validate_set_approval(self, policy: ApprovalPolicy) -> None:
        self._refuse("set_approval", policy)

    @workflow.update(name="rollback")
    async def rollback(self, req: RollbackRequest | None = None) -> Ack:
        return await self._accept("rollback", req)

    @rollback.validator
    def _validate_rollback(self, req: RollbackRequest | None = None) -> None:
        self._refuse("rollback", req)


@dataclass(frozen=True)
class OperatorMessage:
    """One operator message: its argument's model (None: it takes none), the rule that
    refuses it (a missing argument too, when it needs one) and what it does (sync, or
    a coroutine when it tells the child)."""

    model: type[Any] | None
    rule: Callable[[Any, Any], str | None]
    action: Callable[[Any, Any], Awaitable[None] | None]


# The wire names: the signal and the update of each are called the same.
OPERATOR_MESSAGES: dict[str, OperatorMessage] = {
    "pause": OperatorMessage(
        PauseRequest, OperatorMessages._pause_problem, OperatorMessages._pause
    ),
    "resume": OperatorMessage(None, OperatorMessages._resume_problem, OperatorMessages._resume),
    "approve": OperatorMessage(
        ApproveRequest, OperatorMessages._approve_problem, OperatorMessages._approve
    ),
    "abort": OperatorMessage(
        AbortRequest, OperatorMessages._abort_problem, OperatorMessages._abort
    ),
    "set_approval": OperatorMessage(
        ApprovalPolicy, OperatorMessages._approval_problem, OperatorMessages._set_approval
    ),
    "rollback": OperatorMessage(
        RollbackRequest, OperatorMessages._rollback_problem, OperatorMessages._ask_rollback
    ),
}
