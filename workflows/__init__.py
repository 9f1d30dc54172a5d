"""The workflows of statefulset-migrator (orchestration only; all I/O is in activities)."""

from workflows.describe import DescribeClusters
from workflows.migrate import SLICE_GUARD, MigrateOrdinal, MigrateStatefulSet, RollbackOrdinal

__all__ = [
    "SLICE_GUARD",
    "DescribeClusters",
    "MigrateOrdinal",
    "MigrateStatefulSet",
    "RollbackOrdinal",
]
