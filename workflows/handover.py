"""The hand-over of one ordinal k from a giving side to a taking side.

Moving k (MigrateOrdinal) is the source giving it to the destination; rolling it
back (RollbackOrdinal) is the destination giving it to the source. Both run
``OrdinalHandover.hand_over``, so a change to the sequence reaches both at once
(docs/design.md, "The hand-over"):

    before_give_up                    the request's hooks in the giver's pod k (a
                                      rollback; a move runs them before its retain)
    read the giver's pod k            (its UID: a replacement pod is somebody else's)
    <giver>_scaled_down               the giver owns its slice without k
    <giver>_pod_gone                  pod k gone by UID, its volumes detached
    <giver>_claims_released           the giver's claims of k released (Retain)
    volumes_imported | _reclaimed     the taker's claims pre-bound to the same volumes
    claims_bound                      ... and Bound
    <taker>_scaled_up                 the taker owns its slice with k, only while the
                                      giver still owns what it was left with
    <taker>_pod_ready                 pod k Running and Ready on the taker
    after_take                        the request's hooks in the taker's pod k

Once the giver has scaled down (the point of no return), every step that fails,
for any reason (a foreign change, a wait that ends, a 403, a 422, an admission
webhook's denial), pauses the run with the reason instead of failing with the
ordinal half-moved (invariant I4): resume retries the step, and abort or rollback
(or a cancel) puts the ordinal back where it was by running the reverse of exactly
the steps already done (``_undo``). Orchestration only: every step is an activity.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, FailureError

with workflow.unsafe.imports_passed_through():
    from activities.hooks import HookActivities
    from activities.migration import MigrationActivities
    from contract import (
        ORDINAL_BLOCKED,
        ORDINAL_STEP,
        PAUSED_AT_SAFE_POINT,
        BudgetInput,
        ClaimsBoundInput,
        Control,
        Hook,
        HookInput,
        ImportInput,
        OrdinalInput,
        OrdinalPlan,
        OrdinalResult,
        PodReadyInput,
        PodRef,
        PodState,
        ReleaseClaimsInput,
        SliceRef,
        Step,
        StepReport,
        StepTiming,
        TakeInput,
        WaitPodGoneInput,
        WaitTimeouts,
        slice_change,
    )
    from contract.errors import (
        CONFLICTING_CHANGE,
        FORBIDDEN,
        HOOK_FAILED,
        INVALID,
        NOT_OURS,
        WAIT_TIMEOUT,
    )

# Our own workflow code is imported inside the sandbox, so its checks apply to it.
from workflows.options import (
    GUARDED_TAKE,
    HOOKS,
    LOSSLESS_REPORTS,
    SLICE_GUARD,
    hook_options,
    quick,
    wait_options,
)

T = TypeVar("T")

# How far a hand-over got: what its undo has to reverse (each is set as its step begins,
# so a step that failed half-way is reversed too; every reverse step converges).
NOTHING_GIVEN = 0  # the giver still owns k
GIVING = 1  # the giver's scale-down began: it may own its slice without k
RELEASING = 2  # the giver's claims may be released (fences in their place)
ADOPTING = 3  # the taker may hold claims of k on the same volumes
TAKING = 4  # the taker may own k

# A blocked child reports again after these many seconds (doubling, up to the last)
# until the parent acknowledges by pausing: a report is never lost.
REPORT_AGAIN = (30, 60, 120, 300, 900, 3600)

# What to do about a blocked step, by error type (the pause reason ends with it).
FIXES = {
    FORBIDDEN: "grant the worker's identity this verb in that cluster (deploy/rbac.yaml), "
    "renew its credentials, or free the quota that is full",
    INVALID: "an admission policy, webhook or validation in that cluster refused the "
    "object: change the policy (or what it checks)",
    CONFLICTING_CHANGE: "stop the other writer (a GitOps sync, an autoscaler, a person) and "
    "undo its change",
    NOT_OURS: "the object belongs to somebody else: move or remove it",
    WAIT_TIMEOUT: "find out why with kubectl describe and fix it",
    HOOK_FAILED: "see what the hook said (kubectl exec the same command), fix the app or "
    "the hook, then resume: the hook runs again",
}


async def every(works: list[Awaitable[T]]) -> list[T]:
    """One step's work for every ordinal of a block, all at once and each to its end;
    then the first failure, if any, is raised (so a blocked step has nothing of its own
    still running when it is retried). One ordinal: just its work."""
    if len(works) == 1:
        return [await works[0]]
    results = await asyncio.gather(*works, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return list(results)  # type: ignore[arg-type]


def pods(ordinals: list[OrdinalPlan]) -> str:
    """The block's pods, for a summary: one name, or the first and last."""
    if len(ordinals) == 1:
        return ordinals[0].pod
    return f"{ordinals[0].pod}..{ordinals[-1].pod} ({len(ordinals)} pods)"


