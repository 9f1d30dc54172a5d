"""Fault injection: worker kills at every step boundary and in the middle of waits,
two workers with one killed, a Temporal server restart (file database), Kubernetes
API faults, a lingering attachment, a conflicting writer, and a failed health gate
under every on_failure policy. Every run must end as it should with no observer
violation.

`make faults` runs all of it (marker `faults`) and prints the scenario table; the
normal test command runs the reduced subset (everything not marked `slow`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from temporalio.client import WorkflowFailureError, WorkflowQueryFailedError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from contract import HealthGates, MigrationRequest, Probe, Progress, WaitTimeouts
from devenv.clusters import LocalClusters
from devenv.faultproxy import FaultProxy
from devenv.temporal import DevServer
from stsmigrate.api import Migration, connect, get_migration, start_migration
from tests.support.apps import AppHealth, deploy_app
from tests.support.cluster_state import pod_names
from tests.support.faults import FaultTable
from tests.support.histories import histories, record
from tests.support.kubeconfigs import edited_kubeconfig, servers_replaced
from tests.support.processes import WorkerProcess, worker_with
from tests.support.scenarios import STEPS, observing, request_for
from tests.support.waits import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.faults]

GATES = HealthGates(probes=[Probe(kind="ready", soak=1)])
ALL_STEPS = [*STEPS, "health_gates"]


@dataclass
class Killer:
    """Kills (SIGKILL) and restarts a worker whenever the migration reports a target
    (ordinal, step), after ``delay`` seconds in it; records where it struck."""

    migration: Migration
    worker: WorkerProcess
    targets: list[tuple[int, str, float]]
    struck: list[str] = field(default_factory=list)

    async def run(self) -> None:
        for ordinal, step, delay in self.targets:
            target = position(ordinal, step)
            while True:
                try:
                    p: Progress = await asyncio.wait_for(self.migration.progress(), 5)
                except (TimeoutError, RPCError, WorkflowQueryFailedError):  # no worker yet
                    await asyncio.sleep(0.1)
                    continue
                if p.phase in ("done", "aborted"):
                    return
                # At the target step, or the first step seen after it (a short step
                # can start and end between two looks).
                at = p.current_ordinal, p.step
                if at[0] is not None and at[1] in ALL_STEPS and position(*at) >= target:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(delay)
            self.worker.kill()
            self.struck.append(f"{p.current_ordinal}/{p.step}+{delay}s")
            await asyncio.sleep(0.3)
            self.worker.start()


def position(ordinal: int, step: str) -> tuple[int, int]:
    """Order of (ordinal, step) in a migration: ordinals highest first, then steps."""
    return (-ordinal, ALL_STEPS.index(step))


async def killed_along_the_way(
    kube: dict[str, client.ApiClient],
    env: WorkflowEnvironment,
    worker: WorkerProcess,
    namespace: str,
    fault_table: FaultTable,
    scenario: str,
    targets: list[tuple[int, str, float]],
) -> None:
    deploy_app(kube["source"], namespace, "app", 3, secret_value="x", ready_delay="1s", grace=3)
    request = request_for("app", namespace, health=GATES)
    with observing(kube, namespace, namespace, "app") as observer:
        migration = await start_migration(
            env.client,
            request,
            migration_id=f"faults-{uuid.uuid4().hex[:8]}",
            task_queue=worker.task_queue,
        )
        killer = Killer(migration, worker, targets)
        await asyncio.wait_for(killer.run(), 900)
        result = await asyncio.wait_for(migration.result(), 300)
    violations = observer.verdict([2, 1, 0], (0, 0), (0, 3))
    completed = [o.ordinal for o in result.moved] == [2, 1, 0]
    fault_table.add(scenario, len(killer.struck), completed, len(violations))
    fault_table.kill_points[scenario] = killer.struck
    assert len(killer.struck) == len(targets), killer.struck
    # Every kill at its own point (a step too short to be seen is struck at the next
    # one, which a later target may then meet again: at most one such repeat).
    assert len(set(killer.struck)) >= len(targets) - 1, killer.struck
    assert violations == [] and completed
    found = await histories(env, migration.id)
    for child in found[1:]:  # nothing redone: each slice call scheduled once per ordinal
        scheduled = [
            e.activity_task_scheduled_event_attributes.activity_type.name
            for e in child.events
            if e.HasField("activity_task_scheduled_event_attributes")
        ]
        # the source's scale-down; the destination's take (with its check that the
        # source still gives k up) in one activity
        assert scheduled.count("set_statefulset_slice") == 1, scheduled
        assert scheduled.count("take_ordinal") == 1, scheduled
    record(f"faults_{scenario}_parent", found[0])
    record(f"faults_{scenario}_ordinal_2", found[1])


@pytest.mark.slow
@pytest.mark.timeout(1200)
async def test_worker_killed_at_every_step_boundary(
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    worker: WorkerProcess,
    namespace: str,
    fault_table: FaultTable,
) -> None:
    """Ten kills in one migration: as each step of ordinal 2 begins."""
    targets = [(2, step, 0.0) for step in ALL_STEPS]
    await killed_along_the_way(
        kube, temporal_env, worker, namespace, fault_table, "step_boundaries", targets
    )


@pytest.mark.slow
@pytest.mark.timeout(1200)
async def test_worker_killed_in_the_middle_of_every_wait(
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    worker: WorkerProcess,
    namespace: str,
    fault_table: FaultTable,
) -> None:
    """Kills inside the waits of ordinal 1 (pod going: 3 s grace; pod Ready: 1 s start;
    the health soak: 1 s), at its first two changes, and at the boundaries of ordinal
    0's volume steps (12 kills; with the 10 above, 20 or more distinct points)."""
    targets = [
        (1, "volumes_retained", 0.0),
        (1, "source_scaled_down", 0.0),
        (1, "source_pod_gone", 1.5),
        (1, "claims_bound", 0.2),
        (1, "destination_pod_ready", 0.5),
        (1, "health_gates", 0.5),
        (0, "source_claims_released", 0.0),
        (0, "volumes_imported", 0.05),
        (0, "destination_scaled_up", 0.0),
        (0, "destination_pod_ready", 0.7),
        (0, "health_gates", 0.8),
        (0, "source_pod_gone", 2.5),
    ]
    targets.sort(key=lambda t: (-t[0], ALL_STEPS.index(t[1])))
    await killed_along_the_way(
        kube, temporal_env, worker, namespace, fault_table, "mid_wait", targets
    )


