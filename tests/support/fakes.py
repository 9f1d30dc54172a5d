"""Both clusters and the health probes faked in memory, for workflow tests on the real
Temporal server (tests/test_controls.py, test_health_gates.py, test_codec.py).

Every fake is registered under the name of the real activity it stands for;
tests/test_parity.py checks those names against the worker's activities."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from activities.liveness import HEARTBEAT_EVERY, KeepAlive
from contract import (
    BudgetInput,
    BudgetShare,
    ChildrenInput,
    CleanupInput,
    CleanupPlan,
    CleanupStep,
    CleanupVolume,
    DependenciesResult,
    EnsureDestinationInput,
    HealthReport,
    HookInput,
    HookResult,
    ImportInput,
    LockInput,
    MigrationRequest,
    OrdinalPlan,
    Plan,
    PlanInput,
    PodRef,
    PodState,
    ProbeInput,
    ProbeResult,
    Problem,
    Progress,
    ReleaseClaimsInput,
    RetainInput,
    RetainResult,
    SetSliceInput,
    SliceReadyInput,
    SliceRef,
    StatefulSetState,
    TakeInput,
    waits_queue,
)
from contract.errors import CLEANUP_REFUSED, HOOK_FAILED, TEMPLATE_CHANGED, UNAVAILABLE
from stsmigrate.api import Migration, start_migration
from workflows import CleanupMigration, MigrateOrdinal, MigrateStatefulSet, RollbackOrdinal

# The ordinals of every fake migration, in the order they move.
ORDINALS = [2, 1, 0]


class FakeClusters:
    """Both clusters as two slices; every change is appended to ``changes``."""

    def __init__(self, search_attributes: list[str], replicas: int = 3) -> None:
        self.end = replicas
        self.slices = {"source": (0, replicas), "destination": (replicas, 0)}
        self.changes: list[str] = []
        self.search_attributes = search_attributes
        # Cleared to hold the health wait of the next ordinal (an ordinal "in progress").
        self.healthy = asyncio.Event()
        self.healthy.set()
        self.waiting_for_health = asyncio.Event()
        # Somebody else's change, made just before the named change of ours.
        self.before: dict[str, Callable[[], None]] = {}
        # Cleared to hold the run's first activity (which search attributes exist).
        self.attributes_answered = asyncio.Event()
        self.attributes_answered.set()
        self.asked_for_attributes = asyncio.Event()
        # The lock on each side's StatefulSet (context -> migration id); not a change.
        self.locks: dict[str, str] = {}
        # Every call of the budget activities: "share {slices at the time}" or "restore".
        self.budgets: list[str] = []
        # Set: the share fails as when a cluster is unreachable (retryable).
        self.budget_unreachable = False
        self.share_retried = asyncio.Event()  # a failed share was tried again
        # Workflow ids the fake Temporal says are running (children a terminated run
        # left), and the ids a run asked about.
        self.running: set[str] = set()
        self.asked_for_running: list[str] = []
        self.plans = 0  # preflights run (one per run of a migration)
        self.plan_problems: list[Problem] = []  # what the next preflights find
        self.plan_warnings: list[str] = []  # and warn of
        self.plan_fails = False  # the next preflights fail (non-retryable)
        # The digest the fake preflight pins, the ones the creation was asked for, and
        # whether the source's template "changed" since (the creation refuses).
        self.template_digest = "d" * 64
        self.created_with: list[str] = []
        self.template_changed = False
        self.in_flight: list[int] = []  # each share's ordinals in flight
        # Seconds each pod/claim wait takes; the most of each that ran at once.
        self.wait_seconds = 0.0
        self.running_waits: dict[str, int] = {}
        self.most_at_once: dict[str, int] = {}
        self.cleanup_refused = False  # the next plan_cleanup refuses (the source runs)
        # Hooks: the attempts still to fail, by (hook name, context, ordinal); each
        # attempt is a change "hook <name> <context> <ordinal>" (+ " failed").
        self.hook_failures: dict[tuple[str, str, int], int] = {}
        # Hooks by name that wait for their event before they end (a long hook).
        self.hook_holds: dict[str, asyncio.Event] = {}

    def cleanup_activities(self) -> list[Any]:
        """The clean finish's steps, each appended to ``changes`` ("cleanup: <step>")."""

        @activity.defn(name="plan_cleanup")
        async def plan_cleanup(task: CleanupInput) -> CleanupPlan:
            self.changes.append("cleanup: plan")
            if self.cleanup_refused or self.slices["source"][1]:
                raise ApplicationError(
                    "the source still owns ordinals", type=CLEANUP_REFUSED, non_retryable=True
                )
            return CleanupPlan(
                volumes=[
                    CleanupVolume(volume=f"pv-{k}", claim=f"data-{k}", original_policy="Delete")
                    for k in range(self.end)
                ],
                end=self.end,
            )

        def step(name: str, action: str) -> Any:
            async def run(task: CleanupInput) -> Any:
                self.changes.append(f"cleanup: {name} {len(task.volumes)}")
                done = CleanupStep(object=name, action=action)
                return done if name == "fence_source_statefulset" else [done]

            return activity.defn(name=name)(run)

        @activity.defn(name="running_children")
        async def running_children(task: ChildrenInput) -> list[str]:
            return [i for i in sorted(self.running) if i.startswith(f"{task.migration_id}/")]

        return [
            plan_cleanup,
            running_children,
            step("fence_source_statefulset", "fenced"),
            step("remove_source_volumes", "removed"),
            step("restore_reclaim_policies", "restored Delete"),
        ]

    def activities(self) -> list[Any]:
        @activity.defn(name="registered_search_attributes")
        async def registered_search_attributes() -> list[str]:
            self.asked_for_attributes.set()
            await self.attributes_answered.wait()
            return self.search_attributes

        @activity.defn(name="running_workflows")
        async def running_workflows(ids: list[str]) -> list[str]:
            self.asked_for_running.extend(ids)
            return [i for i in ids if i in self.running]

        @activity.defn(name="plan_migration")
        async def plan_migration(task: PlanInput) -> Plan:
            # From the slices, as the real preflight plans from the clusters: what the
            # source owns remains, what the destination owns was moved.
            r = task.request
            (start, replicas), (dst_start, dst_replicas) = (
                self.slices["source"],
                self.slices["destination"],
            )
            self.plans += 1
            if self.plan_fails:
                raise ApplicationError("source: preflight broke", non_retryable=True)
            return Plan(
                problems=self.plan_problems,
                warnings=self.plan_warnings,
                migration_id=task.migration_id,
                source_context=r.source_context,
                destination_context=r.destination_context,
                namespace=r.namespace,
                destination_namespace=r.target_namespace,
                statefulset=r.statefulset,
                source_start=start,
                source_replicas=replicas,
                destination_exists=dst_replicas > 0,
                destination_start=dst_start,
                destination_replicas=dst_replicas,
                end=self.end,
                destination_template_digest=self.template_digest,
                ordinals=[
                    OrdinalPlan(ordinal=k, pod=f"{r.statefulset}-{k}")
                    for k in reversed(range(start, start + replicas))
                ],
                moved=[
                    OrdinalPlan(ordinal=k, pod=f"{r.statefulset}-{k}")
                    for k in range(dst_start, dst_start + dst_replicas)
                ],
            )

        @activity.defn(name="ensure_destination_statefulset")
        async def ensure_destination_statefulset(task: EnsureDestinationInput) -> None:
            self.created_with.append(task.template_digest)
            if self.template_changed:
                raise ApplicationError(
                    "the pod template of source StatefulSet changed since preflight; start "
                    "the migration again",
                    type=TEMPLATE_CHANGED,
                    non_retryable=True,
                )
            self.changes.append("destination statefulset")

        @activity.defn(name="ensure_dependencies")
        async def ensure_dependencies(task: PlanInput) -> DependenciesResult:
            self.changes.append("dependencies")
            return DependenciesResult()

        @activity.defn(name="wait_for_slice_ready")
        async def wait_for_slice_ready(task: SliceReadyInput) -> None:
            self.before.pop(f"healthy {task.ref.context}", lambda: None)()
            self.waiting_for_health.set()
            await self.healthy.wait()

        @activity.defn(name="ensure_volumes_retained")
        async def ensure_volumes_retained(task: RetainInput) -> RetainResult:
            self.changes.append("retain")
            return RetainResult()

        @activity.defn(name="read_pod")
        async def read_pod(task: PodRef) -> PodState:
            return PodState(name=task.pod, exists=True, uid="uid", ready=True)

        @activity.defn(name="set_statefulset_slice")
        async def set_statefulset_slice(task: SetSliceInput) -> None:
            # The real activity's contract: no-op at the target, change only from the
            # expected slice, else a conflicting change (nothing written).
            current, target = self.slices[task.ref.context], (task.start, task.replicas)
            if current == target:
                return
            if current != (task.from_start, task.from_replicas):
                raise ApplicationError(
                    f"{task.ref.context} owns {current}, expected "
                    f"{(task.from_start, task.from_replicas)}",
                    type="ConflictingChange",
                    non_retryable=True,
                )
            self.slices[task.ref.context] = target
            self.changes.append(f"{task.ref.context} [{task.start}, {task.start + task.replicas})")

        @activity.defn(name="take_ordinal")
        async def take_ordinal(task: TakeInput) -> StatefulSetState:
            # The real activity's contract: the giver must own exactly its slice without
            # k (else a conflicting change, nothing taken); then the taker's change.
            giver = task.giver
            if self.slices[giver.ref.context] != (giver.start, giver.replicas):
                raise ApplicationError(
                    f"{giver.ref.context} owns {self.slices[giver.ref.context]}, expected "
                    f"{(giver.start, giver.replicas)}; nothing was taken",
                    type="ConflictingChange",
                    non_retryable=True,
                )
            await set_statefulset_slice(task.taker)
            start, replicas = self.slices[task.taker.ref.context]
            return StatefulSetState(exists=True, start=start, replicas=replicas)

        @activity.defn(name="lock_statefulset")
        async def lock_statefulset(task: LockInput) -> None:
            holder = self.locks.setdefault(task.ref.context, task.migration_id)
            if holder != task.migration_id:
                raise ApplicationError(
                    f"locked by migration {holder!r}", type="ConflictingChange", non_retryable=True
                )

        @activity.defn(name="unlock_statefulset")
        async def unlock_statefulset(task: LockInput) -> None:
            if self.locks.get(task.ref.context) == task.migration_id:
                del self.locks[task.ref.context]

        @activity.defn(name="release_source_claims")
        async def release_source_claims(task: ReleaseClaimsInput) -> None:
            self.before.pop(f"release {task.context}", lambda: None)()
            self.changes.append("release")

        @activity.defn(name="import_volumes")
        async def import_volumes(task: ImportInput) -> None:
            self.before.pop(f"import {task.ordinal.ordinal}", lambda: None)()
            self.changes.append(f"import {task.ordinal.ordinal}")

        @activity.defn(name="reclaim_volumes")
        async def reclaim_volumes(task: ImportInput) -> None:
            self.before.pop(f"reclaim {task.ordinal.ordinal}", lambda: None)()
            self.changes.append(f"reclaim {task.ordinal.ordinal}")

        @activity.defn(name="share_disruption_budget")
        async def share_disruption_budget(task: BudgetInput) -> BudgetShare:
            self.budgets.append(f"share {self.slices}")
            self.in_flight.append(task.in_flight)
            if self.budget_unreachable:
                if activity.info().attempt > 1:
                    self.share_retried.set()
                raise ApplicationError("source: ConnectTimeoutError", type=UNAVAILABLE)
            return BudgetShare()

        @activity.defn(name="restore_disruption_budget")
        async def restore_disruption_budget(task: BudgetInput) -> BudgetShare:
            self.budgets.append("restore")
            return BudgetShare()

        @activity.defn(name="read_statefulset")
        async def read_statefulset(ref: SliceRef) -> StatefulSetState:
            start, replicas = self.slices[ref.context]
            return StatefulSetState(exists=True, start=start, replicas=replicas)

        def waits_for_nothing(name: str) -> Any:
            async def nothing(task: Any) -> None:
                self.running_waits[name] = self.running_waits.get(name, 0) + 1
                self.most_at_once[name] = max(
                    self.most_at_once.get(name, 0), self.running_waits[name]
                )
                try:
                    await asyncio.sleep(self.wait_seconds)
                finally:
                    self.running_waits[name] -= 1

            return activity.defn(name=name)(nothing)

        waits = [
            waits_for_nothing(name)
            for name in ("wait_for_pod_gone", "wait_for_claims_bound", "wait_for_pod_ready")
        ]
        return [
            registered_search_attributes,
            running_workflows,
            plan_migration,
            ensure_destination_statefulset,
            ensure_dependencies,
            wait_for_slice_ready,
            ensure_volumes_retained,
            read_pod,
            set_statefulset_slice,
            take_ordinal,
            lock_statefulset,
            unlock_statefulset,
            release_source_claims,
            import_volumes,
            reclaim_volumes,
            read_statefulset,
            share_disruption_budget,
            restore_disruption_budget,
            *waits,
            *self.cleanup_activities(),
            self.hook_activity(),
        ]

    def hook_activity(self) -> Any:
        @activity.defn(name="run_hook")
        async def run_hook(task: HookInput) -> HookResult:
            key = (task.hook.name, task.context, task.ordinal)
            change = f"hook {task.hook.name} {task.context} {task.ordinal}"
            if task.hook.name in self.hook_holds:
                self.changes.append(change + " begun")
                await self.hook_holds[task.hook.name].wait()
            if self.hook_failures.get(key, 0) > 0:
                self.hook_failures[key] -= 1
                self.changes.append(change + " failed")
                raise ApplicationError(f"hook {task.hook.name}: exit 1", type=HOOK_FAILED)
            self.changes.append(change)
            pod = f"{task.statefulset}-{task.ordinal}"
            return HookResult(hook=task.hook.name, pod=pod, exit_code=0, seconds=0.0)

        return run_hook


