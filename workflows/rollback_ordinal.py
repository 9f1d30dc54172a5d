"""RollbackOrdinal: give ordinal k back to the source.

The child ``<migration id>/rollback-<k>`` of MigrateStatefulSet: the hand-over of
workflows/handover.py with the sides swapped. The destination gives up its lowest
ordinal k, its pod and attachments go, its claims are released, the source re-binds
its own retained volumes (the same storage) and takes ordinal k back.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.migration import MigrationActivities
    from contract import OrdinalInput, OrdinalResult


# Our own workflow code is imported inside the sandbox, so its checks apply to it.
from workflows.handover import (
    Adoption,
    OrdinalHandover,
    UndoAsked,
    destination_side,
    outliving_cancel,
    source_side,
)


@workflow.defn(name="RollbackOrdinal")
class RollbackOrdinal(OrdinalHandover):
    """Give ordinal k back to the source: the move's hand-over in reverse."""

    @workflow.run
    async def run(self, task: OrdinalInput) -> OrdinalResult:
        return await outliving_cancel(self._run(task), self._cancelled)

    async def _run(self, task: OrdinalInput) -> OrdinalResult:
        k = task.ordinal.ordinal
        self._ordinal = k
        self._start_control(task)
        source, destination = source_side(task), destination_side(task)
        volumes = [v.volume for v in task.ordinal.volumes]
        begun = workflow.now()
        adoption = Adoption(
            step="volumes_reclaimed",
            activity=MigrationActivities.reclaim_volumes,
            summary=f"{source.ref.context}: re-bind {len(volumes)} retained volume(s) "
            f"of ordinal {k}",
        )
        undone = False
        try:
            if not await self._share_budget(task):
                # Aborted before anything changed: k stays in the destination.
                return await self._finish(
                    OrdinalResult(ordinal=k, moved=False, undone=True, volumes=volumes)
                )
            # The hooks with the sides swapped: before_give_up in the destination's pod k
            # (skipped when it is not Ready: the rollback of a broken pod must not wait
            # for it), after_take in the source's (a failure pauses; undone: k stays or
            # goes back). An abort while before_give_up runs keeps k in the destination.
            hooked = await self._run_hooks(
                task, "before_give_up", destination, skip_unless_ready=True
            )
            # Only after hooks ran: a rollback without hooks issues no new command here.
            if task.request.hooks.before_give_up and (not hooked or self._aborting()):
                return await self._finish(
                    OrdinalResult(ordinal=k, moved=False, undone=True, volumes=volumes)
                )
            await self.hand_over(task, destination, source, adoption)
            await self._run_hooks(task, "after_take", source)
        except UndoAsked:
            # The operator would rather keep k where it was: in the destination.
            reimport = Adoption(
                step="volumes_imported",
                activity=MigrationActivities.import_volumes,
                summary=f"{destination.ref.context}: import {len(volumes)} volume(s) of "
                f"ordinal {k} again",
            )
            await self._undo(task, destination, source, reimport)
            undone = True
        seconds = round((workflow.now() - begun).total_seconds(), 3)
        workflow.logger.info(
            "ordinal %d %s in %.1f s",
            k,
            "kept in the destination" if undone else "rolled back",
            seconds,
        )
        return await self._finish(
            OrdinalResult(
                ordinal=k,
                moved=not undone,
                undone=undone,
                steps=self._steps,
                volumes=volumes,
                seconds=seconds,
            )
        )