async def test_two_workers_one_killed_the_other_finishes(
    clusters: LocalClusters,
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    worker: WorkerProcess,
    namespace: str,
    tmp_path: Path,
    fault_table: FaultTable,
) -> None:
    second = WorkerProcess(
        temporal_env.client.service_client.config.target_host,
        clusters.kubeconfig,
        tmp_path / "second.log",
        worker.task_queue,
    )
    second.start()
    try:
        deploy_app(kube["source"], namespace, "app", 2, secret_value="x", ready_delay="1s")
        with observing(kube, namespace, namespace, "app") as observer:
            migration = await start_migration(
                temporal_env.client,
                request_for("app", namespace),
                migration_id=f"two-workers-{uuid.uuid4().hex[:8]}",
                task_queue=worker.task_queue,
            )
            await migration.wait_until(lambda p: p.step == "source_pod_gone", within=60, poll=0.05)
            worker.kill()  # not restarted: the second worker must finish
            result = await asyncio.wait_for(migration.result(), 240)
    finally:
        second.stop()
    fault_table.judge("two_workers_one_killed", observer, result, [1, 0], (0, 0), (0, 2))
    assert '"worker_started"' in (tmp_path / "second.log").read_text()


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[DevServer]:
    server = DevServer(tmp_path / "temporal", db_filename=tmp_path / "temporal.db")
    server.start()
    yield server
    server.stop()


