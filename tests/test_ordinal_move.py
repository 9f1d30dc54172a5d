"""The slice arithmetic of one hand-over (contract.OrdinalMove), as a table.

A StatefulSet whose ordinals are [s, end) moves highest first: before ordinal k
moves the source owns [s, k] and the destination (k, end); after, the source
[s, k) and the destination [k, end). A rollback of k is the same four slices read
the other way round.
"""

from __future__ import annotations

import pytest

from contract import OrdinalMove, SliceRef, slice_change
from workflows.handover import slice_summary

# (s, k, end): source with k, source without k, destination without k, destination with k
CASES = [
    ((0, 2, 3), (0, 3), (0, 2), (3, 0), (2, 1)),  # the first ordinal to move: nothing there yet
    ((0, 1, 3), (0, 2), (0, 1), (2, 1), (1, 2)),
    ((0, 0, 3), (0, 1), (0, 0), (1, 2), (0, 3)),  # the last one: the source ends empty
    ((0, 0, 1), (0, 1), (0, 0), (1, 0), (0, 1)),  # a single replica
    ((5, 7, 8), (5, 3), (5, 2), (8, 0), (7, 1)),  # a source slice that does not start at 0
    ((5, 5, 8), (5, 1), (5, 0), (6, 2), (5, 3)),
    ((3, 4, 10), (3, 2), (3, 1), (5, 5), (4, 6)),  # stop_at_ordinal left 3 behind; 5..9 moved
]


@pytest.mark.parametrize(
    ("sk_end", "source_with", "source_without", "destination_without", "destination_with"),
    CASES,
    ids=[f"s{c[0][0]}-k{c[0][1]}-end{c[0][2]}" for c in CASES],
)
def test_the_four_slices(
    sk_end: tuple[int, int, int],
    source_with: tuple[int, int],
    source_without: tuple[int, int],
    destination_without: tuple[int, int],
    destination_with: tuple[int, int],
) -> None:
    s, k, end = sk_end
    move = OrdinalMove(source_start=s, ordinal=k, end=end)
    assert move.source_with_k() == source_with
    assert move.source_without_k() == source_without
    assert move.destination_without_k() == destination_without
    assert move.destination_with_k() == destination_with


@pytest.mark.parametrize(("s", "k", "end"), [(0, 2, 3), (5, 7, 8), (3, 4, 10), (0, 0, 1)])
def test_each_side_gains_or_loses_exactly_ordinal_k(s: int, k: int, end: int) -> None:
    move = OrdinalMove(source_start=s, ordinal=k, end=end)

    def owned(slice_: tuple[int, int]) -> set[int]:
        return set(range(slice_[0], slice_[0] + slice_[1]))

    assert owned(move.source_with_k()) - owned(move.source_without_k()) == {k}
    assert owned(move.destination_with_k()) - owned(move.destination_without_k()) == {k}
    # Before and after, every ordinal of [s, end) runs in exactly one cluster.
    before = owned(move.source_with_k()), owned(move.destination_without_k())
    after = owned(move.source_without_k()), owned(move.destination_with_k())
    for source, destination in (before, after):
        assert not source & destination
        assert source | destination == set(range(s, end))


def test_slice_change_and_its_guard() -> None:
    ref = SliceRef(context="src", namespace="shop", statefulset="redis")
    move = OrdinalMove(source_start=5, ordinal=7, end=8)
    give = slice_change(ref, move.source_without_k(), move.source_with_k())
    assert (give.start, give.replicas, give.from_start, give.from_replicas) == (5, 2, 5, 3)
    guard = slice_change(ref, move.source_without_k())  # no change: only checks it still holds
    assert (guard.start, guard.replicas, guard.from_start, guard.from_replicas) == (5, 2, 5, 2)


@pytest.mark.parametrize(
    ("from_", "to", "summary"),
    [
        ((0, 3), (0, 2), "src redis: replicas 3 -> 2"),
        ((3, 0), (2, 1), "src redis: ordinals.start 3 -> 2, replicas 0 -> 1"),
        ((2, 1), (3, 0), "src redis: ordinals.start 2 -> 3, replicas 1 -> 0"),
    ],
)
def test_slice_summary(from_: tuple[int, int], to: tuple[int, int], summary: str) -> None:
    ref = SliceRef(context="src", namespace="shop", statefulset="redis")
    assert slice_summary(ref, from_, to) == summary
