"""Operating a migration on the real clusters: approvals through the Temporal CLI
binary (the README's commands) and ``stsmigrate``, pause and resume with nothing
changing while paused, abort mid-move and a later start that continues, status
output against the clusters, and the Temporal Web UI in a real headless Chromium."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import shlex
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from kubernetes import client
from temporalio.testing import WorkflowEnvironment

from contract import ApprovalPolicy, HealthGates, Probe, Progress
from devenv.clusters import LocalClusters
from stsmigrate.api import Migration, get_migration, start_migration
from stsmigrate.cli import ui_link
from tests.support.apps import deploy_app
from tests.support.cluster_state import snapshot
from tests.support.commands import run_command, stsmigrate, temporal_cli, temporal_cli_result
from tests.support.histories import histories, record
from tests.support.paths import REPO
from tests.support.processes import WorkerProcess
from tests.support.redis_cluster import RedisCluster
from tests.support.scenarios import observing, request_for

pytestmark = pytest.mark.cluster

README_ID = "stsmigrate/prod-a/shop/redis"


def address(env: WorkflowEnvironment) -> str:
    return env.client.service_client.config.target_host


def readme_commands(namespace: str, name: str, migration_id: str, task_queue: str) -> dict:
    """The README's "Operate a migration" Temporal CLI block: comment -> command line,
    made to point at this test's app, namespace, workflow id and task queue."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- operate-cli", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands: dict[str, str] = {}
    comment = ""
    for line in block.replace("\\\n", " ").splitlines():
        line = line.strip()
        if line.startswith("#"):
            comment = line.lstrip("# ")
        elif line:
            commands[comment] = (
                line.replace(README_ID, migration_id)
                .replace("prod-a", "source")
                .replace("prod-b", "destination")
                .replace("shop", namespace)
                .replace("redis", name)
                .replace("statefulset-migration", task_queue)
            )
    return commands


async def run_readme(env: WorkflowEnvironment, line: str) -> tuple[int, str, str]:
    args = shlex.split(line)
    assert args[0] == "temporal"
    return await temporal_cli_result(address(env), *args[1:])


def until(phase: str, ordinal: int | None = None, step: str | None = None) -> Any:
    def check(p: Progress) -> bool:
        return (
            p.phase == phase
            and (ordinal is None or p.current_ordinal == ordinal)
            and (step is None or p.step == step)
        )

    return check


def slices(kube: dict[str, client.ApiClient], namespace: str, name: str) -> dict[str, tuple]:
    out = {}
    for side, api in kube.items():
        sts: Any = client.AppsV1Api(api).read_namespaced_stateful_set(name, namespace)
        start = sts.spec.ordinals.start if sts.spec.ordinals else 0
        out[side] = (start, sts.spec.replicas, sts.status.ready_replicas or 0)
    return out


