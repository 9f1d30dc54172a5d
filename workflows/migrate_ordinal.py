"""MigrateOrdinal: move one ordinal k from the source to the destination.

The child ``<migration id>/ordinal-<k>`` of MigrateStatefulSet. Before the hand-over
(workflows/handover.py, source gives, destination takes) it waits for both slices
to be healthy, runs the request's before_give_up hooks in the source's pod k and
makes every volume of k Retain (invariant I2); after it, the after_take hooks in the
destination's pod k and the operator's health gates on the moved pod.
"""

from __future__ import annotations

import asyncio
from typing import TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.health import HealthActivities
    from activities.migration import MigrationActivities
    from contract import (
        PAUSED_AT_SAFE_POINT,
        HealthReport,
        OrdinalInput,
        OrdinalResult,
        ProbeInput,
        RetainInput,
        SliceReadyInput,
        StepTiming,
    )
    from contract.errors import BLOCKING

# Our own workflow code is imported inside the sandbox, so its checks apply to it.
from workflows.handover import (
    NOTHING_GIVEN,
    Adoption,
    OrdinalHandover,
    UndoAsked,
    block_reason,
    destination_side,
    every,
    outliving_cancel,
    source_side,
)
from workflows.options import probe_options, quick, wait_options

T = TypeVar("T")


