"""Migration activities: every cluster change and wait of a migration.

Each activity converges (absolute desired state; read, compare, write only the
difference), so Temporal may run it again after a crash at any instant and the
clusters end the same. Objects we create carry our labels, so AlreadyExists
with our label is success; NotFound on delete is success. A state that is
neither the one we want nor the one we expect to change from means another actor
changed something: that is refused (``ConflictingChange``), never fought.
Secret data is read and written here only; nothing returned holds it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import structlog
from kubernetes import client
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import manifests
from activities.health import COMMANDS_ALLOWED
from activities.kube import Kube, Obj, is_ready, kube_for, selector_string, slice_of
from activities.preflight import build_plan, dependency_names
from contract import (
    ANNOTATION_MIGRATION_ID,
    ClaimsBoundInput,
    DependenciesResult,
    Dependency,
    EnsureDestinationInput,
    ImportInput,
    Plan,
    PlanInput,
    PodReadyInput,
    PodRef,
    PodState,
    Problem,
    ReleaseClaimsInput,
    RetainInput,
    RetainResult,
    SetSliceInput,
    SliceReadyInput,
    SliceRef,
    StatefulSetState,
    WaitPodGoneInput,
)
from contract.errors import CONFLICT, CONFLICTING_CHANGE, NOT_OURS, WAIT_TIMEOUT

log = structlog.get_logger(__name__)

ANNOTATION_ORIGINAL_POLICY = "stsmigrate.dev/original-reclaim-policy"
ANNOTATION_BIND_NUDGE = "stsmigrate.dev/bind-retry"
NUDGE_AFTER = 0.5  # seconds a claim may stay unbound before it is nudged


def _conflict(message: str) -> ApplicationError:
    return ApplicationError(message, type=CONFLICTING_CHANGE, non_retryable=True)


def _state(sts: Obj | None) -> StatefulSetState:
    if sts is None:
        return StatefulSetState(exists=False)
    start, replicas = slice_of(sts)
    ready = int((sts.get("status") or {}).get("readyReplicas") or 0)
    return StatefulSetState(exists=True, start=start, replicas=replicas, ready_replicas=ready)


# Transitional (issue 13): old Python names of renamed activities, new name by old,
# until workflows/ calls the new ones. Delete with the metaclass below.
_OLD_NAMES = {"release_source_claims": "release_claims"}


class _KeepsOldNames(type):
    """``MigrationActivities.<old name>`` still resolves, looked up only on demand, so
    ``dir()`` (the worker's registration) lists each activity once."""

    def __getattr__(cls, name: str) -> Any:
        if name in _OLD_NAMES:
            return getattr(cls, _OLD_NAMES[name])
        raise AttributeError(f"type object {cls.__name__!r} has no attribute {name!r}")


class MigrationActivities(metaclass=_KeepsOldNames):
    def __init__(
        self, clients: Mapping[str, client.ApiClient], allow_command_probes: bool = False
    ) -> None:
        self._allow_command_probes = allow_command_probes
        self._clients = dict(clients)

    def kube(self, context: str) -> Kube:
        return kube_for(self._clients, context)

    def _maybe_kube(self, context: str) -> Kube | None:
        return Kube(self._clients[context], context) if context in self._clients else None

    # -- preflight and parent steps ---------------------------------------------------
    @activity.defn
    def plan_migration(self, request: PlanInput) -> Plan:
        r = request.request
        plan = build_plan(
            self._maybe_kube(r.source_context),
            self._maybe_kube(r.destination_context),
            r,
            request.migration_id,
        )
        if not self._allow_command_probes and any(p.kind == "command" for p in r.health.probes):
            refused = Problem(
                object="request health.probes",
                message="command probes are off on this worker",
                fix=f"set {COMMANDS_ALLOWED}=1 on the worker (it lets workflow inputs run "
                "commands there), or use a ready, http, tcp or redis_cluster probe",
            )
            plan = plan.model_copy(update={"problems": [*plan.problems, refused]})
        log.info(
            "plan_built",
            migration_id=request.migration_id,
            ordinals=len(plan.ordinals),
            problems=len(plan.problems),
            warnings=len(plan.warnings),
        )
        return plan

    @activity.defn
    def ensure_retention_policy(self, ref: SliceRef) -> None:
        kube = self.kube(ref.context)
        sts = kube.statefulset(ref.namespace, ref.statefulset)
        if sts is None:
            raise _conflict(f"StatefulSet {ref.namespace}/{ref.statefulset} disappeared")
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
            raise _conflict(f"source StatefulSet {r.namespace}/{r.statefulset} disappeared")
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
    def ensure_dependencies(self, request: PlanInput) -> DependenciesResult:
        r = request.request
        source, dest = self.kube(r.source_context), self.kube(r.destination_context)
        sts = source.statefulset(r.namespace, r.statefulset)
        if sts is None:
            raise _conflict(f"source StatefulSet {r.namespace}/{r.statefulset} disappeared")
        out = []
        for kind, name in dependency_names(source, sts):
            if dest.dependency(kind, r.target_namespace, name) is not None:
                out.append(Dependency(kind=kind, name=name, action="present"))
                continue
            obj = source.dependency(kind, r.namespace, name)
            if obj is None:
                continue  # optional reference; preflight reported the required ones
            if kind == "Secret" and obj.get("type") == "kubernetes.io/service-account-token":
                continue  # minted per cluster
            body = manifests.copy_object(obj, kind, r, request.migration_id)
            dest.create(kind, r.target_namespace, body)
            out.append(Dependency(kind=kind, name=name, action="copied"))
        # Names and counts only: never values.
        log.info(
            "dependencies_ensured",
            context=dest.context,
            copied=[f"{d.kind}/{d.name}" for d in out if d.action == "copied"],
        )
        return DependenciesResult(dependencies=out)

    @activity.defn
    def read_statefulset(self, ref: SliceRef) -> StatefulSetState:
        return _state(self.kube(ref.context).statefulset(ref.namespace, ref.statefulset))

    # -- ordinal steps ----------------------------------------------------------------
    @activity.defn
    def wait_for_slice_ready(self, request: SliceReadyInput) -> None:
        ref = request.ref
        kube = self.kube(ref.context)
        sts = kube.statefulset(ref.namespace, ref.statefulset)
        if sts is None:
            if request.replicas == 0:
                return
            raise _conflict(
                f"StatefulSet {ref.namespace}/{ref.statefulset} is missing in {ref.context}"
            )
        wanted = {
            f"{ref.statefulset}-{k}" for k in range(request.start, request.start + request.replicas)
        }

        def done(pods: dict[str, Obj]) -> bool:
            return all(name in pods and is_ready(pods[name]) for name in wanted)

        kube.wait_for_pods(
            ref.namespace,
            selector_string(sts),
            f"pods {sorted(wanted)} Ready",
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
    def ensure_volumes_retained(self, request: RetainInput) -> RetainResult:
        """Reclaim policy Retain on every volume; the original is kept in an annotation
        so a retry after a crash still reports the true original."""
        kube = self.kube(request.context)
        original = {}
        for name in request.volumes:
            pv = kube.pv(name)
            if pv is None:
                raise _conflict(f"PersistentVolume {name} disappeared from {request.context}")
            annotations = pv["metadata"].get("annotations") or {}
            policy = pv["spec"].get("persistentVolumeReclaimPolicy") or "Delete"
            original[name] = annotations.get(ANNOTATION_ORIGINAL_POLICY, policy)
            if policy != "Retain":
                kube.patch_pv(
                    name,
                    {
                        "metadata": {
                            "annotations": {
                                ANNOTATION_ORIGINAL_POLICY: policy,
                                ANNOTATION_MIGRATION_ID: request.migration_id,
                            }
                        },
                        "spec": {"persistentVolumeReclaimPolicy": "Retain"},
                    },
                )
        return RetainResult(original_policies=original)

    @activity.defn
    def set_statefulset_slice(self, request: SetSliceInput) -> StatefulSetState:
        """One request sets start and replicas together: patching start alone would shift
        the slice and replace a pod."""
        ref = request.ref
        kube = self.kube(ref.context)
        sts = kube.statefulset(ref.namespace, ref.statefulset)
        if sts is None:
            raise _conflict(
                f"StatefulSet {ref.namespace}/{ref.statefulset} is missing in {ref.context}"
            )
        current = slice_of(sts)
        target = (request.start, request.replicas)
        if current == target:
            return _state(sts)
        if current != (request.from_start, request.from_replicas):
            raise _conflict(
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
                raise _conflict(
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

    # Wire name from when only the source gave claims up; a rollback releases the
    # destination's. Recorded histories hold the old name, so it stays.
    @activity.defn(name="release_source_claims")
    def release_claims(self, request: ReleaseClaimsInput) -> None:
        """Delete the giving side's claims (their volumes are Retain), so only the taking
        side can bind the storage. Refuses while any pod still uses a claim."""
        kube = self.kube(request.context)
        claims = set(request.claims)
        for pod in kube.pods(request.namespace):
            used = {
                str((v.get("persistentVolumeClaim") or {}).get("claimName"))
                for v in pod["spec"].get("volumes") or []
                if v.get("persistentVolumeClaim")
            }
            if used & claims:
                raise _conflict(
                    f"pod {pod['metadata']['name']} still uses {sorted(used & claims)}: somebody "
                    "scaled the StatefulSet back up, or another pod mounts these claims"
                )
        for name in request.volumes:
            pv = kube.pv(name)
            if pv is not None and pv["spec"].get("persistentVolumeReclaimPolicy") != "Retain":
                raise _conflict(
                    f"PersistentVolume {name} is no longer Retain; refusing to release its claim"
                )
        for claim in sorted(claims):
            kube.delete_pvc(request.namespace, claim)

        def gone(pvcs: dict[str, Obj]) -> bool:
            return not claims & set(pvcs)

        kube.wait_for_claims(request.namespace, f"claims {sorted(claims)} released", gone, 120)

    @activity.defn
    def import_volumes(self, request: ImportInput) -> None:
        """Create in the destination each PV (same storage, pre-bound by claimRef), then
        each PVC (with volumeName). Existing objects of ours on the same storage are kept.

        The claims are created only once the PV controller has marked every volume
        Available: a claim it syncs before its informer has the volume waits for the
        controller's 15 s resync instead of binding at once.
        """
        r = request.request
        source, dest = self.kube(r.source_context), self.kube(r.destination_context)
        k = request.ordinal.ordinal
        claims = [vol.claim for vol in request.ordinal.volumes]
        self._claims_free(dest, r.target_namespace, claims, request.migration_id)
        source_pvs: dict[str, Obj] = {}
        for vol in request.ordinal.volumes:
            source_pv = self._retained(source, vol.volume)
            source_pvs[vol.volume] = source_pv
            pv_body = manifests.destination_pv(source_pv, r, request.migration_id, vol.claim, k)
            self._ensure(
                dest,
                "PersistentVolume",
                None,
                pv_body,
                request.migration_id,
                manifests.storage_identity(source_pv),
            )
            # Ours from an earlier move that was rolled back: free it for the new claim.
            self._reopen(dest, vol.volume)
        wanted = set(source_pvs)
        self._wait_available(dest, wanted)
        for vol in request.ordinal.volumes:
            source_pv = source_pvs[vol.volume]
            pvc_body = manifests.destination_pvc(source_pv, vol, r, request.migration_id, k)
            self._ensure(
                dest,
                "PersistentVolumeClaim",
                r.target_namespace,
                pvc_body,
                request.migration_id,
                None,
            )
        log.info("volumes_imported", context=dest.context, ordinal=k, volumes=sorted(wanted))

    @staticmethod
    def _retained(kube: Kube, name: str) -> Obj:
        """The source PV of a moving volume, which must exist and be Retain."""
        pv = kube.pv(name)
        if pv is None:
            raise _conflict(f"source PersistentVolume {name} disappeared")
        if pv["spec"].get("persistentVolumeReclaimPolicy") != "Retain":
            raise _conflict(f"source PersistentVolume {name} is not Retain")
        return pv

    @staticmethod
    def _wait_available(kube: Kube, names: set[str]) -> None:
        """Until the PV controller has seen each volume (Available or Bound): a claim it
        syncs before its informer has the volume waits for the 15 s resync."""

        def seen(pvs: dict[str, Obj]) -> bool:
            return all(
                ((pvs.get(n) or {}).get("status") or {}).get("phase") in ("Available", "Bound")
                for n in names
            )

        kube.wait_for_volumes(f"volumes {sorted(names)} Available", seen, 60)

    @staticmethod
    def _claims_free(kube: Kube, ns: str, claims: list[str], migration_id: str) -> None:
        """Before a volume is pre-bound to these claim names: the PV controller binds a
        pre-bound volume to the claim of that name whatever it asks for (storage class
        included), so a claim there that is not ours would get our volume."""
        for name in claims:
            pvc = kube.pvc(ns, name)
            if pvc is not None and not manifests.is_ours(pvc, migration_id):
                raise ApplicationError(
                    f"PersistentVolumeClaim {ns}/{name} exists in {kube.context} and is not "
                    "ours: the moving volume would be bound to it. Remove or rename it, then "
                    "resume",
                    type=NOT_OURS,
                    non_retryable=True,
                )

    @staticmethod
    def _reopen(kube: Kube, name: str) -> None:
        """A volume whose claimRef holds the uid of a claim that is gone (ours, deleted
        by a rollback or a release; or one that was not ours and took the volume in the
        moment before our claim existed, then was removed) binds nothing: drop that uid
        (the claim's namespace and name stay) so the volume binds the claim we create
        next, and only that one. The storage is untouched."""
        pv = kube.pv(name)
        ref = (pv or {}).get("spec", {}).get("claimRef") or {}
        if pv is None or not ref.get("uid"):
            return
        claim = kube.pvc(ref.get("namespace", ""), ref.get("name", ""))
        if claim is not None and claim["metadata"]["uid"] == ref["uid"]:
            return  # bound to the claim that is there (checked as ours before)
        kube.patch_pv(name, {"spec": {"claimRef": {"uid": None, "resourceVersion": None}}})
        phase = (pv.get("status") or {}).get("phase")
        log.info("volume_reopened", context=kube.context, volume=name, phase=phase)

    @activity.defn
    def reclaim_volumes(self, request: ImportInput) -> None:
        """Rollback: the source takes its own retained volumes back. Each source PV (still
        pointing at the same storage, Retain) is freed of its old claim's uid and a new
        source claim of the same name is created bound to it by volumeName."""
        r = request.request
        source = self.kube(r.source_context)
        k = request.ordinal.ordinal
        claims = [vol.claim for vol in request.ordinal.volumes]
        self._claims_free(source, r.namespace, claims, request.migration_id)
        pvs: dict[str, Obj] = {}
        for vol in request.ordinal.volumes:
            pvs[vol.volume] = self._retained(source, vol.volume)
            self._reopen(source, vol.volume)
        self._wait_available(source, set(pvs))

        for vol in request.ordinal.volumes:
            body = manifests.reclaimed_pvc(pvs[vol.volume], vol, r, request.migration_id, k)
            self._ensure(
                source, "PersistentVolumeClaim", r.namespace, body, request.migration_id, None
            )
        log.info("volumes_reclaimed", context=source.context, ordinal=k, volumes=sorted(pvs))

    def _ensure(
        self,
        kube: Kube,
        kind: str,
        ns: str | None,
        body: Obj,
        migration_id: str,
        storage: str | None,
    ) -> None:
        if kube.create(kind, ns, body) is not None:
            return
        name = body["metadata"]["name"]
        existing = kube.pv(name) if kind == "PersistentVolume" else kube.pvc(ns or "", name)
        if existing is None:
            raise ApplicationError(
                f"{kind} {name} vanished after a conflict; retrying", type=CONFLICT
            )
        if not manifests.is_ours(existing, migration_id):
            raise ApplicationError(
                f"{kind} {name} exists in {kube.context} and is not ours",
                type=NOT_OURS,
                non_retryable=True,
            )
        if storage is not None and manifests.storage_identity(existing) != storage:
            raise ApplicationError(
                f"{kind} {name} in {kube.context} points at other storage",
                type=NOT_OURS,
                non_retryable=True,
            )

    @activity.defn
    def wait_for_claims_bound(self, request: ClaimsBoundInput) -> None:
        """Wait until every claim is Bound.

        Kubernetes quirk: for a pre-bound PV and claim, the PV controller's claim and
        volume workers race on the same PV; the loser logs "Error binding volume to
        claim: failed saving the volume status ... the object has been modified" and
        the claim then waits for the controller's 15 s resync. A claim still unbound
        after NUDGE_AFTER seconds gets an annotation update, an event that makes the
        controller sync it again at once. The annotation changes nothing else.
        """
        kube = self.kube(request.context)
        claims = set(request.claims)
        deadline = time.monotonic() + request.timeout

        def bound(pvcs: dict[str, Obj]) -> bool:
            return all(
                ((pvcs.get(c) or {}).get("status") or {}).get("phase") == "Bound" for c in claims
            )

        nudges = 0
        while True:
            window = min(NUDGE_AFTER, max(0.5, deadline - time.monotonic()))
            try:
                kube.wait_for_claims(
                    request.namespace, f"claims {sorted(claims)} Bound", bound, window
                )
                return
            except ApplicationError as exc:
                if exc.type != WAIT_TIMEOUT or time.monotonic() >= deadline:
                    raise
            nudges += 1
            for claim in sorted(claims):
                pvc = kube.pvc(request.namespace, claim)
                if pvc is not None and (pvc.get("status") or {}).get("phase") != "Bound":
                    kube.annotate_pvc(
                        request.namespace, claim, {ANNOTATION_BIND_NUDGE: str(nudges)}
                    )
            log.info(
                "claims_bind_nudged", context=kube.context, claims=sorted(claims), nudge=nudges
            )

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
        return PodState(name=name, exists=True, uid=pod["metadata"]["uid"], ready=True)
