"""The clean finish of a migration whose every ordinal runs in the destination
(workflows/cleanup.py runs these in this order; each converges):

1. ``plan_cleanup`` (read only): refused while anything still runs in the source
   (an ordinal, a pod, a Bound claim of the app, a moved volume Bound there), while
   another migration holds either StatefulSet's lock, or without the permissions;
   the moved volumes and what the destination's provisioner needs to own them.
   (The workflow also refuses while a child of the migration still runs.)
2. ``fence_source_statefulset``: the empty source StatefulSet is deleted (orphaning
   its dependents) and held by the finalizer ``stsmigrate.dev/fence``. A held
   StatefulSet cannot be created again (a GitOps apply or patch only changes it,
   ``replicas`` included) and its controller creates no pod while it is being
   deleted (pkg/controller/statefulset: ``updateStatefulSet`` returns early on a
   deletionTimestamp), so no later sync can start an identity in the source. An
   update that drops the finalizer (a replace) is what deploy/admission.yaml's
   ``stsmigrate-fence`` policy refuses; removing it by hand lets it go.
3. ``remove_source_volumes``: what the destination's provisioner will need is kept
   on each destination PV (``stsmigrate.dev/provisioned-by`` and the deletion
   secret's names), then each moved volume's Released source PV object is deleted,
   only while it is Retain (one somebody set to Delete is refused: its storage may
   be gone). A Retain PV's storage is never deleted with its object; the
   destination's PV describes it.
4. ``restore_reclaim_policies``: each destination PV gets its original reclaim
   policy back, with ``pv.kubernetes.io/provisioned-by`` (and the deletion secret's
   names), only while no source PV still describes the same storage, no migration
   holds the destination StatefulSet, and the destination's storage class is
   provisioned by the driver that made the volume (with the same deletion secret).

The source's fence claims (Pending, labelled ``stsmigrate.dev/fence``) stay: with
the StatefulSet held they are a second fence, and deleting them is the owner's
call once nothing points the app at the source any more.
"""

from __future__ import annotations

import re

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import events, manifests, permissions
from activities.converging import ConvergingActivities
from activities.kube import Kube, Obj, selector_string, slice_of
from activities.preflight import lacking
from activities.volumes import ANNOTATION_ORIGINAL_POLICY
from contract import (
    ANNOTATION_LOCK,
    ANNOTATION_MOVED_TO,
    ANNOTATION_SOURCE,
    FINALIZER_FENCE,
    LABEL_FENCE,
    LABEL_MIGRATION,
    CleanupInput,
    CleanupPlan,
    CleanupStep,
    CleanupVolume,
)
from contract.errors import CLEANUP_REFUSED, CONFLICT

log = structlog.get_logger(__name__)

PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
# The names (never the data) of the Secret a CSI driver's DeleteVolume needs, and the
# storage class parameters that name it.
SECRET_NAME = "volume.kubernetes.io/provisioner-deletion-secret-name"  # noqa: S105
SECRET_NAMESPACE = "volume.kubernetes.io/provisioner-deletion-secret-namespace"  # noqa: S105
DELETION_SECRET = (SECRET_NAME, SECRET_NAMESPACE)
CLASS_SECRET = {
    SECRET_NAME: "csi.storage.k8s.io/provisioner-secret-name",
    SECRET_NAMESPACE: "csi.storage.k8s.io/provisioner-secret-namespace",
}
# Where the destination PV keeps them once the source PV (their only copy: imports
# drop pv.kubernetes.io/ and volume.kubernetes.io/ annotations) is gone.
KEPT = {
    PROVISIONED_BY: "stsmigrate.dev/provisioned-by",
    SECRET_NAME: "stsmigrate.dev/provisioner-deletion-secret-name",
    SECRET_NAMESPACE: "stsmigrate.dev/provisioner-deletion-secret-namespace",
}


def refused(message: str) -> ApplicationError:
    """The clean finish would touch something still in use: it changes nothing."""
    return ApplicationError(message, type=CLEANUP_REFUSED, non_retryable=True)


