"""Fixtures of the cluster suites that a module shares among its cases: the
bad-input modules (tests/cluster/test_bad_input*.py) each get one worker and one
healthy 2-replica app, so a case costs one preflight, not a worker start."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client
from temporalio.testing import WorkflowEnvironment

from devenv.clusters import LocalClusters
from tests.support.apps import deploy_app
from tests.support.bad_input import APP
from tests.support.namespaces import fresh_namespace, remove_namespace
from tests.support.processes import WorkerProcess


@pytest.fixture(scope="module")
def shared_worker(
    clusters: LocalClusters,
    temporal_env: WorkflowEnvironment,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerProcess]:
    proc = WorkerProcess(
        temporal_env.client.service_client.config.target_host,
        clusters.kubeconfig,
        tmp_path_factory.mktemp("bad-input") / "worker.log",
        f"bad-input-{uuid.uuid4().hex[:8]}",
    )
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def app_namespace(kube: dict[str, client.ApiClient]) -> Iterator[str]:
    """One healthy 2-replica app shared by the cases that only vary the request."""
    name = fresh_namespace(kube)
    deploy_app(kube["source"], name, APP, 2, secret_value="x", ready_delay="100ms")
    yield name
    remove_namespace(kube, name)


@pytest.fixture(scope="module")
def real_clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalClusters]:
    """Both local clusters with a real kubelet node each (marker real), per module."""
    lc = LocalClusters(tmp_path_factory.mktemp("real-clusters"), nodes=1, real_nodes=True)
    lc.start()
    try:
        yield lc
    finally:
        lc.stop()
