"""Volume and claim activities: volumes Retain, the giving side's claims released, the
volumes imported by the taking side (or reclaimed by the source in a rollback), the
claims Bound (contract: ``activities.converging``). The storage itself is never
touched: only PV and PVC objects that point at it."""

from __future__ import annotations

import time

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import manifests
from activities.converging import ConvergingActivities, conflict
from activities.kube import Kube, Obj
from contract import (
    ANNOTATION_MIGRATION_ID,
    ClaimsBoundInput,
    ImportInput,
    ReleaseClaimsInput,
    RetainInput,
    RetainResult,
)
from contract.errors import CONFLICT, NOT_OURS, WAIT_TIMEOUT

# One logger for every migration activity, as before the split: its name is in each
# JSON log line.
log = structlog.get_logger("activities.migration")

ANNOTATION_ORIGINAL_POLICY = "stsmigrate.dev/original-reclaim-policy"
ANNOTATION_BIND_NUDGE = "stsmigrate.dev/bind-retry"
NUDGE_AFTER = 0.5  # seconds a claim may stay unbound before it is nudged


class VolumeActivities(ConvergingActivities):
    @activity.defn
    def ensure_volumes_retained(self, request: RetainInput) -> RetainResult:
        """Reclaim policy Retain on every volume; the original is kept in an annotation
        so a retry after a crash still reports the true original."""
        kube = self.kube(request.context)
        original = {}
        for name in request.volumes:
            pv = kube.pv(name)
            if pv is None:
                raise conflict(f"PersistentVolume {name} disappeared from {request.context}")
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
                raise conflict(
                    f"pod {pod['metadata']['name']} still uses {sorted(used & claims)}: somebody "
                    "scaled the StatefulSet back up, or another pod mounts these claims"
                )
        for name in request.volumes:
            pv = kube.pv(name)
            if pv is not None and pv["spec"].get("persistentVolumeReclaimPolicy") != "Retain":
                raise conflict(
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
        _claims_free(dest, r.target_namespace, claims, request.migration_id)
        source_pvs: dict[str, Obj] = {}
        for vol in request.ordinal.volumes:
            source_pv = _retained(source, vol.volume)
            source_pvs[vol.volume] = source_pv
            pv_body = manifests.destination_pv(source_pv, r, request.migration_id, vol.claim, k)
            _ensure_ours(
                dest,
                "PersistentVolume",
                None,
                pv_body,
                request.migration_id,
                manifests.storage_identity(source_pv),
            )
            # Ours from an earlier move that was rolled back: free it for the new claim.
            _reopen(dest, vol.volume)
        wanted = set(source_pvs)
        _wait_available(dest, wanted)
        for vol in request.ordinal.volumes:
            source_pv = source_pvs[vol.volume]
            pvc_body = manifests.destination_pvc(source_pv, vol, r, request.migration_id, k)
            _ensure_ours(
                dest,
                "PersistentVolumeClaim",
                r.target_namespace,
                pvc_body,
                request.migration_id,
                None,
            )
        log.info("volumes_imported", context=dest.context, ordinal=k, volumes=sorted(wanted))

    @activity.defn
    def reclaim_volumes(self, request: ImportInput) -> None:
        """Rollback: the source takes its own retained volumes back. Each source PV (still
        pointing at the same storage, Retain) is freed of its old claim's uid and a new
        source claim of the same name is created bound to it by volumeName."""
        r = request.request
        source = self.kube(r.source_context)
        k = request.ordinal.ordinal
        claims = [vol.claim for vol in request.ordinal.volumes]
        _claims_free(source, r.namespace, claims, request.migration_id)
        pvs: dict[str, Obj] = {}
        for vol in request.ordinal.volumes:
            pvs[vol.volume] = _retained(source, vol.volume)
            _reopen(source, vol.volume)
        _wait_available(source, set(pvs))

        for vol in request.ordinal.volumes:
            body = manifests.reclaimed_pvc(pvs[vol.volume], vol, r, request.migration_id, k)
            _ensure_ours(
                source, "PersistentVolumeClaim", r.namespace, body, request.migration_id, None
            )
        log.info("volumes_reclaimed", context=source.context, ordinal=k, volumes=sorted(pvs))

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


def _retained(kube: Kube, name: str) -> Obj:
    """The source PV of a moving volume, which must exist and be Retain."""
    pv = kube.pv(name)
    if pv is None:
        raise conflict(f"source PersistentVolume {name} disappeared")
    if pv["spec"].get("persistentVolumeReclaimPolicy") != "Retain":
        raise conflict(f"source PersistentVolume {name} is not Retain")
    return pv


def _wait_available(kube: Kube, names: set[str]) -> None:
    """Until the PV controller has seen each volume (Available or Bound): a claim it
    syncs before its informer has the volume waits for the 15 s resync."""

    def seen(pvs: dict[str, Obj]) -> bool:
        return all(
            ((pvs.get(n) or {}).get("status") or {}).get("phase") in ("Available", "Bound")
            for n in names
        )

    kube.wait_for_volumes(f"volumes {sorted(names)} Available", seen, 60)


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


def _ensure_ours(
    kube: Kube,
    kind: str,
    ns: str | None,
    body: Obj,
    migration_id: str,
    storage: str | None,
) -> None:
    """Create ``body``, or accept the object already there if it is ours (and, for a PV,
    points at ``storage``): a retry after a crash finds its own earlier create."""
    if kube.create(kind, ns, body) is not None:
        return
    name = body["metadata"]["name"]
    existing = kube.pv(name) if kind == "PersistentVolume" else kube.pvc(ns or "", name)
    if existing is None:
        raise ApplicationError(f"{kind} {name} vanished after a conflict; retrying", type=CONFLICT)
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
