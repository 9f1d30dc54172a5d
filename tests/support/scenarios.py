"""Migrations on the real clusters: the request the tests send, the steps every moved
ordinal reports, and the independent observer watching both clusters meanwhile."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from kubernetes import client

from contract import MigrationRequest, WaitTimeouts
from devenv.observer import Observer

# The claim templates of the app tests/support/apps.py deploys.
TEMPLATES = ["data", "logs"]
# What every moved ordinal reports, in order (written out here, not taken from the
# contract: the tests check the workflow against it).
STEPS = [
    "slices_healthy",
    "volumes_retained",
    "source_scaled_down",
    "source_pod_gone",
    "source_claims_released",
    "volumes_imported",
    "claims_bound",
    "destination_scaled_up",
    "destination_pod_ready",
]
# Short bounds: a test that hangs should fail fast, not after the production defaults.
TIMEOUTS = WaitTimeouts(healthy=60, pod_gone=60, detach=60, bound=60, pod_ready=60)


def request_for(name: str, namespace: str, **fields: Any) -> MigrationRequest:
    return MigrationRequest(
        statefulset=name,
        namespace=namespace,
        source_context="source",
        destination_context="destination",
        **{"timeouts": TIMEOUTS, **fields},
    )


@contextlib.contextmanager
def observing(
    kube: dict[str, client.ApiClient], namespace: str, destination_namespace: str, name: str
) -> Iterator[Observer]:
    """An observer watching both clusters for the duration of the block."""
    observer = Observer(kube, namespace, destination_namespace, name, TEMPLATES)
    observer.start()
    try:
        yield observer
    finally:
        observer.stop()
