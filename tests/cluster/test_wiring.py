"""The wiring workflow on a real worker process against both real clusters."""

from __future__ import annotations

import json
import signal
import uuid

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.testing import WorkflowEnvironment

from contract import DescribeClustersInput, DescribeClustersResult
from devenv.build import KUBERNETES_VERSION
from tests.support.commands import temporal_cli
from tests.support.paths import REPO
from tests.support.processes import WorkerProcess

pytestmark = pytest.mark.cluster


async def test_describe_clusters_runs_on_a_real_worker(
    temporal_env: WorkflowEnvironment,
    worker: WorkerProcess,
) -> None:
    task_queue = worker.task_queue
    result = await temporal_env.client.execute_workflow(
        "DescribeClusters",
        DescribeClustersInput(contexts=["source", "destination"]),
        id=f"describe-{uuid.uuid4()}",
        task_queue=task_queue,
        result_type=DescribeClustersResult,
    )
    assert [c.context for c in result.clusters] == ["source", "destination"]
    for info in result.clusters:
        assert info.server_version == KUBERNETES_VERSION
        assert info.nodes == info.nodes_ready == 3

    # An unknown context fails at once with a typed, non-retryable error naming it.
    with pytest.raises(WorkflowFailureError) as failure:
        await temporal_env.client.execute_workflow(
            "DescribeClusters",
            DescribeClustersInput(contexts=["nowhere"]),
            id=f"describe-{uuid.uuid4()}",
            task_queue=task_queue,
            result_type=DescribeClustersResult,
        )
    cause = failure.value.cause
    assert isinstance(cause, ActivityError)
    assert isinstance(cause.cause, ApplicationError)
    assert cause.cause.type == "UnknownContext"
    assert cause.cause.non_retryable
    assert "'nowhere'" in cause.cause.message and "source" in cause.cause.message

    # SIGTERM: graceful shutdown, exit 0, and every log line is one JSON object.
    assert worker.proc is not None
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(45) == 0
    records = [json.loads(line) for line in worker.log.read_text().splitlines() if line.strip()]
    events = [r["event"] for r in records]
    assert "worker_started" in events and events[-1] == "worker_stopped"
    assert any(
        r.get("logger") == "temporalio.workflow" and "temporal_workflow" in r for r in records
    )


async def test_readme_cli_command_runs_the_wiring_workflow(
    temporal_env: WorkflowEnvironment,
    worker: WorkerProcess,
) -> None:
    """The README's `temporal workflow execute` line, run as written (plus address and ids)."""
    task_queue = worker.task_queue
    readme = (REPO / "README.md").read_text()
    assert "--type DescribeClusters --task-queue statefulset-migration" in readme
    assert """--input '{"contexts": ["prod-a", "prod-b"]}'""" in readme
    stdout = await temporal_cli(
        temporal_env.client.service_client.config.target_host,
        "workflow",
        "execute",
        "--type",
        "DescribeClusters",
        "--task-queue",
        task_queue,
        "--workflow-id",
        f"describe-{uuid.uuid4()}",
        "--input",
        '{"contexts": ["source", "destination"]}',
    )
    result = json.loads(stdout)["result"]
    assert [c["context"] for c in result["clusters"]] == ["source", "destination"]
    assert {c["server_version"] for c in result["clusters"]} == {KUBERNETES_VERSION}
