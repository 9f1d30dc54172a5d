"""Polling waits, and the nudge that gets pods past a kube-scheduler quirk."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kubernetes import client

from tests.support.diagnostics import describe


def wait_for(
    predicate: Callable[[], Any], timeout: float, what: str = "condition", interval: float = 0.1
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def wait_ready(
    api: client.ApiClient,
    namespace: str,
    ready: Callable[[], bool],
    what: str,
    timeout: float = 120,
) -> None:
    """Wait for pods a StatefulSet creates together with their claims.

    Kubernetes quirk, seen once in a CI run here (kube-scheduler 1.34): a pod the
    scheduler tried while its claim was not yet bound ("pod has unbound immediate
    PersistentVolumeClaims") stayed in the unschedulable pool after the claim bound,
    for minutes (kubernetes/kubernetes#125762 reports the same). Every few seconds
    the claims of pods still unscheduled get an annotation update, an event that
    makes the scheduler look at them again. The migration itself never meets this:
    it scales up only after the claims are Bound. On a timeout, says what the
    namespace holds."""
    nudged = [time.monotonic()]

    def check() -> bool:
        if ready():
            return True
        if time.monotonic() - nudged[0] > 3:
            nudge_unscheduled(api, namespace)
            nudged[0] = time.monotonic()
        return False

    try:
        wait_for(check, timeout, what)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{describe(api, namespace)}") from None


def nudge_unscheduled(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    for pod in core.list_namespaced_pod(namespace).items:
        if pod.spec.node_name or pod.metadata.deletion_timestamp:
            continue
        for volume in pod.spec.volumes or []:
            if volume.persistent_volume_claim is None:
                continue
            touch = {"metadata": {"annotations": {"stsmigrate.dev/test-nudge": str(time.time())}}}
            try:
                core.patch_namespaced_persistent_volume_claim(
                    volume.persistent_volume_claim.claim_name, namespace, touch
                )
            except client.exceptions.ApiException as e:
                if e.status != 404:
                    raise
