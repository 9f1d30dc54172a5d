"""Activities that ask the Temporal server itself (not a cluster) something."""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from contract import (
    SEARCH_ATTRIBUTES,
    ChildrenInput,
    ordinal_workflow_id,
    rollback_workflow_id,
)


class TemporalActivities:
    def __init__(self, client: Client) -> None:
        self._client = client

    @activity.defn
    async def registered_search_attributes(self) -> list[str]:
        """Which of our custom search attributes the namespace has, with the right type.

        A server that lacks them (or refuses the question) gets none: the migration
        runs the same, only without them. Never fails.
        """
        try:
            answer = await self._client.operator_service.list_search_attributes(
                ListSearchAttributesRequest(namespace=self._client.namespace)
            )
        except RPCError as err:
            activity.logger.warning("cannot list search attributes: %s", err.message)
            return []
        have = {
            name: IndexedValueType.Name(kind).removeprefix("INDEXED_VALUE_TYPE_").lower()
            for name, kind in answer.custom_attributes.items()
        }
        return [name for name, kind in SEARCH_ATTRIBUTES.items() if have.get(name) == kind.lower()]

    @activity.defn
    async def running_workflows(self, ids: list[str]) -> list[str]:
        """Which of these workflow ids have an open run (the children a terminated or
        reset run of the migration left behind still move their ordinal)."""
        limit = asyncio.Semaphore(16)  # (up to a few hundred ids with parallel moves)

        async def open_run(workflow_id: str) -> bool:
            async with limit:
                try:
                    described = await self._client.get_workflow_handle(workflow_id).describe()
                except RPCError as err:
                    if err.status == RPCStatusCode.NOT_FOUND:
                        return False
                    raise
            return described.status == WorkflowExecutionStatus.RUNNING

        found = await asyncio.gather(*(open_run(i) for i in ids))
        return [i for i, running in zip(ids, found, strict=True) if running]

    @activity.defn
    async def running_children(self, task: ChildrenInput) -> list[str]:
        """The children of the migration that still run (a terminated run's leftovers
        move or give back an ordinal): every ``<id>/ordinal-k`` and ``<id>/rollback-k``
        below ``end`` described (a block's child is named after its highest ordinal)."""
        ids = [
            child(task.migration_id, k)
            for k in range(task.end)
            for child in (ordinal_workflow_id, rollback_workflow_id)
        ]
        running: list[str] = await self.running_workflows(ids)
        return running