@workflow.defn(name="MigrateOrdinal")
class MigrateOrdinal(OrdinalHandover):
    """Move one ordinal k: source gives it up, destination takes it, volumes follow.

    Its parent forwards the operator's pause and abort (signal ``control``). Both
    act only before the source gives up pod k (the safe point): once it has, the
    ordinal finishes its move, so no pause or abort leaves an identity down or
    half-moved (invariant I4). A step that cannot go on pauses; the operator then
    resumes it or has the ordinal put back in the source (``undo``). A cancel of this
    workflow is an abort.
    """

    async def _may_start(self) -> bool:
        """The safe point: wait out a pause; False if the operator aborts."""
        if self._control.paused and not self._aborting():
            self._report(PAUSED_AT_SAFE_POINT)
            await workflow.wait_condition(lambda: not self._control.paused or self._aborting())
        return not self._aborting()

    async def _slices_healthy(self, task: OrdinalInput) -> bool:
        """Both slices healthy before anything moves: source [s, k], destination (k, end).
        A wait that ends without it holds (the run pauses; resume waits again); False
        if the operator aborts meanwhile, the ordinal then still wholly in the source."""
        source, destination = source_side(task), destination_side(task)
        src, dst, t, k = source.ref, destination.ref, task.request.timeouts, self._ordinal
        (s, with_k), (above, rest) = source.with_k, destination.without_k
        while True:
            waits = asyncio.gather(
                workflow.execute_activity_method(
                    MigrationActivities.wait_for_slice_ready,
                    SliceReadyInput(ref=src, start=s, replicas=with_k, timeout=t.healthy),
                    **wait_options(t.healthy, f"{src.context}: pods {s}..{k} Ready"),
                ),
                workflow.execute_activity_method(
                    MigrationActivities.wait_for_slice_ready,
                    SliceReadyInput(ref=dst, start=above, replicas=rest, timeout=t.healthy),
                    **wait_options(t.healthy, f"{dst.context}: pods {above}..{task.end - 1} Ready"),
                ),
                return_exceptions=True,
            )
            results = await self._timed_step("slices_healthy", self._unless_aborted(waits))
            if results is None:
                return False
            failed = [r for r in results if isinstance(r, BaseException)]
            if not failed:
                return True
            err = failed[0]
            blocking = (
                isinstance(err, ActivityError)
                and isinstance(err.cause, ApplicationError)
                and err.cause.type in BLOCKING
            )
            if not blocking or workflow.info().parent is None:
                raise err
            assert isinstance(err, ActivityError)
            await self._blocked("slices_healthy", block_reason(err))  # UndoAsked: not moved

    async def _before_give_up(self, task: OrdinalInput) -> bool:
        """The before_give_up hooks in the source's pod k, then the safe point again: a
        pause asked while they ran is waited out, and they run again after it (what they
        did may be undone meanwhile, a Redis failback say). False if the operator aborts:
        nothing has changed but what the hooks did in the app; UndoAsked when a failed
        hook's pause ends in an abort or rollback."""
        if not task.request.hooks.before_give_up:
            return True
        while True:
            await self._run_hooks(task, "before_give_up", source_side(task))
            if self._aborting():
                return False
            if not self._control.paused:
                return True
            if not await self._may_start():
                return False

    @workflow.run
    async def run(self, task: OrdinalInput) -> OrdinalResult:
        return await outliving_cancel(self._run(task), self._cancelled)

    async def _run(self, task: OrdinalInput) -> OrdinalResult:
        request, k = task.request, task.ordinal.ordinal
        self._ordinal = k
        self._start_control(task)
        source, destination = source_side(task), destination_side(task)
        src, dst = source.ref, destination.ref
        volumes = [v.volume for o in task.block for v in o.volumes]
        begun = workflow.now()
        not_moved = block_result(task, moved=False)

        # 1. The budget shared, both slices healthy before anything moves. An abort
        #    while waiting ends the ordinal here, still wholly in the source.
        if not await self._share_budget(task):
            workflow.logger.info("ordinal %d not moved: aborted", k)
            return await self._finish(not_moved)
        try:
            healthy = await self._slices_healthy(task)
        except UndoAsked:
            workflow.logger.info("ordinal %d not moved: undone before anything changed", k)
            return await self._finish(not_moved.model_copy(update={"undone": True}))
        if not healthy or not await self._may_start():
            workflow.logger.info("ordinal %d not moved: aborted", k)
            return await self._finish(not_moved)
        try:
            hooked = await self._before_give_up(task)
        except UndoAsked:
            workflow.logger.info("ordinal %d not moved: undone at its before_give_up hook", k)
            return await self._finish(not_moved.model_copy(update={"undone": True}))
        if not hooked:
            workflow.logger.info("ordinal %d not moved: aborted after its hooks", k)
            return await self._finish(not_moved)

        # 2. No volume may be deleted by anything that follows (after the hooks: an abort
        #    they end in changes nothing).
        retained = await self._timed_step(
            "volumes_retained",
            workflow.execute_activity_method(
                MigrationActivities.ensure_volumes_retained,
                RetainInput(context=src.context, volumes=volumes, migration_id=task.migration_id),
                **quick(f"{src.context}: reclaim policy Retain on {len(volumes)} volume(s)"),
            ),
        )

        # 3-8. The hand-over: the source gives ordinal k up, the destination takes it
        #      on the same volumes, pod k Ready there. Undone on the operator's word.
        adoption = Adoption(
            step="volumes_imported",
            activity=MigrationActivities.import_volumes,
            summary=f"{dst.context}: import {len(volumes)} volume(s) of {ordinals(task)}",
        )
        try:
            await self.hand_over(task, source, destination, adoption)
            # 8b. The after_take hooks in the destination's pod k (a failure pauses).
            await self._run_hooks(task, "after_take", destination)
        except UndoAsked:
            if self._stage == NOTHING_GIVEN:  # blocked before the source changed anything
                return await self._finish(not_moved.model_copy(update={"undone": True}))
            reclaim = Adoption(
                step="volumes_reclaimed",
                activity=MigrationActivities.reclaim_volumes,
                summary=f"{src.context}: re-bind {len(volumes)} retained volume(s) of "
                f"{ordinals(task)}",
            )
            await self._undo(task, source, destination, reclaim)
            workflow.logger.info("ordinal %d put back in the source", k)
            return await self._finish(
                block_result(
                    task,
                    moved=False,
                    undone=True,
                    steps=self._steps,
                    policies=retained.original_policies,
                    seconds=round((workflow.now() - begun).total_seconds(), 3),
                )
            )

        # 9. Health gates: the operator's probes of each moved ordinal (reported, never
        #    raised; the parent applies on_failure).
        health: list[HealthReport | None] = [None] * len(task.block)
        if probes := request.health.probes:
            health = list(
                await self._timed_step(
                    "health_gates",
                    every(
                        [
                            workflow.execute_activity_method(
                                HealthActivities.probe_ordinal,
                                ProbeInput(
                                    probes=probes,
                                    context=dst.context,
                                    namespace=dst.namespace,
                                    statefulset=request.statefulset,
                                    service=task.service,
                                    ordinal=o.ordinal,
                                ),
                                **probe_options(
                                    probes,
                                    f"{dst.context}: {len(probes)} health probe(s) of {o.pod}",
                                ),
                            )
                            for o in task.block
                        ]
                    ),
                )
            )

        seconds = round((workflow.now() - begun).total_seconds(), 3)
        workflow.logger.info("%s migrated in %.1f s", ordinals(task), seconds)
        return await self._finish(
            block_result(
                task,
                steps=self._steps,
                policies=retained.original_policies,
                seconds=seconds,
                health=health,
            )
        )


def ordinals(task: OrdinalInput) -> str:
    """The ordinal (or block) of a hand-over, for logs and summaries."""
    if not task.together:
        return f"ordinal {task.ordinal.ordinal}"
    return f"ordinals {task.ordinal.ordinal}..{task.together[-1].ordinal}"


def block_result(
    task: OrdinalInput,
    *,
    moved: bool = True,
    undone: bool = False,
    steps: list[StepTiming] | None = None,
    policies: dict[str, str] | None = None,
    seconds: float = 0.0,
    health: list[HealthReport | None] | None = None,
) -> OrdinalResult:
    """The result of the hand-over: its highest ordinal's, with the block's step
    timings, and the others in ``together``, each with its own volumes."""
    policies = policies or {}
    results = [
        OrdinalResult(
            ordinal=o.ordinal,
            moved=moved,
            undone=undone,
            volumes=[v.volume for v in o.volumes],
            original_reclaim_policies={
                v.volume: policies[v.volume] for v in o.volumes if v.volume in policies
            },
            seconds=seconds,
            health=health[i] if health else None,
        )
        for i, o in enumerate(task.block)
    ]
    return results[0].model_copy(update={"steps": steps or [], "together": results[1:]})
