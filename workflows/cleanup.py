"""CleanupMigration: the clean finish of a migration whose every ordinal runs in the
destination (activities/cleanup.py has what each step does and why).

``<migration id>/cleanup``: a child of the migration's last run when the request
asks for ``cleanup``, or started by ``stsmigrate cleanup <id>`` once a run has
ended. Refused, with nothing changed, while anything still runs in the source or a
child of the migration still runs. Its steps run in a fixed order, each converging,
so a crash or a second run anywhere ends in the same state; a cancel between two
steps leaves a safe state (the source fenced, or fenced with fewer PV objects, each
destination PV Retain until its own step), and running it again finishes it.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.migration import MigrationActivities
    from activities.temporal import TemporalActivities
    from contract import ChildrenInput, CleanupInput, CleanupResult
    from contract.errors import CLEANUP_REFUSED

from workflows.options import quick, sweep


@workflow.defn(name="CleanupMigration")
class CleanupMigration:
    @workflow.run
    async def run(self, task: CleanupInput) -> CleanupResult:
        r = task.request
        src, dst = r.source_context, r.destination_context
        plan = await workflow.execute_activity_method(
            MigrationActivities.plan_cleanup,
            task,
            **sweep(f"{src}: is the source empty? what to clean up"),
        )
        # A terminated run's children outlive it: one still moving or giving back an
        # ordinal needs the source's volumes and StatefulSet as they are.
        running = await workflow.execute_activity_method(
            TemporalActivities.running_children,
            ChildrenInput(migration_id=task.migration_id, end=plan.end),
            **quick(f"children of {task.migration_id} still running?"),
        )
        if running:
            raise ApplicationError(
                f"{', '.join(running)} still run (left by a terminated run of this migration): "
                "wait until they have ended, then run the clean finish again",
                type=CLEANUP_REFUSED,
                non_retryable=True,
            )
        task = task.model_copy(update={"volumes": plan.volumes})
        fenced = await workflow.execute_activity_method(
            MigrationActivities.fence_source_statefulset,
            task,
            **quick(f"{src}: delete and hold StatefulSet {r.statefulset}"),
        )
        removed = await workflow.execute_activity_method(
            MigrationActivities.remove_source_volumes,
            task,
            **sweep(f"{src}: remove {len(plan.volumes)} Released PV object(s)"),
        )
        restored = await workflow.execute_activity_method(
            MigrationActivities.restore_reclaim_policies,
            task,
            **sweep(f"{dst}: original reclaim policy of {len(plan.volumes)} volume(s)"),
        )
        workflow.logger.info(
            "clean finish of %s: %s, %d source PV object(s), %d destination PV(s)",
            task.migration_id,
            fenced.action,
            len(removed),
            len(restored),
        )
        return CleanupResult(migration_id=task.migration_id, steps=[fenced, *removed, *restored])
