"""The metrics of what goes wrong, scraped from a real worker process during a real
migration between the local clusters on the real Temporal server: a blocked step by its
reason (with its MoveBlocked Event), the health gates' results and a gate's rollback of
an ordinal. tests/test_observability.py tests only their pure parts,
tests/cluster/test_migration.py the metrics of a migration that goes well.

Marked slow (and faults, so `make faults` runs it): the default suite is at its bound.
With ``-s`` it prints a scrape taken during the run and ``kubectl events`` of the moved
StatefulSet in both clusters."""

from __future__ import annotations

import asyncio
import urllib.request
import uuid

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from temporalio.testing import WorkflowEnvironment

from contract import HealthGates, Probe
from devenv.clusters import LocalClusters
from stsmigrate.api import start_migration
from tests.support.apps import AppHealth, deploy_app
from tests.support.processes import WorkerProcess, parse_metrics, total
from tests.support.scenarios import observing, request_for
from tests.support.waits import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.faults, pytest.mark.slow]

BLOCKED = "stsmigrate_blocked_steps_total"
GATES = "stsmigrate_health_gate_results_total"
ROLLED_BACK = "stsmigrate_ordinals_rolled_back_total"
MOVED = "stsmigrate_ordinals_moved_total"
ENDED = "stsmigrate_migrations_ended_total"

# A claim named like ordinal 1's that nobody of ours made: its import blocks (NotOurs).
FOREIGN = {
    "metadata": {"name": "data-app-1"},
    "spec": {
        "accessModes": ["ReadWriteOnce"],
        "storageClassName": "nobody-provisions-this",
        "resources": {"requests": {"storage": "1Mi"}},
    },
}


def scrape(worker: WorkerProcess) -> str:
    url = f"http://127.0.0.1:{worker.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text: str = resp.read().decode()
    return text


# The SDK's own metrics in the sample printed (slots, pollers, task latencies, failures).
SDK_SAMPLE = (
    "temporal_worker_task_slots_available{",
    "temporal_worker_task_slots_used{",
    "temporal_num_pollers{",
    "temporal_workflow_task_execution_latency_count{",
    "temporal_activity_execution_latency_count{",
    "temporal_activity_execution_failed{",
    "temporal_sticky_cache_size{",
)


def sampled(line: str) -> bool:
    """Our counters, the step histogram's counts of a few steps, and SDK_SAMPLE."""
    if line.startswith("stsmigrate_") and not line.startswith("stsmigrate_step_duration"):
        return True
    if line.startswith("stsmigrate_step_duration_seconds_count{"):
        steps = ('"import_volumes"', '"take_ordinal"', '"probe_ordinal"')
        return any(f"activity_type={s}" in line for s in steps)
    if line.startswith("temporal_activity_execution_latency_count{"):
        return 'activity_type="probe_ordinal"' in line
    return line.startswith(SDK_SAMPLE)


def grew(after: dict[str, float], before: dict[str, float], name: str, **labels: str) -> float:
    return total(after, name, **labels) - total(before, name, **labels)


def claim_gone(api: client.ApiClient, namespace: str, name: str) -> bool:
    try:
        client.CoreV1Api(api).read_namespaced_persistent_volume_claim(name, namespace)
    except ApiException as e:
        if e.status == 404:
            return True
        raise
    return False


async def test_a_blocked_step_and_a_gates_rollback_move_their_metrics(
    clusters: LocalClusters,
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    worker: WorkerProcess,
    namespace: str,
) -> None:
    """Two ordinals, an HTTP health gate with on_failure rollback_ordinal. Ordinal 1's
    import blocks on a foreign claim (the run pauses); the claim removed and the run
    resumed, 1 moves and passes its gate; 0 moves, fails its gate (its endpoint answers
    503) and is given back; the app recovers, the run resumes and 0 moves again."""
    src, dst = kube["source"], kube["destination"]
    deploy_app(src, namespace, "app", 2, secret_value="x", ready_delay="300ms", grace=3)
    before = worker.metrics()
    with AppHealth() as app, observing(kube, namespace, namespace, "app") as observer:
        app.down.add("app-0")
        gates = HealthGates(
            probes=[Probe(kind="http", url=app.url, timeout=2, retries=1, interval=0)],
            on_failure="rollback_ordinal",
        )
        migration = await start_migration(
            temporal_env.client,
            request_for("app", namespace, health=gates),
            migration_id=f"metrics-{uuid.uuid4().hex[:8]}",
            task_queue=worker.task_queue,
        )
        await migration.wait_until(lambda p: p.step == "source_pod_gone", within=60, poll=0.05)
        client.CoreV1Api(dst).create_namespaced_persistent_volume_claim(namespace, FOREIGN)
        held = await migration.wait_until(lambda p: bool(p.blocked), within=90)
        assert "ordinal 1 volumes_imported is blocked" in held.blocked, held.blocked
        blocked = worker.metrics()
        assert grew(blocked, before, BLOCKED) == 1
        assert grew(blocked, before, BLOCKED, step="volumes_imported", reason="NotOurs") == 1
        assert grew(blocked, before, GATES) == 0

        client.CoreV1Api(dst).delete_namespaced_persistent_volume_claim("data-app-1", namespace)
        wait_for(lambda: claim_gone(dst, namespace, "data-app-1"), 30, "the foreign claim gone")
        await migration.resume()
        held = await migration.wait_until(
            lambda p: p.phase == "paused" and p.rolled_back == [0], within=180
        )
        assert held.pause_reason.startswith("rolled back ordinal 0"), held.pause_reason
        text = scrape(worker)  # during the run: paused after the gate's rollback
        during = parse_metrics(text)
        assert grew(during, before, GATES, result="passed") == 1  # ordinal 1
        assert grew(during, before, GATES, result="failed") == 1  # ordinal 0
        assert grew(during, before, ROLLED_BACK) == 1
        assert grew(during, before, BLOCKED) == 1  # still the one block
        assert grew(during, before, ENDED) == 0

        app.down.clear()  # the app recovers; the human resumes
        await migration.resume()
        result = await asyncio.wait_for(migration.result(), 180)
    assert [o.ordinal for o in result.moved] == [1, 0] and not result.aborted
    assert observer.verdict([1, 0], (0, 0), (0, 2)) == []
    after = worker.metrics()
    assert grew(after, before, GATES, result="passed") == 2  # 0 passes once moved again
    assert grew(after, before, GATES, result="failed") == 1
    assert grew(after, before, ROLLED_BACK) == 1
    assert grew(after, before, BLOCKED) == 1
    assert grew(after, before, ENDED, phase="done") == 1
    assert grew(after, before, MOVED) == grew(during, before, MOVED) + 1

    events = {
        side: clusters.kubectl(side, "events", "-n", namespace, "--for", "statefulset/app")
        for side in ("source", "destination")
    }
    assert "MoveBlocked" in events["destination"] and migration.id in events["destination"]
    assert "OrdinalGivenUp" in events["source"] and "OrdinalTaken" in events["destination"]

    print(f"\nA sample of the scrape of the worker's /metrics while {migration.id} was")
    print("paused after the gate's rollback of ordinal 0:")
    for line in text.splitlines():
        if sampled(line):
            print(line)
    for side, out in events.items():
        kubectl = clusters.clusters[side].bins / "kubectl"
        config = clusters.clusters[side].admin_kubeconfig
        print(f"\n$ {kubectl} --kubeconfig={config} events -n {namespace} --for statefulset/app")
        print(out, end="")
