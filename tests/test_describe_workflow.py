"""DescribeClusters ordering and settings, with the activity mocked by name."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from temporalio import activity
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from contract import (
    ClusterInfo,
    DescribeClustersInput,
    DescribeClustersResult,
    ReadClusterInfoInput,
)
from worker import Settings
from workflows import DescribeClusters


async def test_results_keep_the_requested_order(temporal_env: WorkflowEnvironment) -> None:
    seen: list[str] = []

    @activity.defn(name="read_cluster_info")
    def fake_read(request: ReadClusterInfoInput) -> ClusterInfo:
        seen.append(request.context)
        return ClusterInfo(
            context=request.context,
            server_version="v9.9.9",
            nodes=len(request.context),
            nodes_ready=1,
        )

    task_queue = f"tq-{uuid.uuid4()}"
    with ThreadPoolExecutor(4) as pool:
        async with Worker(
            temporal_env.client,
            task_queue=task_queue,
            workflows=[DescribeClusters],
            activities=[fake_read],
            activity_executor=pool,
        ):
            result = await temporal_env.client.execute_workflow(
                DescribeClusters.run,
                DescribeClustersInput(contexts=["c", "bb", "aaa"]),
                id=f"describe-{uuid.uuid4()}",
                task_queue=task_queue,
                result_type=DescribeClustersResult,
            )
    assert [c.context for c in result.clusters] == ["c", "bb", "aaa"]
    assert [c.nodes for c in result.clusters] == [1, 2, 3]
    assert sorted(seen) == ["aaa", "bb", "c"]


def test_settings_come_from_the_environment(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "TEMPORAL_ADDRESS": "temporal.example:7233",
            "TEMPORAL_NAMESPACE": "migrations",
            "STSMIGRATE_KUBECONFIG": str(tmp_path / "kc"),
            "STSMIGRATE_CONTEXTS": "source, destination,",
            "STSMIGRATE_TASK_QUEUE": "other-queue",
            "STSMIGRATE_MAX_ACTIVITIES": "4",
            "STSMIGRATE_LOG_LEVEL": "debug",
        }
    )
    assert settings.temporal["target_host"] == "temporal.example:7233"
    assert settings.temporal["namespace"] == "migrations"
    assert settings.kubeconfig == tmp_path / "kc"
    assert settings.contexts == ("source", "destination")
    assert (settings.task_queue, settings.max_activities, settings.log_level) == (
        "other-queue",
        4,
        "DEBUG",
    )


def test_settings_defaults(tmp_path: Path) -> None:
    settings = Settings.from_env({"KUBECONFIG": f"{tmp_path}/a:{tmp_path}/b"})
    assert settings.kubeconfig == tmp_path / "a"
    assert settings.task_queue == "statefulset-migration"
    assert settings.contexts == ()


def test_payloads_are_frozen_and_strict() -> None:
    info = ClusterInfo(context="source", server_version="v1.34.4")
    with pytest.raises(ValueError):
        info.nodes = 3  # type: ignore[misc]
    with pytest.raises(ValueError):
        ReadClusterInfoInput(context="source", token="x")  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        DescribeClustersInput(contexts=[])
