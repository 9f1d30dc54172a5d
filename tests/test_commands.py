"""The ``stsmigrate`` command run as a user runs it (the installed script, no terminal,
configured through the environment), against the real local Temporal server with the
clusters faked in memory (tests/support/fakes.py): what it prints once a migration has
ended, after ``start --wait``, and ``describe`` and ``list``."""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from contract import SEARCH_ATTRIBUTES, Progress
from tests.support.commands import stsmigrate
from tests.support.fakes import FakeClusters, fake_worker, start


@dataclass
class Fake:
    clusters: FakeClusters
    task_queue: str
    run: Callable[..., Awaitable[tuple[int, str, str]]]  # stsmigrate ARGS...


@pytest_asyncio.fixture
async def fake(temporal_env: WorkflowEnvironment) -> AsyncIterator[Fake]:
    clusters = FakeClusters(list(SEARCH_ATTRIBUTES))
    task_queue = f"commands-{uuid.uuid4().hex[:8]}"
    address = temporal_env.client.service_client.config.target_host
    async with fake_worker(temporal_env.client, task_queue, clusters.activities()):
        yield Fake(clusters, task_queue, functools.partial(stsmigrate, address, task_queue))


async def test_status_json_of_an_ended_migration_is_json(
    temporal_env: WorkflowEnvironment, fake: Fake
) -> None:
    migration, _ = await start(temporal_env.client, fake.task_queue)
    await migration.result()
    code, out, err = await fake.run("status", "--json", migration.id)
    assert code == 0, err
    progress = Progress.model_validate_json(out)
    assert progress.phase == "done"
    assert progress.placement == {"2": "destination", "1": "destination", "0": "destination"}
    assert [r.ordinal for r in progress.finished] == [2, 1, 0]


async def test_start_wait_without_a_terminal_ends_each_line(fake: Fake) -> None:
    fake.clusters.plan_warnings = ["volumes of ordinal 2 are hostPath"]
    migration_id = f"commands-{uuid.uuid4().hex[:8]}"
    code, out, err = await fake.run(
        "start",
        "--wait",
        "--id",
        migration_id,
        *("-s", f"app-{uuid.uuid4().hex[:6]}", "-n", "shop"),
        *("--from", "source", "--to", "destination"),
    )
    assert code == 0, err
    lines = out.splitlines()
    # The last progress (its warning last), then the result, each on lines of their own.
    assert "warning: volumes of ordinal 2 are hostPath" in lines, out
    assert any(line.startswith(f"{migration_id}: done, 3 ordinal(s) moved") for line in lines), out
    assert lines.index("warning: volumes of ordinal 2 are hostPath") < len(lines) - 1
