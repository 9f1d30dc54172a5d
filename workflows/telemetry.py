"""Metrics of what the workflows decide: migrations started and ended by phase,
ordinals moved, rolled back and undone, blocked steps by reason (README, "Metrics").

A worker interceptor, so the workflows themselves are unchanged (no command is added:
nothing here needs ``workflow.patched``). It reads what crosses a workflow's edge:
its input and result (a parent's MigrationResult, a child's OrdinalResult) and the
``ordinal_blocked`` signals a child sends its parent. The SDK's workflow meter records
nothing during a replay, so a workflow replayed on another worker is not counted twice.
The activity side (step durations, health gates) is activities/telemetry.py.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from pydantic import ValidationError
from temporalio import workflow
from temporalio.exceptions import FailureError
from temporalio.worker import (
    ExecuteWorkflowInput,
    Interceptor,
    SignalExternalWorkflowInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

from contract import MigrationRequest
from workflows.handover import ORDINAL_BLOCKED

MIGRATIONS_STARTED = "stsmigrate_migrations_started_total"
MIGRATIONS_ENDED = "stsmigrate_migrations_ended_total"
ORDINALS_MOVED = "stsmigrate_ordinals_moved_total"
ORDINALS_ROLLED_BACK = "stsmigrate_ordinals_rolled_back_total"
ORDINALS_UNDONE = "stsmigrate_ordinals_undone_total"
BLOCKED_STEPS = "stsmigrate_blocked_steps_total"

# A block's detail ends "[<error type>; to fix: ...]" (workflows/handover.block_reason).
_REASON = re.compile(r"\[(\w+); to fix")


def block_reason_of(detail: str) -> str:
    """The error type a blocked step's detail names (``reason`` label)."""
    found = _REASON.search(detail)
    return found[1] if found else "Unknown"


def is_dry_run(request: Any) -> bool:
    """Whether a MigrateStatefulSet run's first argument asks for a dry run, read as the
    run reads it (workflows/migrate_statefulset.typed): the model after a continue-as-new,
    plain JSON after a start with the request alone (the SDK decodes by the run's type
    hints only when as many arguments came as it has parameters: stsmigrate, the API,
    the Temporal CLI and the UI all send one). A request that does not validate is no
    dry run: that run fails at once, as a migration that failed."""
    if isinstance(request, MigrationRequest):
        return request.dry_run
    try:
        return MigrationRequest.model_validate(request).dry_run
    except ValidationError:
        return False


def _count(name: str, description: str, value: int = 1, **labels: str) -> None:
    if value:
        workflow.metric_meter().create_counter(name, description).add(value, labels)


class _Outbound(WorkflowOutboundInterceptor):
    def __init__(self, next: WorkflowOutboundInterceptor) -> None:
        super().__init__(next)
        # A blocked child reports again until the parent pauses: one count per block.
        self._reported: set[tuple[int, str, int | None]] = set()

    async def signal_external_workflow(self, input: SignalExternalWorkflowInput) -> None:
        if input.signal == ORDINAL_BLOCKED and input.args:
            report = input.args[0]
            key = (report.ordinal, report.step, report.resumes)
            if key not in self._reported:
                self._reported.add(key)
                _count(
                    BLOCKED_STEPS,
                    "Steps of an ordinal that could not go on (the run paused), by reason",
                    step=report.step,
                    reason=block_reason_of(report.detail),
                )
        await super().signal_external_workflow(input)


class _Inbound(WorkflowInboundInterceptor):
    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        super().init(_Outbound(outbound))

    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        info = workflow.info()
        request = input.args[0] if input.args else None
        migration = info.workflow_type == "MigrateStatefulSet" and not is_dry_run(request)
        if migration and info.continued_run_id is None:
            _count(MIGRATIONS_STARTED, "Migrations started (dry runs not counted)")
        try:
            result = await super().execute_workflow(input)
        except workflow.ContinueAsNewError:  # the same migration goes on in a new run
            raise
        except asyncio.CancelledError:
            if migration:
                _count(MIGRATIONS_ENDED, "Migrations ended, by phase", phase="cancelled")
            raise
        except FailureError:  # fails the run (any other exception fails only a task)
            if migration:
                _count(MIGRATIONS_ENDED, "Migrations ended, by phase", phase="failed")
            raise
        if migration:
            phase = "aborted" if getattr(result, "aborted", False) else "done"
            _count(MIGRATIONS_ENDED, "Migrations ended, by phase", phase=phase)
        elif info.workflow_type == "MigrateOrdinal":
            block = result.block()
            _count(ORDINALS_MOVED, "Ordinals moved", sum(r.moved for r in block))
            _count(
                ORDINALS_UNDONE,
                "Ordinals put back where they were after a blocked step",
                sum(r.undone for r in block),
            )
        elif info.workflow_type == "RollbackOrdinal":
            _count(ORDINALS_ROLLED_BACK, "Ordinals given back to the source", int(result.moved))
        return result


class WorkflowTelemetry(Interceptor):
    """The worker interceptor of the module docstring."""

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        return _Inbound