async def test_temporal_server_restarted_mid_migration(
    clusters: LocalClusters,
    kube: dict[str, client.ApiClient],
    file_server: DevServer,
    namespace: str,
    tmp_path: Path,
    fault_table: FaultTable,
) -> None:
    """The dev server (SQLite file) stops mid-move and starts again on the same file and
    ports; the worker reconnects and the migration resumes where it was."""
    worker = WorkerProcess(
        file_server.address,
        clusters.kubeconfig,
        tmp_path / "worker.log",
        f"restart-{uuid.uuid4().hex[:8]}",
    )
    worker.start()
    try:
        deploy_app(kube["source"], namespace, "app", 2, secret_value="x", ready_delay="1s", grace=3)
        client_ = await connect({"TEMPORAL_ADDRESS": file_server.address})
        request: MigrationRequest = request_for("app", namespace)
        with observing(kube, namespace, namespace, "app") as observer:
            migration = await start_migration(client_, request, task_queue=worker.task_queue)
            await migration.wait_until(lambda p: p.step == "source_pod_gone", within=60, poll=0.05)
            file_server.stop()
            await asyncio.sleep(2)
            file_server.start()
            again = get_migration(
                await connect({"TEMPORAL_ADDRESS": file_server.address}), migration.id
            )
            result = await asyncio.wait_for(again.result(), 300)
    finally:
        worker.stop()
    fault_table.judge("temporal_server_restart", observer, result, [1, 0], (0, 0), (0, 2))


def _csi_attachment(api: client.ApiClient, namespace: str, claim: str) -> str | None:
    pvc: Any = client.CoreV1Api(api).read_namespaced_persistent_volume_claim(claim, namespace)
    for va in client.StorageV1Api(api).list_volume_attachment().items:
        if va.spec.source.persistent_volume_name == pvc.spec.volume_name:
            return str(va.metadata.name)
    return None


async def test_a_lingering_attachment_pauses_the_move_and_never_starts_the_destination(
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    worker: WorkerProcess,
    namespace: str,
    fault_table: FaultTable,
) -> None:
    src, dst = kube["source"], kube["destination"]
    deploy_app(src, namespace, "app", 2, secret_value="x", ready_delay="300ms")
    storage = client.StorageV1Api(src)
    attachment = wait_for(lambda: _csi_attachment(src, namespace, "logs-app-1"), 30, "the VA")
    hold = {"metadata": {"finalizers": ["stsmigrate.dev/test-hold"]}}
    storage.patch_volume_attachment(attachment, hold)  # the attacher never lets it go
    request = request_for(
        "app",
        namespace,
        timeouts=WaitTimeouts(healthy=60, pod_gone=60, detach=5, bound=60, pod_ready=60),
    )
    with observing(kube, namespace, namespace, "app") as observer:
        migration = await start_migration(
            temporal_env.client,
            request,
            migration_id=f"detach-{uuid.uuid4().hex[:8]}",
            task_queue=worker.task_queue,
        )
        held = await migration.wait_until(lambda p: bool(p.blocked), within=90)
        assert held.phase == "paused" and held.current_ordinal == 1
        assert f"VolumeAttachment {attachment}" in held.blocked
        assert "still attached in source after 5 s" in held.blocked
        assert "abort (or rollback) puts the ordinal back where it was" in held.pause_reason
        await asyncio.sleep(3)
        sts: Any = client.AppsV1Api(dst).read_namespaced_stateful_set("app", namespace)
        assert sts.spec.replicas == 0, "the destination scaled up while the volume was attached"
        # The attacher lets go; resume retries the wait and the move finishes.
        storage.patch_volume_attachment(attachment, {"metadata": {"finalizers": None}})
        await migration.resume()
        result = await asyncio.wait_for(migration.result(), 180)
    fault_table.judge("slow_detach", observer, result, [1, 0], (0, 0), (0, 2))