class CleanupActivities(ConvergingActivities):
    @activity.defn
    def plan_cleanup(self, task: CleanupInput) -> CleanupPlan:
        """What the clean finish will change, refused (``CleanupRefused``) while the
        source StatefulSet owns an ordinal, a pod of it exists in the source, another
        migration holds its lock, the destination owns nothing, or a moved volume is
        Bound in the source."""
        r = task.request
        src, dst = self.kube(r.source_context), self.kube(r.destination_context)
        sides: tuple[tuple[permissions.Side, Kube, str], ...] = (
            ("source", src, r.namespace),
            ("destination", dst, r.target_namespace),
        )
        for side, kube, ns in sides:
            missing, _ = lacking(kube, permissions.for_cleanup(side), ns, r.statefulset)
            if missing:
                raise refused(
                    f"the worker's credentials in {kube.context} may not: {', '.join(missing)}; "
                    "the clean finish needs them (deploy/rbac.yaml grants them; "
                    "`stsmigrate rbac` prints the roles)"
                )
        sts = src.statefulset(r.namespace, r.statefulset)
        if sts is not None and not _fenced(sts):
            _refuse_unless_empty(src, sts, task.migration_id)
        _refuse_pods(src, r.namespace, r.statefulset, sts)
        target = dst.statefulset(r.target_namespace, r.statefulset)
        if target is None or slice_of(target)[1] == 0:
            raise refused(
                f"StatefulSet {r.target_namespace}/{r.statefulset} in {r.destination_context} "
                "owns no ordinal: the clean finish is for a migration that moved them all"
            )
        _refuse_if_locked(dst, target, task.migration_id)
        _refuse_bound_claims(src, r.namespace, r.statefulset, sts or target)
        # Every volume imported from this source StatefulSet, by any migration of it
        # (a partial run, then a later one under another id).
        came_from = manifests.source_ref(r)
        source_pvs = {pv["metadata"]["name"]: pv for pv in src.pvs()}
        volumes = []
        for pv in dst.pvs():
            meta = pv["metadata"]
            ref = pv["spec"].get("claimRef") or {}
            labels, notes = meta.get("labels") or {}, meta.get("annotations") or {}
            if LABEL_MIGRATION not in labels or notes.get(ANNOTATION_SOURCE) != came_from:
                continue
            if ref.get("namespace") != r.target_namespace or not _bound(pv):
                continue  # a rolled-back move's leftover: not the app's volume now
            source_pv = source_pvs.get(meta["name"])
            if source_pv is not None and _bound(source_pv):
                sref = source_pv["spec"].get("claimRef") or {}
                raise refused(
                    f"PersistentVolume {meta['name']} is Bound in {r.source_context} to claim "
                    f"{sref.get('namespace')}/{sref.get('name')}: the source still uses the "
                    "storage the destination runs on. Find who bound it before cleaning up"
                )
            kept = _provisioning(source_pv, pv)
            volumes.append(
                CleanupVolume(
                    volume=meta["name"],
                    claim=ref.get("name", ""),
                    original_policy=notes.get(ANNOTATION_ORIGINAL_POLICY, "Retain"),
                    provisioned_by=kept.pop(PROVISIONED_BY, ""),
                    deletion_secret=kept,
                )
            )
        start, replicas = slice_of(target)
        log.info(
            "cleanup_planned",
            migration_id=task.migration_id,
            volumes=len(volumes),
            source_statefulset=sts is not None,
        )
        return CleanupPlan(
            volumes=sorted(volumes, key=lambda v: v.volume),
            source_statefulset=sts is not None,
            end=start + replicas,
        )

    @activity.defn
    def fence_source_statefulset(self, task: CleanupInput) -> CleanupStep:
        """The empty source StatefulSet deleted and held by ``FINALIZER_FENCE`` (the
        finalizer first, then the delete, each with the resourceVersion read: a scale-up
        meanwhile is a 409, and the retry refuses it)."""
        r = task.request
        src = self.kube(r.source_context)
        what = f"source StatefulSet {r.namespace}/{r.statefulset}"
        sts = src.statefulset(r.namespace, r.statefulset)
        if sts is None:
            return CleanupStep(
                object=what,
                action="absent",
                detail="nothing to fence: a sync that creates it again gets Pending pods on "
                "the fence claims, never empty storage; keep the app's manifests off the source",
            )
        meta = sts["metadata"]
        finalizers = meta.get("finalizers") or []
        if meta.get("deletionTimestamp"):
            if FINALIZER_FENCE in finalizers:
                return CleanupStep(object=what, action="fenced", detail="held already")
            return CleanupStep(
                object=what,
                action="being deleted",
                detail="somebody else is deleting it (no finalizer can be added now)",
            )
        try:
            _refuse_unless_empty(src, sts, task.migration_id)
            _refuse_pods(src, r.namespace, r.statefulset, sts)
        except ApplicationError:
            # Scaled up after an earlier attempt held it, before its delete: our
            # finalizer and note come off again, so a refusal leaves nothing behind.
            if FINALIZER_FENCE in finalizers:
                src.patch_statefulset(
                    r.namespace,
                    r.statefulset,
                    {
                        "metadata": {
                            "resourceVersion": meta["resourceVersion"],
                            "finalizers": [f for f in finalizers if f != FINALIZER_FENCE],
                            "annotations": {ANNOTATION_MOVED_TO: None},
                        }
                    },
                )
            raise
        moved_to = f"{r.destination_context}/{r.target_namespace}/{r.statefulset}"
        if FINALIZER_FENCE not in finalizers:
            sts = src.patch_statefulset(
                r.namespace,
                r.statefulset,
                {
                    "metadata": {
                        "resourceVersion": meta["resourceVersion"],
                        "finalizers": [*finalizers, FINALIZER_FENCE],
                        "annotations": {ANNOTATION_MOVED_TO: moved_to},
                    }
                },
            )
        src.delete_statefulset(
            r.namespace, r.statefulset, sts["metadata"]["uid"], sts["metadata"]["resourceVersion"]
        )
        events.record(
            src,
            sts,
            "SourceFenced",
            f"every ordinal runs in {moved_to}: deleted and held by the finalizer "
            f"{FINALIZER_FENCE}, so no sync can recreate it or its pods here",
        )
        log.info("source_fenced", context=src.context, statefulset=r.statefulset)
        return CleanupStep(object=what, action="fenced", detail=f"moved to {moved_to}")

    @activity.defn
    def remove_source_volumes(self, task: CleanupInput) -> list[CleanupStep]:
        """Each moved volume's source PV object deleted, Retain first, only while it is
        not Bound and points at the storage its destination PV does. Every volume is
        judged before the first delete: a refusal changes nothing."""
        r = task.request
        src, dst = self.kube(r.source_context), self.kube(r.destination_context)
        doomed: list[tuple[Obj, Obj]] = []
        steps = []
        for vol in task.volumes:
            pv = src.pv(vol.volume)
            if pv is None:
                steps.append(CleanupStep(object=_pv(vol, "source"), action="removed"))
                continue
            twin = dst.pv(vol.volume)
            if _bound(pv) or twin is None or not manifests.same_storage(pv, twin):
                raise refused(
                    f"PersistentVolume {vol.volume} in {r.source_context} is "
                    + ("Bound" if _bound(pv) else "not the destination's storage any more")
                    + ": left as it is"
                )
            policy = pv["spec"].get("persistentVolumeReclaimPolicy")
            if policy != "Retain":
                raise refused(
                    f"PersistentVolume {vol.volume} in {r.source_context} is {policy}, not "
                    "Retain: somebody changed it since the move, and its provisioner may have "
                    "deleted the storage the destination runs on. Check that storage, set the "
                    "PV Retain by hand, then run the clean finish again"
                )
            doomed.append((pv, twin))
        for pv, twin in doomed:
            name = pv["metadata"]["name"]
            # What the provisioner will need, kept where it outlives the source PV.
            keep = {KEPT[k]: v for k, v in _provisioning(pv, twin).items()}
            notes = twin["metadata"].get("annotations") or {}
            if any(notes.get(k) != v for k, v in keep.items()):
                dst.patch_pv(
                    name,
                    {
                        "metadata": {
                            "resourceVersion": twin["metadata"]["resourceVersion"],
                            "annotations": keep,
                        }
                    },
                )
            src.delete_pv(name, pv["metadata"]["uid"], pv["metadata"]["resourceVersion"])
            steps.append(
                CleanupStep(
                    object=f"source PersistentVolume {name}",
                    action="removed",
                    detail="the object only (Retain): its storage is the destination's",
                )
            )
        if doomed:
            events.record_about_statefulset(
                src,
                r.namespace,
                r.statefulset,
                "SourceVolumesRemoved",
                f"{len(doomed)} Released PersistentVolume object(s) removed (Retain: the storage "
                f"stays, used in {r.destination_context})",
            )
            log.info("source_volumes_removed", context=src.context, volumes=len(doomed))
        return sorted(steps, key=lambda s: s.object)

    @activity.defn
    def restore_reclaim_policies(self, task: CleanupInput) -> list[CleanupStep]:
        """Each destination PV its original reclaim policy, where the destination's
        provisioner can own it; otherwise it stays Retain and the step says why."""
        r = task.request
        src, dst = self.kube(r.source_context), self.kube(r.destination_context)
        target = dst.statefulset(r.target_namespace, r.statefulset)
        if target is not None:
            _refuse_if_locked(dst, target, task.migration_id)  # an onward one's volumes
        steps = []
        for vol in task.volumes:
            what = _pv(vol, "destination")
            pv = dst.pv(vol.volume)
            if pv is None or not _bound(pv):
                raise ApplicationError(
                    f"PersistentVolume {vol.volume} in {r.destination_context} is "
                    + ("missing" if pv is None else "not Bound to its claim any more")
                    + "; it keeps its policy",
                    type=CONFLICT,  # retried: a claim being re-bound settles
                )
            policy = pv["spec"].get("persistentVolumeReclaimPolicy")
            if policy == vol.original_policy:
                steps.append(CleanupStep(object=what, action=f"kept {policy}", detail="original"))
            elif why := _kept_because(dst, src, pv, vol):
                steps.append(CleanupStep(object=what, action=f"kept {policy}", detail=why))
            else:
                dst.patch_pv(
                    vol.volume,
                    {
                        "metadata": {
                            "resourceVersion": pv["metadata"]["resourceVersion"],
                            "annotations": {PROVISIONED_BY: vol.provisioned_by}
                            | vol.deletion_secret,
                        },
                        "spec": {"persistentVolumeReclaimPolicy": vol.original_policy},
                    },
                )
                steps.append(
                    CleanupStep(
                        object=what,
                        action=f"restored {vol.original_policy}",
                        detail=f"owned by {vol.provisioned_by} again",
                    )
                )
                claim = dst.pvc(r.target_namespace, vol.claim)
                if claim is not None:
                    events.record(
                        dst,
                        claim,
                        "ReclaimPolicyRestored",
                        f"volume {vol.volume} is {vol.original_policy} again: "
                        f"{vol.provisioned_by} owns it as before the migration",
                    )
        log.info("reclaim_policies_restored", context=dst.context, volumes=len(steps))
        return steps


