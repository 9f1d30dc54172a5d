"""Kubernetes Events (``events.k8s.io/v1``) on the objects a migration changes, so that
``kubectl describe`` and ``kubectl events`` show the move in both clusters.

Each activity that makes a change (a slice given up or taken, a claim released,
imported or reclaimed, the destination StatefulSet created, the lock taken or freed)
or that ends a wait an operator cares about (pod k Ready, the health gates) writes
one Event about the object it changed, naming the migration. A step that cannot go
on gets a ``MoveBlocked`` Warning from the worker's interceptor
(activities/telemetry.py).

Best effort, by contract: Events are supplemental data. An Event that cannot be
written (403: the worker may not create Events there; 5xx; a timeout) is logged
as a warning and never fails, slows or retries a step. ``REASONS`` is the one list
of what we write (README, "Kubernetes Events").
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import UTC, datetime

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.kube import Kube, Obj
from activities.manifests import migration_label
from contract import ANNOTATION_MIGRATION_ID, LABEL_MIGRATION, MANAGED_BY, migration_of

log = structlog.get_logger("activities.events")

REPORTING_CONTROLLER = "stsmigrate.dev/worker"
# The API's limits (events.k8s.io/v1 validation).
MAX_NOTE = 1024
MAX_FIELD = 128

# reason -> (action, type): every Event the worker writes.
REASONS: dict[str, tuple[str, str]] = {
    "MigrationStarted": ("Lock", "Normal"),  # source StatefulSet locked by the migration
    "MigrationFinished": ("Unlock", "Normal"),  # ... and unlocked at its end
    "StatefulSetCreated": ("Create", "Normal"),  # the destination's empty slice
    "OrdinalGivenUp": ("ScaleDown", "Normal"),  # the giver's slice without k
    "OrdinalTaken": ("ScaleUp", "Normal"),  # the taker's slice with k
    "TakeReverted": ("Revert", "Warning"),  # the giver grew meanwhile: k given back at once
    "ClaimReleased": ("Release", "Normal"),  # the giver's claim of k deleted (Retain), fenced
    "VolumeImported": ("Import", "Normal"),  # the destination's claim on the moved volume
    "VolumeReclaimed": ("Reclaim", "Normal"),  # the source's claim on its volume again
    "OrdinalReady": ("WaitReady", "Normal"),  # pod k Running and Ready on the taker
    "HealthGatePassed": ("Probe", "Normal"),
    "HealthGateFailed": ("Probe", "Warning"),
    "MoveBlocked": ("Block", "Warning"),  # a step cannot go on: the run pauses
    "SourceFenced": ("Fence", "Normal"),  # the clean finish: the source deleted and held
    "SourceVolumesRemoved": ("Remove", "Normal"),  # ... its Released PV objects removed
    "ReclaimPolicyRestored": ("Restore", "Normal"),  # ... a destination PV's policy back
}


def reporting_instance() -> str:
    """Which worker wrote it: the pod's name in a cluster (the chart sets POD_NAME)."""
    return (os.environ.get("POD_NAME") or socket.gethostname())[:MAX_FIELD]


def current_migration() -> str:
    """The migration of the running activity (its workflow, or that workflow's parent)."""
    return migration_of(activity.info().workflow_id or "") if activity.in_activity() else ""


def reference(obj: Obj) -> Obj:
    """An ObjectReference to ``obj`` as the API returned it (with its uid: kubectl
    describe selects Events by the object's uid)."""
    meta = obj.get("metadata") or {}
    ref = {
        "apiVersion": obj.get("apiVersion", ""),
        "kind": obj.get("kind", ""),
        "namespace": meta.get("namespace", ""),
        "name": meta.get("name", ""),
    }
    if meta.get("uid"):
        ref["uid"] = meta["uid"]
    return ref


def event_body(
    regarding: Obj, reason: str, note: str, migration_id: str, now: datetime, instance: str
) -> Obj:
    """The Event (pure): ``regarding`` is an ObjectReference; the note names the
    migration and is cut to the API's 1 kB."""
    action, kind = REASONS[reason]
    meta: Obj = {
        "name": f"{regarding['name'][:200]}.{uuid.uuid4().hex[:16]}",
        "namespace": regarding["namespace"],
        "labels": {"app.kubernetes.io/managed-by": MANAGED_BY},
        "annotations": {ANNOTATION_MIGRATION_ID: migration_id},
    }
    if migration_id:
        meta["labels"][LABEL_MIGRATION] = migration_label(migration_id)
    text = f"migration {migration_id}: {note}" if migration_id else note
    return {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": meta,
        "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "reportingController": REPORTING_CONTROLLER,
        "reportingInstance": instance,
        "action": action,
        "reason": reason,
        "type": kind,
        "note": text if len(text) <= MAX_NOTE else text[: MAX_NOTE - 3] + "...",
        "regarding": regarding,
    }


def record(
    kube: Kube, regarding: Obj, reason: str, note: str, migration_id: str | None = None
) -> bool:
    """Write one Event about ``regarding`` (an object as the API returned it, or an
    ObjectReference), naming ``migration_id`` (by default the running activity's);
    False, with a warning logged, if it could not be written."""
    ref = regarding if "metadata" not in regarding else reference(regarding)
    migration = current_migration() if migration_id is None else migration_id
    try:
        body = event_body(ref, reason, note, migration, datetime.now(UTC), reporting_instance())
        kube.create_event(ref["namespace"], body)
    except ApplicationError as err:  # classified: its message is the API's, cleaned
        log.warning(
            "event_not_written",
            context=kube.context,
            reason=reason,
            regarding=f"{ref['kind']} {ref['namespace']}/{ref['name']}",
            error=err.type,
            message=err.message,
        )
        return False
    except Exception as err:  # never fails the step, whatever it is
        log.warning(
            "event_not_written",
            context=kube.context,
            reason=reason,
            regarding=f"{ref['kind']} {ref['namespace']}/{ref['name']}",
            error=type(err).__name__,
        )
        return False
    return True


def record_about_statefulset(
    kube: Kube, namespace: str, name: str, reason: str, note: str, migration_id: str | None = None
) -> bool:
    """An Event about a StatefulSet the activity did not read (read now for its uid; a
    StatefulSet that cannot be read gets its Event by name)."""
    try:
        sts = kube.statefulset(namespace, name)
    except Exception:  # best effort: the Event by name only
        sts = None
    return record(kube, sts or statefulset_reference(namespace, name), reason, note, migration_id)


def statefulset_reference(namespace: str, name: str) -> Obj:
    """A StatefulSet by name (no uid: ``kubectl events --for`` finds it, describe not)."""
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "namespace": namespace, "name": name}
