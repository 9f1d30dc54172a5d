"""StatefulSet activities: the destination StatefulSet, the retention policy, and the
slice of ordinals each side owns (contract: ``activities.converging``)."""

from __future__ import annotations

import structlog
from temporalio import activity

from activities import manifests
from activities.converging import ConvergingActivities, conflict
from activities.kube import Obj, slice_of
from contract import EnsureDestinationInput, SetSliceInput, SliceRef, StatefulSetState

# One logger for every migration activity, as before the split: its name is in each
# JSON log line.
log = structlog.get_logger("activities.migration")


def _state(sts: Obj | None) -> StatefulSetState:
    if sts is None:
        return StatefulSetState(exists=False)
    start, replicas = slice_of(sts)
    ready = int((sts.get("status") or {}).get("readyReplicas") or 0)
    return StatefulSetState(exists=True, start=start, replicas=replicas, ready_replicas=ready)


class SliceActivities(ConvergingActivities):
    @activity.defn
    def ensure_retention_policy(self, ref: SliceRef) -> None:
        kube = self.kube(ref.context)
        sts = kube.statefulset(ref.namespace, ref.statefulset)
        if sts is None:
            raise conflict(f"StatefulSet {ref.namespace}/{ref.statefulset} disappeared")
        policy = sts["spec"].get("persistentVolumeClaimRetentionPolicy") or {}
        if policy.get("whenScaled", "Retain") != "Retain":
            kube.patch_statefulset(
                ref.namespace,
                ref.statefulset,
                {
                    "spec": {
                        "persistentVolumeClaimRetentionPolicy": {**policy, "whenScaled": "Retain"}
                    }
                },
            )
            log.info("retention_policy_fixed", context=ref.context, statefulset=ref.statefulset)

    @activity.defn
    def ensure_destination_statefulset(self, request: EnsureDestinationInput) -> StatefulSetState:
        r = request.request
        source, dest = self.kube(r.source_context), self.kube(r.destination_context)
        existing = dest.statefulset(r.target_namespace, r.statefulset)
        if existing is not None:
            return _state(existing)
        sts = source.statefulset(r.namespace, r.statefulset)
        if sts is None:
            raise conflict(f"source StatefulSet {r.namespace}/{r.statefulset} disappeared")
        body = manifests.destination_statefulset(sts, r, request.migration_id, request.start)
        created = dest.create("StatefulSet", r.target_namespace, body)
        if created is None:  # created meanwhile by a previous attempt of ours
            created = dest.statefulset(r.target_namespace, r.statefulset)
        log.info(
            "destination_statefulset_created",
            context=dest.context,
            statefulset=r.statefulset,
            start=request.start,
        )
        return _state(created)

    @activity.defn
    def read_statefulset(self, ref: SliceRef) -> StatefulSetState:
        return _state(self.kube(ref.context).statefulset(ref.namespace, ref.statefulset))

    @activity.defn
    def set_statefulset_slice(self, request: SetSliceInput) -> StatefulSetState:
        """One request sets start and replicas together: patching start alone would shift
        the slice and replace a pod."""
        ref = request.ref
        kube = self.kube(ref.context)
        sts = kube.statefulset(ref.namespace, ref.statefulset)
        if sts is None:
            raise conflict(
                f"StatefulSet {ref.namespace}/{ref.statefulset} is missing in {ref.context}"
            )
        current = slice_of(sts)
        target = (request.start, request.replicas)
        if current == target:
            return _state(sts)
        if current != (request.from_start, request.from_replicas):
            raise conflict(
                f"StatefulSet {ref.namespace}/{ref.statefulset} in {ref.context} owns "
                f"[{current[0]}, {sum(current)}) but the migration expected "
                f"[{request.from_start}, {request.from_start + request.from_replicas}): "
                "somebody else changed it; the migration will not fight that change"
            )
        patch: Obj = {
            # Optimistic concurrency: a write between our read and this patch is a 409,
            # retried after a fresh read.
            "metadata": {"resourceVersion": sts["metadata"]["resourceVersion"]},
            "spec": {"replicas": request.replicas, "ordinals": {"start": request.start}},
        }
        updated = kube.patch_statefulset(ref.namespace, ref.statefulset, patch)
        log.info(
            "statefulset_slice_set",
            context=ref.context,
            statefulset=ref.statefulset,
            start=request.start,
            replicas=request.replicas,
            from_start=current[0],
            from_replicas=current[1],
        )
        return _state(updated)
