"""Names every layer shares: the task queue, search attributes, labels and workflow ids.

Stdlib only: kept apart so the other contract modules, the workflows and the CLI
agree on one spelling of each name that crosses a process."""

from __future__ import annotations

import re

TASK_QUEUE = "statefulset-migration"


def waits_queue(task_queue: str) -> str:
    """The task queue of the long steps (watch-based waits, health gates, preflight)
    of the workflows on ``task_queue``: the worker serves both, each with slots of its
    own, so a step of one API round trip never queues behind waits (worker.py)."""
    return f"{task_queue}-waits"


# Custom search attributes a migration keeps current (name -> Temporal type). A dev
# server gets them from devenv; production: `temporal operator search-attribute create`.
SEARCH_ATTRIBUTES: dict[str, str] = {
    "StsmigrateStatefulSet": "Keyword",
    "StsmigrateNamespace": "Keyword",
    "StsmigrateSourceContext": "Keyword",
    "StsmigrateDestinationContext": "Keyword",
    "StsmigratePhase": "Keyword",
    "StsmigrateOrdinal": "Int",
}


# Signals a child sends its parent (MigrateOrdinal to MigrateStatefulSet); ``stsmigrate
# describe`` reads the block reports back from the parent's history.
ORDINAL_STEP = "ordinal_step"  # the step the child is in, for the parent's progress
ORDINAL_BLOCKED = "ordinal_blocked"  # a step is blocked: the parent pauses with the reason

MANAGED_BY = "statefulset-migrator"
LABEL_MIGRATION = "stsmigrate.dev/migration"  # short hash of the migration id (label-safe)
LABEL_ORDINAL = "stsmigrate.dev/ordinal"
ANNOTATION_MIGRATION_ID = "stsmigrate.dev/migration-id"
ANNOTATION_SOURCE = "stsmigrate.dev/source"  # "<context>/<namespace>/<name>"
# On the source StatefulSet while a migration runs: the id of the one that may change it.
ANNOTATION_LOCK = "stsmigrate.dev/locked-by"
# On a fence claim: a claim left in place of a released one, pre-bound to its volume.
LABEL_FENCE = "stsmigrate.dev/fence"


def ordinal_workflow_id(migration_id: str, ordinal: int) -> str:
    """The child that moves ordinal k (deterministic, so a retry finds it)."""
    return f"{migration_id}/ordinal-{ordinal}"


def rollback_workflow_id(migration_id: str, ordinal: int) -> str:
    """The child that gives ordinal k back to the source."""
    return f"{migration_id}/rollback-{ordinal}"


def cleanup_workflow_id(migration_id: str) -> str:
    """The clean finish of a migration (a child of its last run, or started by
    ``stsmigrate cleanup``)."""
    return f"{migration_id}/cleanup"


# The empty source StatefulSet's fence: deleted, held by this finalizer, so nothing can
# create it again (a GitOps sync only patches it) and its controller creates no pod.
FINALIZER_FENCE = "stsmigrate.dev/fence"
ANNOTATION_MOVED_TO = "stsmigrate.dev/moved-to"  # "<context>/<namespace>/<name>"

_CHILD_SUFFIX = re.compile(r"/(?:(?:ordinal|rollback)-\d+|cleanup)$")


def migration_of(workflow_id: str) -> str:
    """The migration id of a MigrateStatefulSet run or of one of its children (whose
    ids are ``ordinal_workflow_id``, ``rollback_workflow_id`` and
    ``cleanup_workflow_id``)."""
    return _CHILD_SUFFIX.sub("", workflow_id)
