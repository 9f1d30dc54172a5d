"""The hand-over of one ordinal k from a giving side to a taking side.

Moving k (MigrateOrdinal) is the source giving it to the destination; rolling it
back (RollbackOrdinal) is the destination giving it to the source. Both run
``OrdinalHandover.hand_over``, so a change to the sequence reaches both at once
(docs/design.md, "The hand-over"):

    read the giver's pod k            (its UID: a replacement pod is somebody else's)
    <giver>_scaled_down               the giver owns its slice without k
    <giver>_pod_gone                  pod k gone by UID, its volumes detached
    <giver>_claims_released           the giver's claims of k released (Retain)
    volumes_imported | _reclaimed     the taker's claims pre-bound to the same volumes
    claims_bound                      ... and Bound
    <taker>_scaled_up                 the taker owns its slice with k, only while the
                                      giver still owns what it was left with
    <taker>_pod_ready                 pod k Running and Ready on the taker

A step the world can block pauses the run with the reason instead of failing with
the ordinal half-moved (invariant I4); resume retries the step. Orchestration
only: every step is an activity.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, FailureError

with workflow.unsafe.imports_passed_through():
    from activities.migration import MigrationActivities
    from contract import (
        ClaimsBoundInput,
        Control,
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
        WaitPodGoneInput,
        WaitTimeouts,
        slice_change,
    )
    from contract.errors import BLOCKING

# Our own workflow code is imported inside the sandbox, so its checks apply to it.
from workflows.options import SLICE_GUARD, quick, wait_options

T = TypeVar("T")

# Signals a child sends its parent (MigrateStatefulSet handles them).
ORDINAL_STEP = "ordinal_step"  # the step the child is in, for the parent's progress
ORDINAL_BLOCKED = "ordinal_blocked"  # a step is blocked: the parent pauses with the reason


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
        self._give_up_attempts = 0

    @workflow.signal
    def control(self, control: Control) -> None:
        """The operator's pause/abort/resume, forwarded by the parent (latest wins)."""
        self._control = control

    def _report(self, step: str) -> None:
        """Tell the parent the step we are in (for its progress); never waited on
        by the step itself, and never fatal."""
        parent = workflow.info().parent
        if parent is None:
            return
        handle = workflow.get_external_workflow_handle(parent.workflow_id, run_id=parent.run_id)

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

    def _resumed_since(self, seen: int) -> bool:
        return self._control.resumes > seen

    async def _pausing_step(
        self, name: Step, make: Callable[[], Awaitable[T]], timed: bool = True
    ) -> T:
        """A step the world can block (a foreign change to a StatefulSet, a pod or an
        attachment that does not go, a claim that does not bind): instead of failing
        with the ordinal half-moved, the run pauses with the reason (signal
        ``ordinal_blocked`` to the parent) and retries the step when resumed."""
        while True:
            try:
                return await (self._timed_step(name, make()) if timed else make())
            except ActivityError as err:
                cause = err.cause
                if not (isinstance(cause, ApplicationError) and cause.type in BLOCKING):
                    raise
                seen = self._control.resumes
                workflow.logger.warning(
                    "ordinal %d %s blocked: %s", self._ordinal, name, cause.message
                )
                parent = workflow.info().parent
                if parent is None:
                    raise
                await workflow.get_external_workflow_handle(
                    parent.workflow_id, run_id=parent.run_id
                ).signal(
                    ORDINAL_BLOCKED,
                    StepReport(ordinal=self._ordinal, step=name, detail=cause.message),
                )
                await workflow.wait_condition(functools.partial(self._resumed_since, seen))

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

    async def _give_up_storage(
        self, giver: Side, pod: PodState, ordinal: OrdinalPlan, t: WaitTimeouts
    ) -> None:
        """The giver has given up ordinal k: pod k gone by UID and its volumes detached
        (no VolumeAttachment left), then its claims released, so only one cluster
        claims the storage. Both again after a block (somebody scaled it back up):
        whoever runs pod k now must be gone and detached before the claims go."""
        ref = giver.ref
        volumes = [v.volume for v in ordinal.volumes]
        claims = [v.claim for v in ordinal.volumes]
        uid = pod.uid
        if self._give_up_attempts:
            now = await workflow.execute_activity_method(
                MigrationActivities.read_pod,
                PodRef(ref=ref, ordinal=ordinal.ordinal),
                **quick(f"{ref.context}: read pod {ordinal.pod} again"),
            )
            uid = now.uid if now.exists else pod.uid
        self._give_up_attempts += 1
        await self._timed_step(
            giver.pod_gone,
            workflow.execute_activity_method(
                MigrationActivities.wait_for_pod_gone,
                WaitPodGoneInput(
                    pod=PodRef(ref=ref, ordinal=ordinal.ordinal),
                    uid=uid,
                    volumes=volumes,
                    pod_timeout=t.pod_gone,
                    detach_timeout=t.detach,
                ),
                **wait_options(
                    t.pod_gone + t.detach, f"{ref.context}: wait for {ordinal.pod} to go and detach"
                ),
            ),
        )
        await self._timed_step(
            giver.claims_released,
            workflow.execute_activity_method(
                MigrationActivities.release_claims,
                ReleaseClaimsInput(
                    context=ref.context, namespace=ref.namespace, claims=claims, volumes=volumes
                ),
                **wait_options(120, f"{ref.context}: release {len(claims)} claim(s)"),
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

    async def _wait_pod_ready(self, taker: Side, ordinal: OrdinalPlan, t: WaitTimeouts) -> None:
        """Pod k Running and Ready on the taker."""
        ref = taker.ref
        await self._pausing_step(
            taker.pod_ready,
            lambda: workflow.execute_activity_method(
                MigrationActivities.wait_for_pod_ready,
                PodReadyInput(pod=PodRef(ref=ref, ordinal=ordinal.ordinal), timeout=t.pod_ready),
                **wait_options(t.pod_ready, f"{ref.context}: wait for {ordinal.pod} Ready"),
            ),
        )

    async def hand_over(
        self, task: OrdinalInput, giver: Side, taker: Side, adoption: Adoption
    ) -> None:
        """Ordinal k from ``giver`` to ``taker``, the whole sequence (module docstring).
        Once the giver has scaled down, this only ends with k running on the taker or
        paused for a human at a blocked step."""
        ordinal, t = task.ordinal, task.request.timeouts
        claims = [v.claim for v in ordinal.volumes]
        # The giver's pod UID is read first, so the wait below recognises a
        # replacement pod as somebody else's doing.
        pod = await workflow.execute_activity_method(
            MigrationActivities.read_pod,
            PodRef(ref=giver.ref, ordinal=ordinal.ordinal),
            **quick(f"{giver.ref.context}: read pod {ordinal.pod}"),
        )
        await self._pausing_step(
            giver.scaled_down,
            lambda: self._set_slice(giver, giver.without_k, giver.with_k),
        )
        # Always run: even if pod k were already gone, its volumes must be detached
        # before the taker may take ordinal k; only one cluster may claim the storage.
        await self._pausing_step(
            giver.pod_gone,
            functools.partial(self._give_up_storage, giver, pod, ordinal, t),
            timed=False,
        )
        # The taker gets the same storage, pre-bound to its claims.
        await self._pausing_step(
            adoption.step,
            lambda: workflow.execute_activity_method(
                adoption.activity,
                ImportInput(request=task.request, migration_id=task.migration_id, ordinal=ordinal),
                **wait_options(60, adoption.summary),
            ),
        )
        await self._wait_claims_bound(taker, claims, t)
        # Start and replicas in ONE patch, once the giver is seen still giving k up.
        await self._pausing_step(
            taker.scaled_up,
            functools.partial(self._scale_up_if_giver_still_owns, giver, taker),
        )
        await self._wait_pod_ready(taker, ordinal, t)