async def test_approvals_through_the_temporal_cli_and_stsmigrate(
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    worker: WorkerProcess,
    namespace: str,
) -> None:
    name = "redis"
    deploy_app(kube["source"], namespace, name, 3, secret_value="x", ready_delay="100ms")
    migration_id = f"approvals-{uuid.uuid4().hex[:8]}"
    cmd = readme_commands(namespace, name, migration_id, worker.task_queue)
    migration = get_migration(temporal_env.client, migration_id)
    with observing(kube, namespace, namespace, name) as observer:
        code, _, stderr = await run_readme(
            temporal_env, cmd["start it, waiting for an approval before each ordinal"]
        )
        assert code == 0, stderr
        await migration.wait_until(until("awaiting_approval", 2), within=60)

        # The documented query, and `stsmigrate status`, agree with the clusters.
        progress = json.loads(
            await temporal_cli(address(temporal_env), *shlex.split(cmd["where is it?"])[1:])
        )
        assert progress["queryResult"][0]["waiting_for_approval"] == 2
        assert slices(kube, namespace, name)["destination"] == (3, 0, 0)
        code, out, _ = await stsmigrate(
            address(temporal_env), worker.task_queue, "status", migration_id
        )
        assert code == 0
        assert "ordinals moved: 0/3" in out
        assert f"waiting for approval of ordinal 2: stsmigrate approve {migration_id}" in out

        # Out of turn: the update's validator refuses it and says what is next.
        out_of_turn = cmd["approve ordinal 4, only if it is the next one"].replace(
            '"ordinal": 4', '"ordinal": 0'
        )
        code, _, stderr = await run_readme(temporal_env, out_of_turn)
        assert code != 0
        assert "ordinal 0 is not next; the next ordinal to move is 2" in stderr

        # In turn through the Temporal CLI ...
        code, _, stderr = await run_readme(temporal_env, cmd["approve the next ordinal"])
        assert code == 0, stderr
        await migration.wait_until(until("awaiting_approval", 1), within=60)
        assert slices(kube, namespace, name) == {"source": (0, 2, 2), "destination": (2, 1, 1)}
        code, out, _ = await stsmigrate(
            address(temporal_env), worker.task_queue, "status", migration_id
        )
        assert "ordinals moved: 1/3" in out and "waiting for approval of ordinal 1" in out

        # ... and through stsmigrate (an update, then a signal).
        code, out, err = await stsmigrate(
            address(temporal_env), worker.task_queue, "approve", migration_id, "--ordinal", "0"
        )
        assert code == 2 and "ordinal 0 is not next" in err
        code, out, err = await stsmigrate(
            address(temporal_env), worker.task_queue, "approve", migration_id
        )
        assert code == 0, err
        assert "approve accepted" in out
        await migration.wait_until(until("awaiting_approval", 0), within=60)
        code, out, err = await stsmigrate(
            address(temporal_env), worker.task_queue, "approve", migration_id, "--all", "--signal"
        )
        assert code == 0, err
        result = await migration.result()

        # Found by the documented search-attribute queries while it ran and after.
        listed = json.loads(
            await temporal_cli(
                address(temporal_env), *shlex.split(cmd["every migration of one app"])[1:]
            )
        )
        assert migration_id in {w["execution"]["workflowId"] for w in listed}
    assert observer.verdict([2, 1, 0], (0, 0), (0, 3)) == []
    assert [o.ordinal for o in result.moved] == [2, 1, 0]
    assert result.placement == {"2": "destination", "1": "destination", "0": "destination"}
    record("operations_approvals_parent", (await histories(temporal_env, migration_id))[0])


async def test_the_readme_python_example_runs_as_written(
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    worker: WorkerProcess,
    namespace: str,
    tmp_path: Path,
) -> None:
    deploy_app(kube["source"], namespace, "redis", 2, secret_value="x", ready_delay="100ms")
    readme = (REPO / "README.md").read_text()
    code = readme.split("<!-- api-example", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    script = tmp_path / "example.py"
    script.write_text(
        code.replace('"prod-a"', '"source"')
        .replace('"prod-b"', '"destination"')
        .replace('"shop"', f'"{namespace}"')
    )
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": address(temporal_env),
        "STSMIGRATE_TASK_QUEUE": worker.task_queue,
    }
    code_, out, err = await run_command(sys.executable, str(script), env=env, within=180)
    assert code_ == 0, err
    assert f"started stsmigrate/source/{namespace}/redis" in out
    assert "waiting for approval of ordinal 1" in out
    assert "moved [1, 0] placement {'1': 'destination', '0': 'destination'}" in out


# About 29 s on a real migration: in make faults (make test keeps the fakes' version,
# tests/test_controls.py), so make test stays under 20 minutes.
@pytest.mark.slow
@pytest.mark.faults
async def test_pause_during_and_between_ordinals_changes_nothing_until_resumed(
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    worker: WorkerProcess,
    namespace: str,
) -> None:
    name = "redis"
    deploy_app(kube["source"], namespace, name, 3, secret_value="x", ready_delay="1s", grace=2)
    request = request_for(name, namespace, approval=ApprovalPolicy(mode="ordinals", ordinals=[0]))
    with observing(kube, namespace, namespace, name) as observer:
        migration = await start_migration(
            temporal_env.client,
            request,
            migration_id=f"pause-{uuid.uuid4().hex[:8]}",
            task_queue=worker.task_queue,
        )
        # During ordinal 2's move (its pod takes 2 s to stop): the move finishes, and
        # the pause holds before ordinal 1 changes anything.
        await migration.wait_until(until("moving", 2, "source_pod_gone"), within=60, poll=0.1)
        await migration.pause("during a move")
        held = await migration.wait_until(until("paused", 1), within=60)
        assert held.pause_reason == "during a move"
        assert [r.ordinal for r in held.finished] == [2]
        await still(kube, namespace, migration, seconds=3)
        assert slices(kube, namespace, name) == {"source": (0, 2, 2), "destination": (2, 1, 1)}

        # Between ordinals (0 waits for its approval): pause there too.
        await migration.resume()
        await migration.wait_until(until("awaiting_approval", 0), within=60)
        code, _, err = await stsmigrate(
            address(temporal_env), worker.task_queue, "pause", migration.id, "--reason", "freeze"
        )
        assert code == 0, err
        await migration.wait_until(until("paused", 0), within=30)
        await migration.approve(0)  # accepted, but nothing moves while paused
        await still(kube, namespace, migration, seconds=3)
        code, _, err = await stsmigrate(
            address(temporal_env), worker.task_queue, "resume", migration.id
        )
        assert code == 0, err
        result = await migration.result()
    assert observer.verdict([2, 1, 0], (0, 0), (0, 3)) == []
    assert [o.ordinal for o in result.moved] == [2, 1, 0]