class UndoAsked(Exception):
    """The operator asked to put the blocked ordinal back (abort, rollback or cancel)."""


async def outliving_cancel(work: Coroutine[Any, Any, T], on_cancel: Callable[[], Any]) -> T:
    """Run a workflow's ``work`` to its end even when the workflow is cancelled: a cancel
    only calls ``on_cancel`` (which turns it into an abort, maybe a coroutine), so no
    step is cut half-way and the activities and children in flight finish."""
    task = asyncio.create_task(work)
    while True:
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            # The worker evicting the workflow from its cache cancels every task, this
            # one too: that is no cancel of the workflow, so let it go.
            if task.cancelling() or task.cancelled():
                raise
            if task.done():  # it ended in the same activation as the cancel came
                return task.result()
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            done = on_cancel()
            if done is not None:
                await done


def block_reason(err: ActivityError) -> str:
    """Why a step failed and what to do, for the pause reason: the activity's message
    names the verb, the object and the cluster."""
    cause = err.cause
    if isinstance(cause, ApplicationError):
        kind, message = cause.type or "ApplicationError", cause.message
    else:
        kind, message = type(cause).__name__, str(cause)
    return f"{message} [{kind}; to fix: {FIXES.get(kind, 'fix the cause')}]"


@dataclass(frozen=True)
class Side:
    """One cluster's part in the hand-over of ordinal k: its StatefulSet, the slices
    (start, replicas) it owns with and without k, and the names of its steps."""

    ref: SliceRef
    with_k: tuple[int, int]
    without_k: tuple[int, int]
    scaled_down: Step
    pod_gone: Step
    claims_released: Step
    scaled_up: Step
    pod_ready: Step


def source_side(task: OrdinalInput) -> Side:
    r, move = task.request, task.move
    return Side(
        ref=SliceRef(context=r.source_context, namespace=r.namespace, statefulset=r.statefulset),
        with_k=move.source_with_k(),
        without_k=move.source_without_k(),
        scaled_down="source_scaled_down",
        pod_gone="source_pod_gone",
        claims_released="source_claims_released",
        scaled_up="source_scaled_up",
        pod_ready="source_pod_ready",
    )


def destination_side(task: OrdinalInput) -> Side:
    r, move = task.request, task.move
    return Side(
        ref=SliceRef(
            context=r.destination_context, namespace=r.target_namespace, statefulset=r.statefulset
        ),
        with_k=move.destination_with_k(),
        without_k=move.destination_without_k(),
        scaled_down="destination_scaled_down",
        pod_gone="destination_pod_gone",
        claims_released="destination_claims_released",
        scaled_up="destination_scaled_up",
        pod_ready="destination_pod_ready",
    )


@dataclass(frozen=True)
class Adoption:
    """How the taker gets the volumes of ordinal k: the step, its activity and summary."""

    step: Step
    activity: Callable[[Any, ImportInput], Any]
    summary: str