def _kept_because(dst: Kube, src: Kube, pv: Obj, vol: CleanupVolume) -> str:
    """Why ``pv`` keeps Retain instead of its original policy ("" when it may not)."""
    if vol.original_policy != "Delete":
        return f"its original policy {vol.original_policy} is not restored (deprecated)"
    twin = src.pv(vol.volume)
    if twin is not None and manifests.same_storage(twin, pv):
        return "a source PV still describes its storage"
    if not vol.provisioned_by:
        return "no provisioner made it (a static volume): set a policy by hand if wanted"
    csi = pv["spec"].get("csi")
    if csi is not None and csi.get("driver") != vol.provisioned_by:
        return f"its CSI driver {csi.get('driver')} did not make it ({vol.provisioned_by} did)"
    name = pv["spec"].get("storageClassName") or ""
    cls = dst.storage_class(name) if name else None
    if cls is None or cls.get("provisioner") != vol.provisioned_by:
        owner = "missing" if cls is None else f"provisioned by {cls.get('provisioner')}"
        return (
            f"storage class {name or '(none)'} of the destination is {owner}, not by "
            f"{vol.provisioned_by}, which made it: no provisioner there would delete it"
        )
    params = cls.get("parameters") or {}
    if vol.deletion_secret and any(
        params.get(CLASS_SECRET[k]) != v for k, v in vol.deletion_secret.items()
    ):
        secret = "/".join(vol.deletion_secret.get(k, "") for k in (SECRET_NAMESPACE, SECRET_NAME))
        return (
            f"its driver deletes it with the Secret {secret}, which storage class {name} of "
            "the destination does not name: check that Secret there, then set the policy by hand"
        )
    return ""


