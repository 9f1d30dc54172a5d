"""An independent observer of a migration: watches both clusters, judges the invariants.

It deliberately imports no product code (no ``activities``, no ``workflows``): it
sees only what the API servers report and what is on disk, so it cannot share a
bug with the migrator. Used by the tests and the demo.

Checks (the invariants of docs/design.md):
- I1, at most one pod per identity: the lifetimes of pod ``<name>-<k>`` in the two
  clusters never overlap; a pod starts in one cluster only while no
  VolumeAttachment of its volumes is alive in the other (a move and a rollback
  alike); every moved pod appeared in the destination, was deleted from the
  source, and left no VolumeAttachment there;
- I2, no volume lost: no PersistentVolume of the app is deleted in either
  cluster; every moved ordinal's destination claim, per template, is bound to a
  volume with the same storage (hostPath path or CSI volume handle) as the
  original; marker files written into each volume before the run are intact;
- I3 and I4, the run ends where it should with every ordinal wholly in one
  cluster: the final slices of both StatefulSets as expected, every pod Ready.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, watch

MARKER = ".stsmigrate-observer-marker"


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
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise AssertionError("watcher could not list")

    def _run(self) -> None:
        try:
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
        except BaseException as exc:  # surfaced by stop(); the observer must not go blind
            self.error = exc
            self._ready.set()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(5)
        assert not self._thread.is_alive(), "watcher did not stop"
        if self.error is not None:
            raise AssertionError(f"watcher failed: {self.error!r}")

    def of(self, name: str, kind: str | None = None) -> list[Seen]:
        return [e for e in self.events if e.name == name and (kind is None or e.kind == kind)]


def items(listing: Any) -> list[Any]:
    """List items as Any: the observer reads fields the API always sets."""
    return list(listing.items)


def storage_of(pv: Any) -> tuple[str, str]:
    """(kind, location) of a PV's storage, for hostPath and CSI volumes."""
    if pv.spec.host_path is not None:
        return "hostPath", pv.spec.host_path.path
    if pv.spec.csi is not None:
        return "csi", pv.spec.csi.volume_handle
    return "other", pv.metadata.name


def _lifetimes(events: list[Seen], name: str) -> list[tuple[float, float]]:
    spans, born = [], None
    for ev in events:
        if ev.name != name:
            continue
        if ev.kind == "ADDED" and born is None:
            born = ev.at
        elif ev.kind == "DELETED" and born is not None:
            spans.append((born, ev.at))
            born = None
    if born is not None:
        spans.append((born, float("inf")))
    return spans