async def test_a_conflicting_writer_is_not_fought(
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    worker: WorkerProcess,
    namespace: str,
    fault_table: FaultTable,
) -> None:
    """Somebody scales the destination StatefulSet while pod 1 is going (seconds before
    the migration would change it): the run pauses and explains, leaves the writer's
    change alone, and goes on once a human has put it back and resumed."""
    src, dst = kube["source"], kube["destination"]
    apps = client.AppsV1Api(dst)
    deploy_app(src, namespace, "app", 2, secret_value="x", ready_delay="300ms", grace=3)
    with observing(kube, namespace, namespace, "app") as observer:
        migration = await start_migration(
            temporal_env.client,
            request_for("app", namespace),
            migration_id=f"writer-{uuid.uuid4().hex[:8]}",
            task_queue=worker.task_queue,
        )
        await migration.wait_until(lambda p: p.step == "source_pod_gone", within=60, poll=0.05)
        apps.patch_namespaced_stateful_set("app", namespace, {"spec": {"replicas": 1}})
        held = await migration.wait_until(lambda p: bool(p.blocked), within=90)
        assert "ordinal 1 destination_scaled_up is blocked" in held.blocked
        assert "owns [2, 3) but the migration expected [2, 2)" in held.blocked
        assert "will not fight that change" in held.blocked
        await asyncio.sleep(2)
        sts: Any = apps.read_namespaced_stateful_set("app", namespace)
        assert sts.spec.replicas == 1, "the migration fought the writer"
        # The human puts it back; once the writer's pod is gone, resume.
        apps.patch_namespaced_stateful_set("app", namespace, {"spec": {"replicas": 0}})
        wait_for(lambda: "app-2" not in pod_names(dst, namespace), 60, "app-2 gone")
        await migration.resume()
        result = await asyncio.wait_for(migration.result(), 180)
    fault_table.judge("conflicting_writer", observer, result, [1, 0], (0, 0), (0, 2))


async def test_a_source_scaled_back_up_keeps_the_destination_from_starting_the_pod(
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    worker: WorkerProcess,
    namespace: str,
    fault_table: FaultTable,
) -> None:
    """A GitOps sync puts the source's replicas back after pod 1 went and its claims
    were released. To hold the run there, a foreign claim named like ordinal 1's
    appears in the destination while pod 1 is going: the import blocks (not ours).
    Meanwhile the source is scaled back up: its new pod 1 stays Pending on the fences
    left in place of the released claims, never on new storage. The foreign claim
    removed and the run resumed, the import goes on, but the destination must not
    take ordinal 1 while the source runs it: the run blocks again and says why; once
    the source is put back it finishes."""
    src, dst = kube["source"], kube["destination"]
    deploy_app(src, namespace, "app", 2, secret_value="x", ready_delay="300ms", grace=3)
    foreign = {
        "metadata": {"name": "data-app-1"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "nobody-provisions-this",
            "resources": {"requests": {"storage": "1Mi"}},
        },
    }
    with observing(kube, namespace, namespace, "app") as observer:
        migration = await start_migration(
            temporal_env.client,
            request_for("app", namespace),
            migration_id=f"gitops-{uuid.uuid4().hex[:8]}",
            task_queue=worker.task_queue,
        )
        await migration.wait_until(lambda p: p.step == "source_pod_gone", within=60, poll=0.05)
        client.CoreV1Api(dst).create_namespaced_persistent_volume_claim(namespace, foreign)
        held = await migration.wait_until(lambda p: bool(p.blocked), within=90)
        assert (
            f"ordinal 1 volumes_imported is blocked: PersistentVolumeClaim {namespace}/data-app-1 "
            "exists in destination and is not ours" in held.blocked
        ), held.blocked
        # The sync: the source owns ordinal 1 again. Its released claims were replaced
        # by fences (pre-bound to the released volumes, never bound), so the new pod 1
        # stays Pending: it never runs on new, empty storage.
        apps = client.AppsV1Api(src)
        apps.patch_namespaced_stateful_set("app", namespace, {"spec": {"replicas": 2}})
        wait_for(lambda: "app-1" in pod_names(src, namespace), 60, "the sync's app-1")
        await asyncio.sleep(3)
        pod: Any = client.CoreV1Api(src).read_namespaced_pod("app-1", namespace)
        assert pod.status.phase == "Pending" and not pod.spec.node_name
        assert ready_pods(src, namespace) == {"app-0"}
        client.CoreV1Api(dst).delete_namespaced_persistent_volume_claim("data-app-1", namespace)
        wait_for(lambda: not claim_exists(dst, namespace, "data-app-1"), 30, "claim gone")
        await migration.resume()
        held = await migration.wait_until(lambda p: bool(p.blocked), within=90)
        assert "ordinal 1 destination_scaled_up is blocked" in held.blocked, held.blocked
        assert "in source owns [0, 2) but taking ordinal 1 needs it to own exactly [0, 1)" in (
            held.blocked
        )
        await asyncio.sleep(2)
        sts: Any = client.AppsV1Api(dst).read_namespaced_stateful_set("app", namespace)
        assert sts.spec.replicas == 0 and "app-1" not in pod_names(dst, namespace)
        # A human turns the sync off and puts the source back; resume finishes.
        apps.patch_namespaced_stateful_set("app", namespace, {"spec": {"replicas": 1}})
        wait_for(lambda: "app-1" not in pod_names(src, namespace), 60, "app-1 gone again")
        await migration.resume()
        result = await asyncio.wait_for(migration.result(), 180)
    fault_table.judge("source_scaled_back_up", observer, result, [1, 0], (0, 0), (0, 2))


