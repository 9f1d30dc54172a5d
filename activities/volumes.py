"""Volume and claim activities: volumes Retain, the giving side's claims released, the
volumes imported by the taking side (or reclaimed by the source in a rollback), the
claims Bound (contract: ``activities.converging``). The storage itself is never
touched: only PV and PVC objects that point at it."""

from __future__ import annotations

import time

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import events, manifests
from activities.converging import ConvergingActivities, conflict
from activities.kube import Kube, Obj
from contract import (
    ANNOTATION_MIGRATION_ID,
    LABEL_FENCE,
    ClaimsBoundInput,
    ImportInput,
    ReleaseClaimsInput,
    RetainInput,
    RetainResult,
    VolumePlan,
)
from contract.errors import CONFLICT, INVALID, NOT_OURS, WAIT_TIMEOUT

# One logger for every migration activity, as before the split: its name is in each
# JSON log line.
log = structlog.get_logger("activities.migration")

ANNOTATION_ORIGINAL_POLICY = "stsmigrate.dev/original-reclaim-policy"
ANNOTATION_BIND_NUDGE = "stsmigrate.dev/bind-retry"
ANNOTATION_BIND_COMPLETED = "pv.kubernetes.io/bind-completed"
# The claimRef uid a released volume gets when its claim never bound (no claim has it).
RELEASED_UID = "00000000-0000-0000-0000-000000000000"
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
        """Release the giving side's claims of ordinal k: claim i is deleted only once it
        is positively identified as the one on volume i (Bound to it, or ours and
        pre-bound to it), that volume is Retain and no running pod uses the claim; the
        delete carries the uid and resourceVersion read, so a claim replaced meanwhile
        is never deleted. Anything else under a claim's name is refused (``NotOurs``):
        it may hold data written since the migration began (review finding 6).

        With ``request.fence`` each released claim is then replaced by a fence
        (``manifests.fence_pvc``). Inputs recorded before ``migration_id`` and
        ``fence`` existed still run: no fence, and only a claim Bound to its planned
        volume is released.
        """
        kube = self.kube(request.context)
        ns = request.namespace
        if len(request.claims) != len(request.volumes):  # a bug of the caller: say so
            raise ApplicationError(
                f"{len(request.claims)} claim(s) but {len(request.volumes)} volume(s) to release",
                type=INVALID,
                non_retryable=True,
            )
        _refuse_running_users(kube, ns, set(request.claims))
        pairs: list[tuple[str, str]] = []
        pvs: dict[str, Obj] = {}
        to_delete: list[Obj] = []
        for claim, volume in zip(request.claims, request.volumes, strict=True):
            pvc = kube.pvc(ns, claim)
            if pvc is None and kube.pv(volume) is None:
                # Neither claim nor volume here (the undo of an import that never made
                # them): nothing in this cluster points at the storage.
                continue
            pairs.append((claim, volume))
            pvs[volume] = _retain_before_release(kube, volume)
            if pvc is None or manifests.is_fence(pvc, request.migration_id, volume):
                continue  # released already (by an earlier attempt, or never there)
            if not _ours_to_release(pvc, pvs[volume], volume, request.migration_id):
                raise _not_ours_to_release(kube, ns, pvc, volume)
            to_delete.append(pvc)
        # A volume pre-bound to its claim by name only (a claim of ours that never
        # bound) would bind the next claim of that name: give its claimRef a uid no
        # claim has, so it is Released like the others (and can be fenced) before the
        # claim goes. The storage is untouched; an adoption writes its claim's uid.
        for claim, volume in pairs:
            pv = pvs[volume]
            ref = pv["spec"].get("claimRef") or {}
            if (ref.get("name"), ref.get("namespace")) == (claim, ns) and not ref.get("uid"):
                patch = {
                    "metadata": {"resourceVersion": pv["metadata"]["resourceVersion"]},
                    "spec": {"claimRef": {"uid": RELEASED_UID}},
                }
                pvs[volume] = kube.patch_pv(volume, patch)  # 409 if bound meanwhile: retried
                log.info("volume_unbound_released", context=kube.context, volume=volume)
                # The PV controller touches the claim when its volume changes: read it
                # again for the delete's preconditions; a different claim by now is
                # judged afresh by the retry.
                for i, c in enumerate(to_delete):
                    if c["metadata"]["name"] == claim:
                        now = kube.pvc(ns, claim)
                        if now is None or now["metadata"]["uid"] != c["metadata"]["uid"]:
                            raise ApplicationError(
                                f"PersistentVolumeClaim {ns}/{claim} changed while its volume "
                                "was released; judging it again",
                                type=CONFLICT,
                            )
                        to_delete[i] = now
        # Every claim judged before the first delete: a refusal changes nothing.
        deleted: dict[str, str] = {}  # claim -> uid of the claim we deleted
        released = {pvc["metadata"]["name"]: pvc for pvc in to_delete}
        for pvc in to_delete:
            meta = pvc["metadata"]
            kube.delete_pvc(
                ns, meta["name"], uid=meta["uid"], resource_version=meta["resourceVersion"]
            )
            deleted[meta["name"]] = meta["uid"]

        def gone(pvcs: dict[str, Obj]) -> bool:
            # Gone by uid: a claim of that name made since is somebody else's, judged
            # by the retry (and never deleted unless it is the one on our volume).
            return all(
                ((pvcs.get(c) or {}).get("metadata") or {}).get("uid") != uid
                for c, uid in deleted.items()
            )

        kube.wait_for_claims(ns, f"claims {sorted(request.claims)} released", gone, 120)
        if deleted:
            log.info("claims_released", context=kube.context, claims=sorted(deleted))
        fences: dict[str, Obj | None] = {}
        if request.fence and request.migration_id:
            ordinal = {c: request.ordinal_of(i) for i, c in enumerate(request.claims)}
            for claim, volume in pairs:
                fences[claim] = _ensure_fence(kube, ns, claim, pvs[volume], request, ordinal[claim])
        for claim, volume in pairs:
            if claim in released:  # about the fence in its place, if there is one
                fenced = ", fenced (a claim that never binds holds its name)"
                k = request.ordinal_of(request.claims.index(claim))
                events.record(
                    kube,
                    fences.get(claim) or released[claim],
                    "ClaimReleased",
                    f"claim {claim} of ordinal {k} released: its volume {volume} "
                    f"is Retain and goes to the other cluster{fenced if fences.get(claim) else ''}",
                )

    @activity.defn
    def import_volumes(self, request: ImportInput) -> None:
        """Bind in the destination each moving volume to its claim: the claim (with
        volumeName) first, then the PV (same storage) bound to that claim by name,
        namespace and uid (why: ``_complete_binding``). Objects of ours already there
        on the same storage are kept: a retry after a crash at any point converges."""
        r = request.request
        source, dest = self.kube(r.source_context), self.kube(r.destination_context)
        k = request.ordinal.ordinal
        ns = r.target_namespace
        present = _adopt_claims(dest, ns, request.ordinal.volumes, request.migration_id)
        source_pvs: dict[str, Obj] = {}
        for vol in request.ordinal.volumes:
            source_pvs[vol.volume] = _retained(source, vol.volume)
            # Before a claim names it: a PV of that name that is not ours (or on other
            # storage) is refused while nothing has been made.
            existing = dest.pv(vol.volume)
            if existing is not None:
                _check_ours(dest, existing, request.migration_id, source_pvs[vol.volume])
        claims: dict[str, Obj] = {}
        for vol in request.ordinal.volumes:
            body = manifests.destination_pvc(
                source_pvs[vol.volume], vol, r, request.migration_id, k
            )
            claims[vol.claim] = present.get(vol.claim) or _ensure_claim(
                dest, ns, body, request.migration_id, vol.volume
            )
        for vol in request.ordinal.volumes:
            source_pv = source_pvs[vol.volume]
            uid = claims[vol.claim]["metadata"]["uid"]
            pv_body = manifests.destination_pv(
                source_pv, r, request.migration_id, vol.claim, k, claim_uid=uid
            )
            if dest.create("PersistentVolume", None, pv_body) is not None:
                continue
            pv = dest.pv(vol.volume)
            if pv is None:
                raise ApplicationError(
                    f"PersistentVolume {vol.volume} vanished after a conflict; retrying",
                    type=CONFLICT,
                )
            _check_ours(dest, pv, request.migration_id, source_pv)
            # Ours from an earlier attempt, or from a move that was rolled back.
            _bind_volume(dest, pv, claims[vol.claim])
        _complete_binding(dest, ns, claims)
        for vol in request.ordinal.volumes:
            events.record(
                dest,
                claims[vol.claim],
                "VolumeImported",
                f"claim {vol.claim} of ordinal {k} bound to volume {vol.volume}, imported "
                f"from {r.source_context} (the same storage)",
            )
        wanted = sorted(source_pvs)
        log.info("volumes_imported", context=dest.context, ordinal=k, volumes=wanted)

    @activity.defn
    def reclaim_volumes(self, request: ImportInput) -> None:
        """Rollback: the source takes its own retained volumes back. A source claim of
        the same name is made again naming its PV (still pointing at the same storage,
        Retain), then the PV is bound to that claim's uid in place of the old claim's
        (why: ``_complete_binding``)."""
        r = request.request
        source = self.kube(r.source_context)
        k = request.ordinal.ordinal
        present = _adopt_claims(source, r.namespace, request.ordinal.volumes, request.migration_id)
        pvs: dict[str, Obj] = {}
        for vol in request.ordinal.volumes:
            pvs[vol.volume] = _retained(source, vol.volume)
        claims: dict[str, Obj] = {}
        for vol in request.ordinal.volumes:
            body = manifests.reclaimed_pvc(pvs[vol.volume], vol, r, request.migration_id, k)
            claims[vol.claim] = present.get(vol.claim) or _ensure_claim(
                source, r.namespace, body, request.migration_id, vol.volume
            )
        for vol in request.ordinal.volumes:
            # Read again: the claim's creation may have made the PV controller write it.
            _bind_volume(source, _retained(source, vol.volume), claims[vol.claim])
        _complete_binding(source, r.namespace, claims)
        for vol in request.ordinal.volumes:
            events.record(
                source,
                claims[vol.claim],
                "VolumeReclaimed",
                f"claim {vol.claim} of ordinal {k} bound to its own volume {vol.volume} "
                "again (the ordinal is given back)",
            )
        log.info("volumes_reclaimed", context=source.context, ordinal=k, volumes=sorted(pvs))

    @activity.defn
    def wait_for_claims_bound(self, request: ClaimsBoundInput) -> None:
        """Wait until every claim is Bound.

        Kubernetes quirk: for a pre-bound PV and claim, the PV controller's claim and
        volume workers race on the same PV; the loser logs "Error binding volume to
        claim: failed saving the volume status ... the object has been modified" and
        the claim then waits for the controller's 15 s resync. The import and the
        reclaim bind in an order that avoids the race (``_complete_binding``); a claim
        still unbound after NUDGE_AFTER seconds anyway (a binding begun by an older
        worker, a controller error) gets an annotation update, an event that makes the
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


def _refuse_running_users(kube: Kube, ns: str, claims: set[str]) -> None:
    """No pod that may still run uses the claims. A finished pod (Succeeded or Failed,
    a backup Job's, say) mounts nothing and does not block: the pvc-protection
    controller ignores it too (review finding 23)."""
    for pod in kube.pods(ns):
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
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


def _retain_before_release(kube: Kube, name: str) -> Obj:
    """A volume whose claim is released: it must be there and Retain, or releasing the
    claim could delete the storage."""
    pv = kube.pv(name)
    if pv is None:
        raise conflict(
            f"PersistentVolume {name} disappeared from {kube.context}; refusing to release "
            "its claim"
        )
    if pv["spec"].get("persistentVolumeReclaimPolicy") != "Retain":
        raise conflict(
            f"PersistentVolume {name} is no longer Retain; refusing to release its claim"
        )
    return pv


def _ours_to_release(pvc: Obj, pv: Obj, volume: str, migration_id: str) -> bool:
    """The claim is the one on ``volume``: both sides of the binding agree, or we made it
    (an earlier import or reclaim) and it names the volume. Without a migration id
    (an input recorded before it existed) only the first holds."""
    if (pvc.get("spec") or {}).get("volumeName") != volume:
        return False
    if manifests.is_bound_to(pvc, pv):
        return True
    return bool(migration_id) and manifests.is_ours(pvc, migration_id)


def _not_ours_to_release(kube: Kube, ns: str, pvc: Obj, volume: str) -> ApplicationError:
    name = pvc["metadata"]["name"]
    bound = (pvc.get("spec") or {}).get("volumeName") or ""
    phase = (pvc.get("status") or {}).get("phase") or "no phase"
    if bound == volume:
        what = f"names the planned volume {volume} but is {phase}, not bound to it, and not ours"
    else:
        what = f"is bound to {bound or 'no volume'} ({phase}), not to the planned volume {volume}"
    return ApplicationError(
        f"PersistentVolumeClaim {ns}/{name} in {kube.context} {what}: it may hold data "
        "written since the migration began; it was not deleted. Check who created it, "
        "move its data or delete it yourself, then resume",
        type=NOT_OURS,
        non_retryable=True,
    )


def _ensure_fence(
    kube: Kube, ns: str, claim: str, pv: Obj, request: ReleaseClaimsInput, ordinal: int
) -> Obj | None:
    """The fence of ``claim`` on ``pv`` (``manifests.fence_pvc``); one of ours already there
    is the converged state. Anything else took the name in the moment since the release
    (a foreign scale-up): refused, not deleted. The fence, or None when none is due."""
    volume = pv["metadata"]["name"]
    now = kube.pv(volume) or pv
    uid = ((now.get("spec") or {}).get("claimRef") or {}).get("uid")
    if uid == RELEASED_UID:
        # No claim was ever bound to it here (an import whose claim was never made or
        # never bound): released as it is, nothing to fence (the state before the move
        # had no claim either), and nothing a denial of the fence could block.
        return None
    if not uid:
        # The fence holds only while the volume's claimRef names a claim that is gone
        # (by uid); a volume bound by name alone would bind the fence at once, and a
        # foreign pod k would run on the storage the taker is getting. No fence then
        # (as before fences existed); said in the log.
        log.warning("claim_not_fenced", context=kube.context, claim=claim, volume=volume)
        return None
    body = manifests.fence_pvc(
        pv, claim, ns, request.migration_id, f"{kube.context}/{ns}/{claim}", ordinal
    )
    if (fence := kube.create("PersistentVolumeClaim", ns, body)) is not None:
        log.info("claim_fenced", context=kube.context, claim=claim, volume=volume)
        return fence
    existing = kube.pvc(ns, claim)
    if existing is None:
        raise ApplicationError(
            f"PersistentVolumeClaim {claim} vanished after a conflict; retrying", type=CONFLICT
        )
    if not manifests.is_fence(existing, request.migration_id, volume):
        raise ApplicationError(
            f"PersistentVolumeClaim {ns}/{claim} in {kube.context} was created by somebody "
            f"else right after its release (bound to "
            f"{(existing.get('spec') or {}).get('volumeName') or 'no volume'}), so no fence "
            f"holds volume {volume} for it; it was not deleted. Scale the StatefulSet back "
            "down, check who created the claim, move its data or delete it yourself, then "
            "resume",
            type=NOT_OURS,
            non_retryable=True,
        )
    return existing


def _adopt_claims(
    kube: Kube, ns: str, volumes: list[VolumePlan], migration_id: str
) -> dict[str, Obj]:
    """Before a volume is bound to these claim names: the PV controller binds a
    pre-bound volume to the claim of that name whatever it asks for (storage class
    included), so a claim there that is not ours would get our volume. Accepted, of a
    claim already there:

    - a claim Bound to exactly the planned volume (both sides of the binding agree) and
      of its class, whoever made it: that claim is converged (an undo after a partial
      release finds the giver's own claim still there). A claim of another class got
      the volume only through a pre-binding (the PV controller checks no class then):
      a capture, refused;
    - a fence of ours on the planned volume: adopted as the real claim (its fence label
      removed now, before ``_bind_volume`` lets it bind, so a Bound claim never carries it);
    - any other claim of ours (an earlier attempt's).

    Anything else is refused (``NotOurs``) before anything is changed. Returns the
    claims that are there already (by name, as they are now), so are not to be created."""
    present: dict[str, Obj] = {}
    fences: list[Obj] = []
    for vol in volumes:
        pvc = kube.pvc(ns, vol.claim)
        if pvc is None:
            continue
        pv = kube.pv(vol.volume)
        if manifests.is_bound_to(pvc, pv) and _of_its_class(pvc, pv):
            present[vol.claim] = pvc
            if _fence_label(pvc) and manifests.is_ours(pvc, migration_id):
                fences.append(pvc)
        elif manifests.is_fence(pvc, migration_id, vol.volume):
            present[vol.claim] = pvc
            fences.append(pvc)
        elif not manifests.is_ours(pvc, migration_id):
            raise ApplicationError(
                f"PersistentVolumeClaim {ns}/{vol.claim} exists in {kube.context} and is not "
                "ours: the moving volume would be bound to it. Remove or rename it, then "
                "resume",
                type=NOT_OURS,
                non_retryable=True,
            )
    for pvc in fences:
        meta = pvc["metadata"]
        present[meta["name"]] = kube.patch_pvc(
            ns,
            meta["name"],
            # Only the fence that was read: a claim changed since is a 409, read again.
            {
                "metadata": {
                    "resourceVersion": meta["resourceVersion"],
                    "labels": {LABEL_FENCE: None},
                }
            },
        )
        volume = (pvc.get("spec") or {}).get("volumeName")
        log.info("fence_adopted", context=kube.context, claim=meta["name"], volume=volume)
    return present


def _of_its_class(pvc: Obj, pv: Obj | None) -> bool:
    """The claim asks for the volume's storage class (none and "" alike)."""
    wanted = (pvc.get("spec") or {}).get("storageClassName") or ""
    return wanted == (((pv or {}).get("spec") or {}).get("storageClassName") or "")


def _fence_label(pvc: Obj) -> bool:
    return ((pvc.get("metadata") or {}).get("labels") or {}).get(LABEL_FENCE) == "true"


def _check_ours(kube: Kube, pv: Obj, migration_id: str, storage: Obj) -> None:
    """A PV of the moving volume's name already there is ours and points at the storage
    of ``storage`` (the source PV): an earlier attempt's, or an earlier move's."""
    name = pv["metadata"]["name"]
    if not manifests.is_ours(pv, migration_id):
        raise ApplicationError(
            f"PersistentVolume {name} exists in {kube.context} and is not ours",
            type=NOT_OURS,
            non_retryable=True,
        )
    if not manifests.same_storage(pv, storage):
        raise ApplicationError(
            f"PersistentVolume {name} in {kube.context} points at other storage",
            type=NOT_OURS,
            non_retryable=True,
        )


def _ensure_claim(kube: Kube, ns: str, body: Obj, migration_id: str, volume: str) -> Obj:
    """Create the claim ``body`` (naming ``volume``), or accept the one of ours already
    there (a retry after a crash finds its own earlier create); the claim, with its uid."""
    created = kube.create("PersistentVolumeClaim", ns, body)
    if created is not None:
        return created
    name = body["metadata"]["name"]
    existing = kube.pvc(ns, name)
    if existing is None:
        raise ApplicationError(
            f"PersistentVolumeClaim {name} vanished after a conflict; retrying", type=CONFLICT
        )
    if not manifests.is_ours(existing, migration_id):
        raise ApplicationError(
            f"PersistentVolumeClaim {ns}/{name} exists in {kube.context} and is not ours",
            type=NOT_OURS,
            non_retryable=True,
        )
    if (existing.get("spec") or {}).get("volumeName") != volume:
        raise conflict(
            f"PersistentVolumeClaim {ns}/{name} in {kube.context} names volume "
            f"{(existing.get('spec') or {}).get('volumeName') or 'none'}, not {volume}"
        )
    return existing


def _bind_volume(kube: Kube, pv: Obj, claim: Obj) -> None:
    """The PV's claimRef, naming ``claim`` already, gets that claim's uid in place of none
    (pre-bound by name), of the placeholder of a release, or of a claim of that name that
    is gone (the one there now is ``claim``): the PV controller then sees a whole binding
    on its next event. The storage is untouched; the claim's name and namespace stay (as
    deploy/admission.yaml requires)."""
    name = pv["metadata"]["name"]
    meta = claim["metadata"]
    ref = (pv.get("spec") or {}).get("claimRef") or {}
    if (ref.get("namespace"), ref.get("name")) != (meta["namespace"], meta["name"]):
        held = f"{ref.get('namespace')}/{ref.get('name')}" if ref else "no claim"
        raise conflict(
            f"PersistentVolume {name} in {kube.context} is claimed by {held}, not by "
            f"{meta['namespace']}/{meta['name']}"
        )
    if ref.get("uid") == meta["uid"]:
        return
    if (pv.get("status") or {}).get("phase") == "Bound":
        # Still Bound to the claim that is gone (``claim`` has its name now): the PV
        # controller has not yet seen it go. A phase Bound with our uid would then be
        # that old binding, not the controller's answer to ours, so first the release.
        old = ref.get("uid")

        def let_go(pvs: dict[str, Obj]) -> bool:
            now = pvs.get(name) or {}
            uid = ((now.get("spec") or {}).get("claimRef") or {}).get("uid")
            return (now.get("status") or {}).get("phase") != "Bound" or uid != old

        kube.wait_for_volumes(f"volume {name} released by the PV controller", let_go, 60)
        now = kube.pv(name)
        if now is None:
            raise conflict(f"PersistentVolume {name} disappeared from {kube.context}")
        _bind_volume(kube, now, claim)
        return
    patch = {
        # Only the PV that was read: one changed since is a 409, judged again by the retry.
        "metadata": {"resourceVersion": pv["metadata"]["resourceVersion"]},
        "spec": {"claimRef": {"uid": meta["uid"], "resourceVersion": None}},
    }
    kube.patch_pv(name, patch)
    phase = (pv.get("status") or {}).get("phase")
    log.info("volume_bound_to_claim", context=kube.context, volume=name, phase=phase)


def _complete_binding(kube: Kube, ns: str, claims: dict[str, Obj]) -> None:
    """Each claim Bound without the PV controller's claim/volume race.

    Kubernetes quirk: given a PV pre-bound by name and then its claim, the controller's
    claim worker writes the claim's uid into the PV while its volume worker writes the
    PV's phase; the loser's write is a 409 ("the object has been modified") that is not
    retried, and the claim waits for the 15 s resync. So the claim comes first, then
    the PV bound to it by uid (the callers). The volume worker sees a whole binding
    ("all is bound") and marks the PV Bound; it never touches the claim, so that claim
    then gets ``pv.kubernetes.io/bind-completed`` from us: the event on which the
    claim worker, finding its volume bound to it by uid, writes the claim's phase
    Bound and nothing else. Neither object is marked bound-by-controller, which is what
    a binding made by a user looks like: the controller never unbinds it.

    The annotation only once the PV is Bound to the claim's uid: the controller wrote
    that phase, so its cache holds the PV (a bind-completed claim whose volume it has
    not seen would be marked Lost)."""
    uids = {c["spec"]["volumeName"]: c["metadata"]["uid"] for c in claims.values()}

    def bound(pvs: dict[str, Obj]) -> bool:
        return all(
            ((pvs.get(v) or {}).get("status") or {}).get("phase") == "Bound"
            and (((pvs.get(v) or {}).get("spec") or {}).get("claimRef") or {}).get("uid") == uid
            for v, uid in uids.items()
        )

    kube.wait_for_volumes(f"volumes {sorted(uids)} Bound to their claims", bound, 60)
    for name, claim in sorted(claims.items()):
        now = kube.pvc(ns, name)
        if now is None or now["metadata"]["uid"] != claim["metadata"]["uid"]:
            raise ApplicationError(
                f"PersistentVolumeClaim {ns}/{name} was replaced while its volume was "
                "bound to it; judging it again",
                type=CONFLICT,
            )
        annotations = now["metadata"].get("annotations") or {}
        if (now.get("status") or {}).get("phase") == "Bound" or ANNOTATION_BIND_COMPLETED in (
            annotations
        ):
            continue
        meta = {
            "resourceVersion": now["metadata"]["resourceVersion"],
            "annotations": {ANNOTATION_BIND_COMPLETED: "yes"},
        }
        kube.patch_pvc(ns, name, {"metadata": meta})
