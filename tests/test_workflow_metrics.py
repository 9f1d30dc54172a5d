"""The workflow interceptor's counters (workflows/telemetry.py) on the real local
Temporal server, the clusters faked in memory (tests/support/fakes.py), read from the
SDK's metric buffer: a dry run is never counted as a migration, whether it was started
with the request model (stsmigrate plan, the API) or with raw JSON (the Temporal CLI, the
UI), and a migration is counted once started and once ended."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import MetricBuffer, Runtime, TelemetryConfig
from temporalio.testing import WorkflowEnvironment

from contract import SEARCH_ATTRIBUTES, MigrationResult
from tests.support.fakes import FakeClusters, fake_worker, start
from workflows.telemetry import MIGRATIONS_ENDED, MIGRATIONS_STARTED, WorkflowTelemetry


@dataclass
class Metered:
    client: Client
    task_queue: str
    buffer: MetricBuffer

    def counted(self) -> dict[tuple[str, str], float]:
        """What the interceptor's migration counters were given since the last call:
        {(name, phase): sum}."""
        out: dict[tuple[str, str], float] = {}
        for update in self.buffer.retrieve_updates():
            name = update.metric.name
            if name in (MIGRATIONS_STARTED, MIGRATIONS_ENDED):
                key = (name, str(update.attributes.get("phase", "")))
                out[key] = out.get(key, 0) + update.value
        return out


@pytest_asyncio.fixture
async def metered(temporal_env: WorkflowEnvironment) -> AsyncIterator[Metered]:
    """A client whose runtime keeps its metrics in a buffer, and the fake workers with the
    worker's WorkflowTelemetry on it (the workflow meter is the worker client's)."""
    buffer = MetricBuffer(10_000)
    client = await Client.connect(
        temporal_env.client.service_client.config.target_host,
        namespace=temporal_env.client.namespace,
        data_converter=pydantic_data_converter,
        runtime=Runtime(telemetry=TelemetryConfig(metrics=buffer)),
    )
    clusters = FakeClusters(list(SEARCH_ATTRIBUTES), replicas=1)  # one ordinal: quick
    task_queue = f"metrics-{uuid.uuid4().hex[:8]}"
    async with fake_worker(
        client, task_queue, clusters.activities(), interceptors=[WorkflowTelemetry()]
    ):
        yield Metered(client, task_queue, buffer)


async def test_a_dry_run_is_never_counted_as_a_migration(metered: Metered) -> None:
    # Typed: the request model, as stsmigrate plan and the API start it.
    migration, request = await start(metered.client, metered.task_queue, dry_run=True)
    assert (await migration.result()).dry_run
    # Raw JSON: the request as the Temporal CLI's --input or the UI send it.
    raw = request.model_dump(mode="json") | {"statefulset": f"app-{uuid.uuid4().hex[:6]}"}
    result = await metered.client.execute_workflow(
        "MigrateStatefulSet",
        raw,
        id=f"metrics-{uuid.uuid4().hex[:8]}",
        task_queue=metered.task_queue,
        result_type=MigrationResult,
    )
    assert result.dry_run
    assert metered.counted() == {}

    # A migration is counted, so the buffer does see the interceptor's counters.
    migration, _ = await start(metered.client, metered.task_queue)
    assert not (await migration.result()).dry_run
    assert metered.counted() == {(MIGRATIONS_STARTED, ""): 1, (MIGRATIONS_ENDED, "done"): 1}
