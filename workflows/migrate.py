"""MigrateStatefulSet and MigrateOrdinal: the KEP-3335 procedure, durable.

The parent runs preflight, prepares the destination, then one child per ordinal,
highest first, with the deterministic id ``<migration id>/ordinal-<k>``. Every
step is an activity recorded in history, so a worker (or, with persistent
storage, a server) that dies resumes at the exact step of the exact ordinal.
Orchestration only: all I/O is in activities, and no Secret value, manifest or
credential ever enters a payload.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError, FailureError

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from activities.health import HealthActivities
    from activities.migration import MigrationActivities
    from activities.temporal import TemporalActivities
    from contract import (
        SEARCH_ATTRIBUTES,
        AbortRequest,
        ApprovalPolicy,
        ApproveRequest,
        ClaimsBoundInput,
        Control,
        EnsureDestinationInput,
        ImportInput,
        MigrationRequest,
        MigrationResult,
        OrdinalInput,
        OrdinalPlan,
        OrdinalResult,
        PauseRequest,
        Plan,
        PlanInput,
        PodReadyInput,
        PodRef,
        PodState,
        ProbeInput,
        Progress,
        ReleaseClaimsInput,
        RetainInput,
        RollbackRequest,
        SetSliceInput,
        SliceReadyInput,
        SliceRef,
        StatefulSetState,
        StepReport,
        StepTiming,
        WaitPodGoneInput,
        WaitTimeouts,
        ordinal_workflow_id,
    )

T = TypeVar("T")

PREFLIGHT_FAILED = "PreflightFailed"
# Activity failures that mean "the world is not as the step needs it", not a bug: the
# ordinal pauses for a human instead of failing half-moved.
BLOCKING = {"ConflictingChange", "WaitTimeout", "NotOurs"}
HEALTH_GATE_FAILED = "HealthGateFailed"
# Patch id of the check that the giving side still owns its slice before the taking
# side scales up (histories recorded before it have no such activity).
SLICE_GUARD = "slice-guard"

# Retryable errors (API unavailable, throttled, conflicts) are retried without a
# count limit: a migration stuck on an unreachable cluster waits for it rather
# than failing half-way. Non-retryable errors (bad input, conflicting changes,
# wait timeouts) fail at once.
RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
# Single API round trips. Short, so that after a worker crash the retry starts soon.
QUICK: dict[str, Any] = {"start_to_close_timeout": timedelta(seconds=30), "retry_policy": RETRY}


def waiting(seconds: int) -> dict[str, Any]:
    """Options for a watch-based wait of at most ``seconds``: it heartbeats every few
    seconds, so a dead worker is noticed after the heartbeat timeout, not the wait's."""
    return {
        "start_to_close_timeout": timedelta(seconds=seconds + 60),
        "heartbeat_timeout": timedelta(seconds=15),
        "retry_policy": RETRY,
    }