class FakeProbes:
    """The health gates' probe activity: ordinals in ``failing`` are down; every probe
    request is kept in ``probed``."""

    def __init__(self) -> None:
        self.failing: set[int] = set()
        self.probed: list[ProbeInput] = []

    def activities(self) -> list[Any]:
        @activity.defn(name="probe_ordinal")
        async def probe_ordinal(task: ProbeInput) -> HealthReport:
            self.probed.append(task)
            ok = task.ordinal not in self.failing
            detail = "up" if ok else f"{task.statefulset}-{task.ordinal} is down"
            return HealthReport(
                results=[ProbeResult(probe="fake", ok=ok, attempts=1, detail=detail)]
            )

        return [probe_ordinal]


@contextlib.asynccontextmanager
async def fake_worker(
    client: Client, task_queue: str, activities: list[Any], **options: Any
) -> AsyncIterator[list[Worker]]:
    """The migration workflows on in-process workers with these (fake) activities: one
    on ``task_queue``, one on its waits queue (the long steps), as worker.py runs
    them, with its heartbeats. ``options`` go to both (an activity executor,
    interceptors, a runner)."""
    options = {
        **options,
        "interceptors": [KeepAlive(), *options.get("interceptors", ())],
        "max_heartbeat_throttle_interval": timedelta(seconds=HEARTBEAT_EVERY),
    }
    async with (
        Worker(
            client,
            task_queue=task_queue,
            workflows=[MigrateStatefulSet, MigrateOrdinal, RollbackOrdinal, CleanupMigration],
            activities=activities,
            **options,
        ) as main,
        Worker(
            client, task_queue=waits_queue(task_queue), activities=activities, **options
        ) as waits,
    ):
        yield [main, waits]


async def start(
    client: Client, task_queue: str, **fields: Any
) -> tuple[Migration, MigrationRequest]:
    """A migration of a fresh app against the fakes."""
    request = MigrationRequest(
        statefulset=f"app-{uuid.uuid4().hex[:6]}",
        namespace="shop",
        source_context="source",
        destination_context="destination",
        **fields,
    )
    migration = await start_migration(
        client, request, migration_id=f"controls-{uuid.uuid4().hex[:8]}", task_queue=task_queue
    )
    return migration, request


def at(phase: str, ordinal: int | None = None) -> Any:
    """A progress predicate: in ``phase`` (at ``ordinal``, when given)."""

    def check(p: Progress) -> bool:
        return p.phase == phase and (ordinal is None or p.current_ordinal == ordinal)

    return check
