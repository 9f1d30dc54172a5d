"""Scale of one worker: a large StatefulSet moved in one migration, and many small
migrations at once against a lone one (a benchmark, never a test).

On its own local clusters, with a Temporal dev server and one worker process:

- large: one StatefulSet of N replicas (two claim templates, pods ready at once, no
  grace, podManagementPolicy Parallel, no PDB) moved by one migration, once per
  max_unavailable given (each its own app): wall time and the speed-up, the runs it
  continued as new into, the largest run's history (events and bytes), the events
  per ordinal of the parent;
- concurrent: one 3-replica migration alone, then C of them started at once (each its
  own app and namespace, deployed C at a time beforehand): each one's wall time, the
  median, p90 (nearest rank) and max against the lone one; and over those C at once
  the CPU seconds of the worker, of each control-plane process of both clusters, of
  the Temporal dev server and of this script (its C clients), each as a share of the
  phase's wall time (1.0 is one core busy), and of the whole machine (the same for
  the lone one);
- the worker's peak RSS (VmHWM) of each part (each part has its own clusters and
  worker, one Temporal dev server for all).

    python bench/scale.py            # --large 200 --max-unavailable 1,10 --concurrent 20
    python bench/scale.py --large 1000 --concurrent 0
    python bench/scale.py --large 0 --concurrent 20
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kubernetes import client
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from bench import moves, preflight
from contract import SEARCH_ATTRIBUTES, MigrationRequest
from devenv.clusters import LocalClusters
from devenv.temporal import DevServer
from stsmigrate.api import exit_now, start_migration
from tests.support.histories import runs
from worker import kube_clients

TICKS = os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int, stat: Path | None = None) -> float:
    """utime + stime of the process (all its threads), from /proc/<pid>/stat, or of one
    thread from its ``stat`` (/proc/<pid>/task/<tid>/stat: /proc/<tid>/stat is the
    whole process's)."""
    # Fields after the command's closing parenthesis: state is field 3, utime 14, stime 15.
    fields = (stat or Path(f"/proc/{pid}/stat")).read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def threads_cpu_seconds(pid: int) -> dict[int, tuple[str, float]]:
    """Thread id -> (name, utime + stime) of each thread of the process alive now."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            found[int(task.name)] = (name, cpu_seconds(pid, task / "stat"))
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended meanwhile
    return found


def machine_busy_seconds() -> float:
    """CPU seconds every core spent not idle (nor waiting on I/O), from /proc/stat."""
    ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / TICKS


class CpuMeter:
    """CPU seconds of named processes (and of the machine) between start and stop; the
    worker's split into the SDK core's threads (Rust: tokio and Temporal's own) and the
    rest (Python: the event loop, the activity threads)."""

    def __init__(self, pids: Mapping[str, int], worker: int) -> None:
        self.pids = dict(pids)
        self.worker = worker

    def start(self) -> None:
        self.began = time.monotonic()
        self.before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.threads_before = threads_cpu_seconds(self.worker)
        self.machine_before = machine_busy_seconds()

    def _core_seconds(self) -> float:
        """CPU seconds of the worker's SDK core threads since start."""
        core = 0.0
        for tid, (name, seconds) in threads_cpu_seconds(self.worker).items():
            if name.startswith(("tokio", "temporal")):
                core += seconds - self.threads_before.get(tid, (name, 0.0))[1]
        return core

    def stop(self) -> str:
        wall = time.monotonic() - self.began
        used = {name: cpu_seconds(pid) - self.before[name] for name, pid in self.pids.items()}
        core = self._core_seconds()
        machine = machine_busy_seconds() - self.machine_before
        lines = [f"  CPU over {wall:.1f} s (share: CPU seconds / wall seconds, 1.00 = one core)"]
        for name, seconds in sorted(used.items(), key=lambda kv: -kv[1]):
            lines.append(f"    {name:<42} {seconds:7.1f} s  {seconds / wall:5.2f}")
            if self.pids[name] == self.worker:
                lines.append(f"    {'  of which SDK core (Rust) threads':<42} {core:7.1f} s")
        named = sum(used.values())
        lines.append(f"    {'all of the above':<42} {named:7.1f} s  {named / wall:5.2f}")
        cores = os.cpu_count() or 1
        lines.append(
            f"    {f'machine ({cores} cores)':<42} {machine:7.1f} s  {machine / wall:5.2f}"
        )
        return "\n".join(lines)


async def migrate(
    temporal: Client, task_queue: str, ns: str, app: str, max_unavailable: int = 1
) -> tuple[str, float]:
    began = time.monotonic()
    migration = await start_migration(
        temporal,
        MigrationRequest(
            statefulset=app,
            namespace=ns,
            source_context="source",
            destination_context="destination",
            max_unavailable=max_unavailable,
        ),
        migration_id=f"bench-scale/{ns}/{app}",
        task_queue=task_queue,
    )
    result = await migration.result()
    if result.aborted or not result.moved:
        raise RuntimeError(f"{migration.id}: moved {len(result.moved)}, aborted {result.aborted}")
    return migration.id, time.monotonic() - began


async def large(
    apis: dict[str, client.ApiClient], address: str, queue: str, n: int, d: int
) -> float:
    began = time.monotonic()
    ns = preflight.deploy(apis, n)
    print(f"  {ns}: {n} pods Ready in {time.monotonic() - began:.0f} s", flush=True)
    temporal = await Client.connect(address, data_converter=pydantic_data_converter)
    migration_id, seconds = await migrate(temporal, queue, ns, preflight.APP, d)
    found = await runs(temporal, migration_id)
    events = [len(h.events) for h in found]
    sizes = [sum(e.ByteSize() for e in h.events) for h in found]
    print(
        f"large: {n} replicas, max_unavailable {d}: moved in {seconds:.0f} s "
        f"({seconds / n:.2f} s per ordinal); "
        f"{len(found)} run(s); largest run {max(events)} events, {max(sizes) / 1e6:.2f} MB; "
        f"{sum(events) / n:.1f} parent events per ordinal in all",
        flush=True,
    )
    return seconds


def nearest_rank(values: list[float], q: float) -> float:
    return sorted(values)[math.ceil(q * len(values)) - 1]


async def concurrent(
    apis: dict[str, client.ApiClient], address: str, queue: str, count: int, meter: CpuMeter
) -> None:
    pods = moves.Profile("0s", 0)
    temporal = await Client.connect(address, data_converter=pydantic_data_converter)
    lone_ns = moves.deploy(apis, "lone", 3, pods)
    meter.start()
    _, lone = await migrate(temporal, queue, lone_ns, moves.APP)
    lone_cpu = meter.stop()
    began = time.monotonic()
    with ThreadPoolExecutor(count) as pool:
        spaces = list(pool.map(lambda i: moves.deploy(apis, f"c{i}", 3, pods), range(count)))
    print(f"  {count} apps of 3 pods Ready in {time.monotonic() - began:.0f} s", flush=True)
    meter.start()
    took = await asyncio.gather(*(migrate(temporal, queue, ns, moves.APP) for ns in spaces))
    cpu = meter.stop()
    each = [t for _, t in took]
    median = statistics.median(each)
    print(
        f"concurrent: one 3-replica migration alone {lone:.1f} s; {count} at once: median "
        f"{median:.1f} s, p90 {nearest_rank(each, 0.9):.1f} s, max {max(each):.1f} s, "
        f"slowdown {median / lone:.2f}x",
        flush=True,
    )
    print(f"  the one alone:\n{lone_cpu}\n  the {count} at once:\n{cpu}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--large", type=int, default=200, help="replicas (0: skip)")
    parser.add_argument(
        "--max-unavailable",
        default="1,10",
        help="the large migration once per value, each on its own app (comma-separated)",
    )
    parser.add_argument("--concurrent", type=int, default=20, help="migrations (0: skip)")
    args = parser.parse_args(argv)
    blocks = [int(d) for d in args.max_unavailable.split(",")]
    queue = f"bench-scale-{uuid.uuid4().hex[:8]}"
    # Each part on fresh clusters: a second StatefulSet of 1,000 pods next to the
    # first one's 2,000 volumes takes the scheduler past 15 minutes to place.
    parts: list[int | None] = [d for d in blocks if args.large]
    if args.concurrent:
        parts.append(None)
    took: dict[int, float] = {}
    rss: list[float] = []
    with tempfile.TemporaryDirectory(prefix="stsmigrate-bench-scale-") as tmp:
        work = Path(tmp)
        server = DevServer(work / "temporal")
        server.start(search_attributes=SEARCH_ATTRIBUTES)
        try:
            for i, d in enumerate(parts):
                pods = args.large if d is not None else 3 * (args.concurrent + 1)
                nodes = max(3, pods // 100 + 2)
                with LocalClusters(work / f"clusters-{i}", nodes=nodes) as lc:
                    # A connection for each app deployed at once, as the worker pools its.
                    apis = kube_clients(lc.kubeconfig, connections=args.concurrent + 10)
                    with moves.worker_process(
                        server.address, f"{queue}-{i}", lc.kubeconfig, work / f"worker-{i}.log"
                    ) as pid:
                        if d is not None:
                            took[d] = asyncio.run(
                                large(apis, server.address, f"{queue}-{i}", args.large, d)
                            )
                        else:
                            pids = {
                                f"{side}/{proc.name}": proc.popen.pid
                                for side, cluster in lc.clusters.items()
                                for proc in cluster.processes
                            }
                            pids["worker"] = pid
                            pids["temporal dev server"] = server.pid or 0
                            pids["this script (the clients)"] = os.getpid()
                            meter = CpuMeter(pids, pid)
                            asyncio.run(
                                concurrent(
                                    apis, server.address, f"{queue}-{i}", args.concurrent, meter
                                )
                            )
                        rss.append(peak_rss_mib(pid))
                        print(f"worker peak RSS {rss[-1]:.0f} MiB", flush=True)
            if len(took) > 1:
                base = 1 if 1 in took else blocks[0]
                print(
                    "large: "
                    + ", ".join(
                        f"max_unavailable {d} {took[base] / t:.1f}x" for d, t in took.items()
                    )
                    + f" as fast as max_unavailable {base}",
                    flush=True,
                )
            if rss:
                print(f"worker peak RSS, the most of any part: {max(rss):.0f} MiB", flush=True)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    # The Temporal SDK's threads can crash the interpreter's teardown (sdk-python#300).
    exit_now(main())