def _provisioning(source_pv: Obj | None, pv: Obj) -> dict[str, str]:
    """What the provisioner needs to own the volume (provisioned-by, the deletion
    secret's names): from the source PV, else what the destination PV kept of it
    (``KEPT``), else what the destination PV has (restored), else its CSI driver."""
    theirs = ((source_pv or {}).get("metadata") or {}).get("annotations") or {}
    ours = pv["metadata"].get("annotations") or {}
    out = {}
    for key in (PROVISIONED_BY, *DELETION_SECRET):
        value = theirs.get(key) or ours.get(KEPT[key]) or ours.get(key)
        if value:
            out[key] = value
    if PROVISIONED_BY not in out and (driver := (pv["spec"].get("csi") or {}).get("driver")):
        out[PROVISIONED_BY] = driver
    return out


def _refuse_if_locked(kube: Kube, sts: Obj, migration_id: str) -> None:
    """The destination StatefulSet held by another migration (an onward one): its
    volumes are being handed over, so none of their policies may change now. (Its
    own id: a copy of the source's lock that destinations made before the copy was
    dropped still carry.)"""
    meta = sts["metadata"]
    holder = (meta.get("annotations") or {}).get(ANNOTATION_LOCK, "")
    if holder and holder != migration_id:
        raise refused(
            f"StatefulSet {meta['namespace']}/{meta['name']} in {kube.context} is locked by "
            f"migration {holder!r}: wait for it to end"
        )


