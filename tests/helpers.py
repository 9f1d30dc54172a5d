"""Test helpers that deliberately reuse no product code: waits, manifests, a watcher."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client, watch


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


def statefulset(
    name: str,
    replicas: int,
    *,
    start: int | None = None,
    templates: dict[str, str | None] | None = None,
    grace: int = 2,
    ready_delay: str | None = None,
) -> dict[str, Any]:
    """A StatefulSet manifest; ``templates`` maps claim template name -> storage class."""
    templates = templates if templates is not None else {}
    annotations = {"pod-ready.stage.kwok.x-k8s.io/delay": ready_delay} if ready_delay else {}
    spec: dict[str, Any] = {
        "replicas": replicas,
        "serviceName": name,
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}, "annotations": annotations},
            "spec": {
                "terminationGracePeriodSeconds": grace,
                "containers": [{
                    "name": "app",
                    "image": "registry.invalid/app:1",
                    "volumeMounts": [{"name": t, "mountPath": f"/{t}"} for t in templates],
                }],
            },
        },
        "volumeClaimTemplates": [
            {
                "metadata": {"name": t},
                "spec": {
                    **({"storageClassName": sc} if sc else {}),
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }
            for t, sc in templates.items()
        ],
    }  # fmt: skip
    if start is not None:
        spec["ordinals"] = {"start": start}
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name},
            "spec": spec}  # fmt: skip


@dataclass
class Seen:
    kind: str  # ADDED / MODIFIED / DELETED
    name: str
    at: float  # time.time() when the event arrived
    obj: Any


@dataclass
class Watcher:
    """Records every watch event of one list call in a background thread."""

    list_fn: Callable[..., Any]
    kwargs: dict[str, Any] = field(default_factory=dict)
    events: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stopped = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise AssertionError("watcher could not list")

    def _run(self) -> None:
        initial = self.list_fn(**self.kwargs)
        for item in initial.items:
            self.events.append(Seen("ADDED", item.metadata.name, time.time(), item))
        version = initial.metadata.resource_version
        self._ready.set()
        # Short server-side windows, so stop() returns within a second.
        while not self._stopped.is_set():
            for ev in watch.Watch().stream(
                self.list_fn, resource_version=version, timeout_seconds=1, **self.kwargs
            ):
                obj = ev["object"]
                version = obj.metadata.resource_version
                self.events.append(Seen(ev["type"], obj.metadata.name, time.time(), obj))

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(5)
        assert not self._thread.is_alive(), "watcher did not stop"

    def of(self, name: str, kind: str | None = None) -> list[Seen]:
        return [e for e in self.events if e.name == name and (kind is None or e.kind == kind)]


def apply_statefulset(api: client.ApiClient, namespace: str, manifest: dict[str, Any]) -> None:
    client.AppsV1Api(api).create_namespaced_stateful_set(namespace, manifest)


def pod_names(api: client.ApiClient, namespace: str) -> set[str]:
    return {p.metadata.name for p in client.CoreV1Api(api).list_namespaced_pod(namespace).items}