def slice_summary(ref: SliceRef, from_: tuple[int, int], to: tuple[int, int]) -> str:
    """What a slice change does, for the activity's summary in the UI."""
    head = f"{ref.context} {ref.statefulset}: "
    if from_[0] != to[0]:
        head += f"ordinals.start {from_[0]} -> {to[0]}, "
    return head + f"replicas {from_[1]} -> {to[1]}"


class OrdinalHandover:
    """Timed steps of one ordinal, each reported to the parent as it starts, and the
    hand-over both ordinal workflows run."""

    def __init__(self) -> None:
        self._steps: list[StepTiming] = []
        self._control = Control()
        self._reports: list[asyncio.Task[None]] = []
        self._ordinal = 0
        self._give_up_attempts: dict[str, int] = {}
        self._stage = NOTHING_GIVEN
        self._migration_id = ""
        self._undoing = False
        self._cancel_asked = False
        self._control_signalled = False
        self._step: str | None = None
        self._report_steps = True

    @workflow.query
    def step(self) -> str | None:
        """The step this ordinal is in (the parent's progress names this child; the
        CLI and the API ask it, so the parent's history holds no report per step)."""
        return self._step

    @workflow.signal
    def control(self, control: Control) -> None:
        """The operator's pause/abort/resume, forwarded by the parent (latest wins)."""
        self._control = control
        self._control_signalled = True

    def _start_control(self, task: OrdinalInput) -> None:
        """The control the child starts with: the input's, unless a ``control`` signal
        (newer: latest wins) was applied before the run began (signals come first)."""
        self._report_steps = task.report_steps  # the parent decides (a lean one: False)
        if not self._control_signalled:
            self._control = task.control

    def _parent(self) -> workflow.ExternalWorkflowHandle[Any] | None:
        """The parent, by workflow id (so a reset parent's new run gets the reports)."""
        parent = workflow.info().parent
        if parent is None:
            return None
        run_id = None if workflow.patched(LOSSLESS_REPORTS) else parent.run_id
        return workflow.get_external_workflow_handle(parent.workflow_id, run_id=run_id)

    def _report(self, step: str) -> None:
        """Tell the parent the step we are in (for its progress); never waited on
        by the step itself, and never fatal. In a lean history only a pause at the safe
        point is told (the parent's phase shows it); every step is in the ``step`` query
        and the UI's current details."""
        self._step = step
        workflow.set_current_details(f"ordinal {self._ordinal}: **{step}**")
        handle = self._parent()
        if handle is None:
            return
        if step != PAUSED_AT_SAFE_POINT and not self._report_steps:
            return

        async def send() -> None:
            try:
                await handle.signal(ORDINAL_STEP, StepReport(ordinal=self._ordinal, step=step))
            except FailureError as err:  # the parent is gone; nobody to tell
                workflow.logger.info("progress report %s not delivered: %s", step, err)

        self._reports.append(asyncio.create_task(send()))

    async def _timed_step(self, name: Step, work: Awaitable[T]) -> T:
        self._report(name)
        started = workflow.now()
        result = await work
        seconds = round((workflow.now() - started).total_seconds(), 3)
        self._steps.append(StepTiming(step=name, seconds=seconds))
        return result

    async def _finish(self, result: OrdinalResult) -> OrdinalResult:
        """The result, once every progress report has been delivered (or refused)."""
        await asyncio.gather(*self._reports)
        return result

    def _aborting(self) -> bool:
        return self._control.aborting or self._cancel_asked

    async def _unless_aborted(self, work: Awaitable[T]) -> T | None:
        """``work``, or None if an abort comes first (the work is then cancelled)."""
        task = asyncio.ensure_future(work)
        await workflow.wait_condition(lambda: task.done() or self._aborting())
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ActivityError):
            await task
        return None

    async def _share_budget(self, task: OrdinalInput) -> bool:
        """The app's disruption budget shared between the clusters for this ordinal in
        flight, when the parent asks (``share_budget``: a lean parent leaves it to its
        children); it retries while a cluster is unreachable. False if the operator
        aborts meanwhile: nothing has changed but the budgets, restored at the end."""
        if not task.share_budget:
            return True
        r = task.request
        done = await self._unless_aborted(
            workflow.execute_activity_method(
                MigrationActivities.share_disruption_budget,
                BudgetInput(request=r, migration_id=task.migration_id, in_flight=len(task.block)),
                **quick(f"share the disruption budget of {r.statefulset} between the clusters"),
            )
        )
        return done is not None

    def _resumed_since(self, seen: int) -> bool:
        return self._control.resumes > seen

    def _undo_asked(self) -> bool:
        """Put the blocked ordinal back: asked by the parent (abort or rollback of a
        blocked step, or its cancel) or by a cancel of this workflow; not while undoing."""
        return not self._undoing and (self._control.undo or self._cancel_asked)

    def _cancelled(self) -> None:
        """This workflow was cancelled (the Temporal UI, CLI or API): an abort. Before
        the point of no return the ordinal stays; a blocked step is undone; a step
        that runs finishes (docs/design.md, "Cancel, terminate")."""
        workflow.logger.warning("ordinal %d: cancel requested, acting as an abort", self._ordinal)
        self._cancel_asked = True

    async def _pausing_step(
        self, name: Step, make: Callable[[], Awaitable[T]], timed: bool = True
    ) -> T:
        """A step from the point of no return on: instead of failing with the ordinal
        half-moved, a failure of any kind pauses the run with the reason (signal
        ``ordinal_blocked`` to the parent) and the step is retried when resumed, or
        the ordinal put back (UndoAsked) when the operator asks. The giver's scale-down
        too: a retry of it may fail after an earlier attempt made the change."""
        while True:
            try:
                return await (self._timed_step(name, make()) if timed else make())
            except ActivityError as err:
                if workflow.info().parent is None:
                    raise
                await self._blocked(name, block_reason(err))

    async def _blocked(self, name: Step, detail: str, abortable: bool = False) -> None:
        """Tell the parent that step ``name`` is blocked, until it acknowledges (pauses);
        then wait for resume (return: retry the step) or an undo (raise UndoAsked).
        ``abortable`` (a step before anything was given): a plain abort is an undo too."""
        seen = self._control.resumes
        workflow.logger.warning("ordinal %d %s blocked: %s", self._ordinal, name, detail)

        def undo() -> bool:
            return self._undo_asked() or (abortable and self._aborting())

        def decided() -> bool:
            return self._resumed_since(seen) or undo()

        handle = self._parent()
        assert handle is not None
        if not workflow.patched(LOSSLESS_REPORTS):
            report = StepReport(ordinal=self._ordinal, step=name, detail=detail)
            await handle.signal(ORDINAL_BLOCKED, report)
        else:
            # ``resumes``: the parent drops a report made before its latest resume.
            report = StepReport(ordinal=self._ordinal, step=name, detail=detail, resumes=seen)
            for n, again in enumerate(
                itertools.chain(REPORT_AGAIN, itertools.repeat(REPORT_AGAIN[-1]))
            ):
                if n and (decided() or self._control.paused):
                    break  # the parent paused (acknowledged), or a decision came
                try:
                    await handle.signal(ORDINAL_BLOCKED, report)
                except FailureError as err:  # no parent to tell: a human signals control
                    workflow.logger.warning("block report not delivered: %s", err)
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(
                        lambda: decided() or self._control.paused, timeout=again
                    )
        await workflow.wait_condition(decided)
        if undo():
            raise UndoAsked()

    async def _run_hooks(
        self,
        task: OrdinalInput,
        phase: Literal["before_give_up", "after_take"],
        side: Side,
        skip_unless_ready: bool = False,
    ) -> bool:
        """The request's hooks of ``phase``, in order, each in pod k (every pod of the
        block at once) of ``side``: before_give_up on the giver, after_take on the taker.
        A hook whose last attempt fails pauses the run (blocked step ``phase``): resume
        runs the phase's hooks again from the first (what an earlier one did may have
        worn off meanwhile); an undo raises UndoAsked. before_give_up hooks end at an
        abort (the hook's activity is cancelled; nothing was given): False then.
        ``skip_unless_ready``: a pod k that is not Ready is skipped (a rollback of a
        broken pod: nothing in it to hand over gracefully)."""
        hooks = getattr(task.request.hooks, phase)
        if not hooks or not workflow.patched(HOOKS):
            return True
        ref = side.ref

        def run(hook: Hook) -> Awaitable[list[Any]]:
            return every(
                [
                    workflow.execute_activity_method(
                        HookActivities.run_hook,
                        HookInput(
                            hook=hook,
                            phase=phase,
                            context=ref.context,
                            namespace=ref.namespace,
                            statefulset=ref.statefulset,
                            service=task.service,
                            ordinal=o.ordinal,
                            migration_id=task.migration_id,
                            skip_unless_ready=skip_unless_ready,
                        ),
                        **hook_options(
                            hook,
                            f"{ref.context}: {phase} hook {hook.name} in {o.pod}",
                            wait_cancel=phase == "before_give_up",
                        ),
                    )
                    for o in task.block
                ]
            )

        giving = phase == "before_give_up"

        async def all_hooks() -> bool:
            while True:
                try:
                    for hook in hooks:
                        await self._timed_step(phase, run(hook))
                    return True
                except ActivityError as err:
                    if giving and self._aborting():
                        return False  # cancelled by the abort (or failed as it came)
                    if workflow.info().parent is None:
                        raise
                    # Before anything was given, an abort ends the block as an undo.
                    await self._blocked(phase, block_reason(err), abortable=giving)

        if not giving:
            return await all_hooks()
        return bool(await self._unless_aborted(all_hooks()))

    async def _set_slice(self, side: Side, to: tuple[int, int], from_: tuple[int, int]) -> None:
        """Converge ``side`` from the slice ``from_`` to ``to`` (any third state is a
        conflicting change, refused by the activity)."""
        await workflow.execute_activity_method(
            MigrationActivities.set_statefulset_slice,
            slice_change(side.ref, to, from_),
            **quick(slice_summary(side.ref, from_, to)),
        )

    async def _scale_up_if_giver_still_owns(self, giver: Side, taker: Side) -> None:
        """The taking side takes ordinal k, but only while the giving side still owns
        the slice it was left with: a foreign scale-up of the giver after its pod went
        (a GitOps sync putting replicas back, say) would otherwise run one identity in
        both clusters. The check is a no-op slice change (from == to), which fails as a
        conflicting change when the slice differs; the remaining window is the one
        round trip between the two calls."""
        if workflow.patched(SLICE_GUARD):
            start, replicas = giver.without_k
            await workflow.execute_activity_method(
                MigrationActivities.set_statefulset_slice,
                slice_change(giver.ref, giver.without_k),
                **quick(
                    f"{giver.ref.context} {giver.ref.statefulset}: still owns "
                    f"[{start}, {start + replicas})"
                ),
            )
        await self._set_slice(taker, taker.with_k, taker.without_k)

    async def _take(self, giver: Side, taker: Side) -> None:
        """The taker takes ordinal k while the giver owns its slice without k: the
        check, the change and a re-read of the giver in ONE activity, which reverts
        the take at once if the giver grew meanwhile (a GitOps sync, say)."""
        if not workflow.patched(GUARDED_TAKE):
            await self._scale_up_if_giver_still_owns(giver, taker)
            return
        start, replicas = giver.without_k
        await workflow.execute_activity_method(
            MigrationActivities.take_ordinal,
            TakeInput(
                giver=slice_change(giver.ref, giver.without_k),
                taker=slice_change(taker.ref, taker.with_k, taker.without_k),
            ),
            **quick(
                slice_summary(taker.ref, taker.without_k, taker.with_k)
                + f", while {giver.ref.context} owns [{start}, {start + replicas})"
            ),
        )

    async def _give_up_storage(
        self, giver: Side, found: list[PodState], ordinals: list[OrdinalPlan], t: WaitTimeouts
    ) -> None:
        """The giver has given up the block: each pod gone by UID and its volumes detached
        (no VolumeAttachment left), then its claims released, so only one cluster
        claims the storage. Both again after a block (somebody scaled it back up):
        whoever runs a pod of the block now must be gone and detached before the claims go."""
        ref = giver.ref
        uids = [pod.uid for pod in found]
        if self._give_up_attempts.get(ref.context, 0):
            again = await every(
                [
                    workflow.execute_activity_method(
                        MigrationActivities.read_pod,
                        PodRef(ref=ref, ordinal=o.ordinal),
                        **quick(f"{ref.context}: read pod {o.pod} again"),
                    )
                    for o in ordinals
                ]
            )
            uids = [now.uid if now.exists else uid for now, uid in zip(again, uids, strict=True)]
        self._give_up_attempts[ref.context] = self._give_up_attempts.get(ref.context, 0) + 1
        # OrderedReady stops a block's pods one at a time: the last may wait for all.
        gone = t.pod_gone * len(ordinals)
        await self._timed_step(
            giver.pod_gone,
            every(
                [
                    workflow.execute_activity_method(
                        MigrationActivities.wait_for_pod_gone,
                        WaitPodGoneInput(
                            pod=PodRef(ref=ref, ordinal=o.ordinal),
                            uid=uid,
                            volumes=[v.volume for v in o.volumes],
                            pod_timeout=gone,
                            detach_timeout=t.detach,
                        ),
                        **wait_options(
                            gone + t.detach,
                            f"{ref.context}: wait for {o.pod} to go and detach",
                        ),
                    )
                    for o, uid in zip(ordinals, uids, strict=True)
                ]
            ),
        )
        if not self._undoing:
            self._stage = max(self._stage, RELEASING)
        # One release for the whole block: it lists the namespace's pods and waits on
        # its claims once, not once per ordinal.
        claims = [v.claim for o in ordinals for v in o.volumes]
        await self._timed_step(
            giver.claims_released,
            workflow.execute_activity_method(
                MigrationActivities.release_claims,
                ReleaseClaimsInput(
                    context=ref.context,
                    namespace=ref.namespace,
                    claims=claims,
                    volumes=[v.volume for o in ordinals for v in o.volumes],
                    migration_id=self._migration_id,
                    ordinal=ordinals[0].ordinal,
                    fence=True,
                    ordinals=[o.ordinal for o in ordinals for _ in o.volumes]
                    if len(ordinals) > 1
                    else [],
                ),
                **wait_options(120, f"{ref.context}: release {len(claims)} claim(s), fence them"),
            ),
        )

    async def _wait_claims_bound(self, taker: Side, claims: list[str], t: WaitTimeouts) -> None:
        """The taker's claims Bound (a claim that does not bind pauses the run)."""
        ref = taker.ref
        await self._pausing_step(
            "claims_bound",
            lambda: workflow.execute_activity_method(
                MigrationActivities.wait_for_claims_bound,
                ClaimsBoundInput(
                    context=ref.context, namespace=ref.namespace, claims=claims, timeout=t.bound
                ),
                **wait_options(t.bound, f"{ref.context}: wait for {len(claims)} claim(s) Bound"),
            ),
        )

    async def _wait_pod_ready(
        self, taker: Side, ordinals: list[OrdinalPlan], t: WaitTimeouts
    ) -> None:
        """Pod k (each pod of the block) Running and Ready on the taker."""
        ref = taker.ref
        # OrderedReady starts a block's pods one at a time: the last may wait for all.
        ready = t.pod_ready * len(ordinals)
        await self._pausing_step(
            taker.pod_ready,
            lambda: every(
                [
                    workflow.execute_activity_method(
                        MigrationActivities.wait_for_pod_ready,
                        PodReadyInput(pod=PodRef(ref=ref, ordinal=o.ordinal), timeout=ready),
                        **wait_options(ready, f"{ref.context}: wait for {o.pod} Ready"),
                    )
                    for o in ordinals
                ]
            ),
        )

    async def _give_up(self, task: OrdinalInput, giver: Side) -> None:
        """The giver gives ordinal k up: its slice without k, pod k gone by UID and
        detached, its claims released and fenced."""
        block, t = task.block, task.request.timeouts
        # The giver's pod UIDs are read first, so the wait below recognises a
        # replacement pod as somebody else's doing (in an undo, a failed read pauses).
        found = await self._pausing_step(
            giver.scaled_down,
            lambda: every(
                [
                    workflow.execute_activity_method(
                        MigrationActivities.read_pod,
                        PodRef(ref=giver.ref, ordinal=o.ordinal),
                        **quick(f"{giver.ref.context}: read pod {o.pod}"),
                    )
                    for o in block
                ]
            ),
            timed=False,
        )
        if not self._undoing:
            self._stage = GIVING
        await self._pausing_step(
            giver.scaled_down, lambda: self._set_slice(giver, giver.without_k, giver.with_k)
        )
        # Always run: even if pod k were already gone, its volumes must be detached
        # before the taker may take ordinal k; only one cluster may claim the storage.
        await self._pausing_step(
            giver.pod_gone,
            functools.partial(self._give_up_storage, giver, found, block, t),
            timed=False,
        )

    async def _adopt(self, task: OrdinalInput, taker: Side, adoption: Adoption) -> None:
        """The taker gets the same storage, pre-bound to its claims, and Bound."""
        claims = [v.claim for o in task.block for v in o.volumes]
        await self._pausing_step(
            adoption.step,
            lambda: every(
                [
                    workflow.execute_activity_method(
                        adoption.activity,
                        ImportInput(
                            request=task.request, migration_id=task.migration_id, ordinal=o
                        ),
                        **wait_options(60, adoption.summary),
                    )
                    for o in task.block
                ]
            ),
        )
        await self._wait_claims_bound(taker, claims, task.request.timeouts)

    async def _take_and_start(self, task: OrdinalInput, giver: Side, taker: Side) -> None:
        """Start and replicas in ONE patch, while the giver is seen still giving k up;
        then pod k Ready on the taker."""
        await self._pausing_step(taker.scaled_up, functools.partial(self._take, giver, taker))
        await self._wait_pod_ready(taker, task.block, task.request.timeouts)

    async def hand_over(
        self, task: OrdinalInput, giver: Side, taker: Side, adoption: Adoption
    ) -> None:
        """Ordinal k from ``giver`` to ``taker``, the whole sequence (module docstring).
        Once the giver has scaled down, this only ends with k running on the taker, or
        paused for a human at a blocked step; UndoAsked if the human asks to undo."""
        self._migration_id = task.migration_id
        await self._give_up(task, giver)
        self._stage = ADOPTING
        await self._adopt(task, taker, adoption)
        self._stage = TAKING
        await self._take_and_start(task, giver, taker)

    async def _undo(
        self, task: OrdinalInput, giver: Side, taker: Side, giver_adoption: Adoption
    ) -> None:
        """Put ordinal k back on the giver, on its own volumes: the reverse of exactly
        the steps the hand-over began. The taker gives up what it may hold (from
        ADOPTING: claims; from TAKING: ordinal k and its pod), the giver re-binds its
        retained volumes (from RELEASING) and takes k back. Every step converges, so
        reversing a step that never ran changes nothing; a blocked undo step pauses
        (resume retries it; it cannot be undone in turn)."""
        self._undoing = True
        stage = self._stage
        workflow.logger.warning(
            "ordinal %d: undoing a hand-over stopped at stage %d", self._ordinal, stage
        )
        if stage >= ADOPTING:
            await self._give_up(task, taker)
        if stage >= RELEASING:
            await self._adopt(task, giver, giver_adoption)
        if stage >= GIVING:
            await self._take_and_start(task, taker, giver)
