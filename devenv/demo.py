"""The demo: a real migration of a Redis-like StatefulSet between the local clusters.

Temporal dev server (with its UI) + "source" and "destination" clusters + a real
worker process; deploys devenv/demo-app.yaml into the source, starts
MigrateStatefulSet, prints each ordinal as it moves, and ends with the
independent observer's verdict.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from kubernetes import config
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError

from contract import (
    SEARCH_ATTRIBUTES,
    TASK_QUEUE,
    DescribeClustersInput,
    DescribeClustersResult,
    MigrationRequest,
    OrdinalResult,
    ordinal_workflow_id,
)
from devenv import wait_for_interrupt
from devenv.clusters import ClusterError, LocalClusters
from devenv.observer import Observer
from devenv.temporal import DevServer
from stsmigrate.api import start_migration
from stsmigrate.cli import ui_link

REPO = Path(__file__).resolve().parent.parent
APP = Path(__file__).with_name("demo-app.yaml")
NAMESPACE = "shop"


def say(message: str = "") -> None:
    print(message, flush=True)


def create_namespace(lc: LocalClusters, namespace: str) -> None:
    """``namespace`` in both clusters, with its default ServiceAccount."""
    for context in lc.clusters:
        lc.kubectl(context, "create", "namespace", namespace)
    for context in lc.clusters:
        # Pods are refused until the namespace's default ServiceAccount exists.
        deadline = time.monotonic() + 60
        while True:
            try:
                lc.kubectl(context, "-n", namespace, "get", "serviceaccount", "default")
                break
            except ClusterError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def deploy_app(lc: LocalClusters) -> None:
    create_namespace(lc, NAMESPACE)
    # A random password: the demo shows it never reaches Temporal or a log.
    lc.kubectl(
        "source",
        "-n",
        NAMESPACE,
        "create",
        "secret",
        "generic",
        "redis-auth",
        f"--from-literal=password={secrets.token_urlsafe(18)}",
    )
    lc.kubectl("source", "-n", NAMESPACE, "apply", "-f", str(APP))
    lc.kubectl(
        "source", "-n", NAMESPACE, "rollout", "status", "statefulset/redis", "--timeout=180s"
    )


async def follow(client: Client, migration_id: str, ordinals: list[int]) -> None:
    """Print each ordinal as its child workflow starts and finishes."""
    for k in ordinals:
        handle = client.get_workflow_handle(
            ordinal_workflow_id(migration_id, k), result_type=OrdinalResult
        )
        announced = False
        while True:
            try:
                status = (await handle.describe()).status
            except RPCError:
                status = None  # not started yet
            if status is not None and not announced:
                say(f"  ordinal {k}: moving redis-{k} from source to destination ...")
                announced = True
            if status == WorkflowExecutionStatus.COMPLETED:
                result = await handle.result()
                slowest = sorted(result.steps, key=lambda s: -s.seconds)[:3]
                detail = ", ".join(f"{s.step} {s.seconds:.1f} s" for s in slowest)
                say(f"  ordinal {k}: done in {result.seconds:.1f} s ({detail})")
                break
            if status not in (None, WorkflowExecutionStatus.RUNNING):
                say(f"  ordinal {k}: {status.name if status else 'unknown'}")
                return
            await asyncio.sleep(0.3)


async def run_migration(server: DevServer, lc: LocalClusters) -> list[str]:
    client = await Client.connect(server.address, data_converter=pydantic_data_converter)
    info = await client.execute_workflow(
        "DescribeClusters",
        DescribeClustersInput(contexts=list(lc.clusters)),
        id=f"describe-clusters-{uuid.uuid4().hex[:8]}",
        task_queue=TASK_QUEUE,
        result_type=DescribeClustersResult,
    )
    for c in info.clusters:
        say(
            f"  {c.context:12} Kubernetes {c.server_version}, {c.nodes_ready}/{c.nodes} nodes Ready"
        )
    apis = {
        name: config.new_client_from_config(
            config_file=str(lc.kubeconfig), context=name, persist_config=False
        )
        for name in lc.clusters
    }
    observer = Observer(apis, NAMESPACE, NAMESPACE, "redis", ["data", "aof"])
    observer.start()
    migration_id = f"stsmigrate/source/{NAMESPACE}/redis-{uuid.uuid4().hex[:6]}"
    try:
        migration = await start_migration(
            client,
            MigrationRequest(
                statefulset="redis",
                namespace=NAMESPACE,
                source_context="source",
                destination_context="destination",
            ),
            migration_id=migration_id,
            task_queue=TASK_QUEUE,
        )
        say(f"migration {migration_id} started; watch it in the Temporal UI:")
        say(f"  {ui_link(server.ui_url, 'default', migration_id)}")
        say(f"  or: TEMPORAL_ADDRESS={server.address} stsmigrate watch {migration_id}")
        await follow(client, migration_id, [5, 4, 3, 2, 1, 0])
        result = await migration.result()
    finally:
        observer.stop()
    src, dst = result.source, result.destination
    if src is not None and dst is not None:
        say(
            f"migration finished in {result.seconds:.1f} s: source owns {src.replicas} pods, "
            f"destination owns ordinals [{dst.start}, {dst.start + dst.replicas})"
        )
    return observer.verdict([5, 4, 3, 2, 1, 0], (0, 0), (0, 6))


def start_worker(server: DevServer, lc: LocalClusters, log_path: Path) -> subprocess.Popen[bytes]:
    """The real worker process (worker.py) against the dev server and both clusters."""
    say(f"starting the worker (JSON logs in {log_path}) ...")
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": server.address,
        "TEMPORAL_NAMESPACE": "default",
        "STSMIGRATE_KUBECONFIG": str(lc.kubeconfig),
    }
    with log_path.open("ab") as log:
        return subprocess.Popen(
            ["setpriv", "--pdeathsig", "SIGTERM", "--", sys.executable, str(REPO / "worker.py")],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop_worker(worker: subprocess.Popen[bytes] | None) -> None:
    if worker and worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        worker.wait(40)


def run(workdir: Path, wait: bool) -> int:
    server = DevServer(workdir / "temporal", db_filename=workdir / "temporal" / "temporal.db")
    worker: subprocess.Popen[bytes] | None = None
    try:
        say("starting the Temporal dev server ...")
        server.start(search_attributes=SEARCH_ATTRIBUTES)
        say("starting the source and destination clusters ...")
        with LocalClusters(workdir / "clusters") as lc:
            worker = start_worker(server, lc, workdir / "worker.log")
            say(f"deploying a 6-replica Redis-like StatefulSet into source/{NAMESPACE} ...")
            started = time.monotonic()
            deploy_app(lc)
            say(f"  ready in {time.monotonic() - started:.1f} s")
            violations = asyncio.run(run_migration(server, lc))
            say_verdict(say, violations)
            say()
            say(f"Temporal UI:  {server.ui_url}")
            say(f"Temporal:     TEMPORAL_ADDRESS={server.address}")
            say(f"kubeconfig:   {lc.kubeconfig}  (contexts: {', '.join(lc.clusters)})")
            say(
                f"try:          kubectl --kubeconfig {lc.kubeconfig} --context destination "
                f"-n {NAMESPACE} get pods,pvc"
            )
            if wait:
                say("Ctrl-C stops everything.")
                wait_for_interrupt()
            return 1 if violations else 0
    finally:
        stop_worker(worker)
        server.stop()


def say_verdict(say: Callable[..., None], violations: list[str]) -> None:
    """The observer's verdict, as both demos print it."""
    if violations:
        say("observer: INVARIANT VIOLATIONS:")
        for v in violations:
            say(f"  - {v}")
    else:
        say(
            "observer: no violation (one pod per identity at all times, every volume "
            "kept, same storage behind every moved claim, markers intact)"
        )
