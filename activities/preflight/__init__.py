"""Preflight: read both clusters, check everything a migration needs, build the plan.

Read-only by contract (the activity is ``plan_migration``). Every problem is
collected, each naming the object and the fix, so an operator fixes them all in
one round; the workflow refuses to change anything while any remain.

``plan.build_plan`` runs the ``check_*`` steps of ``access``, ``statefulsets``,
``volumes`` and ``dependencies`` in a fixed order; each records what it finds in
``findings.Findings`` and returns the typed part of the plan it learned.
"""

from __future__ import annotations

from activities.preflight.access import MIN_MINOR, lacking, minor_version
from activities.preflight.dependencies import dependency_names
from activities.preflight.plan import build_plan

__all__ = [
    "MIN_MINOR",
    "build_plan",
    "dependency_names",
    "lacking",
    "minor_version",
]
