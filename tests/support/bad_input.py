"""What the bad-input suites share: one worker, one healthy app, the request a Temporal
CLI user would send, and a run that must be refused before anything changes. The
cases live in tests/cluster/test_bad_input*.py; each compares every object a
migration could touch, in both clusters, before and after."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from contract import MigrationResult
from tests.support.cluster_state import snapshot
from tests.support.processes import WorkerProcess

APP = "db"

Setup = Callable[[dict[str, client.ApiClient], str], dict[str, Any]]


def base(app_namespace: str, **fields: Any) -> dict[str, Any]:
    defaults = {
        "statefulset": APP,
        "namespace": app_namespace,
        "source_context": "source",
        "destination_context": "destination",
    }
    return {**defaults, **fields}


def settled(kube: dict[str, client.ApiClient], namespace: str) -> dict[str, str]:
    """The snapshot once the set-up has stopped changing (controllers and kwok done):
    the same twice, a second apart."""
    last = snapshot(kube, namespace)
    for _ in range(60):
        time.sleep(1)
        now = snapshot(kube, namespace)
        if now == last:
            return now
        last = now
    raise AssertionError(f"{namespace} never settled")


async def refused(
    env: WorkflowEnvironment, worker: WorkerProcess, request: dict[str, Any]
) -> ApplicationError:
    """Start with the raw JSON a Temporal CLI user would send; the run must fail."""
    with pytest.raises(WorkflowFailureError) as failure:
        await env.client.execute_workflow(
            "MigrateStatefulSet",
            request,
            id=f"bad-{uuid.uuid4().hex[:8]}",
            task_queue=worker.task_queue,
            result_type=MigrationResult,
        )
    cause = failure.value.cause
    while not isinstance(cause, ApplicationError) and cause is not None:
        cause = cause.cause
    assert isinstance(cause, ApplicationError), failure.value
    return cause


async def refused_in_state(
    kube: dict[str, client.ApiClient],
    env: WorkflowEnvironment,
    worker: WorkerProcess,
    namespace: str,
    fields: dict[str, Any],
) -> ApplicationError:
    """Preflight refuses the request in the state a case set up in ``namespace``, and
    both clusters are as they were (once the set-up had settled)."""
    before = settled(kube, namespace)
    error = await refused(env, worker, base(namespace, **fields))
    assert error.type == "PreflightFailed", error.message
    assert snapshot(kube, namespace) == before
    return error