def claim_exists(api: client.ApiClient, namespace: str, name: str) -> bool:
    claims: Any = client.CoreV1Api(api).list_namespaced_persistent_volume_claim(namespace)
    return any(c.metadata.name == name for c in claims.items)


def ready_pods(api: client.ApiClient, namespace: str) -> set[str]:
    pods: Any = client.CoreV1Api(api).list_namespaced_pod(namespace)
    return {
        p.metadata.name
        for p in pods.items
        if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    }


@pytest.mark.slow
@pytest.mark.timeout(1200)
async def test_kubernetes_api_faults_are_retried_to_completion(
    clusters: LocalClusters,
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    namespace: str,
    tmp_path: Path,
    fault_table: FaultTable,
) -> None:
    """The worker reaches both apiservers through fault proxies: 500, 503, 429 with
    Retry-After, connection resets and hung requests on 3% of requests (preflight makes
    dozens of calls in one attempt: at 12% it never got through in 24 attempts)."""
    proxies = {
        name: FaultProxy(c, rate=0.03, hang_seconds=20, seed=i)
        for i, (name, c) in enumerate(clusters.clusters.items())
    }
    servers = {name: proxy.server for name, proxy in proxies.items()}
    kubeconfig = edited_kubeconfig(
        clusters.kubeconfig, tmp_path / "kubeconfig", servers_replaced(servers)
    )
    for proxy in proxies.values():
        proxy.start()
    try:
        with worker_with(temporal_env, kubeconfig, tmp_path, "api-faults") as worker:
            deploy_app(kube["source"], namespace, "app", 2, secret_value="x", ready_delay="300ms")
            with observing(kube, namespace, namespace, "app") as observer:
                migration = await start_migration(
                    temporal_env.client,
                    request_for("app", namespace),
                    migration_id=f"api-faults-{uuid.uuid4().hex[:8]}",
                    task_queue=worker.task_queue,
                )
                result = await asyncio.wait_for(migration.result(), 900)
    finally:
        for proxy in proxies.values():
            proxy.stop()
    injected = sum((p.injected for p in proxies.values()), Counter())
    faults = sum(injected.values())
    fault_table.judge(
        "kubernetes_api_faults", observer, result, [1, 0], (0, 0), (0, 2), faults=faults
    )
    assert sum(injected.values()) >= 5 and len(injected) >= 3, injected  # several kinds
    # The retries are in the history: activity attempts after failures.
    retried = 0
    for history in await histories(temporal_env, migration.id):
        for e in history.events:
            if e.HasField("activity_task_started_event_attributes"):
                retried += e.activity_task_started_event_attributes.attempt > 1
    assert retried > 0
    record("faults_kubernetes_api_parent", (await histories(temporal_env, migration.id))[0])


