"""StatefulSet activities: the destination StatefulSet, the retention policy, the
slice of ordinals each side owns, the guarded take of one ordinal, and the
one-migration-per-StatefulSet lock (contract: ``activities.converging``)."""

from __future__ import annotations

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import events, manifests
from activities.converging import ConvergingActivities, conflict
from activities.kube import Kube, Obj, slice_of
from contract import (
    ANNOTATION_LOCK,
    EnsureDestinationInput,
    LockInput,
    SetSliceInput,
    SliceRef,
    StatefulSetState,
    TakeInput,
)
from contract.errors import CONFLICT, CONFLICTING_CHANGE, INVALID, TEMPLATE_CHANGED

# One logger for every migration activity, as before the split: its name is in each
# JSON log line.
log = structlog.get_logger("activities.migration")
# How often a take's revert reads the taker again after a 409, before Temporal retries.
REVERT_ATTEMPTS = 5


def _state(sts: Obj | None) -> StatefulSetState:
    if sts is None:
        return StatefulSetState(exists=False)
    start, replicas = slice_of(sts)
    ready = int((sts.get("status") or {}).get("readyReplicas") or 0)
    return StatefulSetState(exists=True, start=start, replicas=replicas, ready_replicas=ready)


def _check_template_pinned(body: Obj, request: EnsureDestinationInput) -> None:
    """The destination StatefulSet is created only with the pod template preflight
    checked (``Plan.destination_template_digest``): the source is read again here, maybe
    long after preflight (a pause asked meanwhile, a worker down), and a template
    changed since would make pods the dry runs, the quota and the scheduling checks
    never saw. Refused before
    anything is created: nothing has moved yet, so the run ends and a new one plans
    again (I6)."""
    if not request.template_digest:
        return  # a plan made before the digest existed
    now = manifests.template_digest((body.get("spec") or {}).get("template") or {})
    if now == request.template_digest:
        return
    r = request.request
    raise ApplicationError(
        f"the pod template of source StatefulSet {r.namespace}/{r.statefulset} in "
        f"{r.source_context} changed since preflight (sha256 {now[:12]}, preflight checked "
        f"{request.template_digest[:12]}): the destination StatefulSet would be made from "
        "another template than the plan showed and the dry runs checked, so it was not "
        "created and no ordinal moved; start the migration again so preflight checks the "
        "template as it is now",
        type=TEMPLATE_CHANGED,
        non_retryable=True,
    )


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
        try:
            body = manifests.destination_statefulset(sts, r, request.migration_id, request.start)
        except manifests.OverrideRefused as e:
            # Preflight applied them to the same template; the source's changed since.
            raise ApplicationError(str(e), type=INVALID, non_retryable=True) from None
        _check_template_pinned(body, request)
        created = dest.create("StatefulSet", r.target_namespace, body)
        if created is None:  # created meanwhile by a previous attempt of ours
            created = dest.statefulset(r.target_namespace, r.statefulset)
        else:
            events.record(
                dest,
                created,
                "StatefulSetCreated",
                f"created as an empty slice at ordinal {request.start}, to take the ordinals "
                f"of {r.source_context}/{r.namespace}/{r.statefulset} one by one",
            )
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
        return _converge_slice(self.kube(request.ref.context), request)

    @activity.defn
    def take_ordinal(self, request: TakeInput) -> StatefulSetState:
        """The taker takes ordinal k only while the giver owns exactly its slice without
        k (review finding 7): the giver is read, the taker changed, and the giver read
        again, in one activity. A giver that grew in between (a GitOps sync or an
        autoscaler putting replicas back) gets the take reverted at once, long before
        the taker's pod k could be scheduled, so k never runs in both clusters (I1).

        Idempotent: on a retry with the taker already at its target and the giver
        unchanged, nothing is written; with the giver grown, the take is reverted."""
        giver, taker = request.giver, request.taker
        gkube, tkube = self.kube(giver.ref.context), self.kube(taker.ref.context)
        k = _taken(taker)
        left = (giver.start, giver.replicas)
        before = _read_slice(gkube, giver.ref)
        if before != left:
            taker_now = _read_slice(tkube, taker.ref)
            taken = "nothing was taken"
            if taker_now == (taker.start, taker.replicas):
                # An earlier attempt of ours took k, then died before it saw the giver grow.
                self._revert_take(tkube, taker, k, _span(before))
                taker_now, taken = (taker.from_start, taker.from_replicas), "the take was reverted"
            raise conflict(
                f"{_where(giver.ref)} owns {_span(before)} but taking ordinal {k} needs it to "
                f"own exactly {_span(left)}: somebody else changed it; {taken} "
                f"({_where(taker.ref)} owns {_span(taker_now)})"
            )
        state = _converge_slice(tkube, taker)
        after = _read_slice(gkube, giver.ref)
        if after != left:
            self._revert_take(tkube, taker, k, _span(after))
            raise conflict(
                f"{_where(giver.ref)} grew to {_span(after)} while ordinal {k} was being "
                f"taken; the take was reverted ({_where(taker.ref)} owns "
                f"{_span((taker.from_start, taker.from_replicas))} again): somebody else "
                f"scaled it; bring it back to {_span(left)}, then resume"
            )
        log.info(
            "ordinal_taken",
            context=taker.ref.context,
            statefulset=taker.ref.statefulset,
            ordinal=k,
            giver=giver.ref.context,
        )
        return state

    @staticmethod
    def _revert_take(kube: Kube, taker: SetSliceInput, k: int, giver: str) -> None:
        """The taker back to its slice without k (from its slice with k; a third state
        is refused as a conflicting change)."""
        back = SetSliceInput(
            ref=taker.ref,
            start=taker.from_start,
            replicas=taker.from_replicas,
            from_start=taker.start,
            from_replicas=taker.replicas,
        )
        # Not left to Temporal's retry backoff: while the taker owns k its pod k may be
        # starting. The StatefulSet controller's status writes (the take itself made
        # some) change the resourceVersion, so a 409 here is read again at once; a
        # third state is still refused by _converge_slice.
        for attempt in range(REVERT_ATTEMPTS):
            try:
                _converge_slice(kube, back, reverted=True)
                break
            except ApplicationError as err:
                if err.type != CONFLICT or attempt == REVERT_ATTEMPTS - 1:
                    raise
        log.warning(
            "take_reverted",
            context=taker.ref.context,
            statefulset=taker.ref.statefulset,
            ordinal=k,
            giver_owns=giver,
        )

    @activity.defn
    def lock_statefulset(self, request: LockInput) -> None:
        """Annotate the StatefulSet with the migration that may change it (review finding
        25): the first migration takes the lock, the same one again finds it held,
        another one is refused (``ConflictingChange``) naming the holder."""
        ref = request.ref
        kube = self.kube(ref.context)
        sts = kube.statefulset(ref.namespace, ref.statefulset)
        if sts is None:
            raise conflict(f"{_where(ref)} is missing; nothing to lock")
        holder = _lock_holder(sts)
        if holder == request.migration_id:
            return
        if holder:
            raise ApplicationError(
                f"{_where(ref)} is locked by migration {holder!r}: one migration at a time "
                f"may change it. Wait for that migration to end; if it has ended and left "
                f"the lock behind, clear it: kubectl --context {ref.context} -n "
                f"{ref.namespace} annotate statefulset {ref.statefulset} {ANNOTATION_LOCK}-",
                type=CONFLICTING_CHANGE,
                non_retryable=True,
            )
        locked = kube.patch_statefulset(
            ref.namespace,
            ref.statefulset,
            # Two migrations locking at once: the second patch is a 409, and its retry
            # reads the first one's lock.
            {
                "metadata": {
                    "resourceVersion": sts["metadata"]["resourceVersion"],
                    "annotations": {ANNOTATION_LOCK: request.migration_id},
                }
            },
        )
        events.record(
            kube,
            locked,
            "MigrationStarted",
            f"locked ({ANNOTATION_LOCK}): no other migration may change it until this one ends",
        )
        log.info("statefulset_locked", context=ref.context, statefulset=ref.statefulset)

    @activity.defn
    def unlock_statefulset(self, request: LockInput) -> None:
        """Remove the lock, only if it names this migration (another one's lock, or a
        StatefulSet that is gone, is left as it is)."""
        ref = request.ref
        kube = self.kube(ref.context)
        sts = kube.statefulset(ref.namespace, ref.statefulset)
        if sts is None or _lock_holder(sts) != request.migration_id:
            return
        unlocked = kube.patch_statefulset(
            ref.namespace,
            ref.statefulset,
            {
                "metadata": {
                    "resourceVersion": sts["metadata"]["resourceVersion"],
                    "annotations": {ANNOTATION_LOCK: None},
                }
            },
        )
        events.record(kube, unlocked, "MigrationFinished", "the migration ended; unlocked")
        log.info("statefulset_unlocked", context=ref.context, statefulset=ref.statefulset)