async def still(
    kube: dict[str, client.ApiClient], namespace: str, migration: Migration, seconds: float
) -> None:
    """Nothing in either cluster changes for ``seconds`` and the migration stays paused."""
    before = snapshot(kube, namespace)
    await asyncio.sleep(seconds)
    assert snapshot(kube, namespace) == before
    assert (await migration.progress()).phase == "paused"


async def test_abort_mid_move_ends_whole_and_a_later_start_continues(
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    worker: WorkerProcess,
    namespace: str,
) -> None:
    name = "redis"
    deploy_app(kube["source"], namespace, name, 3, secret_value="x", ready_delay="1s", grace=2)
    request = request_for(name, namespace)
    with observing(kube, namespace, namespace, name) as observer:
        migration = await start_migration(
            temporal_env.client, request, task_queue=worker.task_queue
        )
        assert migration.id == f"stsmigrate/source/{namespace}/{name}"
        await migration.wait_until(until("moving", 1, "source_pod_gone"), within=60, poll=0.1)
        code, out, err = await stsmigrate(
            address(temporal_env),
            worker.task_queue,
            "abort",
            migration.id,
            "--reason",
            "maintenance window over",
        )
        assert code == 0, err
        first = await migration.result()
        aborted_run = await histories(temporal_env, migration.id)
        record("operations_abort_mid_move_parent", aborted_run[0])
        record("operations_abort_mid_move_ordinal_1", aborted_run[2])
        # Ordinal 1 had stopped its source pod: it finished its move, then the run ended.
        assert first.aborted and first.abort_reason == "maintenance window over"
        assert [o.ordinal for o in first.moved] == [2, 1]
        assert first.placement == {"2": "destination", "1": "destination", "0": "source"}
        assert slices(kube, namespace, name) == {"source": (0, 1, 1), "destination": (1, 2, 2)}
        code, out, _ = await stsmigrate(
            address(temporal_env), worker.task_queue, "status", migration.id
        )
        assert code == 0 and "aborted (maintenance window over)" in out

        # The same id may start again: it continues from the clusters' state.
        again = await start_migration(temporal_env.client, request, task_queue=worker.task_queue)
        second = await again.result()
    assert observer.verdict([2, 1, 0], (0, 0), (0, 3)) == []
    assert [o.ordinal for o in second.moved] == [0] and not second.aborted
    assert second.placement == {"2": "destination", "1": "destination", "0": "destination"}
    found = await histories(temporal_env, migration.id)  # the second run, same id
    record("operations_continue_parent", found[0])


