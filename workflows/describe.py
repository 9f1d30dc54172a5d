"""DescribeClusters: the wiring check. Reads the server version and node count of
every context through the worker, proving client -> server -> worker -> clusters.

Orchestration only: no I/O here, activities do it.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.clusters import ClusterActivities
    from contract import (
        ClusterInfo,
        DescribeClustersInput,
        DescribeClustersResult,
        ReadClusterInfoInput,
    )


@workflow.defn(name="DescribeClusters")
class DescribeClusters:
    @workflow.run
    async def run(self, request: DescribeClustersInput) -> DescribeClustersResult:
        reads = [
            workflow.execute_activity_method(
                ClusterActivities.read_cluster_info,
                ReadClusterInfoInput(context=context),
                start_to_close_timeout=timedelta(seconds=60),
                # A cluster that stays unreachable for a few minutes is worth a human look.
                retry_policy=RetryPolicy(
                    maximum_attempts=10, maximum_interval=timedelta(seconds=30)
                ),
                summary=f"read version and nodes of {context}",
            )
            for context in request.contexts
        ]
        infos: list[ClusterInfo] = list(await asyncio.gather(*reads))
        workflow.logger.info("clusters described: %s", [i.context for i in infos])
        return DescribeClustersResult(clusters=infos)