def _where(ref: SliceRef) -> str:
    return f"StatefulSet {ref.namespace}/{ref.statefulset} in {ref.context}"


def _span(slice_: tuple[int, int] | None) -> str:
    if slice_ is None:
        return "nothing (it is missing)"
    return f"[{slice_[0]}, {slice_[0] + slice_[1]})"


def _read_slice(kube: Kube, ref: SliceRef) -> tuple[int, int] | None:
    sts = kube.statefulset(ref.namespace, ref.statefulset)
    return None if sts is None else slice_of(sts)


def _taken(taker: SetSliceInput) -> int:
    """The ordinal the taker gains: k is at the low end when the taker grows downwards
    (a destination), at the high end when it grows upwards (a source in a rollback)."""
    if taker.start < taker.from_start:
        return taker.start
    return taker.start + taker.replicas - 1


def _lock_holder(sts: Obj) -> str:
    return str(((sts.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_LOCK) or "")


def _converge_slice(kube: Kube, request: SetSliceInput, reverted: bool = False) -> StatefulSetState:
    """Converge a StatefulSet to ``request``'s slice from its expected one; a third state
    is refused as a conflicting change. A change made gets its Event (``reverted``: the
    undo of a take)."""
    ref = request.ref
    sts = kube.statefulset(ref.namespace, ref.statefulset)
    if sts is None:
        raise conflict(f"StatefulSet {ref.namespace}/{ref.statefulset} is missing in {ref.context}")
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
    given, taken = slice_delta(current, target)
    if reverted:
        reason = "TakeReverted"
        note = f"gave ordinal(s) {_ordinals(given)} back at once: the other side grew meanwhile"
    elif given:
        reason = "OrdinalGivenUp"
        note = f"gave up ordinal(s) {_ordinals(given)} to the other cluster"
    else:
        reason, note = "OrdinalTaken", f"took ordinal(s) {_ordinals(taken)}"
    events.record(kube, updated, reason, f"{note}: owns {_span(target)}, was {_span(current)}")
    return _state(updated)


def slice_delta(before: tuple[int, int], after: tuple[int, int]) -> tuple[list[int], list[int]]:
    """(ordinals given up, ordinals taken) from slice ``before`` to ``after`` ((start,
    replicas) pairs), highest first."""
    old = set(range(before[0], before[0] + before[1]))
    new = set(range(after[0], after[0] + after[1]))
    return sorted(old - new, reverse=True), sorted(new - old, reverse=True)


def _ordinals(ordinals: list[int]) -> str:
    return ", ".join(map(str, ordinals)) or "none"
