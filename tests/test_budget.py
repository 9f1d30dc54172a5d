"""The shared disruption budget's arithmetic and its converging patches (pure
functions; the budgets on real clusters: tests/cluster/test_least_privilege.py)."""

from __future__ import annotations

import json

import pytest

from activities.budget import (
    ORIGINAL,
    _budget_patch,
    allowance,
    check_budget,
    check_pod_management,
    original,
    split,
)
from activities.preflight.findings import Findings


@pytest.mark.parametrize(
    ("spec", "total", "allowed"),
    [
        ({"maxUnavailable": 1}, 6, 1),
        ({"maxUnavailable": "34%"}, 6, 3),  # 2.04 rounds up, as the disruption controller
        ({"minAvailable": 4}, 6, 2),
        ({"minAvailable": "50%"}, 5, 2),  # 2.5 -> 3 must stay available
        ({"minAvailable": 7}, 6, 0),
        ({"maxUnavailable": 0}, 6, 0),
        ({}, 6, 0),
    ],
)
def test_allowance_follows_the_pdb_spec(spec: dict, total: int, allowed: int) -> None:
    assert allowance(spec, total) == allowed


@pytest.mark.parametrize(
    ("allowed", "source", "destination", "shares"),
    [(0, 3, 0, (0, 0)), (2, 6, 0, (2, 0)), (2, 3, 3, (1, 1)), (3, 1, 5, (1, 2)), (2, 0, 6, (0, 2))],
)
def test_split_never_exceeds_the_allowance(
    allowed: int, source: int, destination: int, shares: tuple[int, int]
) -> None:
    assert split(allowed, source, destination) == shares
    assert sum(shares) == allowed


def pdb(spec: dict, saved: dict | None = None) -> dict:
    annotations = {ORIGINAL: json.dumps(saved)} if saved is not None else {}
    return {"metadata": {"name": "db", "annotations": annotations}, "spec": spec}


def test_the_first_share_saves_the_pdbs_own_spec_in_the_same_patch() -> None:
    own = {"minAvailable": 2, "maxUnavailable": None}
    patch = _budget_patch(pdb({"minAvailable": 2}), own, 0)
    assert patch == {
        "metadata": {"annotations": {ORIGINAL: json.dumps(own, sort_keys=True)}},
        "spec": {"minAvailable": None, "maxUnavailable": 0},
    }


def test_share_and_restore_converge() -> None:
    own = {"minAvailable": 2, "maxUnavailable": None}
    shared = pdb({"maxUnavailable": 0}, own)
    assert original(shared) == own  # from the annotation, not the shared spec
    assert _budget_patch(shared, own, 0) is None  # already shared: nothing to write
    restore = _budget_patch(shared, original(shared), None)
    assert restore == {"metadata": {"annotations": {ORIGINAL: None}}, "spec": own}
    assert _budget_patch(pdb({"minAvailable": 2}), own, None) is None  # already restored


def test_preflight_names_a_budget_that_allows_no_disruption() -> None:
    warnings: list[str] = []
    check_budget([pdb({"maxUnavailable": 1}), pdb({"minAvailable": "100%"})], 3, warnings)
    assert warnings == [
        "PodDisruptionBudget db allows no voluntary disruption of the 3 pods, yet each move "
        "takes one pod down (a scale-down is not an eviction); while the app moves, no other "
        "disruption is allowed in either cluster"
    ]


def test_preflight_refuses_a_block_larger_than_the_budget() -> None:
    found = Findings()
    check_budget([pdb({"maxUnavailable": "25%"})], 12, found.warnings, found, 4)
    assert [(p.object, p.message, p.fix) for p in found.problems] == [
        (
            "PodDisruptionBudget db",
            "allows 3 voluntary disruption(s) of the 12 pods, but max_unavailable 4 would "
            "take 4 pods down at once (across both clusters)",
            "set max_unavailable to 3 or less, or loosen the PodDisruptionBudget",
        )
    ]
    # One that allows none refuses any block (a single ordinal is only warned about).
    none = Findings()
    check_budget([pdb({"maxUnavailable": 0})], 3, none.warnings, none, 2)
    assert len(none.problems) == 1 and "allows 0 voluntary" in none.problems[0].message
    single = Findings()
    check_budget([pdb({"maxUnavailable": 0})], 3, single.warnings, single, 1)
    assert single.problems == [] and len(single.warnings) == 1
    within = Findings()
    check_budget([pdb({"minAvailable": 9})], 12, within.warnings, within, 3)
    assert within.problems == [] and within.warnings == []


@pytest.mark.parametrize(
    ("policy", "block", "warned"),
    [(None, 3, True), ("OrderedReady", 2, True), ("Parallel", 3, False), (None, 1, False)],
)
def test_preflight_says_what_ordered_ready_means_for_a_block(
    policy: str | None, block: int, warned: bool
) -> None:
    warnings: list[str] = []
    spec = {} if policy is None else {"podManagementPolicy": policy}
    check_pod_management({"spec": spec}, block, warnings)
    assert bool(warnings) == warned
    if warned:
        assert warnings[0].startswith(
            f"podManagementPolicy is OrderedReady: with max_unavailable {block}"
        )


def test_preflight_says_an_approval_of_each_ordinal_moves_each_alone() -> None:
    warnings: list[str] = []
    check_pod_management({"spec": {"podManagementPolicy": "Parallel"}}, 4, warnings, "each")
    assert warnings == [
        "approval is each: with max_unavailable 4 every ordinal is still approved and moved "
        "on its own (an ordinal held for approval moves alone)"
    ]