def _refuse_bound_claims(kube: Kube, ns: str, name: str, sts: Obj) -> None:
    """No claim of the app's templates is left Bound in the source (an ordinal scaled
    away without moving it, say): its data would stay behind, and a later delete of
    the StatefulSet could take it with it."""
    templates = [
        (t.get("metadata") or {}).get("name", "")
        for t in (sts.get("spec") or {}).get("volumeClaimTemplates") or []
    ]
    if not templates:
        return
    pattern = re.compile(rf"^(?:{'|'.join(map(re.escape, templates))})-{re.escape(name)}-\d+$")
    left = sorted(
        c["metadata"]["name"]
        for c in kube.pvcs(ns)
        if pattern.match(c["metadata"]["name"])
        and (c.get("status") or {}).get("phase") == "Bound"
        and ((c["metadata"].get("labels") or {}).get(LABEL_FENCE) != "true")
    )
    if left:
        raise refused(
            f"claims {left} of {name} are still Bound in {kube.context}: their data would stay "
            "behind. Move those ordinals (or delete the claims by hand if nobody needs them), "
            "then run the clean finish again"
        )


def _refuse_unless_empty(kube: Kube, sts: Obj, migration_id: str) -> None:
    meta = sts["metadata"]
    start, replicas = slice_of(sts)
    running = (sts.get("status") or {}).get("replicas") or 0
    where = f"StatefulSet {meta['namespace']}/{meta['name']} in {kube.context}"
    if replicas or running:
        raise refused(
            f"{where} still owns ordinals [{start}, {start + replicas}) ({running} pod(s)): "
            "the clean finish runs once every ordinal runs in the destination"
        )
    holder = (meta.get("annotations") or {}).get(ANNOTATION_LOCK, "")
    if holder and holder != migration_id:
        raise refused(f"{where} is locked by migration {holder!r}: wait for it to end")


def _refuse_pods(kube: Kube, ns: str, name: str, sts: Obj | None) -> None:
    """No pod of the StatefulSet is left in the source (by its selector; by name when
    the StatefulSet is gone)."""
    if sts is not None:
        pods = kube.pods(ns, selector_string(sts))
    else:
        prefix = f"{name}-"
        pods = [
            p
            for p in kube.pods(ns)
            if p["metadata"]["name"].startswith(prefix)
            and p["metadata"]["name"][len(prefix) :].isdigit()
        ]
    if pods:
        names = sorted(p["metadata"]["name"] for p in pods)
        raise refused(
            f"pods {names} of {name} still exist in {kube.context}: the clean finish runs once "
            "the source runs none"
        )


def _fenced(sts: Obj) -> bool:
    meta = sts["metadata"]
    return bool(meta.get("deletionTimestamp")) and FINALIZER_FENCE in (meta.get("finalizers") or [])


def _bound(pv: Obj) -> bool:
    return (pv.get("status") or {}).get("phase") == "Bound"


def _pv(vol: CleanupVolume, side: str) -> str:
    return f"{side} PersistentVolume {vol.volume}"
