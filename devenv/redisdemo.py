"""The seed's demo for real: a 6-node Redis Cluster moved while a client keeps using it.

``python -m devenv demo --redis`` (``make demo-redis``): the Temporal dev server, the
two local clusters each with a real kubelet node (devenv/realnodes.py) and a real
worker; six real redis-server pods of devenv/redis-cluster-app.yaml in the source,
formed into a Redis Cluster of three masters and three replicas with
``redis-cli --cluster create`` from this machine against the pods' IPs (no DNS or
kube-proxy for real pods). A client on this machine (redis-py's RedisCluster)
writes and reads keys from a thread during the whole migration; the migration has
a ``redis_cluster`` health gate on the moved pod's IP and, unless ``--no-hooks``,
the app's two hooks: ``before_give_up`` hands a master's slots to a replica
(CLUSTER FAILOVER) before its pod goes, ``after_take`` waits until the moved node
is in sync. At the end: the client's counts, every key it wrote read back,
``CLUSTER NODES`` from a destination pod, each ordinal's node id before and after,
and the independent observer's verdict.

The password is a random one in the Secret ``redis-auth``, created from stdin (no
argv holds it); this process reads it back from the Secret for its own client and
``redis-cli`` (REDISCLI_AUTH), and never prints it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import secrets
import subprocess
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from kubernetes import config
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from contract import SEARCH_ATTRIBUTES, TASK_QUEUE, MigrationRequest
from contract.request import PROBE_PLACEHOLDERS
from devenv import wait_for_interrupt
from devenv.clusters import ClusterError, LocalClusters
from devenv.demo import create_namespace, follow, say, say_verdict, start_worker, stop_worker
from devenv.observer import Observer
from devenv.temporal import DevServer
from stsmigrate.api import start_migration
from stsmigrate.cli import ui_link

APP = Path(__file__).with_name("redis-cluster-app.yaml")
NAMESPACE = "kep-3335"  # the seed's
STATEFULSET = "redis"
REPLICAS = 6
PORT = 6379
SECRET, SECRET_KEY = "redis-auth", "password"
ORDER = list(range(REPLICAS - 1, -1, -1))  # the migrator moves the highest first
MIGRATION_TIMEOUT = 600.0
# The hooks of the request: the scripts live in the app's ConfigMap (mounted at
# /config), beside the app they know; each run through the exec API in pod k.
HOOKS = {
    "before_give_up": [
        {
            "name": "failover",
            "command": ["sh", "/config/before-give-up.sh"],
            "timeout": 60,
            "retries": 2,
            "interval": 5,
        }
    ],
    "after_take": [
        {
            "name": "synced",
            "command": ["sh", "/config/after-take.sh"],
            "timeout": 90,
            "retries": 2,
            "interval": 5,
        }
    ],
}


@dataclass
class Figures:
    """What the client saw; ``longest_pause`` is the longest time between two
    successful operations (seconds)."""

    writes: int = 0
    reads: int = 0
    failures: int = 0
    wrong_reads: int = 0
    longest_pause: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)

    def line(self) -> str:
        errors = ", ".join(f"{n} {name}" for name, n in self.errors.most_common()) or "none"
        return (
            f"writes {self.writes}, reads {self.reads}, failed operations {self.failures} "
            f"({errors}), wrong reads {self.wrong_reads}, longest pause "
            f"{self.longest_pause:.2f} s"
        )


class LoadClient(threading.Thread):
    """Writes a new key, then reads a random key it wrote, over and over, sleeping
    ``pace`` seconds after each pair (about 100 pairs a second here); keeps every key
    whose write succeeded."""

    def __init__(self, hosts: list[str], password: str, pace: float = 0.005) -> None:
        super().__init__(name="redis-load", daemon=True)
        self.cluster = RedisCluster(
            startup_nodes=[ClusterNode(h, PORT) for h in hosts],
            password=password,
            decode_responses=True,
            socket_timeout=1.0,
            socket_connect_timeout=1.0,
        )
        self.pace = pace
        self.figures = Figures()
        self.written: dict[str, str] = {}
        self._keys: list[str] = []
        self._stopping = threading.Event()
        self._last_ok = 0.0

    def _ok(self) -> None:
        now = time.monotonic()
        self.figures.longest_pause = max(self.figures.longest_pause, now - self._last_ok)
        self._last_ok = now

    def _failed(self, e: Exception) -> None:
        self.figures.failures += 1
        self.figures.errors[type(e).__name__] += 1

    def run(self) -> None:
        self._last_ok = time.monotonic()
        n = 0
        while not self._stopping.is_set():
            n += 1
            key, value = f"demo:{n}", secrets.token_hex(8)
            try:
                self.cluster.set(key, value)
                self.figures.writes += 1
                self.written[key] = value
                self._keys.append(key)
                self._ok()
            except (redis.RedisError, RedisClusterException) as e:
                self._failed(e)
            key = random.choice(self._keys) if self._keys else ""  # noqa: S311 - not crypto
            if key:
                try:
                    got = self.cluster.get(key)
                    self.figures.reads += 1
                    if got != self.written[key]:
                        self.figures.wrong_reads += 1
                    self._ok()
                except (redis.RedisError, RedisClusterException) as e:
                    self._failed(e)
            time.sleep(self.pace)

    def stop(self) -> Figures:
        self._stopping.set()
        self.join(30)
        if self.is_alive():  # it would go on writing while the keys are read back
            raise ClusterError("the Redis client did not stop within 30 s")
        # The time since the last success counts too: a client stuck at the end paused.
        self._ok()
        self.cluster.close()
        return self.figures


@dataclass
class DemoResult:
    figures: Figures
    keys_written: int
    lost: dict[str, str | None]  # key -> what the final read returned (not its value)
    node_ids_before: dict[int, str]
    node_ids_after: dict[int, str]
    roles_before: dict[int, str]
    roles_after: dict[int, str]
    writes_during: int  # successful writes between the migration's start and end
    cluster_states: dict[int, str]  # destination ordinal -> cluster_state
    cluster_nodes: str
    violations: list[str]
    leaks: list[str]  # where the password was found: the history, the worker's log, specs
    # The hook's script path found in the histories' text: the search sees payloads.
    history_shows_request: bool
    hooks: bool
    migration_seconds: float


def _pods(lc: LocalClusters, context: str) -> dict[int, dict[str, Any]]:
    found = json.loads(
        lc.kubectl(
            context, "-n", NAMESPACE, "get", "pods", "-l", f"app={STATEFULSET}", "-o", "json"
        )
    )["items"]
    return {int(p["metadata"]["name"].rsplit("-", 1)[1]): p for p in found}


def pod_ips(lc: LocalClusters, context: str) -> dict[int, str]:
    return {k: p["status"]["podIP"] for k, p in sorted(_pods(lc, context).items())}


def redis_cli(lc: LocalClusters, context: str, k: int, *args: str) -> str:
    """redis-cli in pod k (it takes the password from the container's REDISCLI_AUTH)."""
    pod = f"{STATEFULSET}-{k}"
    return lc.kubectl(context, "-n", NAMESPACE, "exec", pod, "--", "redis-cli", *args).strip()


def cluster_info(lc: LocalClusters, context: str, k: int) -> dict[str, str]:
    text = redis_cli(lc, context, k, "cluster", "info")
    return dict(line.strip().split(":", 1) for line in text.splitlines() if ":" in line)


def node_ids(lc: LocalClusters, context: str) -> dict[int, str]:
    return {k: redis_cli(lc, context, k, "cluster", "myid") for k in range(REPLICAS)}


def roles(lc: LocalClusters, context: str) -> dict[int, str]:
    """master or slave, as each pod's node says of itself."""
    found = {}
    for k in range(REPLICAS):
        text = redis_cli(lc, context, k, "info", "replication")
        found[k] = next(
            line.strip().split(":", 1)[1] for line in text.splitlines() if line.startswith("role:")
        )
    return found


def deploy(lc: LocalClusters) -> str:
    """The namespace in both clusters, the Secret and the app in the source; returns the
    password (created here, from stdin: no argv holds it)."""
    create_namespace(lc, NAMESPACE)
    password = secrets.token_urlsafe(18)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": NAMESPACE},
        "data": {SECRET_KEY: base64.b64encode(password.encode()).decode()},
    }
    # create, not apply: apply would keep the whole object, the password too, in the
    # Secret's last-applied-configuration annotation.
    lc.kubectl("source", "create", "-f", "-", input=json.dumps(secret))
    lc.kubectl("source", "-n", NAMESPACE, "apply", "-f", str(APP))
    lc.kubectl(
        "source",
        "-n",
        NAMESPACE,
        "rollout",
        "status",
        f"statefulset/{STATEFULSET}",
        "--timeout=180s",
    )
    return password


