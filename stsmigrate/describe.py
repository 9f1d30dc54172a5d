"""What a migration did, read back from Temporal, for ``stsmigrate describe`` and
``stsmigrate list`` (as ``velero describe`` and ``velero backup get`` do).

``describe_migration`` walks every run of the migration (it continues as new between
ordinals): the request from the first run's input, the plan from its preflight, each
child (``<id>/ordinal-<k>`` moving a block of ordinals, ``<id>/rollback-<k>`` giving
one back) with its result and step timings, the block reports its children sent, and
the result or failure. Histories are the audit trail, so this needs no worker; the
ones that answer add the live progress and the running child's step.

``list_migrations`` asks the visibility store, filtered by the search attributes a
migration keeps current (contract SEARCH_ATTRIBUTES).
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import quote

from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import BaseModel, ConfigDict, Field
from temporalio.api.common.v1 import Payloads
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowHistory,
    WorkflowQueryFailedError,
)
from temporalio.common import SearchAttributeKey
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from contract import (
    ORDINAL_BLOCKED,
    SEARCH_ATTRIBUTES,
    MigrationRequest,
    MigrationResult,
    OrdinalInput,
    OrdinalResult,
    Plan,
    Progress,
    StepReport,
)
from contract.errors import PREFLIGHT_FAILED

WORKFLOW = "MigrateStatefulSet"
PLAN_ACTIVITY = "plan_migration"  # preflight: its result is the run's plan
# Who moves what: the suffix of a child's workflow id (contract.names).
CHILD_KINDS = {"ordinal": "move", "rollback": "rollback"}


def ui_link(ui: str, namespace: str, workflow_id: str, run_id: str = "") -> str:
    """The Temporal Web UI page of a workflow (of one of its runs, when given)."""
    link = f"{ui.rstrip('/')}/namespaces/{namespace}/workflows/{quote(workflow_id, safe='')}"
    return f"{link}/{run_id}" if run_id else link


class View(BaseModel):
    """What the commands print (``--json``): read-only, new fields with defaults."""

    model_config = ConfigDict(frozen=True)


class Child(View):
    """One run of a child workflow: a block of ordinals moved, or one given back."""

    workflow_id: str
    run_id: str
    kind: Literal["move", "rollback"]
    ordinals: list[int] = Field(description="the block, highest first")
    status: str = Field(description="running, completed, failed, canceled, terminated, timed_out")
    started: datetime | None = None
    closed: datetime | None = None
    step: str | None = Field(None, description="the step it is in (running, when it answers)")
    result: OrdinalResult | None = Field(None, description="with its step timings")
    failure: str = ""
    ui: str = ""


class BlockedStep(View):
    """A step a child reported blocked (the run paused until resumed or undone)."""

    at: datetime
    ordinal: int
    step: str
    detail: str


class Description(View):
    migration_id: str
    status: str = Field(description="the Temporal status of its newest run")
    started: datetime | None = None
    closed: datetime | None = None
    runs: int = Field(1, description="runs it continued as new into, this one included")
    request: MigrationRequest | None = None
    plan: Plan | None = Field(None, description="the first run's plan (every ordinal)")
    children: list[Child] = Field(default_factory=list, description="in the order started")
    blocked: list[BlockedStep] = Field(default_factory=list)
    rolled_back: list[int] = Field(default_factory=list)
    placement: dict[str, str] = Field(
        default_factory=dict,
        description="where each ordinal runs: source, destination or moving (from the "
        "result, the progress, else what the children did)",
    )
    progress: Progress | None = Field(None, description="the progress query, when answered")
    result: MigrationResult | None = None
    error: str = ""
    ui: str = ""


class Listed(View):
    """One migration in ``stsmigrate list``."""

    migration_id: str
    run_id: str
    status: str
    phase: str | None = None
    ordinal: int | None = Field(None, description="the ordinal in flight (none between)")
    statefulset: str | None = None
    namespace: str | None = None
    source_context: str | None = None
    destination_context: str | None = None
    started: datetime | None = None
    closed: datetime | None = None
    ui: str = ""


def _time(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def _status(status: WorkflowExecutionStatus | None) -> str:
    return status.name.lower() if status is not None else "unknown"


async def _decode(client: Client, payloads: Payloads, kind: type[Any]) -> Any:
    values = await client.data_converter.decode(payloads.payloads, [kind])
    return values[0] if values else None


async def runs_of(client: Client, migration_id: str) -> list[WorkflowHistory]:
    """Every run of the migration's newest chain, the first first."""
    found = [await client.get_workflow_handle(migration_id).fetch_history()]
    while True:
        started = found[0].events[0].workflow_execution_started_event_attributes
        if not started.continued_execution_run_id:
            return found
        earlier = client.get_workflow_handle(
            migration_id, run_id=started.continued_execution_run_id
        )
        found.insert(0, await earlier.fetch_history())


async def request_of(client: Client, migration_id: str) -> MigrationRequest:
    """The request the migration was started with (its first run's input)."""
    first = (await runs_of(client, migration_id))[0].events[0]
    request: MigrationRequest = await _decode(
        client, first.workflow_execution_started_event_attributes.input, MigrationRequest
    )
    return request


