"""What the worker measures of every activity, and the ``MoveBlocked`` Event.

Each step of a migration is an activity (contract.MOVE_STEPS names the steps, the
activity types are in worker.activities_of), so ``ActivityTelemetry`` times every
attempt of every activity by type and outcome (``stsmigrate_step_duration_seconds``,
labels ``activity_type`` from the SDK's activity meter, ``workflow_type`` of the
caller, ``result``), counts the health gates' probe results, and, when a step of an
ordinal's hand-over fails for good (a non-retryable error: the child pauses the run
with it, workflows/handover.py), writes a Warning Event ``MoveBlocked`` about the
object the step was changing. The workflow side (migrations, ordinals moved and
rolled back, blocked steps by reason) is workflows/telemetry.py. README, "Metrics",
lists every metric.

Metrics go through the SDK's meter (temporalio Runtime with PrometheusConfig,
worker.sdk_runtime); without a metrics port the meter is a no-op.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import structlog
from kubernetes import client
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from activities import events
from activities.kube import Kube, Obj
from contract import HealthReport, migration_of

log = structlog.get_logger("activities.telemetry")

STEP_DURATION = "stsmigrate_step_duration_seconds"
HEALTH_GATES = "stsmigrate_health_gate_results_total"
# Seconds: a quick step takes a round trip (< 1 s), a wait up to its timeout (minutes).
STEP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
# The workflows whose failed step blocks (pauses) a run instead of failing it.
HANDOVERS = ("MigrateOrdinal", "RollbackOrdinal")


def outcome(err: BaseException | None) -> str:
    """An attempt's ``result`` label: ok, retried (Temporal tries again), failed (for
    good: the workflow decides) or cancelled."""
    if err is None:
        return "ok"
    if isinstance(err, asyncio.CancelledError):
        return "cancelled"
    if isinstance(err, ApplicationError) and err.non_retryable:
        return "failed"
    return "retried"


def blocked_object(activity_type: str, arg: Any) -> tuple[str, Obj] | None:
    """(context, ObjectReference) of what a step of ``activity_type`` with input ``arg``
    was changing, for its MoveBlocked Event; None when it names no namespaced object."""
    request = getattr(arg, "request", None)
    if request is not None and activity_type in ("import_volumes", "reclaim_volumes"):
        if activity_type == "import_volumes":
            context, namespace = request.destination_context, request.target_namespace
        else:
            context, namespace = request.source_context, request.namespace
        return context, events.statefulset_reference(namespace, request.statefulset)
    for path in ("ref", "pod.ref", "taker.ref"):
        ref = arg
        for part in path.split("."):
            ref = getattr(ref, part, None)
        if ref is not None:
            return ref.context, events.statefulset_reference(ref.namespace, ref.statefulset)
    if (statefulset := getattr(arg, "statefulset", None)) is not None:  # ProbeInput
        return arg.context, events.statefulset_reference(arg.namespace, statefulset)
    claims = getattr(arg, "claims", None)
    if claims:  # ReleaseClaimsInput, ClaimsBoundInput
        return arg.context, {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "namespace": arg.namespace,
            "name": claims[0],
        }
    return None


class _Inbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, telemetry: ActivityTelemetry) -> None:
        super().__init__(next)
        self._telemetry = telemetry

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        started = time.monotonic()
        err: BaseException | None = None
        try:
            result = await super().execute_activity(input)
        except BaseException as e:
            err = e
            raise
        finally:
            self._measure(info, time.monotonic() - started, err, input)
        if isinstance(result, HealthReport):
            self._count_gates(result)
        return result

    def _measure(
        self, info: activity.Info, seconds: float, err: BaseException | None, input: Any
    ) -> None:
        result = outcome(err)
        try:
            meter = activity.metric_meter()
        except RuntimeError:  # no meter here (not a threaded activity)
            meter = None
        if meter is not None:
            meter.create_histogram_float(
                STEP_DURATION, "Seconds one attempt of a step (an activity) took", "s"
            ).record(seconds, {"workflow_type": info.workflow_type or "", "result": result})
        if result == "failed" and info.workflow_type in HANDOVERS and input.args:
            assert isinstance(err, ApplicationError)
            self._telemetry.blocked(info, err, input.args[0])

    @staticmethod
    def _count_gates(report: HealthReport) -> None:
        try:
            counter = activity.metric_meter().create_counter(
                HEALTH_GATES, "Health gate probe results of moved ordinals"
            )
        except RuntimeError:
            return
        for probe in report.results:
            counter.add(1, {"result": "passed" if probe.ok else "failed"})


class ActivityTelemetry(Interceptor):
    """The worker interceptor of the module docstring; ``clients`` (one per context)
    write the MoveBlocked Events (none without them)."""

    def __init__(self, clients: Mapping[str, client.ApiClient] | None = None) -> None:
        self._clients = dict(clients or {})
        self._writes: set[asyncio.Future[bool]] = set()

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Inbound(next, self)

    def blocked(self, info: activity.Info, err: ApplicationError, arg: Any) -> None:
        """A MoveBlocked Event about what the failed step was changing, written in a
        thread of its own (never on the event loop, never delaying the failure)."""
        target = blocked_object(info.activity_type, arg)
        if target is None or target[0] not in self._clients:
            return
        context, regarding = target
        kube = Kube(self._clients[context], context)
        note = f"{info.activity_type} cannot go on: {err.message} [{err.type}]; the run pauses"
        migration = migration_of(info.workflow_id or "")
        write = asyncio.get_running_loop().run_in_executor(
            None,
            lambda: (
                events.record_about_statefulset(
                    kube, regarding["namespace"], regarding["name"], "MoveBlocked", note, migration
                )
                if regarding["kind"] == "StatefulSet"
                else events.record(kube, regarding, "MoveBlocked", note, migration)
            ),
        )
        self._writes.add(write)
        write.add_done_callback(self._writes.discard)
