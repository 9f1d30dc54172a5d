"""The independent observer can fail: it is shown a run that breaks invariants on
purpose (two pods of one identity at once, a deleted volume, a wrong final slice)."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from tests.support.apps import apply_statefulset, deploy_app, statefulset
from tests.support.cluster_state import ready_replicas
from tests.support.scenarios import observing
from tests.support.waits import wait_for

pytestmark = pytest.mark.cluster


def test_the_observer_reports_broken_invariants(
    kube: dict[str, client.ApiClient], namespace: str
) -> None:
    name = "redis"
    deploy_app(kube["source"], namespace, name, 1, secret_value="x", ready_delay="100ms")
    with observing(kube, namespace, namespace, name) as observer:
        # The same identity started in the destination while the source still runs it.
        twin = statefulset(name, 1, start=0, templates={"data": None, "logs": "local-csi"})
        apply_statefulset(kube["destination"], namespace, twin)
        wait_for(lambda: ready_replicas(kube["destination"], namespace, name) == 1, 60, "twin")
        # And a volume of the app deleted in the source.
        core = client.CoreV1Api(kube["source"])
        claim: Any = core.read_namespaced_persistent_volume_claim(f"logs-{name}-0", namespace)
        core.patch_persistent_volume(
            claim.spec.volume_name, {"spec": {"persistentVolumeReclaimPolicy": "Delete"}}
        )
        client.AppsV1Api(kube["source"]).patch_namespaced_stateful_set(
            name, namespace, {"spec": {"replicas": 0}}
        )
        wait_for(lambda: ready_replicas(kube["source"], namespace, name) == 0, 60, "scaled down")
        core.delete_namespaced_persistent_volume_claim(f"logs-{name}-0", namespace)
        wait_for(
            lambda: (
                claim.spec.volume_name
                not in {p.metadata.name for p in core.list_persistent_volume().items}
            ),
            60,
            "the volume deleted",
        )
        verdict = observer.verdict([0], (0, 1), (0, 1))
    assert f"pod {name}-0 existed in both clusters at once" in verdict
    assert f"PersistentVolume {claim.spec.volume_name} was deleted in the source" in verdict
    assert any(v.startswith("source StatefulSet owns (0, 0), expected (0, 1)") for v in verdict)
    assert any("is bound to" in v or "started in the destination while" in v for v in verdict), (
        verdict
    )