class _OrdinalSteps:
    """Timed steps of one ordinal, each reported to the parent as it starts."""

    def __init__(self) -> None:
        self._steps: list[StepTiming] = []
        self._control = Control()
        self._reports: list[asyncio.Task[None]] = []
        self._ordinal = 0
        self._give_up_attempts = 0

    def _report(self, step: str) -> None:
        """Tell the parent the step we are in (for its progress); never waited on
        by the step itself, and never fatal."""
        parent = workflow.info().parent
        if parent is None:
            return
        handle = workflow.get_external_workflow_handle(parent.workflow_id, run_id=parent.run_id)

        async def send() -> None:
            try:
                await handle.signal("ordinal_step", StepReport(ordinal=self._ordinal, step=step))
            except FailureError as err:  # the parent is gone; nobody to tell
                workflow.logger.info("progress report %s not delivered: %s", step, err)

        self._reports.append(asyncio.create_task(send()))

    async def _step(self, name: str, work: Awaitable[T]) -> T:
        self._report(name)
        started = workflow.now()
        result = await work
        self._steps.append(
            StepTiming(step=name, seconds=round((workflow.now() - started).total_seconds(), 3))
        )
        return result

    async def _finish(self, result: OrdinalResult) -> OrdinalResult:
        await asyncio.gather(*self._reports)
        return result

    @workflow.signal
    def control(self, control: Control) -> None:
        """The operator's pause/abort/resume, forwarded by the parent (latest wins)."""
        self._control = control

    def _resumed_since(self, seen: int) -> bool:
        return self._control.resumes > seen

    async def _held(self, name: str, make: Callable[[], Awaitable[T]], timed: bool = True) -> T:
        """A step the world can block (a foreign change to a StatefulSet, a pod or an
        attachment that does not go, a claim that does not bind): instead of failing
        with the ordinal half-moved, the run pauses with the reason (signal
        ``ordinal_blocked`` to the parent) and retries the step when resumed."""
        while True:
            try:
                return await (self._step(name, make()) if timed else make())
            except ActivityError as err:
                cause = err.cause
                if not (isinstance(cause, ApplicationError) and cause.type in BLOCKING):
                    raise
                seen = self._control.resumes
                workflow.logger.warning("ordinal %d %s blocked: %s", self._ordinal, name,
                                        cause.message)  # fmt: skip
                parent = workflow.info().parent
                if parent is None:
                    raise
                await workflow.get_external_workflow_handle(
                    parent.workflow_id, run_id=parent.run_id
                ).signal(
                    "ordinal_blocked",
                    StepReport(ordinal=self._ordinal, step=name, detail=cause.message),
                )
                await workflow.wait_condition(functools.partial(self._resumed_since, seen))

    async def _take(self, giver: SetSliceInput, taker: SetSliceInput, summary: str) -> None:
        """The taking side takes ordinal k, but only while the giving side still owns
        the slice it was left with: a foreign scale-up of the giver after its pod went
        (a GitOps sync putting replicas back, say) would otherwise run one identity in
        both clusters. The check is a no-op slice change (from == to), which fails as a
        conflicting change when the slice differs; the remaining window is the one
        round trip between the two calls."""
        act = workflow.execute_activity_method
        if workflow.patched(SLICE_GUARD):
            ref = giver.ref
            await act(
                MigrationActivities.set_statefulset_slice,
                giver,
                summary=f"{ref.context} {ref.statefulset}: still owns "
                f"[{giver.start}, {giver.start + giver.replicas})",
                **QUICK,
            )
        await act(MigrationActivities.set_statefulset_slice, taker, summary=summary, **QUICK)

    async def _claims_bound(self, ref: SliceRef, claims: list[str], t: WaitTimeouts) -> None:
        """The claims Bound on ``ref``'s side (a claim that does not bind pauses the run)."""
        await self._held(
            "claims_bound",
            lambda: workflow.execute_activity_method(
                MigrationActivities.wait_for_claims_bound,
                ClaimsBoundInput(
                    context=ref.context, namespace=ref.namespace, claims=claims, timeout=t.bound
                ),
                summary=f"{ref.context}: wait for {len(claims)} claim(s) Bound",
                **waiting(t.bound),
            ),
        )

    async def _pod_ready(
        self, role: str, ref: SliceRef, ordinal: OrdinalPlan, t: WaitTimeouts
    ) -> None:
        """Pod k Running and Ready on ``role``'s side, the one that took it."""
        await self._held(
            f"{role}_pod_ready",
            lambda: workflow.execute_activity_method(
                MigrationActivities.wait_for_pod_ready,
                PodReadyInput(pod=PodRef(ref=ref, ordinal=ordinal.ordinal), timeout=t.pod_ready),
                summary=f"{ref.context}: wait for {ordinal.pod} Ready",
                **waiting(t.pod_ready),
            ),
        )

    async def _give_up_storage(
        self, role: str, ref: SliceRef, pod: PodState, ordinal: OrdinalPlan, t: WaitTimeouts
    ) -> None:
        """``role`` (source or destination) has given up ordinal k: pod k gone by UID
        and its volumes detached (no VolumeAttachment left), then its claims released,
        so only one cluster claims the storage. Both again after a block (somebody
        scaled it back up): whoever runs pod k now must be gone and detached before the
        claims go."""
        k, side = ordinal.ordinal, ref.context
        volumes = [v.volume for v in ordinal.volumes]
        claims = [v.claim for v in ordinal.volumes]
        act = workflow.execute_activity_method
        uid = pod.uid
        if self._give_up_attempts:
            now = await act(
                MigrationActivities.read_pod,
                PodRef(ref=ref, ordinal=k),
                summary=f"{side}: read pod {ordinal.pod} again",
                **QUICK,
            )
            uid = now.uid if now.exists else pod.uid
        self._give_up_attempts += 1
        await self._step(
            f"{role}_pod_gone",
            act(
                MigrationActivities.wait_for_pod_gone,
                WaitPodGoneInput(
                    pod=PodRef(ref=ref, ordinal=k),
                    uid=uid,
                    volumes=volumes,
                    pod_timeout=t.pod_gone,
                    detach_timeout=t.detach,
                ),
                summary=f"{side}: wait for {ordinal.pod} to go and detach",
                **waiting(t.pod_gone + t.detach),
            ),
        )
        await self._step(
            f"{role}_claims_released",
            act(
                MigrationActivities.release_source_claims,
                ReleaseClaimsInput(
                    context=side, namespace=ref.namespace, claims=claims, volumes=volumes
                ),
                summary=f"{side}: release {len(claims)} claim(s)",
                **waiting(120),
            ),
        )


