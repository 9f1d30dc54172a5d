"""Scale of one worker: a large StatefulSet moved in one migration, and many small
migrations at once against a lone one (a benchmark, never a test).

On its own local clusters, with a Temporal dev server and one worker process:

- large: one StatefulSet of N replicas (two claim templates, pods ready at once, no
  grace) moved by one migration: wall time, the runs it continued as new into, the
  largest run's history (events and bytes), the events per ordinal of the parent;
- concurrent: one 3-replica migration alone, then C of them started at once (each its
  own app and namespace): each one's wall time, the median against the lone one;
- the worker's peak RSS (VmHWM) over everything.

    python bench/scale.py                          # --large 200 --concurrent 20
    python bench/scale.py --large 1000 --concurrent 0
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from kubernetes import client
from kubernetes import config as kubeconfig
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from bench import moves, preflight
from contract import SEARCH_ATTRIBUTES, MigrationRequest
from devenv.clusters import LocalClusters
from devenv.temporal import DevServer
from stsmigrate.api import exit_now, start_migration
from tests.support.histories import runs


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def migrate(temporal: Client, task_queue: str, ns: str, app: str) -> tuple[str, float]:
    began = time.monotonic()
    migration = await start_migration(
        temporal,
        MigrationRequest(
            statefulset=app,
            namespace=ns,
            source_context="source",
            destination_context="destination",
        ),
        migration_id=f"bench-scale/{ns}/{app}",
        task_queue=task_queue,
    )
    result = await migration.result()
    if result.aborted or not result.moved:
        raise RuntimeError(f"{migration.id}: moved {len(result.moved)}, aborted {result.aborted}")
    return migration.id, time.monotonic() - began


async def large(apis: dict[str, client.ApiClient], address: str, queue: str, n: int) -> None:
    began = time.monotonic()
    ns = preflight.deploy(apis, n)
    print(f"  {ns}: {n} pods Ready in {time.monotonic() - began:.0f} s", flush=True)
    temporal = await Client.connect(address, data_converter=pydantic_data_converter)
    migration_id, seconds = await migrate(temporal, queue, ns, preflight.APP)
    found = await runs(temporal, migration_id)
    events = [len(h.events) for h in found]
    sizes = [sum(e.ByteSize() for e in h.events) for h in found]
    print(
        f"large: {n} replicas moved in {seconds:.0f} s ({seconds / n:.2f} s per ordinal); "
        f"{len(found)} run(s); largest run {max(events)} events, {max(sizes) / 1e6:.2f} MB; "
        f"{sum(events) / n:.1f} parent events per ordinal in all",
        flush=True,
    )


async def concurrent(
    apis: dict[str, client.ApiClient], address: str, queue: str, count: int
) -> None:
    pods = moves.Profile("0s", 0)
    temporal = await Client.connect(address, data_converter=pydantic_data_converter)
    lone_ns = moves.deploy(apis, "lone", 3, pods)
    _, lone = await migrate(temporal, queue, lone_ns, moves.APP)
    spaces = [moves.deploy(apis, f"c{i}", 3, pods) for i in range(count)]
    took = await asyncio.gather(*(migrate(temporal, queue, ns, moves.APP) for ns in spaces))
    each = sorted(t for _, t in took)
    median = statistics.median(each)
    print(
        f"concurrent: one 3-replica migration alone {lone:.1f} s; {count} at once: median "
        f"{median:.1f} s, max {each[-1]:.1f} s, slowdown {median / lone:.2f}x",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--large", type=int, default=200, help="replicas (0: skip)")
    parser.add_argument("--concurrent", type=int, default=20, help="migrations (0: skip)")
    args = parser.parse_args(argv)
    queue = f"bench-scale-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="stsmigrate-bench-scale-") as tmp:
        work = Path(tmp)
        server = DevServer(work / "temporal")
        server.start(search_attributes=SEARCH_ATTRIBUTES)
        try:
            nodes = max(3, (args.large + 3 * (args.concurrent + 1)) // 100 + 2)
            with LocalClusters(work / "clusters", nodes=nodes) as lc:
                apis = {
                    side: kubeconfig.new_client_from_config(
                        config_file=str(lc.kubeconfig), context=side, persist_config=False
                    )
                    for side in lc.clusters
                }
                with moves.worker_process(
                    server.address, queue, lc.kubeconfig, work / "worker.log"
                ) as pid:
                    if args.large:
                        asyncio.run(large(apis, server.address, queue, args.large))
                    if args.concurrent:
                        asyncio.run(concurrent(apis, server.address, queue, args.concurrent))
                    print(f"worker peak RSS {peak_rss_mib(pid):.0f} MiB", flush=True)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    # The Temporal SDK's threads can crash the interpreter's teardown (sdk-python#300).
    exit_now(main())