class Observer:
    def __init__(
        self,
        apis: dict[str, client.ApiClient],
        namespace: str,
        destination_namespace: str,
        statefulset: str,
        templates: list[str],
    ) -> None:
        self.source, self.destination = apis["source"], apis["destination"]
        self.ns, self.dns = namespace, destination_namespace
        self.name, self.templates = statefulset, templates
        self.original: dict[tuple[str, int], tuple[str, str]] = {}
        self.markers: dict[str, str] = {}
        self.volumes: set[str] = set()  # PV names of this app's claims
        self.watchers: dict[str, Watcher] = {}

    def start(self) -> None:
        """Record the original storage of every claim, write markers, start watching."""
        core = client.CoreV1Api(self.source)
        pvs = {pv.metadata.name: pv for pv in items(core.list_persistent_volume())}
        for pvc in items(core.list_namespaced_persistent_volume_claim(self.ns)):
            for template in self.templates:
                prefix = f"{template}-{self.name}-"
                if pvc.metadata.name.startswith(prefix) and pvc.spec.volume_name in pvs:
                    k = int(pvc.metadata.name[len(prefix) :])
                    kind, location = storage_of(pvs[pvc.spec.volume_name])
                    self.original[(template, k)] = (kind, location)
                    self.volumes.add(pvc.spec.volume_name)
                    if kind in ("hostPath", "csi"):
                        folder = Path(location)
                        folder.mkdir(parents=True, exist_ok=True)
                        token = secrets.token_hex(16)
                        (folder / MARKER).write_text(token)
                        self.markers[location] = token
        for side, api in (("source", self.source), ("destination", self.destination)):
            core, storage = client.CoreV1Api(api), client.StorageV1Api(api)
            ns = self.ns if side == "source" else self.dns
            self.watchers[f"{side}/pods"] = Watcher(core.list_namespaced_pod, {"namespace": ns})
            self.watchers[f"{side}/pvcs"] = Watcher(
                core.list_namespaced_persistent_volume_claim, {"namespace": ns}
            )
            self.watchers[f"{side}/pvs"] = Watcher(core.list_persistent_volume)
            self.watchers[f"{side}/vas"] = Watcher(storage.list_volume_attachment)

    def stop(self) -> None:
        for w in self.watchers.values():
            w.stop()

    def verdict(
        self,
        moved: list[int],
        source_slice: tuple[int, int],
        destination_slice: tuple[int, int],
        cleaned_up: bool = False,
    ) -> list[str]:
        """Every violation seen; an empty list means the run kept the invariants.

        ``cleaned_up``: the run ended with the clean finish, so a source PV object may
        be gone, but only while a destination PV with the same storage is Bound now
        (the storage is still described, and used, there), and a source StatefulSet
        being deleted owns nothing (its controller creates no pod): only its pods count.
        """
        v: list[str] = []
        src_pods, dst_pods = self.watchers["source/pods"], self.watchers["destination/pods"]
        volume_location = {e.name: storage_of(e.obj)[1] for e in self.watchers["source/pvs"].events}
        ordinals = {k for (_, k) in self.original} | set(moved)
        for k in sorted(ordinals):
            pod = f"{self.name}-{k}"
            for a0, a1 in _lifetimes(src_pods.events, pod):
                for b0, b1 in _lifetimes(dst_pods.events, pod):
                    if a0 < b1 and b0 < a1:
                        v.append(f"pod {pod} existed in both clusters at once")
        for k in moved:
            pod = f"{self.name}-{k}"
            created = [e.at for e in dst_pods.of(pod, "ADDED")]
            if not created:
                v.append(f"pod {pod} never appeared in the destination")
                continue
            if not src_pods.of(pod, "DELETED"):
                v.append(f"pod {pod} was never deleted from the source")
            locations = self._locations(k)
            for va in items(client.StorageV1Api(self.source).list_volume_attachment()):
                if volume_location.get(self._va_volume(va)) in locations:
                    v.append(f"VolumeAttachment {va.metadata.name} of {pod} is still attached")
        # A pod may start on one side only while no VolumeAttachment of its storage is
        # alive on the other (every start: an ordinal can move, come back, move again).
        for k in sorted(ordinals):
            pod, locations = f"{self.name}-{k}", self._locations(k)
            for side, other in (("destination", "source"), ("source", "destination")):
                starts = [e.at for e in self.watchers[f"{side}/pods"].of(pod, "ADDED")]
                vas = self.watchers[f"{other}/vas"].events
                names = {
                    e.name for e in vas if volume_location.get(self._va_volume(e.obj)) in locations
                }
                for name in sorted(names):
                    for a0, a1 in _lifetimes(vas, name):
                        if any(a0 < c < a1 for c in starts):
                            v.append(
                                f"pod {pod} started in the {side} while VolumeAttachment "
                                f"{name} of its volume was attached in the {other}"
                            )
        bound_there = {
            storage_of(pv)
            for pv in items(client.CoreV1Api(self.destination).list_persistent_volume())
            if pv.status.phase == "Bound"
        }
        for side in ("source", "destination"):
            for e in self.watchers[f"{side}/pvs"].events:
                claim = e.obj.spec.claim_ref
                ours = e.name in self.volumes or (
                    claim is not None
                    and claim.namespace in (self.ns, self.dns)
                    and claim.name.endswith(tuple(f"-{self.name}-{k}" for k in ordinals))
                )
                if e.kind == "DELETED" and ours:
                    if cleaned_up and side == "source" and storage_of(e.obj) in bound_there:
                        continue
                    v.append(f"PersistentVolume {e.name} was deleted in the {side}")
        v += self._check_claims(moved)
        v += self._check_markers()
        v += self._check_slice(self.source, self.ns, source_slice, "source")
        v += self._check_slice(self.destination, self.dns, destination_slice, "destination")
        return v

    def _locations(self, k: int) -> set[str]:
        return {self.original[(t, k)][1] for t in self.templates if (t, k) in self.original}

    @staticmethod
    def _va_volume(va: Any) -> str:
        return str(va.spec.source.persistent_volume_name)

    def _check_claims(self, moved: list[int]) -> list[str]:
        v = []
        core = client.CoreV1Api(self.destination)
        for k in moved:
            for template in self.templates:
                claim = f"{template}-{self.name}-{k}"
                try:
                    pvc: Any = core.read_namespaced_persistent_volume_claim(claim, self.dns)
                except client.exceptions.ApiException:
                    v.append(f"destination claim {claim} is missing")
                    continue
                if pvc.status.phase != "Bound":
                    v.append(f"destination claim {claim} is {pvc.status.phase}")
                    continue
                pv = core.read_persistent_volume(pvc.spec.volume_name)
                if storage_of(pv) != self.original.get((template, k)):
                    v.append(
                        f"destination claim {claim} is bound to {storage_of(pv)}, not the "
                        f"original {self.original.get((template, k))}"
                    )
        return v

    def _check_markers(self) -> list[str]:
        v = []
        for location, token in self.markers.items():
            marker = Path(location) / MARKER
            if not marker.exists() or marker.read_text() != token:
                v.append(f"marker in {location} is missing or changed")
        return v

    def _check_slice(
        self, api: client.ApiClient, ns: str, expected: tuple[int, int], side: str
    ) -> list[str]:
        try:
            sts: Any = client.AppsV1Api(api).read_namespaced_stateful_set(self.name, ns)
        except client.exceptions.ApiException:
            return [] if expected[1] == 0 else [f"{side} StatefulSet is missing"]
        start = sts.spec.ordinals.start if sts.spec.ordinals else 0
        actual = (start or 0, sts.spec.replicas)
        v = []
        held = sts.metadata.deletion_timestamp is not None and expected[1] == 0
        if not held and (actual[1] != expected[1] or (expected[1] and actual[0] != expected[0])):
            v.append(f"{side} StatefulSet owns {actual}, expected {expected}")
        pods = items(client.CoreV1Api(api).list_namespaced_pod(ns))
        names = {p.metadata.name for p in pods if p.metadata.name.startswith(f"{self.name}-")}
        wanted = {f"{self.name}-{k}" for k in range(expected[0], expected[0] + expected[1])}
        if names != wanted:
            v.append(f"{side} runs pods {sorted(names)}, expected {sorted(wanted)}")
        for p in pods:
            if p.metadata.name in wanted and not any(
                c.type == "Ready" and c.status == "True" for c in p.status.conditions or []
            ):
                v.append(f"{side} pod {p.metadata.name} is not Ready")
        return v
