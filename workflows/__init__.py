"""The workflows of statefulset-migrator: orchestration only, no I/O.

- migrate_statefulset.py  MigrateStatefulSet, the whole migration (the parent)
- safe_points.py          pause, approval and rollback between ordinals; the children
- operator_messages.py    pause, resume, approve, abort, set_approval, rollback
- progress.py             the progress query, the UI's details, search attributes
- handover.py             the hand-over of one ordinal from a giver to a taker
- migrate_ordinal.py      MigrateOrdinal: source gives k, destination takes it
- rollback_ordinal.py     RollbackOrdinal: destination gives k back to the source
- options.py              activity options and patch ids
- cleanup.py              CleanupMigration, the clean finish of a migration
- describe.py             DescribeClusters, the wiring check

docs/design.md has the procedure and the invariants I1..I6 the code cites. Every
module here is deterministic: it reads time and randomness only through
``workflow``, imports activities and the contract inside
``workflow.unsafe.imports_passed_through()``, and changes the commands a running
workflow issues only behind ``workflow.patched`` (tests/histories/ replay).
"""

from workflows.cleanup import CleanupMigration
from workflows.describe import DescribeClusters
from workflows.migrate_ordinal import MigrateOrdinal
from workflows.migrate_statefulset import MigrateStatefulSet
from workflows.options import PATCHES, SLICE_GUARD
from workflows.rollback_ordinal import RollbackOrdinal

__all__ = [
    "PATCHES",
    "SLICE_GUARD",
    "CleanupMigration",
    "DescribeClusters",
    "MigrateOrdinal",
    "MigrateStatefulSet",
    "RollbackOrdinal",
]