@workflow.defn(name="MigrateOrdinal")
class MigrateOrdinal(_OrdinalSteps):
    """Move one ordinal k: source gives it up, destination takes it, volumes follow.

    Its parent forwards the operator's pause and abort (signal ``control``). Both
    act only before the source gives up pod k: once it has, the ordinal finishes
    its move, so no pause or abort leaves an identity down or half-moved.
    """

    async def _unless_aborted(self, work: Awaitable[T]) -> T | None:
        """``work``, or None if an abort comes first (the work is then cancelled)."""
        task = asyncio.ensure_future(work)
        await workflow.wait_condition(lambda: task.done() or self._control.aborting)
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ActivityError):
            await task
        return None

    async def _may_start(self) -> bool:
        """The safe point: wait out a pause; False if the operator aborts."""
        if self._control.paused and not self._control.aborting:
            self._report("paused")
            await workflow.wait_condition(
                lambda: not self._control.paused or self._control.aborting
            )
        return not self._control.aborting

    @workflow.run
    async def run(self, task: OrdinalInput) -> OrdinalResult:
        r, k, s, end = task.request, task.ordinal.ordinal, task.source_start, task.end
        t = r.timeouts
        self._ordinal = k
        self._control = task.control
        src = SliceRef(context=r.source_context, namespace=r.namespace, statefulset=r.statefulset)
        dst = SliceRef(
            context=r.destination_context, namespace=r.target_namespace, statefulset=r.statefulset
        )
        volumes = [v.volume for v in task.ordinal.volumes]
        claims = [v.claim for v in task.ordinal.volumes]
        begun = workflow.now()
        act = workflow.execute_activity_method
        not_moved = OrdinalResult(ordinal=k, moved=False, volumes=volumes)

        # 1. Both slices healthy before anything moves: source [s, k], destination (k, end).
        #    An abort while waiting ends the ordinal here, still wholly in the source.
        healthy = await self._step(
            "slices_healthy",
            self._unless_aborted(
                asyncio.gather(
                    act(
                        MigrationActivities.wait_for_slice_ready,
                        SliceReadyInput(ref=src, start=s, replicas=k + 1 - s, timeout=t.healthy),
                        summary=f"{src.context}: pods {s}..{k} Ready",
                        **waiting(t.healthy),
                    ),
                    act(
                        MigrationActivities.wait_for_slice_ready,
                        SliceReadyInput(
                            ref=dst, start=k + 1, replicas=end - k - 1, timeout=t.healthy
                        ),
                        summary=f"{dst.context}: pods {k + 1}..{end - 1} Ready",
                        **waiting(t.healthy),
                    ),
                )
            ),
        )
        if healthy is None or not await self._may_start():
            workflow.logger.info("ordinal %d not moved: aborted", k)
            return await self._finish(not_moved)

        # 2. No volume may be deleted by anything that follows.
        retained = await self._step(
            "volumes_retained",
            act(
                MigrationActivities.ensure_volumes_retained,
                RetainInput(context=src.context, volumes=volumes, migration_id=task.migration_id),
                summary=f"{src.context}: reclaim policy Retain on {len(volumes)} volume(s)",
                **QUICK,
            ),
        )

        # 3. The source gives up ordinal k. The pod's UID is read first so the wait
        #    below recognises a replacement pod as somebody else's doing.
        pod = await act(
            MigrationActivities.read_pod,
            PodRef(ref=src, ordinal=k),
            summary=f"{src.context}: read pod {task.ordinal.pod}",
            **QUICK,
        )
        await self._held(
            "source_scaled_down",
            lambda: act(
                MigrationActivities.set_statefulset_slice,
                SetSliceInput(
                    ref=src, start=s, replicas=k - s, from_start=s, from_replicas=k + 1 - s
                ),
                summary=f"{src.context} {r.statefulset}: replicas {k + 1 - s} -> {k - s}",
                **QUICK,
            ),
        )

        # 4. Pod k gone by UID, and its volumes detached (no VolumeAttachment left).
        # Always run: even if pod k were already gone, its volumes must be detached
        # before the destination may take ordinal k.
        # 5. Only one cluster may claim the storage: release the source claims.
        # Both again after a block (e.g. somebody scaled the source back up): whoever
        # runs pod k now must be gone and detached before the claims go.
        await self._held(
            "source_pod_gone",
            functools.partial(self._give_up_storage, "source", src, pod, task.ordinal, t),
            timed=False,
        )

        # 6. The destination gets the same storage, pre-bound to its claims.
        await self._held(
            "volumes_imported",
            lambda: act(
                MigrationActivities.import_volumes,
                ImportInput(request=r, migration_id=task.migration_id, ordinal=task.ordinal),
                summary=f"{dst.context}: import {len(volumes)} volume(s) of ordinal {k}",
                **waiting(60),
            ),
        )
        await self._claims_bound(dst, claims, t)

        # 7. The destination takes ordinal k: start and replicas in ONE patch, once the
        #    source is seen still giving it up.
        await self._held(
            "destination_scaled_up",
            functools.partial(
                self._take,
                SetSliceInput(ref=src, start=s, replicas=k - s, from_start=s, from_replicas=k - s),
                SetSliceInput(
                    ref=dst, start=k, replicas=end - k, from_start=k + 1, from_replicas=end - k - 1
                ),
                f"{dst.context} {r.statefulset}: ordinals.start {k + 1} -> {k}, "
                f"replicas {end - k - 1} -> {end - k}",
            ),
        )

        # 8. Pod k Running and Ready in the destination.
        await self._pod_ready("destination", dst, task.ordinal, t)

        # 9. Health gates: the operator's probes of the moved ordinal (reported, never
        #    raised; the parent applies on_failure).
        health = None
        if r.health.probes:
            probes = r.health.probes
            budget = sum((p.timeout + p.interval) * (p.retries + 1) + p.soak for p in probes)
            health = await self._step(
                "health_gates",
                act(
                    HealthActivities.probe_ordinal,
                    ProbeInput(
                        probes=probes,
                        context=dst.context,
                        namespace=dst.namespace,
                        statefulset=r.statefulset,
                        service=task.service,
                        ordinal=k,
                    ),
                    summary=f"{dst.context}: {len(probes)} health probe(s) of {task.ordinal.pod}",
                    start_to_close_timeout=timedelta(seconds=budget + 60),
                    heartbeat_timeout=timedelta(seconds=max(30, 2 * max(
                        p.timeout + p.interval for p in probes))),
                    retry_policy=RETRY,
                ),
            )  # fmt: skip

        seconds = round((workflow.now() - begun).total_seconds(), 3)
        workflow.logger.info("ordinal %d migrated in %.1f s", k, seconds)
        return await self._finish(
            OrdinalResult(
                ordinal=k,
                steps=self._steps,
                volumes=volumes,
                original_reclaim_policies=retained.original_policies,
                seconds=seconds,
                health=health,
            )
        )