def _child_kind(workflow_id: str) -> tuple[Literal["move", "rollback"], int] | None:
    name, _, k = workflow_id.rpartition("/")[2].partition("-")
    kind = CHILD_KINDS.get(name)
    if kind is None or not k.isdigit():
        return None
    return ("move" if kind == "move" else "rollback"), int(k)


class _Reader:
    """One pass over a run's events, keeping what ``describe`` shows."""

    def __init__(self, client: Client, ui: str) -> None:
        self.client, self.ui = client, ui
        self.children: dict[str, Child] = {}  # by run id
        self.initiated: dict[int, Child] = {}  # by the initiated event's id
        self.activities: dict[int, str] = {}  # scheduled event id -> activity type
        self.plan: Plan | None = None
        self.blocked: list[BlockedStep] = []
        self.reports: set[tuple[int, str, str, int | None]] = set()
        self.result: MigrationResult | None = None
        self.error = ""

    def _link(self, workflow_id: str, run_id: str = "") -> str:
        return ui_link(self.ui, self.client.namespace, workflow_id, run_id)

    async def read(self, event: HistoryEvent) -> None:
        t = event.event_type
        if t == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            scheduled = event.activity_task_scheduled_event_attributes
            self.activities[event.event_id] = scheduled.activity_type.name
        elif t == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            await self._activity_completed(event)
        elif t == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
            await self._child_initiated(event)
        elif t == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED:
            self._child_started(event)
        elif t == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            await self._signaled(event)
        elif t == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
            completed = event.workflow_execution_completed_event_attributes
            self.result = await _decode(self.client, completed.result, MigrationResult)
        elif t == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
            await self._failed(event)
        else:
            await self._child_closed(event)

    async def _activity_completed(self, event: HistoryEvent) -> None:
        done = event.activity_task_completed_event_attributes
        if self.plan is None and self.activities.get(done.scheduled_event_id) == PLAN_ACTIVITY:
            self.plan = await _decode(self.client, done.result, Plan)

    async def _child_initiated(self, event: HistoryEvent) -> None:
        a = event.start_child_workflow_execution_initiated_event_attributes
        known = _child_kind(a.workflow_id)
        if known is None:
            return
        task: OrdinalInput = await _decode(self.client, a.input, OrdinalInput)
        self.initiated[event.event_id] = Child(
            workflow_id=a.workflow_id,
            run_id="",
            kind=known[0],
            ordinals=[known[1], *(o.ordinal for o in task.together)],
            status="starting",
        )

    def _child_started(self, event: HistoryEvent) -> None:
        a = event.child_workflow_execution_started_event_attributes
        child = self.initiated.get(a.initiated_event_id)
        if child is None:
            return
        run_id = a.workflow_execution.run_id
        self.children[run_id] = child.model_copy(
            update={
                "run_id": run_id,
                "status": "running",
                "started": _time(event.event_time),
                "ui": self._link(child.workflow_id, run_id),
            }
        )

    async def _signaled(self, event: HistoryEvent) -> None:
        a = event.workflow_execution_signaled_event_attributes
        if a.signal_name != ORDINAL_BLOCKED:
            return
        report: StepReport = await _decode(self.client, a.input, StepReport)
        key = (report.ordinal, report.step, report.detail, report.resumes)
        if key in self.reports:  # a child reports again until the parent pauses
            return
        self.reports.add(key)
        self.blocked.append(
            BlockedStep(
                at=_time(event.event_time),
                ordinal=report.ordinal,
                step=report.step,
                detail=report.detail,
            )
        )

    async def _failed(self, event: HistoryEvent) -> None:
        failure = event.workflow_execution_failed_event_attributes.failure
        cause = await self.client.data_converter.decode_failure(failure)
        self.error = str(cause)
        if isinstance(cause, ApplicationError) and cause.type == PREFLIGHT_FAILED:
            with contextlib.suppress(ValueError, IndexError):  # a preflight's plan in details
                self.plan = self.plan or Plan.model_validate(cause.details[0])

    async def _child_closed(self, event: HistoryEvent) -> None:
        ended: dict[int, tuple[str, str]] = {
            EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED: (
                "child_workflow_execution_completed_event_attributes",
                "completed",
            ),
            EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_FAILED: (
                "child_workflow_execution_failed_event_attributes",
                "failed",
            ),
            EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_CANCELED: (
                "child_workflow_execution_canceled_event_attributes",
                "canceled",
            ),
            EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TERMINATED: (
                "child_workflow_execution_terminated_event_attributes",
                "terminated",
            ),
            EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TIMED_OUT: (
                "child_workflow_execution_timed_out_event_attributes",
                "timed_out",
            ),
        }
        if event.event_type not in ended:
            return
        field, status = ended[event.event_type]
        a = getattr(event, field)
        child = self.children.get(a.workflow_execution.run_id)
        if child is None:
            return
        update: dict[str, Any] = {"status": status, "closed": _time(event.event_time)}
        if status == "completed":
            update["result"] = await _decode(self.client, a.result, OrdinalResult)
        elif status == "failed":
            update["failure"] = str(await self.client.data_converter.decode_failure(a.failure))
        self.children[child.run_id] = child.model_copy(update=update)


