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
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.migration import MigrationActivities
    from activities.models import (
        ClaimsBoundInput,
        EnsureDestinationInput,
        ImportInput,
        MigrationRequest,
        MigrationResult,
        OrdinalInput,
        OrdinalResult,
        Plan,
        PlanInput,
        PodReadyInput,
        PodRef,
        Progress,
        ReleaseClaimsInput,
        RetainInput,
        SetSliceInput,
        SliceReadyInput,
        SliceRef,
        StepTiming,
        WaitPodGoneInput,
        ordinal_workflow_id,
    )

T = TypeVar("T")

PREFLIGHT_FAILED = "PreflightFailed"

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


@workflow.defn(name="MigrateOrdinal")
class MigrateOrdinal:
    """Move one ordinal k: source gives it up, destination takes it, volumes follow."""

    def __init__(self) -> None:
        self._steps: list[StepTiming] = []

    async def _step(self, name: str, work: Awaitable[T]) -> T:
        started = workflow.now()
        result = await work
        self._steps.append(
            StepTiming(step=name, seconds=round((workflow.now() - started).total_seconds(), 3))
        )
        return result

    @workflow.run
    async def run(self, task: OrdinalInput) -> OrdinalResult:
        r, k, s, end = task.request, task.ordinal.ordinal, task.source_start, task.end
        t = r.timeouts
        src = SliceRef(context=r.source_context, namespace=r.namespace, statefulset=r.statefulset)
        dst = SliceRef(
            context=r.destination_context, namespace=r.target_namespace, statefulset=r.statefulset
        )
        volumes = [v.volume for v in task.ordinal.volumes]
        claims = [v.claim for v in task.ordinal.volumes]
        begun = workflow.now()
        act = workflow.execute_activity_method

        # 1. Both slices healthy before anything moves: source [s, k], destination (k, end).
        await self._step(
            "slices_healthy",
            asyncio.gather(
                act(
                    MigrationActivities.wait_for_slice_ready,
                    SliceReadyInput(ref=src, start=s, replicas=k + 1 - s, timeout=t.healthy),
                    summary=f"{src.context}: pods {s}..{k} Ready",
                    **waiting(t.healthy),
                ),
                act(
                    MigrationActivities.wait_for_slice_ready,
                    SliceReadyInput(ref=dst, start=k + 1, replicas=end - k - 1, timeout=t.healthy),
                    summary=f"{dst.context}: pods {k + 1}..{end - 1} Ready",
                    **waiting(t.healthy),
                ),
            ),
        )

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
        await self._step(
            "source_scaled_down",
            act(
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
        await self._step(
            "source_pod_gone",
            act(
                MigrationActivities.wait_for_pod_gone,
                WaitPodGoneInput(
                    pod=PodRef(ref=src, ordinal=k),
                    uid=pod.uid,
                    volumes=volumes,
                    pod_timeout=t.pod_gone,
                    detach_timeout=t.detach,
                ),
                summary=f"{src.context}: wait for {task.ordinal.pod} to go and detach",
                **waiting(t.pod_gone + t.detach),
            ),
        )

        # 5. Only one cluster may claim the storage: release the source claims.
        await self._step(
            "source_claims_released",
            act(
                MigrationActivities.release_source_claims,
                ReleaseClaimsInput(
                    context=src.context, namespace=src.namespace, claims=claims, volumes=volumes
                ),
                summary=f"{src.context}: release {len(claims)} claim(s)",
                **waiting(120),
            ),
        )

        # 6. The destination gets the same storage, pre-bound to its claims.
        await self._step(
            "volumes_imported",
            act(
                MigrationActivities.import_volumes,
                ImportInput(request=r, migration_id=task.migration_id, ordinal=task.ordinal),
                summary=f"{dst.context}: import {len(volumes)} volume(s) of ordinal {k}",
                **waiting(60),
            ),
        )
        await self._step(
            "claims_bound",
            act(
                MigrationActivities.wait_for_claims_bound,
                ClaimsBoundInput(
                    context=dst.context, namespace=dst.namespace, claims=claims, timeout=t.bound
                ),
                summary=f"{dst.context}: wait for {len(claims)} claim(s) Bound",
                **waiting(t.bound),
            ),
        )

        # 7. The destination takes ordinal k: start and replicas in ONE patch.
        await self._step(
            "destination_scaled_up",
            act(
                MigrationActivities.set_statefulset_slice,
                SetSliceInput(
                    ref=dst, start=k, replicas=end - k, from_start=k + 1, from_replicas=end - k - 1
                ),
                summary=f"{dst.context} {r.statefulset}: ordinals.start {k + 1} -> {k}, "
                f"replicas {end - k - 1} -> {end - k}",
                **QUICK,
            ),
        )

        # 8. Pod k Running and Ready in the destination.
        await self._step(
            "destination_pod_ready",
            act(
                MigrationActivities.wait_for_pod_ready,
                PodReadyInput(pod=PodRef(ref=dst, ordinal=k), timeout=t.pod_ready),
                summary=f"{dst.context}: wait for {task.ordinal.pod} Ready",
                **waiting(t.pod_ready),
            ),
        )

        seconds = round((workflow.now() - begun).total_seconds(), 3)
        workflow.logger.info("ordinal %d migrated in %.1f s", k, seconds)
        return OrdinalResult(
            ordinal=k,
            steps=self._steps,
            volumes=volumes,
            original_reclaim_policies=retained.original_policies,
            seconds=seconds,
        )


def progress_table(progress: Progress, plan: Plan | None) -> str:
    """The markdown shown as the workflow's current details in the Temporal UI."""
    lines = [f"**phase:** {progress.phase}"]
    if plan is not None:
        lines[0] += (
            f" · {plan.statefulset}: {plan.source_context}/{plan.namespace} → "
            f"{plan.destination_context}/{plan.destination_namespace}"
        )
        lines += ["", "| ordinal | status | seconds |", "|---|---|---|"]
        done = {r.ordinal: r for r in progress.finished}
        for ordinal in plan.ordinals:
            k = ordinal.ordinal
            if k in done:
                lines.append(f"| {k} | moved | {done[k].seconds:.1f} |")
            elif k == progress.current_ordinal:
                lines.append(f"| {k} | moving | |")
            else:
                lines.append(f"| {k} | waiting | |")
    return "\n".join(lines)


@workflow.defn(name="MigrateStatefulSet")
class MigrateStatefulSet:
    """Move a StatefulSet from the source to the destination cluster, ordinal by ordinal."""

    def __init__(self) -> None:
        self._progress = Progress()
        self._plan: Plan | None = None

    @workflow.query
    def progress(self) -> Progress:
        return self._progress

    @workflow.query
    def plan(self) -> Plan | None:
        return self._plan

    def _set(self, **changes: object) -> None:
        self._progress = self._progress.model_copy(update=changes)
        workflow.set_current_details(progress_table(self._progress, self._plan))

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

        self._set(phase="preflight")
        plan = await act(
            MigrationActivities.plan_migration,
            PlanInput(request=request, migration_id=migration_id),
            summary="preflight: check both clusters and build the plan",
            start_to_close_timeout=timedelta(minutes=2),
            heartbeat_timeout=timedelta(seconds=15),
            retry_policy=RETRY,
        )
        self._plan = plan
        self._set(warnings=plan.warnings, remaining=[o.ordinal for o in plan.ordinals])
        for warning in plan.warnings:
            workflow.logger.warning("preflight: %s", warning)
        if plan.problems:
            listing = "\n".join(f"- {p.object}: {p.message} (fix: {p.fix})" for p in plan.problems)
            raise ApplicationError(
                f"preflight found {len(plan.problems)} problem(s); nothing was changed:\n{listing}",
                plan,
                type=PREFLIGHT_FAILED,
                non_retryable=True,
            )
        if request.dry_run:
            self._set(phase="done")
            return MigrationResult(migration_id=migration_id, dry_run=True, plan=plan)

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
                summary=f"{dst.context}: StatefulSet {dst.statefulset} owning [{start}, {start})",
                **QUICK,
            )
        deps = await act(
            MigrationActivities.ensure_dependencies,
            PlanInput(request=request, migration_id=migration_id),
            summary=f"{dst.context}: copy Secrets, ConfigMaps, Service, PDB",
            **QUICK,
        )

        moved: list[OrdinalResult] = []
        self._set(phase="moving")
        for ordinal in plan.ordinals:
            self._set(current_ordinal=ordinal.ordinal)
            result = await workflow.execute_child_workflow(
                MigrateOrdinal.run,
                OrdinalInput(
                    request=request,
                    migration_id=migration_id,
                    ordinal=ordinal,
                    source_start=plan.source_start,
                    end=plan.end,
                ),
                id=ordinal_workflow_id(migration_id, ordinal.ordinal),
                static_summary=f"move {ordinal.pod} from {src.context} to {dst.context}",
            )
            moved.append(result)
            self._set(
                current_ordinal=None,
                finished=[*self._progress.finished, result],
                remaining=[k for k in self._progress.remaining if k != ordinal.ordinal],
            )

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
        self._set(phase="done")
        workflow.logger.info("migration done: %d ordinal(s) in %.1f s", len(moved), seconds)
        return MigrationResult(
            migration_id=migration_id,
            plan=plan,
            moved=moved,
            dependencies=deps.dependencies,
            source=source_state,
            destination=destination_state,
            seconds=seconds,
        )