@workflow.defn(name="RollbackOrdinal")
class RollbackOrdinal(_OrdinalSteps):
    """Give ordinal k back to the source: the same slice mechanism in reverse. The
    destination gives up its lowest ordinal k, its pod and attachments go, its claims
    are released, the source re-binds its own retained volumes (the same storage) and
    takes ordinal k back."""

    @workflow.run
    async def run(self, task: OrdinalInput) -> OrdinalResult:
        r, k, s, end = task.request, task.ordinal.ordinal, task.source_start, task.end
        t = r.timeouts
        self._ordinal = k
        self._control = task.control
        src = SliceRef(context=r.source_context, namespace=r.namespace, statefulset=r.statefulset)
        dst = SliceRef(
            context=r.destination_context, namespace=r.target_namespace, statefulset=r.statefulset
        )
        volumes = [v.volume for v in task.ordinal.volumes]
        claims = [v.claim for v in task.ordinal.volumes]
        begun = workflow.now()
        act = workflow.execute_activity_method

        pod = await act(
            MigrationActivities.read_pod,
            PodRef(ref=dst, ordinal=k),
            summary=f"{dst.context}: read pod {task.ordinal.pod}",
            **QUICK,
        )
        await self._held(
            "destination_scaled_down",
            lambda: act(
                MigrationActivities.set_statefulset_slice,
                SetSliceInput(
                    ref=dst, start=k + 1, replicas=end - k - 1, from_start=k, from_replicas=end - k
                ),
                summary=f"{dst.context} {r.statefulset}: ordinals.start {k} -> {k + 1}, "
                f"replicas {end - k} -> {end - k - 1}",
                **QUICK,
            ),
        )
        await self._held(
            "destination_pod_gone",
            functools.partial(self._give_up_storage, "destination", dst, pod, task.ordinal, t),
            timed=False,
        )
        await self._held(
            "volumes_reclaimed",
            lambda: act(
                MigrationActivities.reclaim_volumes,
                ImportInput(request=r, migration_id=task.migration_id, ordinal=task.ordinal),
                summary=f"{src.context}: re-bind {len(volumes)} retained volume(s) of ordinal {k}",
                **waiting(60),
            ),
        )
        await self._claims_bound(src, claims, t)
        await self._held(
            "source_scaled_up",
            functools.partial(
                self._take,
                SetSliceInput(
                    ref=dst,
                    start=k + 1,
                    replicas=end - k - 1,
                    from_start=k + 1,
                    from_replicas=end - k - 1,
                ),
                SetSliceInput(
                    ref=src, start=s, replicas=k + 1 - s, from_start=s, from_replicas=k - s
                ),
                f"{src.context} {r.statefulset}: replicas {k - s} -> {k + 1 - s}",
            ),
        )
        await self._pod_ready("source", src, task.ordinal, t)
        seconds = round((workflow.now() - begun).total_seconds(), 3)
        workflow.logger.info("ordinal %d rolled back in %.1f s", k, seconds)
        return await self._finish(
            OrdinalResult(ordinal=k, steps=self._steps, volumes=volumes, seconds=seconds)
        )


def rollback_workflow_id(migration_id: str, ordinal: int) -> str:
    return f"{migration_id}/rollback-{ordinal}"


def progress_table(progress: Progress, plan: Plan | None) -> str:
    """The markdown shown as the workflow's current details in the Temporal UI."""
    lines = [f"**phase:** {progress.phase}"]
    if plan is not None:
        lines[0] += (
            f" · {plan.statefulset}: {plan.source_context}/{plan.namespace} → "
            f"{plan.destination_context}/{plan.destination_namespace}"
        )
    if progress.waiting_for_approval is not None:
        lines.append(
            f"\n**waiting for approval of ordinal {progress.waiting_for_approval}** "
            "(signal or update `approve`)"
        )
    if progress.phase == "paused" or (progress.paused and progress.phase != "done"):
        held = (
            "paused" if progress.phase == "paused" else "pause asked, stops at the next safe point"
        )
        lines.append(f"\n**{held}**{': ' + progress.pause_reason if progress.pause_reason else ''}")
    if progress.aborting and progress.phase != "aborted":
        lines.append("\n**aborting** at the next safe point")
    if plan is not None:
        lines += ["", "| ordinal | status | step / seconds |", "|---|---|---|"]
        done = {r.ordinal: r for r in progress.finished}
        for ordinal in plan.ordinals:
            k = ordinal.ordinal
            if k in done:
                status = "moved" if done[k].moved else "stayed"
                lines.append(f"| {k} | {status} | {done[k].seconds:.1f} s |")
            elif k == progress.current_ordinal:
                lines.append(f"| {k} | {progress.phase} | {progress.step or ''} |")
            else:
                lines.append(f"| {k} | waiting | |")
    return "\n".join(lines)


