"""Per-ordinal time and per-identity unavailability of a move: the product against a
plain kubectl script of the KEP-3335 procedure and the cluster's own floor (a
benchmark, never a test).

On its own local clusters, with a Temporal dev server and a worker process, for each
pod profile (kwok's start delay and the pods' termination grace period), three runs
on the Redis-like app of the tests (N replicas, two claim templates, Secret,
ConfigMap, Service, PDB), each in a fresh namespace:

- floor: in the source alone, pod N-1, then N-2, ... 0 deleted and recreated in
  place by its StatefulSet, the next one deleted as soon as the last is Ready again
  (what one ordinal costs without moving anything);
- product: MigrateStatefulSet moving every ordinal to the destination;
- kubectl script: bench/kubectl-move.sh (setup, then move N-1 ... 0).

All three are read the same way from the pod watches of both clusters
(devenv/observer.py), so watch latency counts alike:

- unavailable: from the moment pod k is told to stop (its deletionTimestamp seen)
  until pod k (a new pod: in the destination, or the replacement) is seen Ready;
- per ordinal: the time between two consecutive ordinals seen Ready (N-1 samples);
- total: the product from start to result (preflight and copies included), the
  script from setup to its last move, the floor from first delete to last Ready.

p50 is the median, p90 the nearest rank (with 6 samples, the largest). The
independent observer checks the moves: one pod per identity, no volume lost, the
same storage behind every moved claim, markers intact, the final slices.

    python bench/moves.py                        # 6 replicas; pods 1s/2 s and 0s/0 s
    python bench/moves.py --replicas 20 --profile 1s:2 --profile 5s:10
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes import config as kubeconfig
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from contract import SEARCH_ATTRIBUTES, MigrationRequest
from devenv.clusters import LocalClusters
from devenv.observer import Observer, Seen, Watcher
from devenv.temporal import DevServer
from stsmigrate.api import exit_now, start_migration
from tests.support.apps import deploy_app

REPO = Path(__file__).resolve().parent.parent
SCRIPT = Path(__file__).with_name("kubectl-move.sh")
APP = "app"
TEMPLATES = ["data", "logs"]  # deploy_app's claim templates
WAIT = 300.0


@dataclass
class Figures:
    procedure: str
    unavailable: list[float]
    per_ordinal: list[float]
    total: float
    violations: list[str]


def is_ready(pod: Any) -> bool:
    conditions = pod.status.conditions if pod.status else None
    return any(c.type == "Ready" and c.status == "True" for c in conditions or [])


def uid_of(events: list[Seen], pod: str) -> str:
    for e in events:
        if e.name == pod:
            return str(e.obj.metadata.uid)
    raise RuntimeError(f"{pod} was never seen")


def stopped_at(events: list[Seen], pod: str, uid: str) -> float | None:
    """When pod ``pod`` of ``uid`` was first seen told to stop (deletionTimestamp, or gone)."""
    for e in events:
        stopping = e.kind == "DELETED" or e.obj.metadata.deletion_timestamp
        if e.name == pod and e.obj.metadata.uid == uid and stopping:
            return e.at
    return None


def ready_at(events: list[Seen], pod: str, after: float, not_uid: str) -> float | None:
    """When a pod ``pod`` other than ``not_uid`` was first seen Ready at or after ``after``."""
    for e in events:
        other = e.obj.metadata.uid != not_uid
        if e.name == pod and other and e.at >= after and e.kind != "DELETED" and is_ready(e.obj):
            return e.at
    return None


def read(
    source: list[Seen], destination: list[Seen], uids: dict[int, str], ordinals: list[int]
) -> tuple[list[float], list[float]]:
    """(unavailable per ordinal, time between consecutive ordinals Ready), in move order."""
    down, ready = [], []
    for k in ordinals:
        pod = f"{APP}-{k}"
        stopped = stopped_at(source, pod, uids[k])
        up = None if stopped is None else ready_at(destination, pod, stopped, uids[k])
        if stopped is None or up is None:
            raise RuntimeError(f"{pod}: not seen stopping and then Ready again")
        down.append(up - stopped)
        ready.append(up)
    return down, [b - a for a, b in itertools.pairwise(ready)]


def fresh_namespace(apis: dict[str, client.ApiClient], prefix: str) -> str:
    ns = f"{prefix}-{uuid.uuid4().hex[:6]}"
    for api in apis.values():
        client.CoreV1Api(api).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=ns))
        )
    for api in apis.values():
        core: Any = client.CoreV1Api(api)
        deadline = time.monotonic() + 60
        while not any(
            sa.metadata.name == "default" for sa in core.list_namespaced_service_account(ns).items
        ):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no default ServiceAccount in {ns}")
            time.sleep(0.2)
    return ns


def deploy(apis: dict[str, client.ApiClient], prefix: str, replicas: int, pods: Profile) -> str:
    ns = fresh_namespace(apis, prefix)
    began = time.monotonic()
    deploy_app(
        apis["source"],
        ns,
        APP,
        replicas,
        secret_value=secrets.token_urlsafe(12),
        ready_delay=pods.delay,
        grace=pods.grace,
    )
    print(f"  {ns}: {replicas} pods Ready in {time.monotonic() - began:.0f} s", flush=True)
    return ns


def floor(apis: dict[str, client.ApiClient], replicas: int, pods: Profile) -> Figures:
    """Pods N-1 ... 0 deleted one after the other, each recreated Ready before the next."""
    ns = deploy(apis, "floor", replicas, pods)
    core = client.CoreV1Api(apis["source"])
    watcher = Watcher(core.list_namespaced_pod, {"namespace": ns})
    ordinals = list(reversed(range(replicas)))
    uids: dict[int, str] = {}
    try:
        began = time.time()
        for k in ordinals:
            pod = f"{APP}-{k}"
            uids[k] = uid_of(watcher.events, pod)
            asked = time.time()
            core.delete_namespaced_pod(pod, ns)
            deadline = time.monotonic() + WAIT
            while (up := ready_at(watcher.events, pod, asked, uids[k])) is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{pod} did not come back Ready in {WAIT:.0f} s")
                time.sleep(0.02)
            last = up
        total = last - began
    finally:
        watcher.stop()
    down, per = read(watcher.events, watcher.events, uids, ordinals)
    return Figures("floor (pod recreated in place)", down, per, total, [])


def observed(apis: dict[str, client.ApiClient], ns: str) -> Observer:
    observer = Observer(apis, ns, ns, APP, TEMPLATES)
    observer.start()
    return observer


def judged(
    procedure: str, observer: Observer, replicas: int, total: float, moved: list[int] | None = None
) -> Figures:
    ordinals = list(reversed(range(replicas)))
    source = observer.watchers["source/pods"].events
    destination = observer.watchers["destination/pods"].events
    uids = {k: uid_of(source, f"{APP}-{k}") for k in ordinals}
    violations = observer.verdict(ordinals, (0, 0), (0, replicas))
    if moved is not None and sorted(moved) != sorted(ordinals):
        violations.append(f"moved {sorted(moved)}, not every ordinal")
    down, per = read(source, destination, uids, ordinals)
    return Figures(procedure, down, per, total, violations)


async def migrate(address: str, task_queue: str, ns: str) -> list[int]:
    temporal = await Client.connect(address, data_converter=pydantic_data_converter)
    migration = await start_migration(
        temporal,
        MigrationRequest(
            statefulset=APP,
            namespace=ns,
            source_context="source",
            destination_context="destination",
        ),
        migration_id=f"bench-moves/{ns}/{APP}",
        task_queue=task_queue,
    )
    result = await migration.result()
    return [o.ordinal for o in result.moved if o.moved]


def by_product(
    apis: dict[str, client.ApiClient], address: str, task_queue: str, replicas: int, pods: Profile
) -> Figures:
    ns = deploy(apis, "product", replicas, pods)
    observer = observed(apis, ns)
    try:
        began = time.time()
        moved = asyncio.run(migrate(address, task_queue, ns))
        total = time.time() - began
    finally:
        observer.stop()
    return judged("product", observer, replicas, total, moved)


def by_kubectl(
    apis: dict[str, client.ApiClient], lc: LocalClusters, replicas: int, pods: Profile
) -> Figures:
    ns = deploy(apis, "kubectl", replicas, pods)
    # The clusters' own kubectl (the version of the servers), then jq from the system.
    path = f"{lc.bins}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "KUBECONFIG": str(lc.kubeconfig), "PATH": path}

    def script(*args: str) -> None:
        subprocess.run(
            ["bash", str(SCRIPT), args[0], "source", "destination", ns, APP, *args[1:]],
            env=env,
            check=True,
            timeout=4 * WAIT,
        )

    observer = observed(apis, ns)
    try:
        began = time.time()
        script("setup")
        for k in reversed(range(replicas)):
            script("move", str(k))
        total = time.time() - began
    finally:
        observer.stop()
    return judged("kubectl script", observer, replicas, total)


@contextmanager
def worker_process(
    address: str, task_queue: str, kubeconfig_path: Path, log: Path
) -> Iterator[int]:
    """The worker process, as the chart (deploy/chart) runs it (its pid: bench/scale.py reads
    its peak RSS). With bytecode written, as an installed worker has it (pip compiles
    what it installs): the workflow sandbox imports the workflow modules again for every
    workflow run, and without .pyc files it compiles them each time (some 40 % of the
    worker's time in workflow tasks)."""
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
        "TEMPORAL_ADDRESS": address,
        "TEMPORAL_NAMESPACE": "default",
        "STSMIGRATE_KUBECONFIG": str(kubeconfig_path),
        "STSMIGRATE_TASK_QUEUE": task_queue,
    }
    with log.open("ab") as out:
        proc = subprocess.Popen(
            ["setpriv", "--pdeathsig", "SIGTERM", "--", sys.executable, str(REPO / "worker.py")],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass(frozen=True)
class Profile:
    delay: str  # kwok's pod-ready delay, a Go duration
    grace: int  # terminationGracePeriodSeconds

    @classmethod
    def parse(cls, text: str) -> Profile:
        delay, _, grace = text.partition(":")
        if not delay or not grace.isdigit():
            raise argparse.ArgumentTypeError(f"{text!r}: expected DELAY:GRACE, e.g. 1s:2")
        return cls(delay, int(grace))

    def __str__(self) -> str:
        return f"{self.delay} start, {self.grace} s grace"


def p50(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s" if values else "-"


def p90(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{sorted(values)[math.ceil(0.9 * len(values)) - 1]:.2f} s"


def table(replicas: int, rows: list[tuple[Profile, Figures]]) -> str:
    lines = [
        "| pods | procedure | replicas | per ordinal p50 | per ordinal p90 "
        "| unavailable p50 | unavailable p90 | total | observer |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for pods, f in rows:
        verdict = "-" if f.procedure.startswith("floor") else "ok"
        if f.violations:
            verdict = f"{len(f.violations)} violation(s)"
        cells = [
            str(pods),
            f.procedure,
            str(replicas),
            p50(f.per_ordinal),
            p90(f.per_ordinal),
            p50(f.unavailable),
            p90(f.unavailable),
            f"{f.total:.1f} s",
            verdict,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--replicas",
        type=int,
        default=6,
        help="per run (default 6; the app starts one pod at a time and must be Ready "
        "within 120 s: 20 with a 1 s start delay took 22 s)",
    )
    parser.add_argument(
        "--profile",
        type=Profile.parse,
        action="append",
        help="pods' DELAY:GRACE, kwok start delay and grace seconds (default: 1s:2 and 0s:0)",
    )
    args = parser.parse_args(argv)
    if args.replicas < 2:
        parser.error("--replicas must be at least 2 (per ordinal needs two ordinals)")
    profiles: list[Profile] = args.profile or [Profile("1s", 2), Profile("0s", 0)]
    rows: list[tuple[Profile, Figures]] = []
    task_queue = f"bench-moves-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="stsmigrate-bench-moves-") as tmp:
        work = Path(tmp)
        server = DevServer(work / "temporal")
        server.start(search_attributes=SEARCH_ATTRIBUTES)
        try:
            started = time.monotonic()
            # A kwok node takes 110 pods, as a kubelet does; the apps of every run stay.
            nodes = max(3, 3 * len(profiles) * args.replicas // 100 + 1)
            with LocalClusters(work / "clusters", nodes=nodes) as lc:
                print(f"  clusters ready in {time.monotonic() - started:.0f} s", flush=True)
                apis = {
                    side: kubeconfig.new_client_from_config(
                        config_file=str(lc.kubeconfig), context=side, persist_config=False
                    )
                    for side in lc.clusters
                }
                log = work / "worker.log"
                with worker_process(server.address, task_queue, lc.kubeconfig, log):
                    for pods in profiles:
                        for how in ("floor", "product", "kubectl"):
                            if how == "floor":
                                figures = floor(apis, args.replicas, pods)
                            elif how == "product":
                                figures = by_product(
                                    apis, server.address, task_queue, args.replicas, pods
                                )
                            else:
                                figures = by_kubectl(apis, lc, args.replicas, pods)
                            rows.append((pods, figures))
                            print(
                                f"  pods {pods}, {figures.procedure}: {figures.total:.1f} s",
                                flush=True,
                            )
                            for v in figures.violations:
                                print(f"    observer: {v}", flush=True)
        finally:
            server.stop()
    print(f"Moves of {args.replicas} replicas, two claim templates, one ordinal at a time:")
    print(table(args.replicas, rows), flush=True)
    return 1 if any(f.violations for _, f in rows) else 0


if __name__ == "__main__":
    # The Temporal SDK's threads can crash the interpreter's teardown (sdk-python#300).
    exit_now(main())