def placement(plan: Plan | None, children: list[Child]) -> dict[str, str]:
    """Where each ordinal runs, from the plan and what each child did since."""
    where: dict[int, str] = {}
    if plan is not None:
        where |= {o.ordinal: "destination" for o in plan.moved}
        where |= {o.ordinal: "source" for o in plan.ordinals}
    for child in children:
        if child.status == "running":
            where |= dict.fromkeys(child.ordinals, "moving")
        elif child.result is not None:
            side = "destination" if child.kind == "move" else "source"
            where |= {r.ordinal: side for r in child.result.block() if r.moved}
    return {str(k): where[k] for k in sorted(where, reverse=True)}


async def describe_migration(client: Client, migration_id: str, ui: str) -> Description:
    """Everything ``stsmigrate describe`` shows; RPCError when there is no such
    migration."""
    runs = await runs_of(client, migration_id)
    first = runs[0].events[0]
    request = await _decode(
        client, first.workflow_execution_started_event_attributes.input, MigrationRequest
    )
    reader = _Reader(client, ui)
    for run in runs:
        for event in run.events:
            await reader.read(event)
    handle = client.get_workflow_handle(migration_id)
    described = await handle.describe()
    children = list(reader.children.values())
    progress: Progress | None = None
    with contextlib.suppress(RPCError, WorkflowQueryFailedError):
        progress = await handle.query("progress", result_type=Progress, rpc_timeout=_ASK)
    for i, child in enumerate(children):
        if child.status == "running":
            with contextlib.suppress(RPCError, WorkflowQueryFailedError):
                step = await client.get_workflow_handle(child.workflow_id).query(
                    "step",
                    result_type=str | None,  # type: ignore[arg-type]
                    rpc_timeout=_ASK,
                )
                children[i] = child.model_copy(update={"step": step})
    result = reader.result
    if result is not None and result.placement:
        where = result.placement
    elif progress is not None and progress.placement:
        where = progress.placement
    else:
        where = placement(reader.plan, children)
    rolled_back = (
        result.rolled_back
        if result is not None
        else progress.rolled_back
        if progress is not None
        else [c.ordinals[0] for c in children if c.kind == "rollback" and c.result]
    )
    return Description(
        migration_id=migration_id,
        status=_status(described.status),
        started=_time(first.event_time),
        closed=described.close_time,
        runs=len(runs),
        request=request,
        plan=reader.plan,
        children=children,
        blocked=reader.blocked,
        rolled_back=rolled_back,
        placement=where,
        progress=progress,
        result=result,
        error=reader.error or (progress.error if progress is not None else ""),
        ui=ui_link(ui, client.namespace, migration_id),
    )


# A worker answers a query in well under a second; none may be up (describe reads
# histories, which need none).
_ASK = timedelta(seconds=5)


def list_query(
    statefulset: str | None = None,
    namespace: str | None = None,
    phase: str | None = None,
    source_context: str | None = None,
) -> str:
    """The visibility query of ``stsmigrate list``: migrations (not the runs they
    continued from), filtered by their search attributes."""
    clauses = [f"WorkflowType = '{WORKFLOW}'", "ExecutionStatus != 'ContinuedAsNew'"]
    for name, value in (
        ("StsmigrateStatefulSet", statefulset),
        ("StsmigrateNamespace", namespace),
        ("StsmigratePhase", phase),
        ("StsmigrateSourceContext", source_context),
    ):
        if value is not None:
            if "'" in value or "\\" in value:
                raise ValueError(f"{value!r}: quotes and backslashes cannot be searched for")
            clauses.append(f"{name} = '{value}'")
    return " AND ".join(clauses)


def _attribute(execution: WorkflowExecution, name: str) -> Any:
    kind = SEARCH_ATTRIBUTES[name]
    key = (
        SearchAttributeKey.for_int(name) if kind == "Int" else SearchAttributeKey.for_keyword(name)
    )
    return execution.typed_search_attributes.get(key)


async def list_migrations(
    client: Client, ui: str, *, limit: int = 100, **filters: str | None
) -> list[Listed]:
    """The newest migrations first (at most ``limit``), filtered as ``list_query``."""
    found: list[Listed] = []
    async for execution in client.list_workflows(list_query(**filters), limit=limit):
        ordinal = _attribute(execution, "StsmigrateOrdinal")
        found.append(
            Listed(
                migration_id=execution.id,
                run_id=execution.run_id,
                status=_status(execution.status),
                phase=_attribute(execution, "StsmigratePhase"),
                ordinal=None if ordinal is None or ordinal < 0 else ordinal,
                statefulset=_attribute(execution, "StsmigrateStatefulSet"),
                namespace=_attribute(execution, "StsmigrateNamespace"),
                source_context=_attribute(execution, "StsmigrateSourceContext"),
                destination_context=_attribute(execution, "StsmigrateDestinationContext"),
                started=execution.start_time,
                closed=execution.close_time,
                ui=ui_link(ui, client.namespace, execution.id),
            )
        )
    return found