def _key(name: str) -> SearchAttributeKey[Any]:
    kind = SEARCH_ATTRIBUTES[name]
    return (
        SearchAttributeKey.for_int(name) if kind == "Int" else SearchAttributeKey.for_keyword(name)
    )


# A request that does not validate (e.g. raw JSON from the Temporal CLI) fails the
# run at once with pydantic's message, instead of failing workflow tasks forever.
@workflow.defn(name="MigrateStatefulSet", failure_exception_types=[ValidationError])
class MigrateStatefulSet:
    """Move a StatefulSet from the source to the destination cluster, ordinal by ordinal.

    Operators send ``pause``, ``resume``, ``approve``, ``abort`` and
    ``set_approval``, each as a signal (fire-and-forget, queued while no worker
    runs) or as an update of the same name (acknowledged, its validator rejects a
    message that makes no sense now, and it returns the progress).
    """

    def __init__(self) -> None:
        self._progress = Progress()
        self._plan: Plan | None = None
        self._control = Control()
        self._sent = Control()  # what the running child was last told
        self._child: workflow.ChildWorkflowHandle[Any, OrdinalResult] | None = None
        self._lock = asyncio.Lock()
        self._search_attributes: set[str] = set()
        self._moved: list[OrdinalResult] = []  # moved by this run and not rolled back
        self._request: MigrationRequest | None = None

    # -- queries ------------------------------------------------------------------------

    @workflow.query
    def progress(self) -> Progress:
        return self._progress

    @workflow.query
    def plan(self) -> Plan | None:
        return self._plan

    # -- operator messages: the rules (validators and signals share them) ----------------

    def _finished(self) -> bool:
        return self._progress.phase in ("done", "aborted")

    def _next_ordinal(self) -> int | None:
        """The ordinal an approval applies to: the one waiting, else the next not begun."""
        if self._progress.waiting_for_approval is not None:
            return self._progress.waiting_for_approval
        moving = self._progress.current_ordinal if self._child is not None else None
        return next((k for k in self._progress.remaining if k != moving), None)

    def _pause_problem(self, _: PauseRequest | None) -> str | None:
        if self._finished():
            return f"the migration is {self._progress.phase}"
        if self._control.aborting:
            return "the migration is aborting"
        if self._control.paused:
            return "the migration is already paused"
        return None

    def _resume_problem(self, _: object = None) -> str | None:
        if not self._control.paused:
            return "the migration is not paused"
        return None

    def _approve_problem(self, req: ApproveRequest | None) -> str | None:
        req = req or ApproveRequest()
        if self._finished() or self._control.aborting:
            return (
                f"the migration is {'aborting' if self._control.aborting else self._progress.phase}"
            )
        if req.all:
            return None
        if self._plan is None:
            return "no ordinal to approve yet: the plan is not ready (approve all is accepted)"
        following = self._next_ordinal()
        if following is None:
            return "no ordinal remains to be approved"
        if req.ordinal is not None and req.ordinal != following:
            return f"ordinal {req.ordinal} is not next; the next ordinal to move is {following}"
        return None

    def _abort_problem(self, _: AbortRequest | None) -> str | None:
        if self._finished():
            return f"the migration is {self._progress.phase}"
        if self._progress.blocked:
            return (
                f"{self._progress.blocked}; stopping now would leave it half-moved: fix the "
                "cause and resume (the run can be aborted once the ordinal is whole)"
            )
        if self._control.aborting:
            return "the migration is already aborting"
        return None

    def _rollback_problem(self, _: RollbackRequest | None) -> str | None:
        if self._finished() or self._control.aborting:
            return (
                f"the migration is {'aborting' if self._control.aborting else self._progress.phase}"
            )
        if not self._moved and self._child is None:
            return "nothing to roll back: this run has moved no ordinal"
        return None

    def _approval_problem(self, policy: ApprovalPolicy) -> str | None:
        if self._finished():
            return f"the migration is {self._progress.phase}"
        if self._plan is not None and policy.mode == "ordinals":
            known = {o.ordinal for o in self._plan.ordinals}
            if unknown := sorted(set(policy.ordinals) - known):
                return f"ordinals {unknown} are not part of this migration ({sorted(known)})"
        return None

    # -- operator messages: what they do -----------------------------------------------

    async def _apply_control(self, control: Control, **progress: Any) -> None:
        self._control = control
        self._set(paused=control.paused, aborting=control.aborting, **progress)
        await self._forward()

    async def _forward(self) -> None:
        """Tell the running child the latest control; one sender at a time."""
        async with self._lock:
            while self._child is not None and self._sent != self._control:
                sending = self._control
                try:
                    await self._child.signal(_OrdinalSteps.control, sending)
                except FailureError as err:  # the child finished meanwhile
                    workflow.logger.info("control not delivered to ordinal: %s", err)
                    return
                self._sent = sending

    def _approve(self, req: ApproveRequest | None) -> None:
        req = req or ApproveRequest()
        if req.all:
            self._set(approve_all=True)
            return
        k = req.ordinal if req.ordinal is not None else self._next_ordinal()
        if k is not None and k not in self._progress.approved:
            self._set(approved=[*self._progress.approved, k])

    def _ignored(self, message: str, problem: str | None) -> bool:
        if problem:
            workflow.logger.warning("signal %s ignored: %s", message, problem)
        return problem is not None

    @staticmethod
    def _reject(problem: str | None) -> None:
        if problem:
            raise ApplicationError(problem, type="Rejected", non_retryable=True)

    # pause
    @workflow.signal(name="pause")
    async def pause_signal(self, req: PauseRequest | None = None) -> None:
        if not self._ignored("pause", self._pause_problem(req)):
            await self._pause(req)

    @workflow.update(name="pause")
    async def pause(self, req: PauseRequest | None = None) -> Progress:
        await self._pause(req)
        return self._progress

    @pause.validator
    def _validate_pause(self, req: PauseRequest | None = None) -> None:
        self._reject(self._pause_problem(req))

    async def _pause(self, req: PauseRequest | None) -> None:
        reason = req.reason if req else ""
        workflow.logger.info("pause asked%s", f": {reason}" if reason else "")
        await self._apply_control(
            self._control.model_copy(update={"paused": True}), pause_reason=reason
        )

    # resume
    @workflow.signal(name="resume")
    async def resume_signal(self) -> None:
        if not self._ignored("resume", self._resume_problem()):
            await self._resume()

    @workflow.update(name="resume")
    async def resume(self) -> Progress:
        await self._resume()
        return self._progress

    @resume.validator
    def _validate_resume(self) -> None:
        self._reject(self._resume_problem())

    async def _resume(self) -> None:
        workflow.logger.info("resume asked")
        resumed = {"paused": False, "resumes": self._control.resumes + 1}
        await self._apply_control(
            self._control.model_copy(update=resumed), pause_reason="", blocked=""
        )

    # approve
    @workflow.signal(name="approve")
    def approve_signal(self, req: ApproveRequest | None = None) -> None:
        if not self._ignored("approve", self._approve_problem(req)):
            self._approve(req)

    @workflow.update(name="approve")
    def approve(self, req: ApproveRequest | None = None) -> Progress:
        self._approve(req)
        return self._progress

    @approve.validator
    def _validate_approve(self, req: ApproveRequest | None = None) -> None:
        self._reject(self._approve_problem(req))

    # abort
    @workflow.signal(name="abort")
    async def abort_signal(self, req: AbortRequest | None = None) -> None:
        if not self._ignored("abort", self._abort_problem(req)):
            await self._abort(req)

    @workflow.update(name="abort")
    async def abort(self, req: AbortRequest | None = None) -> Progress:
        await self._abort(req)
        return self._progress

    @abort.validator
    def _validate_abort(self, req: AbortRequest | None = None) -> None:
        self._reject(self._abort_problem(req))

    async def _abort(self, req: AbortRequest | None) -> None:
        reason = req.reason if req else ""
        workflow.logger.info("abort asked%s", f": {reason}" if reason else "")
        await self._apply_control(
            self._control.model_copy(update={"aborting": True}), abort_reason=reason
        )

    # set_approval
    @workflow.signal(name="set_approval")
    def set_approval_signal(self, policy: ApprovalPolicy) -> None:
        if not self._ignored("set_approval", self._approval_problem(policy)):
            self._set(approval=policy)

    @workflow.update(name="set_approval")
    def set_approval(self, policy: ApprovalPolicy) -> Progress:
        self._set(approval=policy)
        return self._progress

    @set_approval.validator
    def _validate_set_approval(self, policy: ApprovalPolicy) -> None:
        self._reject(self._approval_problem(policy))

    # rollback
    @workflow.signal(name="rollback")
    def rollback_signal(self, req: RollbackRequest | None = None) -> None:
        if not self._ignored("rollback", self._rollback_problem(req)):
            self._ask_rollback(req or RollbackRequest())

    @workflow.update(name="rollback")
    def rollback(self, req: RollbackRequest | None = None) -> Progress:
        self._ask_rollback(req or RollbackRequest())
        return self._progress

    @rollback.validator
    def _validate_rollback(self, req: RollbackRequest | None = None) -> None:
        self._reject(self._rollback_problem(req))

    def _ask_rollback(self, req: RollbackRequest) -> None:
        """Done at the next safe point (an ordinal mid-move finishes first)."""
        which = "all" if req.all or self._progress.rollback == "all" else "ordinal"
        workflow.logger.info(
            "rollback (%s) asked%s", which, f": {req.reason}" if req.reason else ""
        )
        self._set(rollback=which)

    # from the children
    @workflow.signal(name="ordinal_blocked")
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

    @workflow.signal(name="ordinal_step")
    def ordinal_step(self, report: StepReport) -> None:
        if self._child is None or report.ordinal != self._progress.current_ordinal:
            return  # late news of an ordinal already done
        if report.step == "paused":
            phase = "paused"
        else:
            phase = "rolling_back" if self._progress.rollback else "moving"
        self._set(step=report.step, phase=phase)

    # -- progress everywhere: query, UI details, search attributes ---------------------

    def _set(self, **changes: Any) -> None:
        before = self._progress
        self._progress = before.model_copy(update=changes)
        workflow.set_current_details(progress_table(self._progress, self._plan))
        if (before.phase, before.current_ordinal) != (
            self._progress.phase,
            self._progress.current_ordinal,
        ):
            ordinal = self._progress.current_ordinal
            self._upsert(
                StsmigratePhase=self._progress.phase,
                StsmigrateOrdinal=-1 if ordinal is None else ordinal,
            )

    def _upsert(self, **values: Any) -> None:
        pairs: list[SearchAttributeUpdate[Any]] = [
            _key(name).value_set(value)
            for name, value in values.items()
            if name in self._search_attributes
        ]
        if pairs:
            workflow.upsert_search_attributes(pairs)

    async def _gate(self, ordinal: int | None, first: int | None) -> bool:
        """A safe point (before the first change, between ordinals): wait while paused
        or waiting for approval of ``ordinal``. False when the operator aborts."""
        moving = self._progress.phase
        while not self._control.aborting:
            if self._progress.rollback:
                await self._roll_back()
                return not self._control.aborting  # the caller looks again at what is next
            if self._control.paused:
                self._set(phase="paused", step=None, waiting_for_approval=None)
                await workflow.wait_condition(
                    lambda: (
                        not self._control.paused
                        or self._control.aborting
                        or bool(self._progress.rollback)
                    )
                )
                continue
            approval = self._progress.approval
            if (
                ordinal is not None
                and approval.needs(ordinal, first)
                and not self._progress.approve_all
                and ordinal not in self._progress.approved
            ):
                self._set(phase="awaiting_approval", step=None, waiting_for_approval=ordinal)
                workflow.logger.info("ordinal %d waits for approval", ordinal)
                await workflow.wait_condition(
                    lambda: (
                        self._control.paused
                        or self._control.aborting
                        or bool(self._progress.rollback)
                        or self._progress.approve_all
                        or ordinal in self._progress.approved
                        or not self._progress.approval.needs(ordinal, first)
                    )
                )
                continue
            self._set(phase=moving, waiting_for_approval=None)
            return True
        return False

    async def _health_failed(self, request: MigrationRequest, result: OrdinalResult) -> None:
        """A health gate failed on an ordinal that now runs in the destination."""
        assert result.health is not None
        why = f"health gate failed on ordinal {result.ordinal}: {result.health.failures}"
        workflow.logger.warning("%s (on_failure: %s)", why, request.health.on_failure)
        if request.health.on_failure == "fail":
            await workflow.wait_condition(workflow.all_handlers_finished)
            raise ApplicationError(
                f"{why}. Ordinal {result.ordinal} runs in the destination; ordinals "
                f"{self._progress.remaining} are still in the source. Start the migration again "
                "to continue once the app is healthy.",
                result.health,
                type=HEALTH_GATE_FAILED,
                non_retryable=True,
            )
        if request.health.on_failure in ("rollback_ordinal", "rollback_all"):
            self._set(rollback="all" if request.health.on_failure == "rollback_all" else "ordinal")
            return
        # pause: a human looks; resume accepts and goes on, abort ends here.
        await self._apply_control(
            self._control.model_copy(update={"paused": True}), pause_reason=why
        )

    async def _roll_back(self) -> None:
        """Give back the last moved ordinal (or all this run moved), newest first."""
        assert self._request is not None and self._plan is not None
        request, plan = self._request, self._plan
        mode = self._progress.rollback
        while self._moved and not self._control.aborting:
            last = self._moved.pop()
            k = last.ordinal
            self._set(phase="rolling_back", current_ordinal=k, step=None)
            ordinal = next(o for o in plan.ordinals if o.ordinal == k)
            migration_id = workflow.info().workflow_id
            self._sent = self._control
            self._child = await workflow.start_child_workflow(
                RollbackOrdinal.run,
                OrdinalInput(
                    request=request,
                    migration_id=migration_id,
                    ordinal=ordinal,
                    source_start=plan.source_start,
                    end=plan.end,
                    control=self._sent,
                    service=plan.service_name,
                ),
                id=rollback_workflow_id(migration_id, k),
                static_summary=f"give {ordinal.pod} back from {request.destination_context} "
                f"to {request.source_context}",
            )
            await self._forward()  # a resume of a block while the child was starting
            try:
                await self._child
            finally:
                self._child = None
            self._set(
                current_ordinal=None,
                step=None,
                finished=[r for r in self._progress.finished if r.ordinal != k],
                remaining=[k, *self._progress.remaining],
                rolled_back=[*self._progress.rolled_back, k],
            )
            if mode == "ordinal":
                break
        self._set(rollback="", phase="moving")
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

    async def _move(
        self, request: MigrationRequest, migration_id: str, plan: Plan, ordinal: OrdinalPlan
    ) -> OrdinalResult:
        self._sent = self._control
        self._child = await workflow.start_child_workflow(
            MigrateOrdinal.run,
            OrdinalInput(
                request=request,
                migration_id=migration_id,
                ordinal=ordinal,
                source_start=plan.source_start,
                end=plan.end,
                control=self._sent,
                service=plan.service_name,
            ),
            id=ordinal_workflow_id(migration_id, ordinal.ordinal),
            static_summary=f"move {ordinal.pod} from {request.source_context} "
            f"to {request.destination_context}",
        )
        await self._forward()  # anything asked while the child was starting
        try:
            return await self._child
        finally:
            self._child = None

    @workflow.run
    async def run(self, request: MigrationRequest) -> MigrationResult:
        migration_id = workflow.info().workflow_id
        begun = workflow.now()
        act = workflow.execute_activity_method
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

        self._search_attributes = set(
            await act(
                TemporalActivities.registered_search_attributes,
                summary="which search attributes the namespace has",
                **QUICK,
            )
        )
        if missing := sorted(set(SEARCH_ATTRIBUTES) - self._search_attributes):
            workflow.logger.warning(
                "search attributes %s are not registered in this namespace; the migration runs "
                "without them (see: temporal operator search-attribute create --help)",
                ", ".join(missing),
            )
        self._upsert(
            StsmigrateStatefulSet=request.statefulset,
            StsmigrateNamespace=request.namespace,
            StsmigrateSourceContext=request.source_context,
            StsmigrateDestinationContext=request.destination_context,
        )
        self._set(phase="preflight", approval=request.approval)
        plan = await act(
            MigrationActivities.plan_migration,
            PlanInput(request=request, migration_id=migration_id),
            summary="preflight: check both clusters and build the plan",
            start_to_close_timeout=timedelta(minutes=2),
            heartbeat_timeout=timedelta(seconds=15),
            retry_policy=RETRY,
        )
        self._plan = plan
        self._request = request
        self._set(warnings=plan.warnings, remaining=[o.ordinal for o in plan.ordinals])
        for warning in plan.warnings:
            workflow.logger.warning("preflight: %s", warning)
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
            self._set(phase="done")
            await workflow.wait_condition(workflow.all_handlers_finished)
            return MigrationResult(migration_id=migration_id, dry_run=True, plan=plan)

        first = plan.ordinals[0].ordinal if plan.ordinals else None
        deps = None
        if await self._gate(None, first):
            self._set(phase="preparing")
            if plan.fix_retention_policy:
                await act(
                    MigrationActivities.ensure_retention_policy,
                    src,
                    summary=f"{src.context}: whenScaled Retain",
                    **QUICK,
                )
            if plan.ordinals:
                start = plan.destination_start if plan.destination_exists else plan.end
                await act(
                    MigrationActivities.ensure_destination_statefulset,
                    EnsureDestinationInput(request=request, migration_id=migration_id, start=start),
                    summary=f"{dst.context}: StatefulSet {dst.statefulset} "
                    f"owning [{start}, {start})",
                    **QUICK,
                )
            deps = await act(
                MigrationActivities.ensure_dependencies,
                PlanInput(request=request, migration_id=migration_id),
                summary=f"{dst.context}: copy Secrets, ConfigMaps, Service, PDB",
                **QUICK,
            )

            self._set(phase="moving")
            by_ordinal = {o.ordinal: o for o in plan.ordinals}
            while True:
                if not self._progress.remaining:
                    # A pause asked during the last ordinal (or by its failed health gate)
                    # holds here too, so a human decides before the run reports done; a
                    # rollback done here puts ordinals back into remaining.
                    if not await self._gate(None, first) or not self._progress.remaining:
                        break
                    continue
                k = self._progress.remaining[0]
                self._set(current_ordinal=k, step=None)
                if not await self._gate(k, first):
                    break
                if self._progress.remaining[:1] != [k]:
                    continue  # a rollback in the gate changed what is next
                result = await self._move(request, migration_id, plan, by_ordinal[k])
                self._set(
                    current_ordinal=None,
                    step=None,
                    finished=[*self._progress.finished, result],
                    remaining=[o for o in self._progress.remaining if o != k],
                )
                if not result.moved:
                    break
                self._moved.append(result)
                if result.health is not None and not result.health.ok:
                    await self._health_failed(request, result)

        source_state = await act(
            MigrationActivities.read_statefulset,
            src,
            summary=f"{src.context}: final state",
            **QUICK,
        )
        destination_state = await act(
            MigrationActivities.read_statefulset,
            dst,
            summary=f"{dst.context}: final state",
            **QUICK,
        )
        seconds = round((workflow.now() - begun).total_seconds(), 3)
        aborted = self._control.aborting
        self._set(phase="aborted" if aborted else "done", current_ordinal=None, step=None)
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


def placement(source: StatefulSetState, destination: StatefulSetState) -> dict[str, str]:
    """Where every ordinal runs, highest first, from the two StatefulSets' slices."""
    where: dict[int, str] = {}
    for side, state in (("source", source), ("destination", destination)):
        if state.exists:
            for k in range(state.start, state.start + state.replicas):
                where[k] = "both" if k in where else side
    return {str(k): where[k] for k in sorted(where, reverse=True)}
