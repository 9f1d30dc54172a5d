"""A child's report is never lost: the parent applies an ``ordinal_blocked`` signal that
reaches it in the same workflow task as the resolution of the child's start (the SDK
applies signals first, when the parent does not have the child's handle yet).

The race, made deterministic: an interceptor fails the parent's workflow task right
after the child's start resolves, until the child's block report is in the parent's
history; the next attempt then replays both in one activation. Before the fix the
report was dropped: the parent never showed the block and ``resume`` was refused."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import (
    Interceptor,
    StartChildWorkflowInput,
    UnsandboxedWorkflowRunner,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

from contract import SEARCH_ATTRIBUTES
from tests.support.fakes import ORDINALS, FakeClusters, fake_worker, start
from tests.test_undo import fails

REPORTED = threading.Event()  # the child's block report is in the parent's history
HELD = threading.Event()  # the parent's task was failed at least once


class _HoldingOutbound(WorkflowOutboundInterceptor):
    async def start_child_workflow(self, input: StartChildWorkflowInput) -> Any:
        handle = await super().start_child_workflow(input)
        if input.id.endswith("/ordinal-2") and not REPORTED.is_set():
            HELD.set()
            raise RuntimeError("test: hold the parent's task until the child has reported")
        return handle


class _HoldingInbound(WorkflowInboundInterceptor):
    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        super().init(_HoldingOutbound(outbound))


class HoldParentAfterChildStart(Interceptor):
    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        return _HoldingInbound


async def test_a_block_report_that_beats_the_child_start_resolution_is_applied(
    temporal_env: WorkflowEnvironment,
) -> None:
    clusters = FakeClusters(list(SEARCH_ATTRIBUTES))
    clusters.before["healthy source"] = fails("WaitTimeout", "pods 0..2 Ready: not within 300 s")
    task_queue = f"reports-{uuid.uuid4().hex[:8]}"
    client = temporal_env.client
    async with fake_worker(
        client,
        task_queue,
        clusters.activities(),
        interceptors=[HoldParentAfterChildStart()],
        workflow_runner=UnsandboxedWorkflowRunner(),  # the flags are this module's
    ):
        migration, _ = await start(client, task_queue)
        handle = client.get_workflow_handle(migration.id)

        async def events() -> list[Any]:
            return [e async for e in handle.fetch_history_events()]

        # Until the child's report has reached the parent's history.
        for _ in range(200):
            found = await events()
            if any(
                e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
                and e.workflow_execution_signaled_event_attributes.signal_name == "ordinal_blocked"
                for e in found
            ):
                break
            await asyncio.sleep(0.1)
        assert HELD.is_set()
        REPORTED.set()
        # The parent's next attempt (the server backs failed workflow tasks off a little)
        # completes; queries time out until then.
        for _ in range(600):
            kinds = [e.event_type for e in await events()]
            last_signal = max(
                i
                for i, k in enumerate(kinds)
                if k == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
            )
            if EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED in kinds[last_signal:]:
                break
            await asyncio.sleep(0.1)

        # Applied at once: well before the child's first report-again (30 s).
        held = await migration.wait_until(lambda p: bool(p.blocked), within=20)
        assert (held.phase, held.current_ordinal, held.step) == ("paused", 2, "slices_healthy")

        # The race did happen: the child's start and its report, with no completed
        # workflow task of the parent between them.
        found = await events()
        kinds = [e.event_type for e in found]
        started = kinds.index(EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED)
        signaled = next(
            i
            for i, e in enumerate(found)
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
            and e.workflow_execution_signaled_event_attributes.signal_name == "ordinal_blocked"
        )
        between = kinds[min(started, signaled) : max(started, signaled)]
        assert EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED not in between

        await migration.resume()
        result = await migration.result()
        assert [r.ordinal for r in result.moved] == ORDINALS