def source_volumes(api: client.ApiClient, namespace: str, name: str, k: int) -> dict[str, str]:
    """Claim -> bound volume of ordinal k in one cluster."""
    core = client.CoreV1Api(api)
    out = {}
    for template in ("data", "logs"):
        pvc: Any = core.read_namespaced_persistent_volume_claim(f"{template}-{name}-{k}", namespace)
        out[pvc.metadata.name] = f"{pvc.spec.volume_name} {pvc.status.phase}"
    return out


# rollback_all and fail (about 15 s each) run in make faults; make test keeps pause and
# rollback_ordinal on the real clusters, and every policy on fakes (test_health_gates.py).
@pytest.mark.parametrize(
    "policy",
    [
        "pause",
        "rollback_ordinal",
        pytest.param("rollback_all", marks=pytest.mark.slow),
        pytest.param("fail", marks=pytest.mark.slow),
    ],
)
async def test_a_failed_health_gate_follows_on_failure(
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    worker: WorkerProcess,
    namespace: str,
    fault_table: FaultTable,
    policy: str,
) -> None:
    """Ordinal 1 moves and passes its HTTP gate; ordinal 0's endpoint answers 503
    after its move. Each policy must end where it says, with no violation: pause
    holds before done until a human resumes; rollback_ordinal gives 0 back (on its own
    volumes) and pauses, and moves it again once resumed; rollback_all gives back 0
    then 1 and ends aborted; fail ends the run failed with 0 wholly in the destination."""
    src = kube["source"]
    deploy_app(src, namespace, "app", 2, secret_value="x", ready_delay="300ms")
    before = source_volumes(src, namespace, "app", 0)
    with AppHealth() as app, observing(kube, namespace, namespace, "app") as observer:
        app.down.add("app-0")
        gates = HealthGates(
            probes=[Probe(kind="http", url=app.url, timeout=2, retries=1, interval=0)],
            on_failure=policy,
        )
        migration = await start_migration(
            temporal_env.client,
            request_for("app", namespace, health=gates),
            migration_id=f"gate-{policy.replace('_', '-')}-{uuid.uuid4().hex[:6]}",
            task_queue=worker.task_queue,
        )
        failed: str | None = None
        if policy == "fail":
            with pytest.raises(WorkflowFailureError) as raised:
                await asyncio.wait_for(migration.result(), 180)
            failed = str(raised.value.cause)
            moved, source_slice, destination_slice = [1, 0], (0, 0), (0, 2)
        elif policy == "rollback_all":
            result = await asyncio.wait_for(migration.result(), 180)
            assert result.aborted and result.rolled_back == [0, 1], result
            assert result.abort_reason == "rolled back ordinals [0, 1]"
            moved, source_slice, destination_slice = [], (0, 2), (2, 0)
        else:
            held = await migration.wait_until(lambda p: p.phase == "paused", within=180)
            if policy == "pause":
                assert held.pause_reason.startswith("health gate failed on ordinal 0: http")
                assert "503" in held.pause_reason, held.pause_reason
            if policy == "rollback_ordinal":
                assert held.pause_reason.startswith("rolled back ordinal 0")
                assert held.rolled_back == [0] and held.remaining == [0]
                assert source_volumes(src, namespace, "app", 0) == before  # its own volumes
                assert observer.verdict([1], (0, 1), (1, 1)) == []
            app.down.clear()  # the app recovers; the human resumes
            await migration.resume()
            result = await asyncio.wait_for(migration.result(), 180)
            assert [o.ordinal for o in result.moved] == [1, 0] and not result.aborted
            moved, source_slice, destination_slice = [1, 0], (0, 0), (0, 2)
    violations = observer.verdict(moved, source_slice, destination_slice)
    if policy == "rollback_all":
        assert source_volumes(src, namespace, "app", 0) == before
    if failed is not None:
        assert "health gate failed on ordinal 0" in failed
        assert "Ordinal 0 runs in the destination; ordinals [] are still in the source" in failed
    fault_table.add(f"health_gate_{policy}", 1, True, len(violations))
    assert violations == []
