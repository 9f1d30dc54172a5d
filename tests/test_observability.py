"""The pure parts of metrics and Kubernetes Events: tables of cases, no cluster."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from temporalio.exceptions import ApplicationError

from activities import permissions
from activities.events import MAX_NOTE, REASONS, event_body, reference
from activities.slices import slice_delta
from activities.telemetry import blocked_object, outcome
from contract import (
    ClaimsBoundInput,
    ImportInput,
    OrdinalPlan,
    PodReadyInput,
    PodRef,
    ReleaseClaimsInput,
    RetainInput,
    SliceRef,
    TakeInput,
    migration_of,
    ordinal_workflow_id,
    rollback_workflow_id,
    slice_change,
)
from tests.support.processes import parse_metrics, total
from tests.support.scenarios import request_for
from worker import Settings
from workflows.telemetry import block_reason_of, is_dry_run

MIGRATION = "stsmigrate/source/shop/redis"


@pytest.mark.parametrize(
    ("workflow_id", "migration"),
    [
        (MIGRATION, MIGRATION),
        (ordinal_workflow_id(MIGRATION, 5), MIGRATION),
        (rollback_workflow_id(MIGRATION, 12), MIGRATION),
        ("test-1/ordinal-x", "test-1/ordinal-x"),  # not a child's id: left as it is
        ("stsmigrate/ordinal-3/ns/redis", "stsmigrate/ordinal-3/ns/redis"),
    ],
)
def test_the_migration_of_a_workflow_id(workflow_id: str, migration: str) -> None:
    assert migration_of(workflow_id) == migration


@pytest.mark.parametrize(
    ("before", "after", "given", "taken"),
    [
        ((0, 6), (0, 5), [5], []),  # the source gives up its highest ordinal
        ((6, 0), (5, 1), [], [5]),  # the destination takes it, growing downwards
        ((3, 3), (4, 2), [3], []),  # a rollback: the destination gives its lowest back
        ((0, 3), (0, 4), [], [3]),  # ... and the source takes it
        ((0, 6), (0, 3), [5, 4, 3], []),  # a block of three
        ((2, 2), (2, 2), [], []),  # the slice guard: no change
    ],
)
def test_slice_delta_names_the_ordinals_given_and_taken(
    before: tuple[int, int], after: tuple[int, int], given: list[int], taken: list[int]
) -> None:
    assert slice_delta(before, after) == (given, taken)


def test_an_event_names_the_migration_and_keeps_to_the_apis_limits() -> None:
    sts = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "redis", "namespace": "shop", "uid": "u-1", "labels": {"a": "b"}},
    }
    ref = reference(sts)
    assert ref == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "namespace": "shop",
        "name": "redis",
        "uid": "u-1",
    }
    now = datetime(2026, 12, 1, 10, 0, 0, 123456, tzinfo=UTC)
    body = event_body(ref, "OrdinalGivenUp", "gave up 5", MIGRATION, now, "w" * 300)
    assert body["apiVersion"] == "events.k8s.io/v1" and body["regarding"] == ref
    assert body["reportingController"] == "stsmigrate.dev/worker"
    assert (body["reason"], body["action"], body["type"]) == (
        "OrdinalGivenUp",
        "ScaleDown",
        "Normal",
    )
    assert body["note"] == f"migration {MIGRATION}: gave up 5"
    assert body["eventTime"] == "2026-12-01T10:00:00.123456Z"
    assert body["metadata"]["annotations"] == {"stsmigrate.dev/migration-id": MIGRATION}
    assert body["metadata"]["namespace"] == "shop" and body["metadata"]["name"].startswith("redis.")
    # A second Event about the same object gets a name of its own.
    assert (
        event_body(ref, "OrdinalTaken", "x", MIGRATION, now, "w")["metadata"]["name"]
        != (body["metadata"]["name"])
    )
    long = event_body(ref, "MoveBlocked", "x" * 5000, MIGRATION, now, "w")
    assert len(long["note"]) == MAX_NOTE and long["type"] == "Warning"
    assert all(len(a) <= 128 and t in ("Normal", "Warning") for a, t in REASONS.values())


SRC = SliceRef(context="source", namespace="shop", statefulset="redis")
DST = SliceRef(context="destination", namespace="shop2", statefulset="redis")


def sts(context: str, namespace: str) -> tuple[str, dict[str, str]]:
    return context, {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "namespace": namespace,
        "name": "redis",
    }


def test_a_blocked_step_names_the_object_it_was_changing() -> None:
    request = request_for("redis", "shop", destination_namespace="shop2")
    imports = ImportInput(
        request=request, migration_id=MIGRATION, ordinal=OrdinalPlan(ordinal=1, pod="redis-1")
    )
    claims = {"context": "source", "namespace": "shop", "claims": ["data-redis-1"]}
    claim = (
        "source",
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "namespace": "shop",
            "name": "data-redis-1",
        },
    )
    take = TakeInput(giver=slice_change(SRC, (0, 1)), taker=slice_change(DST, (1, 1), (2, 0)))
    cases = [
        ("set_statefulset_slice", slice_change(SRC, (0, 1), (0, 2)), sts("source", "shop")),
        ("take_ordinal", take, sts("destination", "shop2")),
        (
            "wait_for_pod_ready",
            PodReadyInput(pod=PodRef(ref=DST, ordinal=1)),
            sts("destination", "shop2"),
        ),
        ("import_volumes", imports, sts("destination", "shop2")),
        ("reclaim_volumes", imports, sts("source", "shop")),
        ("release_source_claims", ReleaseClaimsInput(**claims, volumes=["pv-1"]), claim),
        ("wait_for_claims_bound", ClaimsBoundInput(**claims), claim),
        (
            "ensure_volumes_retained",
            RetainInput(context="source", volumes=[], migration_id="m"),
            None,
        ),
    ]
    for activity_type, arg, expected in cases:
        assert blocked_object(activity_type, arg) == expected, activity_type


def test_the_outcome_of_an_attempt() -> None:
    assert outcome(None) == "ok"
    assert outcome(asyncio.CancelledError()) == "cancelled"
    assert outcome(ApplicationError("x", type="WaitTimeout", non_retryable=True)) == "failed"
    assert outcome(ApplicationError("x", type="ApiUnavailable")) == "retried"
    assert outcome(TimeoutError()) == "retried"


@pytest.mark.parametrize(
    ("detail", "reason"),
    [
        ("pod redis-3 not Ready [WaitTimeout; to fix: find out why]", "WaitTimeout"),
        ("create claim: denied [Forbidden; to fix: grant it]", "Forbidden"),
        ("something else", "Unknown"),
    ],
)
def test_a_blocked_steps_reason_is_its_error_type(detail: str, reason: str) -> None:
    assert block_reason_of(detail) == reason


_REQUEST = request_for("redis", "shop")
_JSON = _REQUEST.model_dump(mode="json")


@pytest.mark.parametrize(
    ("argument", "dry"),
    [
        (_REQUEST, False),
        (_REQUEST.model_copy(update={"dry_run": True}), True),
        (_JSON, False),  # raw JSON: a start with the request alone, the CLI's or the UI's
        (_JSON | {"dry_run": True}, True),
        (_JSON | {"dry_run": "true"}, True),  # as lax as the run's own validation
        ({"dry_run": True}, False),  # does not validate: the run fails, as a migration
        (None, False),
    ],
)
def test_a_dry_run_is_read_from_the_model_or_raw_json(argument: object, dry: bool) -> None:
    assert is_dry_run(argument) is dry


def test_events_are_optional_and_granted_in_both_clusters() -> None:
    for side in ("source", "destination"):
        assert permissions.grants(side, "create", "events", "events.k8s.io")
    assert permissions.optional("create", "events", "events.k8s.io")
    assert not permissions.optional("patch", "statefulsets", "apps")


def test_the_metrics_endpoint_settings() -> None:
    base = {"STSMIGRATE_KUBECONFIG": "/nonexistent"}
    assert Settings.from_env(base).metrics_bind == "127.0.0.1:9464"
    assert Settings.from_env({**base, "STSMIGRATE_METRICS_PORT": "0"}).metrics_bind is None
    wide = {**base, "STSMIGRATE_METRICS_ADDRESS": "0.0.0.0", "STSMIGRATE_METRICS_PORT": "9100"}  # noqa: S104
    assert Settings.from_env(wide).metrics_bind == "0.0.0.0:9100"
    v6 = {**base, "STSMIGRATE_METRICS_ADDRESS": "::1"}
    assert Settings.from_env(v6).metrics_bind == "[::1]:9464"


def test_a_scrape_is_parsed_into_samples() -> None:
    text = (
        "# HELP stsmigrate_ordinals_moved_total Ordinals moved\n"
        "# TYPE stsmigrate_ordinals_moved_total counter\n"
        'stsmigrate_ordinals_moved_total{namespace="default",workflow_type="MigrateOrdinal"} 6\n'
        'stsmigrate_step_duration_seconds_count{activity_type="take_ordinal",result="ok"} 3\n'
        'stsmigrate_step_duration_seconds_count{activity_type="take_ordinal",result="failed"} 1\n'
    )
    samples = parse_metrics(text)
    assert total(samples, "stsmigrate_ordinals_moved_total") == 6
    assert (
        total(samples, "stsmigrate_step_duration_seconds_count", activity_type="take_ordinal") == 4
    )
    assert total(samples, "stsmigrate_step_duration_seconds_count", result="ok") == 3
    assert total(samples, "stsmigrate_step_duration") == 0  # a name, not a prefix
