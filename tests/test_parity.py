"""The in-memory fakes (tests/support/fakes.py) stand for the worker's real activities,
by wire name.

A workflow calls activities by name. A renamed real activity would leave its fake
registered under the old name, and a new one would leave the fake worker without it:
either way the workflow tests would hang on an activity nobody serves (the retry
policy has no attempt limit) until a ``wait_until`` times out. These checks fail in
milliseconds instead, naming what drifted.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from temporalio import activity

import worker
from tests.support.fakes import FakeClusters, FakeProbes

# Real activities no fake stands for, each with the reason it needs none.
WITHOUT_FAKE = {
    # Runs only when the plan says fix_retention_policy; no fake plan does (the real
    # clusters cover it: tests/cluster/test_migration.py).
    "ensure_retention_policy",
    # DescribeClusters' activity, not the migration's: tests/test_describe_workflow.py
    # fakes it by name there.
    "read_cluster_info",
}


def wire_name(fn: Any) -> str:
    """The name an activity callable is registered under (the SDK reads it the same way)."""
    definition = activity._Definition.from_callable(fn)
    assert definition is not None, f"{fn!r} is not an @activity.defn callable"
    return definition.name


def fake_names() -> list[str]:
    fakes = [*FakeClusters([]).activities(), *FakeProbes().activities()]
    return [wire_name(fn) for fn in fakes]


def worker_names() -> set[str]:
    """What the worker registers (``worker.activities_of``), built without connecting:
    no clusters, no Temporal client (the activities only keep what they are given)."""
    settings = worker.Settings(kubeconfig=Path("/nonexistent/kubeconfig"))
    return {wire_name(fn) for fn in worker.activities_of(None, {}, settings)}  # type: ignore[arg-type]


def test_no_two_fakes_share_a_name() -> None:
    twice = sorted(name for name, n in Counter(fake_names()).items() if n > 1)
    assert not twice, f"fakes registered twice under one name: {twice}"


def test_every_fake_stands_for_an_activity_the_worker_registers() -> None:
    unknown = sorted(set(fake_names()) - worker_names())
    assert not unknown, (
        f"fakes in tests/support/fakes.py under names the worker does not register: "
        f"{unknown}; was a real activity renamed? Name the fake as the worker does: "
        f"{sorted(worker_names())}"
    )


def test_every_activity_the_worker_registers_has_a_fake_or_a_reason() -> None:
    without = worker_names() - set(fake_names())
    new = sorted(without - WITHOUT_FAKE)
    assert not new, (
        f"activities the worker registers with no fake in tests/support/fakes.py: {new}; "
        "add a fake, or add it to WITHOUT_FAKE in tests/test_parity.py saying why"
    )
    stale = sorted(WITHOUT_FAKE - without)
    assert not stale, (
        f"WITHOUT_FAKE in tests/test_parity.py names {stale}, which now have a fake or "
        "are no longer registered by the worker: remove them from it"
    )


def test_the_worker_registers_every_activity_its_classes_define() -> None:
    """worker.activities_of lists the methods one by one: an @activity.defn added to a
    class (or one of MigrationActivities' mixins) and not listed would never be served."""
    from activities.clusters import ClusterActivities
    from activities.health import HealthActivities
    from activities.hooks import HookActivities
    from activities.migration import MigrationActivities
    from activities.temporal import TemporalActivities

    defined = {
        definition.name
        for cls in (
            ClusterActivities,
            MigrationActivities,
            HealthActivities,
            HookActivities,
            TemporalActivities,
        )
        for attribute in dir(cls)
        if (definition := activity._Definition.from_callable(getattr(cls, attribute)))
    }
    assert defined == worker_names(), (
        f"defined but not registered: {sorted(defined - worker_names())}; "
        f"registered but not defined: {sorted(worker_names() - defined)}"
    )
