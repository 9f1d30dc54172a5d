"""Pod activities: a slice's pods Ready, a pod gone with its volumes detached, a pod
Ready for minReadySeconds (contract: ``activities.converging``). Pods are never
deleted here: the StatefulSet controller removes them after a scale-down."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import events
from activities.converging import ConvergingActivities, conflict
from activities.kube import Obj, is_ready, selector_string
from contract import PodReadyInput, PodRef, PodState, SliceReadyInput, WaitPodGoneInput
from contract.errors import WAIT_TIMEOUT


class PodActivities(ConvergingActivities):
    @activity.defn
    def wait_for_slice_ready(self, request: SliceReadyInput) -> None:
        ref = request.ref
        kube = self.kube(ref.context)
        sts = kube.statefulset(ref.namespace, ref.statefulset)
        if sts is None:
            if request.replicas == 0:
                return
            raise conflict(
                f"StatefulSet {ref.namespace}/{ref.statefulset} is missing in {ref.context}"
            )
        wanted = {
            f"{ref.statefulset}-{k}" for k in range(request.start, request.start + request.replicas)
        }

        def done(pods: dict[str, Obj]) -> bool:
            # A pod being deleted still says Ready until it stops: not healthy.
            return all(
                name in pods
                and is_ready(pods[name])
                and not pods[name]["metadata"].get("deletionTimestamp")
                for name in wanted
            )

        kube.wait_for_pods(
            ref.namespace,
            selector_string(sts),
            f"pods {sorted(wanted)} Ready (none terminating)",
            done,
            request.timeout,
        )

    @activity.defn
    def read_pod(self, request: PodRef) -> PodState:
        pod = self.kube(request.ref.context).pod(request.ref.namespace, request.pod)
        if pod is None:
            return PodState(name=request.pod, exists=False)
        return PodState(
            name=request.pod, exists=True, uid=pod["metadata"]["uid"], ready=is_ready(pod)
        )

    @activity.defn
    def wait_for_pod_gone(self, request: WaitPodGoneInput) -> None:
        """Pod k gone (by UID; never force-deleted), then no VolumeAttachment on its volumes."""
        ref = request.pod.ref
        kube = self.kube(ref.context)
        name = request.pod.pod

        def pod_gone(pods: dict[str, Obj]) -> bool:
            pod = pods.get(name)
            if pod is None:
                return True
            if pod["metadata"]["uid"] != request.uid:
                raise conflict(
                    f"pod {ref.namespace}/{name} was recreated in {ref.context} "
                    "while it should be terminating: somebody scaled the source "
                    "StatefulSet back up"
                )
            return False

        kube.wait_for_pod(ref.namespace, name, f"pod {name} gone", pod_gone, request.pod_timeout)
        volumes = set(request.volumes)
        lingering: list[str] = []

        def volume_of(va: Obj) -> str | None:
            return (va["spec"].get("source") or {}).get("persistentVolumeName")

        def detached(attachments: dict[str, Obj]) -> bool:
            lingering[:] = [
                f"VolumeAttachment {va_name} (volume {volume_of(va)}, "
                f"node {va['spec'].get('nodeName')})"
                for va_name, va in sorted(attachments.items())
                if volume_of(va) in volumes
            ]
            return not lingering

        try:
            kube.wait_for_attachments(
                f"volumes {sorted(volumes)} detached", detached, request.detach_timeout
            )
        except ApplicationError as err:
            if err.type != WAIT_TIMEOUT or not lingering:
                raise
            raise ApplicationError(
                f"{', '.join(lingering)} still attached in {kube.context} after "
                f"{request.detach_timeout} s; the destination will not start pod {name} "
                "until it is gone (check the CSI driver's attacher on that node)",
                type=WAIT_TIMEOUT,
                non_retryable=True,
            ) from None

    @activity.defn
    def wait_for_pod_ready(self, request: PodReadyInput) -> PodState:
        """Pod k Running and Ready for the StatefulSet's minReadySeconds."""
        ref = request.pod.ref
        kube = self.kube(ref.context)
        sts = kube.statefulset(ref.namespace, ref.statefulset)
        min_ready = int(((sts or {}).get("spec") or {}).get("minReadySeconds") or 0)
        name = request.pod.pod
        found: dict[str, Obj] = {}

        def ready(pods: dict[str, Obj]) -> bool:
            pod = pods.get(name)
            if pod is None or (pod.get("status") or {}).get("phase") != "Running":
                return False
            if not is_ready(pod):
                return False
            found["pod"] = pod
            return True

        deadline = time.monotonic() + request.timeout
        kube.wait_for_pod(ref.namespace, name, f"pod {name} Ready", ready, request.timeout)
        if min_ready:
            since = next(
                c["lastTransitionTime"]
                for c in found["pod"]["status"]["conditions"]
                if c["type"] == "Ready"
            )
            ready_at = datetime.fromisoformat(since.replace("Z", "+00:00"))
            while (datetime.now(UTC) - ready_at).total_seconds() < min_ready:
                if time.monotonic() > deadline:
                    break
                activity.heartbeat(f"pod {name} available after {min_ready} s")
                time.sleep(0.5)
            # Re-check: Ready must have held for the whole period.
            kube.wait_for_pod(
                ref.namespace,
                name,
                f"pod {name} still Ready",
                ready,
                max(1.0, deadline - time.monotonic()),
            )
        pod = found["pod"]
        events.record(
            kube,
            sts or events.statefulset_reference(ref.namespace, ref.statefulset),
            "OrdinalReady",
            f"ordinal {request.pod.ordinal} runs here: pod {name} is Running and Ready",
        )
        return PodState(name=name, exists=True, uid=pod["metadata"]["uid"], ready=True)
