"""Never half-moved (docs/design.md, invariant I4; issue 14) on the real clusters: a
cancel through the Temporal CLI at every step of an ordinal and between ordinals, a
terminated parent whose child finishes the move, real non-retryable API errors after
the point of no return (a ValidatingAdmissionPolicy's 403 and 422, a full
ResourceQuota) that pause the run until resumed, the undo of a blocked ordinal at each
stage, a GitOps-like writer scaling the source back up after its claims were released
(the fences keep its pod Pending), a second migration of a locked StatefulSet, and a
request with nothing to move.

Each run is judged by the independent observer and by reading both clusters: every
ordinal wholly in one cluster, Ready, on its own volumes (the same PV names), never two
pods of one identity. The default suite runs one scenario of each kind; the rest are
marked ``faults`` and ``slow`` (``make faults``), each adding a row to the table.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from contract import ANNOTATION_LOCK, LABEL_FENCE, ApprovalPolicy, Progress, WaitTimeouts
from stsmigrate.api import Migration, start_migration
from tests.support.apps import deploy_app
from tests.support.blockers import (
    ClaimPolicy,
    full_claim_quota,
    hold_pod,
    release_pod,
    wait_claim_create,
)
from tests.support.cluster_state import pod_names, snapshot
from tests.support.commands import temporal_cli
from tests.support.faults import FaultTable
from tests.support.histories import histories, record
from tests.support.processes import WorkerProcess
from tests.support.scenarios import STEPS, TEMPLATES, TIMEOUTS, observing, request_for
from tests.support.waits import wait_for

pytestmark = pytest.mark.cluster

NAME = "app"
SOURCE_ONLY = {"1": "source", "0": "source"}
ONE_MOVED = {"1": "destination", "0": "source"}


def address(env: WorkflowEnvironment) -> str:
    return env.client.service_client.config.target_host


async def cli(env: WorkflowEnvironment, *args: str) -> Any:
    return json.loads(await temporal_cli(address(env), "workflow", *args) or "null")


async def status_of(env: WorkflowEnvironment, workflow_id: str) -> str:
    """The execution status the Temporal CLI describes, e.g. ``CANCELED``."""
    described = await cli(env, "describe", "--workflow-id", workflow_id)
    return str(described["workflowExecutionInfo"]["status"]).removeprefix(
        "WORKFLOW_EXECUTION_STATUS_"
    )


def volumes_of(api: client.ApiClient, namespace: str, replicas: int) -> dict[str, str]:
    """Claim -> the PV it is bound to, for every ordinal (read before the run)."""
    core = client.CoreV1Api(api)
    out = {}
    for k in range(replicas):
        for t in TEMPLATES:
            pvc: Any = core.read_namespaced_persistent_volume_claim(f"{t}-{NAME}-{k}", namespace)
            assert pvc.status.phase == "Bound"
            out[pvc.metadata.name] = pvc.spec.volume_name
    return out


def _ready(pod: Any) -> bool:
    return pod.metadata.deletion_timestamp is None and any(
        c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []
    )


def whole(kube: dict[str, client.ApiClient], namespace: str, volumes: dict[str, str]) -> dict:
    """Read both clusters: every ordinal owned by exactly one StatefulSet, its pod there
    only, Running and Ready, its claims Bound there to its original volumes (the same PV
    names) and none of them Bound in the other cluster. The placement it found."""
    owned: dict[str, set[int]] = {}
    pods: dict[str, dict[str, Any]] = {}
    claims: dict[str, dict[str, Any]] = {}
    for side, api in kube.items():
        sts: Any = client.AppsV1Api(api).read_namespaced_stateful_set(NAME, namespace)
        start = sts.spec.ordinals.start if sts.spec.ordinals else 0
        owned[side] = set(range(start, start + sts.spec.replicas))
        core = client.CoreV1Api(api)
        pods[side] = {p.metadata.name: p for p in core.list_namespaced_pod(namespace).items}
        claims[side] = {
            c.metadata.name: c
            for c in core.list_namespaced_persistent_volume_claim(namespace).items
        }
    where: dict[str, str] = {}
    ordinals = sorted({int(c.rsplit("-", 1)[1]) for c in volumes}, reverse=True)
    for k in ordinals:
        sides = [side for side in kube if k in owned[side]]
        assert len(sides) == 1, f"ordinal {k} owned by {sides}"
        (side,) = sides
        other = "destination" if side == "source" else "source"
        pod = f"{NAME}-{k}"
        assert pod in pods[side] and _ready(pods[side][pod]), f"{pod} not Ready in {side}"
        assert pod not in pods[other], f"{pod} also in {other}"
        for t in TEMPLATES:
            claim = f"{t}-{NAME}-{k}"
            here = claims[side].get(claim)
            assert here is not None and here.status.phase == "Bound", f"{claim} in {side}"
            assert here.spec.volume_name == volumes[claim], f"{claim} on another volume"
            there = claims[other].get(claim)
            assert there is None or there.status.phase != "Bound", f"{claim} Bound in {other}"
        where[str(k)] = side
    return where


def locked_by(api: client.ApiClient, namespace: str) -> str | None:
    sts: Any = client.AppsV1Api(api).read_namespaced_stateful_set(NAME, namespace)
    return (sts.metadata.annotations or {}).get(ANNOTATION_LOCK)


def at_or_after(ordinal: int, step: str) -> Callable[[Progress], bool]:
    """The migration reports ``step`` of ``ordinal`` or a later one (a short step can
    begin and end between two looks), or has finished that ordinal."""

    def check(p: Progress) -> bool:
        if any(r.ordinal == ordinal for r in p.finished):
            return True
        return (
            p.current_ordinal == ordinal
            and p.step in STEPS
            and STEPS.index(p.step) >= STEPS.index(step)
        )

    return check


async def closed(migration: Migration, within: float = 240) -> WorkflowFailureError:
    """Wait for a run that must not complete normally; its failure."""
    with pytest.raises(WorkflowFailureError) as raised:
        await asyncio.wait_for(migration.result(), within)
    return raised.value


# -- 1. cancel through the Temporal CLI -------------------------------------------------------

# Where the cancel strikes, and where ordinal 1 must end: before the ordinal's safe point
# it stays in the source; from the first change on it finishes its move.
MOVE_POINTS = [s for s in STEPS if s != "slices_healthy"]
CANCEL_POINTS = [
    pytest.param("source_pod_gone", id="source_pod_gone"),
    *(
        pytest.param(p, id=p, marks=pytest.mark.slow)
        for p in [
            "awaiting_approval",
            "slices_healthy",
            *(s for s in MOVE_POINTS if s != "source_pod_gone"),
            "between_ordinals",
        ]
    ),
]


@pytest.mark.faults
@pytest.mark.timeout(400)
@pytest.mark.parametrize("point", CANCEL_POINTS)
async def test_cancel_through_the_cli_leaves_every_ordinal_whole(
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    worker: WorkerProcess,
    namespace: str,
    fault_table: FaultTable,
    point: str,
) -> None:
    """``temporal workflow cancel`` at ``point`` of ordinal 1 (pods stop in 3 s and get
    Ready in 3 s, so the waits are long enough to strike inside): the run ends CANCELED,
    the progress says cancelled and where each ordinal runs, and the clusters agree."""
    src = kube["source"]
    deploy_app(src, namespace, NAME, 2, secret_value="x", ready_delay="3s", grace=3)
    volumes = volumes_of(src, namespace, 2)
    approval = ApprovalPolicy(
        mode="first" if point in ("awaiting_approval", "slices_healthy") else "none"
    )
    expected = SOURCE_ONLY if point in ("awaiting_approval", "slices_healthy") else ONE_MOVED
    with observing(kube, namespace, namespace, NAME) as observer:
        migration = await start_migration(
            temporal_env.client,
            request_for(NAME, namespace, approval=approval),
            migration_id=f"cancel-{point.replace('_', '-')}-{uuid.uuid4().hex[:6]}",
            task_queue=worker.task_queue,
        )
        if point in ("awaiting_approval", "slices_healthy"):
            seen = await migration.wait_until(
                lambda p: p.phase == "awaiting_approval", within=60, poll=0.1
            )
            assert seen.waiting_for_approval == 1
            if point == "slices_healthy":
                # Pod 0 restarts: once its replacement is there (3 s to get Ready),
                # ordinal 1's health wait holds, and the cancel strikes inside it. (A
                # pod that is only terminating still counts as Ready: its condition is.)
                core = client.CoreV1Api(src)
                old: Any = core.read_namespaced_pod(f"{NAME}-0", namespace)
                core.delete_namespaced_pod(f"{NAME}-0", namespace)
                wait_for(
                    lambda: any(
                        p.metadata.name == f"{NAME}-0" and p.metadata.uid != old.metadata.uid
                        for p in core.list_namespaced_pod(namespace).items
                    ),
                    30,
                    "pod 0 replaced",
                )
                await migration.approve(1)
                seen = await migration.wait_until(
                    lambda p: p.step == "slices_healthy", within=30, poll=0.05
                )
                assert f"{NAME}-0" not in ready_pod_names(src, namespace)
        elif point == "between_ordinals":
            await migration.wait_until(at_or_after(1, "destination_pod_ready"), within=90)
            await migration.pause("hold between ordinals")
            seen = await migration.wait_until(
                lambda p: p.phase == "paused" and p.current_ordinal == 0, within=90
            )
            assert [r.ordinal for r in seen.finished] == [1]
        else:
            seen = await migration.wait_until(at_or_after(1, point), within=90, poll=0.03)
        struck = f"{seen.current_ordinal}/{seen.step or seen.phase}"
        await cli(temporal_env, "cancel", "--workflow-id", migration.id)
        failure = await closed(migration)
    status = await status_of(temporal_env, migration.id)
    progress = await migration.progress()  # a closed workflow still answers it
    if point == "slices_healthy":  # the pod this test restarted: Ready again by itself
        wait_for(lambda: f"{NAME}-0" in ready_pod_names(src, namespace), 30, "pod 0 Ready")
    violations = observer.verdict(
        [1] if expected == ONE_MOVED else [],
        (0, 1) if expected == ONE_MOVED else (0, 2),
        (1, 1) if expected == ONE_MOVED else (2, 0),
    )
    found = whole(kube, namespace, volumes)
    ok = (
        status == "CANCELED"
        and progress.phase == "cancelled"
        and progress.placement == expected == found
    )
    fault_table.add(f"cancel_at_{point}", 1, ok, len(violations))
    print(f"cancel at {point}: struck {struck}; {status}; {progress.placement}")
    assert violations == [], violations
    assert status == "CANCELED", (status, failure)
    assert progress.phase == "cancelled", progress
    assert progress.placement == expected == found, (struck, progress.placement, found)
    assert locked_by(src, namespace) is None  # the lock is cleared at the end
    if point not in ("awaiting_approval", "slices_healthy", "between_ordinals"):
        # Struck inside ordinal 1's move (not after it): the cancel met it mid-move.
        assert seen.current_ordinal == 1 and seen.step in MOVE_POINTS, struck
    if point == "source_pod_gone":
        found_histories = await histories(temporal_env, migration.id)
        record("cluster_never_half_moved_cancel_parent", found_histories[0])
        record("cluster_never_half_moved_cancel_ordinal_1", found_histories[1])


def ready_pod_names(api: client.ApiClient, namespace: str) -> set[str]:
    return {
        p.metadata.name
        for p in client.CoreV1Api(api).list_namespaced_pod(namespace).items
        if _ready(p)
    }


# -- 2. terminate the parent mid-move ---------------------------------------------------------


@pytest.mark.faults
@pytest.mark.slow  # tests/test_undo.py proves the same ordering on every run
@pytest.mark.timeout(300)
async def test_terminated_parent_leaves_the_child_to_finish_the_move(
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    worker: WorkerProcess,
    namespace: str,
    fault_table: FaultTable,
) -> None:
    src = kube["source"]
    deploy_app(src, namespace, NAME, 2, secret_value="x", ready_delay="1s", grace=3)
    volumes = volumes_of(src, namespace, 2)
    with observing(kube, namespace, namespace, NAME) as observer:
        migration = await start_migration(
            temporal_env.client,
            request_for(NAME, namespace),
            migration_id=f"terminate-{uuid.uuid4().hex[:8]}",
            task_queue=worker.task_queue,
        )
        await migration.wait_until(at_or_after(1, "source_pod_gone"), within=60, poll=0.05)
        seen = await migration.progress()
        assert seen.current_ordinal == 1 and seen.step == "source_pod_gone", seen
        await cli(temporal_env, "terminate", "--workflow-id", migration.id, "--reason", "test")
        assert await status_of(temporal_env, migration.id) == "TERMINATED"
        child = f"{migration.id}/ordinal-1"
        deadline = time.monotonic() + 120
        while (child_status := await status_of(temporal_env, child)) == "RUNNING":
            assert time.monotonic() < deadline, "the child did not finish"
            await asyncio.sleep(0.5)
    violations = observer.verdict([1], (0, 1), (1, 1))
    found = whole(kube, namespace, volumes)
    fault_table.add("terminate_parent", 1, child_status == "COMPLETED", len(violations))
    assert violations == []
    assert child_status == "COMPLETED"
    assert found == ONE_MOVED
    # Nothing ran the parent's end: the lock is left, naming the terminated migration.
    print(f"after terminate: lock {locked_by(src, namespace)!r}")


# -- 3. non-retryable API errors after the point of no return --------------------------------

ERRORS = [
    pytest.param("forbidden", id="vap_forbidden"),
    pytest.param("invalid", id="vap_invalid", marks=pytest.mark.slow),
    pytest.param("quota", id="quota_exceeded", marks=pytest.mark.slow),
]
ERROR_TYPES = {"forbidden": "KubernetesForbidden", "invalid": "KubernetesInvalid"}


@pytest.mark.faults
@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ERRORS)
async def test_an_api_error_after_the_point_of_no_return_pauses_until_resumed(
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    worker: WorkerProcess,
    namespace: str,
    fault_table: FaultTable,
    kind: str,
) -> None:
    """While pod 1 is going (5 s), the destination starts refusing claims: a real
    admission policy (403 or 422) or a quota with no claim left (403). The import is
    refused after the source gave ordinal 1 up: the run pauses naming the claim, the
    cluster and the error; nothing runs pod 1; once the obstacle is gone, resume
    finishes."""
    src, dst = kube["source"], kube["destination"]
    deploy_app(src, namespace, NAME, 2, secret_value="x", ready_delay="1s", grace=5)
    volumes = volumes_of(src, namespace, 2)
    policy = ClaimPolicy(dst, namespace, "Invalid" if kind == "invalid" else "Forbidden")
    quota = ""
    refused = 422 if kind == "invalid" else 403
    try:
        with observing(kube, namespace, namespace, NAME) as observer:
            migration = await start_migration(
                temporal_env.client,
                request_for(NAME, namespace, stop_at_ordinal=1),
                migration_id=f"error-{kind}-{uuid.uuid4().hex[:6]}",
                task_queue=worker.task_queue,
            )
            await migration.wait_until(at_or_after(1, "source_pod_gone"), within=60, poll=0.05)
            if kind == "quota":
                quota = full_claim_quota(dst, namespace)
            else:
                policy.apply()
            wait_claim_create(dst, namespace, refused)
            now = await migration.progress()
            assert now.step in ("source_pod_gone", "source_claims_released"), now.step
            held = await migration.wait_until(lambda p: bool(p.blocked), within=90)
            print(
                f"pause text ({kind}): blocked={held.blocked!r} pause_reason={held.pause_reason!r}"
            )
            assert held.phase == "paused" and held.current_ordinal == 1
            assert held.blocked.startswith("ordinal 1 volumes_imported is blocked: ")
            assert f"{namespace}/data-app-1" in held.blocked or "data-app-1" in held.blocked
            assert "destination" in held.blocked and f" {refused} " in held.blocked
            assert f"[{ERROR_TYPES.get(kind, 'KubernetesForbidden')}; to fix: " in held.blocked
            if kind == "quota":
                assert "exceeded quota" in held.blocked
            else:
                assert policy.name in held.blocked
            assert "resume" in held.pause_reason and "abort" in held.pause_reason
            # Nothing runs pod 1 meanwhile, in either cluster, and the run holds.
            await asyncio.sleep(2)
            assert f"{NAME}-1" not in pod_names(src, namespace) | pod_names(dst, namespace)
            assert (await migration.progress()).phase == "paused"
            if quota:
                client.CoreV1Api(dst).delete_namespaced_resource_quota(quota, namespace)
            policy.remove()
            wait_claim_create(dst, namespace, None)
            await migration.resume()
            result = await asyncio.wait_for(migration.result(), 180)
    finally:
        policy.remove()
    fault_table.judge(f"error_{kind}", observer, result, [1], (0, 1), (1, 1))
    assert whole(kube, namespace, volumes) == ONE_MOVED == result.placement
    if kind == "forbidden":
        found_histories = await histories(temporal_env, migration.id)
        record("cluster_never_half_moved_forbidden_parent", found_histories[0])
        record("cluster_never_half_moved_forbidden_ordinal_1", found_histories[1])


# -- 4. undo of a blocked ordinal at each stage ---------------------------------------------

UNDO_STAGES = [
    pytest.param("volumes_imported", id="blocked_at_import"),
    pytest.param("source_pod_gone", id="blocked_at_pod_gone", marks=pytest.mark.slow),
    pytest.param("claims_bound", id="blocked_at_binding", marks=pytest.mark.slow),
    pytest.param("destination_pod_ready", id="taken_not_ready", marks=pytest.mark.slow),
]


@pytest.mark.faults
@pytest.mark.timeout(300)
@pytest.mark.parametrize("stage", UNDO_STAGES)
async def test_abort_of_a_blocked_ordinal_puts_it_back_on_its_own_volumes(
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    worker: WorkerProcess,
    namespace: str,
    fault_table: FaultTable,
    stage: str,
) -> None:
    """Ordinal 1 blocked at ``stage`` by a real obstacle: pod 1 held by a finalizer
    (source_pod_gone), claim creation denied by an admission policy (volumes_imported),
    the PV controller's binding update denied (claims_bound), a destination pod that
    never gets Ready (destination_pod_ready). ``abort`` puts it back: Ready in the
    source on its own volumes, markers intact, no claim of it Bound in the destination,
    and the run ends aborted."""
    src, dst = kube["source"], kube["destination"]
    deploy_app(src, namespace, NAME, 2, secret_value="x", ready_delay="1s", grace=2)
    volumes = volumes_of(src, namespace, 2)
    timeouts = TIMEOUTS.model_copy(
        update={"pod_gone": 5, "bound": 8, "pod_ready": 6} if stage != "volumes_imported" else {}
    )
    assert isinstance(timeouts, WaitTimeouts)
    policy: ClaimPolicy | None = None
    if stage == "volumes_imported":
        policy = ClaimPolicy(dst, namespace, "Forbidden")
    if stage == "claims_bound":
        policy = ClaimPolicy(dst, namespace, "Forbidden", ("UPDATE",), binding_only=True)
        policy.apply()
    if stage == "source_pod_gone":
        hold_pod(src, namespace, f"{NAME}-1")
    approval = ApprovalPolicy(mode="first" if stage == "destination_pod_ready" else "none")
    try:
        with observing(kube, namespace, namespace, NAME) as observer:
            migration = await start_migration(
                temporal_env.client,
                request_for(
                    NAME, namespace, stop_at_ordinal=1, timeouts=timeouts, approval=approval
                ),
                migration_id=f"undo-{stage.replace('_', '-')}-{uuid.uuid4().hex[:6]}",
                task_queue=worker.task_queue,
            )
            if stage == "volumes_imported":
                assert policy is not None
                await migration.wait_until(at_or_after(1, "source_pod_gone"), within=60, poll=0.05)
                policy.apply()
                wait_claim_create(dst, namespace, 403)
            if stage == "destination_pod_ready":
                # The destination's pods never get Ready (its template differs from the
                # source's: the app cannot start there), patched before it takes ordinal 1.
                await migration.wait_until(lambda p: p.phase == "awaiting_approval", within=60)
                never = {"pod-ready.stage.kwok.x-k8s.io/delay": "3600s"}
                client.AppsV1Api(dst).patch_namespaced_stateful_set(
                    NAME, namespace, {"spec": {"template": {"metadata": {"annotations": never}}}}
                )
                await migration.approve(1)
            held = await migration.wait_until(lambda p: bool(p.blocked), within=120)
            print(f"blocked ({stage}): {held.blocked!r}")
            assert held.blocked.startswith(f"ordinal 1 {stage} is blocked: "), held.blocked
            if stage != "destination_pod_ready":
                assert f"{NAME}-1" not in pod_names(dst, namespace)
            await migration.abort("put it back")
            if stage == "source_pod_gone":
                release_pod(src, namespace, f"{NAME}-1")
            result = await asyncio.wait_for(migration.result(), 180)
    finally:
        if policy is not None:
            policy.remove()
        if stage == "source_pod_gone":
            release_pod(src, namespace, f"{NAME}-1")
    violations = observer.verdict([], (0, 2), (2, 0))
    found = whole(kube, namespace, volumes)
    ok = result.aborted and result.moved == [] and result.placement == SOURCE_ONLY == found
    fault_table.add(f"undo_{stage}", 1, ok, len(violations))
    assert violations == [], violations
    assert result.aborted and result.moved == [], result
    assert result.placement == SOURCE_ONLY == found
    assert locked_by(src, namespace) is None


# -- 5. a GitOps-like writer scales the source back up after the release ----------------------


@pytest.mark.faults
@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_a_source_scaled_up_after_the_release_gets_a_pending_pod_on_the_fences(
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    worker: WorkerProcess,
    namespace: str,
    fault_table: FaultTable,
) -> None:
    """Ordinal 1's claims were released in the source (fences in their place) and its
    import is held by a policy in the destination; a GitOps sync puts the source's
    replicas back. The source's new pod 1 stays Pending on the fences (never Running on
    new, empty volumes, no volume provisioned for it); resumed, the run will not take
    ordinal 1 while the source owns it; once the writer is undone, resume finishes."""
    src, dst = kube["source"], kube["destination"]
    deploy_app(src, namespace, NAME, 2, secret_value="x", ready_delay="1s", grace=3)
    volumes = volumes_of(src, namespace, 2)
    core, apps = client.CoreV1Api(src), client.AppsV1Api(src)

    def app_volumes() -> dict[str, str]:
        return {
            pv.metadata.name: f"{pv.spec.claim_ref.name} {pv.status.phase}"
            for pv in core.list_persistent_volume().items
            if pv.spec.claim_ref and pv.spec.claim_ref.namespace == namespace
        }

    pvs_before = app_volumes()
    policy = ClaimPolicy(dst, namespace, "Forbidden")
    policy.apply()
    wait_claim_create(dst, namespace, 403)
    try:
        with observing(kube, namespace, namespace, NAME) as observer:
            migration = await start_migration(
                temporal_env.client,
                request_for(NAME, namespace, stop_at_ordinal=1),
                migration_id=f"gitops-fence-{uuid.uuid4().hex[:6]}",
                task_queue=worker.task_queue,
            )
            held = await migration.wait_until(lambda p: bool(p.blocked), within=90)
            assert held.blocked.startswith("ordinal 1 volumes_imported is blocked: ")
            fences = {
                c.metadata.name: c
                for c in core.list_namespaced_persistent_volume_claim(namespace).items
                if (c.metadata.labels or {}).get(LABEL_FENCE) == "true"
            }
            assert set(fences) == {"data-app-1", "logs-app-1"}, set(fences)
            for claim, fence in fences.items():
                assert fence.spec.volume_name == volumes[claim] and fence.status.phase == "Pending"
            # The sync: the source takes ordinal 1 again.
            apps.patch_namespaced_stateful_set(NAME, namespace, {"spec": {"replicas": 2}})
            wait_for(lambda: f"{NAME}-1" in pod_names(src, namespace), 30, "the writer's pod 1")
            await asyncio.sleep(5)  # long enough to start (pods here get Ready in 1 s)
            pod: Any = core.read_namespaced_pod(f"{NAME}-1", namespace)
            assert pod.status.phase == "Pending" and not pod.spec.node_name, pod.status
            for claim in fences:
                now: Any = core.read_namespaced_persistent_volume_claim(claim, namespace)
                assert now.status.phase == "Pending" and now.spec.volume_name == volumes[claim]
            # No volume provisioned for the writer's pod: the same volumes, no new one.
            assert set(app_volumes()) == set(pvs_before), (pvs_before, app_volumes())
            # The policy goes; resumed, the import goes on but the take is refused.
            policy.remove()
            wait_claim_create(dst, namespace, None)
            await migration.resume()
            held = await migration.wait_until(
                lambda p: bool(p.blocked) and "destination_scaled_up" in p.blocked, within=90
            )
            print(f"after the writer: {held.blocked!r}")
            assert (
                "in source owns [0, 2) but taking ordinal 1 needs it to own exactly [0, 1)"
                in held.blocked
            )
            assert "nothing was taken" in held.blocked
            assert f"{NAME}-1" not in pod_names(dst, namespace)
            # The writer is undone; its Pending pod goes; resume finishes.
            apps.patch_namespaced_stateful_set(NAME, namespace, {"spec": {"replicas": 1}})
            wait_for(lambda: f"{NAME}-1" not in pod_names(src, namespace), 60, "pod 1 gone")
            await migration.resume()
            result = await asyncio.wait_for(migration.result(), 180)
    finally:
        policy.remove()
    fault_table.judge("gitops_after_release", observer, result, [1], (0, 1), (1, 1))
    assert whole(kube, namespace, volumes) == ONE_MOVED == result.placement


# -- 6. one migration per StatefulSet ---------------------------------------------------------


@pytest.mark.faults
@pytest.mark.slow  # the lock's activities and preflight's refusal run in the default suite
@pytest.mark.timeout(300)
async def test_a_second_migration_of_a_locked_statefulset_is_refused_and_changes_nothing(
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    worker: WorkerProcess,
    namespace: str,
) -> None:
    src = kube["source"]
    deploy_app(src, namespace, NAME, 2, secret_value="x", ready_delay="300ms")
    request = request_for(NAME, namespace, approval=ApprovalPolicy(mode="first"))
    first = await start_migration(
        temporal_env.client,
        request,
        migration_id=f"first-{uuid.uuid4().hex[:8]}",
        task_queue=worker.task_queue,
    )
    await first.wait_until(lambda p: p.phase == "awaiting_approval", within=60)
    await first.pause("someone else wants it")
    await first.wait_until(lambda p: p.phase == "paused", within=30)
    assert locked_by(src, namespace) == first.id
    before = snapshot(kube, namespace)
    second = await start_migration(
        temporal_env.client,
        request_for(NAME, namespace),
        migration_id=f"second-{uuid.uuid4().hex[:8]}",
        task_queue=worker.task_queue,
    )
    failure = await closed(second, 120)
    message = str(failure.cause)
    print(f"second migration: {message}")
    assert getattr(failure.cause, "type", None) == "PreflightFailed", failure.cause
    assert first.id in message
    assert snapshot(kube, namespace) == before
    assert locked_by(src, namespace) == first.id
    assert (await second.progress()).phase == "failed"
    await first.abort("done with the test")
    ended = await asyncio.wait_for(first.result(), 60)
    assert ended.aborted and ended.moved == [] and locked_by(src, namespace) is None


# -- 7. nothing to move -----------------------------------------------------------------------


@pytest.mark.timeout(200)
@pytest.mark.parametrize(
    "how",
    [
        "stop_at_the_end",
        pytest.param("zero_replicas", marks=[pytest.mark.slow, pytest.mark.faults]),
    ],
)
async def test_a_request_with_nothing_to_move_creates_nothing_in_the_destination(
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    worker: WorkerProcess,
    namespace: str,
    how: str,
) -> None:
    src, dst = kube["source"], kube["destination"]
    replicas = 2 if how == "stop_at_the_end" else 0
    deploy_app(src, namespace, NAME, replicas, secret_value="x", ready_delay="300ms")
    fields = {"stop_at_ordinal": 2} if how == "stop_at_the_end" else {}
    before = snapshot(kube, namespace)
    migration = await start_migration(
        temporal_env.client,
        request_for(NAME, namespace, **fields),
        migration_id=f"nothing-{uuid.uuid4().hex[:8]}",
        task_queue=worker.task_queue,
    )
    result = await asyncio.wait_for(migration.result(), 120)
    assert result.moved == [] and not result.aborted, result
    core = client.CoreV1Api(dst)
    assert [s.metadata.name for s in core.list_namespaced_secret(namespace).items] == []
    config_maps = {c.metadata.name for c in core.list_namespaced_config_map(namespace).items}
    assert config_maps <= {"kube-root-ca.crt"}, config_maps  # the controller's, in every one
    assert core.list_namespaced_service(namespace).items == []
    assert client.PolicyV1Api(dst).list_namespaced_pod_disruption_budget(namespace).items == []
    assert client.AppsV1Api(dst).list_namespaced_stateful_set(namespace).items == []
    assert snapshot(kube, namespace) == before
    assert locked_by(src, namespace) is None
    assert (await migration.progress()).phase == "done"


# -- 8. a later run gives back what an earlier run moved ------------------------------------


@pytest.mark.timeout(300)
async def test_a_later_run_of_the_migration_can_roll_back_what_an_earlier_run_moved(
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    worker: WorkerProcess,
    namespace: str,
) -> None:
    """Rollback candidates come from the clusters, not from one run's memory: a run
    moves ordinal 1 and is aborted; a second run of the same migration (same id) can
    still give ordinal 1 back, onto its own volumes."""
    src = kube["source"]
    deploy_app(src, namespace, NAME, 2, secret_value="x", ready_delay="300ms")
    volumes = volumes_of(src, namespace, 2)
    migration_id = f"later-{uuid.uuid4().hex[:8]}"
    wait_before_0 = ApprovalPolicy(mode="ordinals", ordinals=[0])
    with observing(kube, namespace, namespace, NAME) as observer:
        first = await start_migration(
            temporal_env.client,
            request_for(NAME, namespace, approval=wait_before_0),
            migration_id=migration_id,
            task_queue=worker.task_queue,
        )
        await first.wait_until(lambda p: p.waiting_for_approval == 0, within=120)
        await first.abort("stop after ordinal 1")
        ended = await asyncio.wait_for(first.result(), 60)
        assert [o.ordinal for o in ended.moved] == [1] and ended.placement == ONE_MOVED

        second = await start_migration(
            temporal_env.client,
            request_for(NAME, namespace, approval=wait_before_0),
            migration_id=migration_id,
            task_queue=worker.task_queue,
        )
        waiting = await second.wait_until(lambda p: p.waiting_for_approval == 0, within=120)
        assert waiting.finished == []  # this run moved nothing itself
        plan = await second.plan()
        assert plan is not None and [o.ordinal for o in plan.moved] == [1]
        await second.rollback(reason="give 1 back")
        back = await second.wait_until(lambda p: p.rolled_back == [1] and p.paused, within=180)
        assert back.pause_reason.startswith("rolled back ordinal 1")
        await second.abort("done")
        result = await asyncio.wait_for(second.result(), 60)
    assert result.placement == SOURCE_ONLY
    assert observer.verdict([], (0, 2), (2, 0)) == []
    assert volumes_of(src, namespace, 2) == volumes  # on its own volumes
