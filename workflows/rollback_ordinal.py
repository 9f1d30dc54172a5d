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
from workflows.handover import Adoption, OrdinalHandover, destination_side, source_side


@workflow.defn(name="RollbackOrdinal")
class RollbackOrdinal(OrdinalHandover):
    """Give ordinal k back to the source: the move's hand-over in reverse."""

    @workflow.run
    async def run(self, task: OrdinalInput) -> OrdinalResult:
        k = task.ordinal.ordinal
        self._ordinal = k
        self._control = task.control
        source, destination = source_side(task), destination_side(task)
        volumes = [v.volume for v in task.ordinal.volumes]
        begun = workflow.now()
        adoption = Adoption(
            step="volumes_reclaimed",
            activity=MigrationActivities.reclaim_volumes,
            summary=f"{source.ref.context}: re-bind {len(volumes)} retained volume(s) "
            f"of ordinal {k}",
        )
        await self.hand_over(task, destination, source, adoption)
        seconds = round((workflow.now() - begun).total_seconds(), 3)
        workflow.logger.info("ordinal %d rolled back in %.1f s", k, seconds)
        return await self._finish(
            OrdinalResult(ordinal=k, steps=self._steps, volumes=volumes, seconds=seconds)
        )