def form_cluster(lc: LocalClusters, password: str) -> None:
    """``redis-cli --cluster create`` of the six pods (3 masters, 3 replicas), then wait
    until each reports cluster_state:ok with six known nodes and each replica is in sync
    with its master."""
    ips = pod_ips(lc, "source")
    done = subprocess.run(
        [
            "redis-cli",
            "--cluster",
            "create",
            *[f"{ips[k]}:{PORT}" for k in range(REPLICAS)],
            "--cluster-replicas",
            "1",
            "--cluster-yes",
        ],
        env={**os.environ, "REDISCLI_AUTH": password},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise ClusterError(f"redis-cli --cluster create: {done.stdout[-1500:]}{done.stderr}")
    deadline = time.monotonic() + 60
    for k in range(REPLICAS):
        while True:
            info = cluster_info(lc, "source", k)
            replication = redis_cli(lc, "source", k, "info", "replication")
            synced = "role:master" in replication or "master_link_status:up" in replication
            whole = info.get("cluster_state") == "ok" and info.get("cluster_known_nodes") == "6"
            if synced and whole:
                break
            if time.monotonic() > deadline:
                raise ClusterError(f"{STATEFULSET}-{k}: cluster info {info}")
            time.sleep(0.5)


def migration_request(hooks: bool) -> MigrationRequest:
    probes = []
    if "pod_ip" in PROBE_PLACEHOLDERS:
        probes.append(
            {
                "kind": "redis_cluster",
                "name": "redis-cluster",
                "host": "{pod_ip}",
                "port": PORT,
                "expected_nodes": REPLICAS,
                "password_secret": {"name": SECRET, "key": SECRET_KEY},
                "timeout": 5,
                "retries": 30,
                "interval": 1,
            }
        )
    else:
        say("  (this checkout has no {pod_ip} placeholder: no redis_cluster gate)")
        probes.append({"kind": "ready", "soak": 2})
    body: dict[str, Any] = {
        "statefulset": STATEFULSET,
        "namespace": NAMESPACE,
        "source_context": "source",
        "destination_context": "destination",
        "health": {"probes": probes, "on_failure": "pause"},
    }
    if hooks:
        body["hooks"] = HOOKS
    return MigrationRequest.model_validate(body)


def password_leaks(lc: LocalClusters, password: str, worker_log: Path, history: str) -> list[str]:
    """Where the password shows: Temporal's histories (hooks' and probes' inputs and
    results), the worker's log, the StatefulSets and pods of both clusters (I5)."""
    places = {"workflow histories": history, "worker log": worker_log.read_text()}
    for context in lc.clusters:
        for kind in ("statefulsets", "pods", "events", "configmaps"):
            places[f"{context} {kind}"] = lc.kubectl(
                context, "-n", NAMESPACE, "get", kind, "-o", "json"
            )
        # A Secret's metadata (annotations such as last-applied-configuration).
        places[f"{context} secret metadata"] = lc.kubectl(
            context, "-n", NAMESPACE, "get", "secrets", "-o", "jsonpath={.items[*].metadata}"
        )
    # A history's payloads are JSON in bytes: the text form escapes no URL-safe
    # character. The base64 form too (a payload or a Secret's data copied somewhere).
    forms = (password, base64.b64encode(password.encode()).decode())
    return [name for name, text in places.items() if any(f in text for f in forms)]


def read_back(lc: LocalClusters, password: str, written: dict[str, str]) -> dict[str, str | None]:
    """Every key the client wrote, read from the destination's pods: the ones whose
    value is not the one written."""
    cluster = RedisCluster(
        startup_nodes=[ClusterNode(ip, PORT) for ip in pod_ips(lc, "destination").values()],
        password=password,
        decode_responses=True,
        socket_timeout=5.0,
    )
    lost: dict[str, str | None] = {}
    try:
        keys = list(written)
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            with cluster.pipeline() as pipe:
                for key in chunk:
                    pipe.get(key)
                values = pipe.execute()
            for key, value in zip(chunk, values, strict=True):
                if value != written[key]:
                    lost[key] = value
    finally:
        cluster.close()
    return lost


async def histories(client: Client) -> str:
    """Every workflow run's history on the dev server (the migration, its ordinals' child
    workflows, every run it continued as new), as protobuf text: payloads in it as
    written (this demo has no codec)."""
    found: list[str] = []
    async for execution in client.list_workflows():
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
        found.extend(str(event) for event in (await handle.fetch_history()).events)
    return "\n".join(found)


async def migrate(
    server: DevServer, lc: LocalClusters, request: MigrationRequest
) -> tuple[list[str], float, str]:
    client = await Client.connect(server.address, data_converter=pydantic_data_converter)
    apis = {
        name: config.new_client_from_config(
            config_file=str(lc.kubeconfig), context=name, persist_config=False
        )
        for name in lc.clusters
    }
    observer = Observer(apis, NAMESPACE, NAMESPACE, STATEFULSET, ["data"])
    observer.start()
    migration_id = f"stsmigrate/source/{NAMESPACE}/{STATEFULSET}-{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    try:
        migration = await start_migration(
            client, request, migration_id=migration_id, task_queue=TASK_QUEUE
        )
        say(f"migration {migration_id} started; watch it in the Temporal UI:")
        say(f"  {ui_link(server.ui_url, 'default', migration_id)}")
        following = asyncio.create_task(follow(client, migration_id, ORDER))
        deadline = time.monotonic() + MIGRATION_TIMEOUT
        while not following.done():
            # A failed hook or gate pauses the run: say why instead of waiting for ever.
            progress = await migration.progress()
            if progress.phase in ("paused", "failed", "aborted") or progress.blocked:
                following.cancel()
                why = progress.pause_reason or progress.blocked or progress.error
                raise ClusterError(
                    f"the migration is {progress.phase} at ordinal {progress.current_ordinal}: "
                    f"{why}"
                )
            if time.monotonic() > deadline:
                following.cancel()
                raise ClusterError(f"the migration did not end within {MIGRATION_TIMEOUT:.0f} s")
            await asyncio.wait([following], timeout=2)
        await following
        await asyncio.wait_for(migration.result(), 60)
    finally:
        observer.stop()
    seconds = time.monotonic() - started
    return observer.verdict(ORDER, (0, 0), (0, REPLICAS)), seconds, await histories(client)


def run_demo(workdir: Path, hooks: bool = True, wait: bool = False) -> DemoResult:
    server = DevServer(workdir / "temporal", db_filename=workdir / "temporal" / "temporal.db")
    worker = None
    try:
        say("starting the Temporal dev server ...")
        server.start(search_attributes=SEARCH_ATTRIBUTES)
        say("starting the source and destination clusters, each with a real kubelet node ...")
        started = time.monotonic()
        with LocalClusters(workdir / "clusters", nodes=1, real_nodes=True) as lc:
            say(f"  ready in {time.monotonic() - started:.1f} s")
            worker = start_worker(server, lc, workdir / "worker.log")
            say(f"deploying six real redis-server pods into source/{NAMESPACE} ...")
            started = time.monotonic()
            password = deploy(lc)
            form_cluster(lc, password)
            took = time.monotonic() - started
            say(f"  Redis Cluster of 3 masters and 3 replicas ok in {took:.1f} s")
            before, roles_before = node_ids(lc, "source"), roles(lc, "source")
            say("CLUSTER NODES from source redis-0:")
            say(redis_cli(lc, "source", 0, "cluster", "nodes"))
            request = migration_request(hooks)
            load = LoadClient(list(pod_ips(lc, "source").values()), password)
            load.start()
            say("client: writing and reading keys from this machine ...")
            time.sleep(3)
            try:
                at_start = load.figures.writes
                violations, seconds, history = asyncio.run(migrate(server, lc, request))
                writes_during = load.figures.writes - at_start
                time.sleep(3)
            finally:
                figures = load.stop()
            say(f"migration done in {seconds:.1f} s ({'with' if hooks else 'without'} the hooks)")
            say(f"client: {figures.line()}")
            lost = read_back(lc, password, load.written)
            say(
                f"read back: {len(load.written) - len(lost)} of {len(load.written)} keys "
                "written have their value"
            )
            after, roles_after = node_ids(lc, "destination"), roles(lc, "destination")
            states = {
                k: cluster_info(lc, "destination", k).get("cluster_state", "?")
                for k in range(REPLICAS)
            }
            nodes = redis_cli(lc, "destination", 0, "cluster", "nodes")
            say("CLUSTER NODES from destination redis-0:")
            say(nodes)
            same = [k for k in range(REPLICAS) if before[k] == after[k]]
            say(f"same node id before and after for ordinals {same} of {list(range(REPLICAS))}")
            say(f"roles before: {roles_before}")
            say(f"roles after:  {roles_after}")
            say(f"cluster_state per destination pod: {states}")
            say_verdict(say, violations)
            leaks = password_leaks(lc, password, workdir / "worker.log", history)
            say(f"the password in: {', '.join(leaks) or 'no history, worker log or spec'}")
            result = DemoResult(
                figures=figures,
                keys_written=len(load.written),
                lost=lost,
                node_ids_before=before,
                node_ids_after=after,
                roles_before=roles_before,
                roles_after=roles_after,
                writes_during=writes_during,
                cluster_states=states,
                cluster_nodes=nodes,
                violations=violations,
                leaks=leaks,
                history_shows_request="/config/before-give-up.sh" in history,
                hooks=hooks,
                migration_seconds=seconds,
            )
            if wait:
                say(f"kubeconfig:   {lc.kubeconfig}  (contexts: {', '.join(lc.clusters)})")
                say(f"Temporal UI:  {server.ui_url}")
                say("Ctrl-C stops everything.")
                wait_for_interrupt()
            return result
    finally:
        stop_worker(worker)
        server.stop()


def run(workdir: Path, hooks: bool, wait: bool) -> int:
    result = run_demo(workdir, hooks=hooks, wait=wait)
    ok = (
        not result.violations
        and not result.lost
        and result.node_ids_before == result.node_ids_after
        and set(result.cluster_states.values()) == {"ok"}
    )
    return 0 if ok else 1