async def visible_in_some_frame(page: Any, text: str, within: float) -> None:
    """Wait until ``text`` is visible in the page or one of its frames (the UI renders
    user markdown, such as summaries and details, in sandboxed iframes)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        for frame in page.frames:
            found = frame.get_by_text(text).first
            if await found.count() and await found.is_visible():
                return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{text!r} not visible in the Temporal UI after {within} s")
        await asyncio.sleep(0.5)


async def test_the_temporal_ui_shows_a_waiting_migration(
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    temporal_ui_port: int,
    worker: WorkerProcess,
    namespace: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from playwright.async_api import async_playwright

    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: `make test-packages` installs it"
    name = "redis"
    deploy_app(kube["source"], namespace, name, 2, secret_value="x", ready_delay="100ms")
    request = request_for(name, namespace, approval=ApprovalPolicy(mode="first"))
    migration = await start_migration(
        temporal_env.client,
        request,
        migration_id=f"ui-{uuid.uuid4().hex[:8]}",
        task_queue=worker.task_queue,
    )
    await migration.wait_until(until("awaiting_approval", 1), within=60)
    url = ui_link(f"http://127.0.0.1:{temporal_ui_port}", "default", migration.id)
    shot = tmp_path_factory.mktemp("ui") / "migration.png"
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=chromium,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1600})
            await page.goto(url)
            summary = f"move StatefulSet {namespace}/{name} from source to destination/{namespace}"
            try:
                await page.get_by_text(migration.id).first.wait_for(timeout=30_000)
                # Summary, details and current details live under "User Metadata".
                await page.get_by_text("User Metadata").first.click()
                for text in (summary, "StatefulSet", "waiting for approval of ordinal 1"):
                    await visible_in_some_frame(page, text, within=30)
            finally:  # the picture is the evidence either way
                await page.screenshot(path=str(shot), full_page=True)
                print(f"screenshot: {shot}")
        finally:
            await browser.close()
    assert shot.stat().st_size > 10_000
    await migration.abort("ui test done")
    assert (await migration.result()).aborted


async def test_stsmigrate_worker_plan_start_from_a_file_and_watch(
    clusters: LocalClusters,
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    namespace: str,
    tmp_path: Path,
) -> None:
    """Everything through the command, the worker included (`stsmigrate worker`)."""
    worker = WorkerProcess(
        address(temporal_env),
        clusters.kubeconfig,
        tmp_path / "worker.log",
        f"stsmigrate-worker-{uuid.uuid4().hex[:8]}",
        argv=[str(Path(sys.executable).parent / "stsmigrate"), "worker"],
    )
    worker.start()
    try:
        await plan_start_and_watch(kube, temporal_env, worker, namespace, tmp_path)
    finally:
        worker.stop()
    assert '"event": "worker_started"' in (tmp_path / "worker.log").read_text()


async def plan_start_and_watch(
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    worker: WorkerProcess,
    namespace: str,
    tmp_path: Path,
) -> None:
    name = "redis"
    deploy_app(kube["source"], namespace, name, 2, secret_value="x", ready_delay="100ms")
    run = functools.partial(stsmigrate, address(temporal_env), worker.task_queue)
    target = ["-s", name, "-n", namespace, "--from", "source", "--to", "destination"]

    before = snapshot(kube, namespace)
    code, out, err = await run("plan", *target)
    assert code == 0, err
    assert "create owning the empty slice [2, 2)" in out
    assert f"move {name}-1" in out and f"move {name}-0" in out
    code, out, err = await run("plan", *target, "--storage-class", "local-csi=no-such-class")
    assert code == 1, err
    assert "blocking problem(s)" in out and "no-such-class" in out
    assert snapshot(kube, namespace) == before  # plans change nothing

    file = tmp_path / "request.yaml"
    file.write_text(
        f"statefulset: {name}\nnamespace: {namespace}\nsource_context: source\n"
        "destination_context: destination\ntimeouts: {healthy: 60, pod_gone: 60, detach: 60, "
        "bound: 60, pod_ready: 60}\n"
    )
    migration_id = f"stsmigrate/source/{namespace}/{name}"
    with observing(kube, namespace, namespace, name) as observer:
        code, out, err = await run("start", "-f", str(file), "--approval", "first")
        assert code == 0, err
        assert f"started {migration_id}" in out
        link = f"http://localhost:8233/namespaces/default/workflows/{quote(migration_id, safe='')}"
        assert f"UI: {link}" in out
        # One migration per StatefulSet at a time: a second start is refused.
        code, out, err = await run("start", *target)
        assert code == 1
        assert f"migration {migration_id} is already running" in err

        migration = get_migration(temporal_env.client, migration_id)
        await migration.wait_until(until("awaiting_approval", 1), within=60)
        code, out, err = await run("approve", migration_id, "--all")
        assert code == 0, err
        code, out, err = await run("watch", migration_id)
    assert code == 0, err
    assert f"{migration_id}: done, 2 ordinal(s) moved" in out
    assert observer.verdict([1, 0], (0, 0), (0, 2)) == []
    code, out, err = await run("status", migration_id)
    assert code == 0 and "done, 2 ordinal(s) moved" in out


async def test_health_gates_on_a_real_migration_pause_when_redis_fails(
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    worker: WorkerProcess,
    namespace: str,
    tmp_path: Path,
) -> None:
    """Ordinal 1 passes its gates (pod Ready for 1 s, a real Redis Cluster ok); a
    master is stopped, ordinal 0 moves, its gate fails and the run pauses with the
    reason; abort ends it with both ordinals in the destination."""
    redis = RedisCluster(tmp_path / "redis")
    redis.start()
    try:
        deadline = time.monotonic() + 30
        while "cluster_state:ok" not in redis.info(redis.ports[0]):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        name = "redis"
        deploy_app(kube["source"], namespace, name, 2, secret_value="x", ready_delay="100ms")
        gates = HealthGates(
            probes=[
                Probe(kind="ready", soak=1),
                Probe(
                    kind="redis_cluster",
                    host="127.0.0.1",
                    port=redis.ports[0],
                    expected_nodes=3,
                    retries=2,
                    interval=1,
                ),
            ]
        )
        request = request_for(
            name, namespace, health=gates, approval=ApprovalPolicy(mode="ordinals", ordinals=[0])
        )
        with observing(kube, namespace, namespace, name) as observer:
            migration = await start_migration(
                temporal_env.client,
                request,
                migration_id=f"gates-{uuid.uuid4().hex[:8]}",
                task_queue=worker.task_queue,
            )
            waiting = await migration.wait_until(until("awaiting_approval", 0), within=60)
            first = waiting.finished[0]
            assert first.health is not None and first.health.ok, first.health
            redis.stop_node(redis.ports[2])
            deadline = time.monotonic() + 30
            while "cluster_state:fail" not in redis.info(redis.ports[0]):
                assert time.monotonic() < deadline, "the cluster never noticed the stop"
                await asyncio.sleep(0.2)
            await migration.approve(0)
            held = await migration.wait_until(lambda p: p.phase == "paused", within=90)
            code, out, _ = await stsmigrate(
                address(temporal_env), worker.task_queue, "status", migration.id
            )
            assert code == 0 and "health gate failed on ordinal 0" in out
            await migration.abort("redis is down")
            result = await migration.result()
    finally:
        redis.stop()
    assert "health gate failed on ordinal 0: redis_cluster: redis 127.0.0.1:" in held.pause_reason
    assert "cluster_state:fail" in held.pause_reason
    assert observer.verdict([1, 0], (0, 0), (0, 2)) == []
    assert result.aborted and result.placement == {"1": "destination", "0": "destination"}


# About 29 s on a real migration: in make faults (make test keeps the fakes' version,
# tests/test_controls.py), so make test stays under 20 minutes.
@pytest.mark.slow
@pytest.mark.faults
async def test_rollback_gives_an_ordinal_back_on_its_own_volumes_then_it_moves_again(
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    worker: WorkerProcess,
    namespace: str,
) -> None:
    name = "redis"
    deploy_app(kube["source"], namespace, name, 3, secret_value="x", ready_delay="1s")
    request = request_for(name, namespace, approval=ApprovalPolicy(mode="ordinals", ordinals=[0]))
    run = functools.partial(stsmigrate, address(temporal_env), worker.task_queue)
    with observing(kube, namespace, namespace, name) as observer:
        migration = await start_migration(
            temporal_env.client,
            request,
            migration_id=f"rollback-{uuid.uuid4().hex[:8]}",
            task_queue=worker.task_queue,
        )
        await migration.wait_until(until("awaiting_approval", 0), within=90)
        plan = await migration.plan()
        assert plan is not None
        volumes = {v.claim: v.volume for o in plan.ordinals if o.ordinal == 1 for v in o.volumes}

        code, _, err = await run("rollback", migration.id, "--reason", "latency")
        assert code == 0, err
        held = await migration.wait_until(until("paused", 1), within=90)
        assert held.rolled_back == [1]
        assert slices(kube, namespace, name) == {"source": (0, 2, 2), "destination": (2, 1, 1)}
        # Pod 1 runs in the source again, on its own volumes (the same PVs, the same storage).
        core = client.CoreV1Api(kube["source"])
        for claim, volume in volumes.items():
            pvc: Any = core.read_namespaced_persistent_volume_claim(claim, namespace)
            assert (pvc.spec.volume_name, pvc.status.phase) == (volume, "Bound")
        assert observer.verdict([2], (0, 2), (2, 1)) == []  # markers intact, no overlap

        # Resume: ordinal 1 moves again (its destination volumes are re-opened), then 0.
        code, _out, err = await run("resume", migration.id)
        assert code == 0, err
        await migration.wait_until(until("awaiting_approval", 0), within=90)
        await migration.approve(0)
        result = await migration.result()
    assert observer.verdict([2, 1, 0], (0, 0), (0, 3)) == []
    assert [o.ordinal for o in result.moved] == [2, 1, 0] and result.rolled_back == [1]
    record("operations_rollback_parent", (await histories(temporal_env, migration.id))[0])
