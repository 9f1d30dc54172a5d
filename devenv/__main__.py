"""``python -m devenv``: build the binaries, run the local clusters, or run the demo.

python -m devenv build           build or reuse the Kubernetes binaries
python -m devenv up [--workdir]  run "source" and "destination" until Ctrl-C
                 [--real-nodes]  ... each with a real kubelet node beside the kwok ones
python -m devenv demo [--exit]   Temporal dev server + clusters + worker + a workflow
                 [--redis]       ... the seed's Redis Cluster of real pods, moved under load
                 [--no-hooks]    ... without the failover hooks (to compare)
python -m devenv measure         warm start time and RSS of both clusters
python -m devenv exit-check      how often a short Temporal client script dies at exit
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devenv import stop_on_interrupt, wait_for_interrupt
from devenv.build import BuildError, ensure_binaries
from devenv.clusters import ClusterError, LocalClusters
from devenv.images import PAUSE_IMAGE, REDIS_IMAGE
from devenv.realnodes import (
    REAL_NODE_LABEL,
    REAL_NODE_NAME,
    RealNode,
    RealNodeError,
    node_shims,
    redis_pod,
)
from stsmigrate.api import exit_now

IMAGES = (PAUSE_IMAGE, REDIS_IMAGE)

REPO = Path(__file__).resolve().parent.parent


def _say(message: str) -> None:
    print(message, flush=True)


def _workdir(arg: str | None, prefix: str) -> Path:
    return Path(arg).resolve() if arg else Path(tempfile.mkdtemp(prefix=prefix))


def cmd_up(args: argparse.Namespace) -> int:
    workdir = _workdir(args.workdir, "stsmigrate-clusters-")
    started = time.monotonic()
    with LocalClusters(workdir, nodes=args.nodes, real_nodes=args.real_nodes) as lc:
        pids = [p.popen.pid for c in lc.clusters.values() for p in c.processes]
        pids += [p.pid for node in lc.real_node_list() for _, p, _ in node.processes]
        (workdir / "pids.json").write_text(json.dumps(pids))
        _say(f"clusters ready in {time.monotonic() - started:.1f} s")
        _say(f"  kubeconfig: {lc.kubeconfig}   contexts: {', '.join(lc.clusters)}")
        _say(f"  volumes:    {lc.volume_root}")
        _say(f"  try:        kubectl --kubeconfig {lc.kubeconfig} --context source get nodes")
        for node in lc.real_node_list():
            _say(
                f"  real node:  {node.cluster}/{REAL_NODE_NAME}, pods {node.subnet} on "
                f"{node.bridge} (select {REAL_NODE_LABEL}=true and tolerate its taint; "
                f"images {', '.join(IMAGES)}, imagePullPolicy Never)"
            )
        if not args.exit:
            _say("Ctrl-C stops both clusters.")
            wait_for_interrupt()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    # These import the product's payload models; only the demos need them.
    if args.redis:
        from devenv import redisdemo

        return redisdemo.run(
            _workdir(args.workdir, "stsmigrate-redis-demo-"),
            hooks=not args.no_hooks,
            wait=not args.exit,
        )
    from devenv import demo

    return demo.run(_workdir(args.workdir, "stsmigrate-demo-"), wait=not args.exit)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _real_node_rss(node: RealNode) -> list[tuple[str, int]]:
    """RSS of the real node's kubelet and containerd, and of its runc shims together."""
    found = [(name, _rss_kib(popen.pid)) for name, popen, _ in node.processes]
    shims = 0
    for pid in node_shims(node):
        shims += _rss_kib(pid)
    found.append((f"containerd-shims ({len(node_shims(node))})", shims))
    return found


def cmd_measure(args: argparse.Namespace) -> int:
    """Print start time and RSS per component, idle and with a StatefulSet running."""
    workdir = _workdir(args.workdir, "stsmigrate-measure-")
    ensure_binaries()
    started = time.monotonic()
    with LocalClusters(workdir, real_nodes=args.real_nodes) as lc:
        real = " with real nodes" if args.real_nodes else ""
        _say(f"start of both clusters{real}: {time.monotonic() - started:.1f} s")
        sts = {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "load"},
            "spec": {
                "replicas": args.replicas,
                "serviceName": "load",
                "selector": {"matchLabels": {"app": "load"}},
                "template": {
                    "metadata": {"labels": {"app": "load"}},
                    "spec": {"containers": [{"name": "c", "image": "x"}]},
                },
                "volumeClaimTemplates": [
                    {
                        "metadata": {"name": n},
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": "1Gi"}},
                        },
                    }
                    for n in ("data", "logs")
                ],
            },
        }
        lc.kubectl("source", "apply", "-f", "-", input=json.dumps(sts))
        lc.kubectl("source", "rollout", "status", "statefulset/load", "--timeout=120s")
        if args.real_nodes:
            # One real redis-server pod on each real node, so containers and shims count.
            for context in lc.clusters:
                lc.kubectl(context, "apply", "-f", "-", input=json.dumps(redis_pod("redis", None)))
            for context in lc.clusters:
                lc.kubectl(context, "wait", "pod/redis", "--for=condition=Ready", "--timeout=120s")
        time.sleep(args.settle)
        total = 0
        _say(
            f"RSS after {args.settle} s with a {args.replicas}-replica StatefulSet in source"
            + (" and a real redis-server pod on each real node:" if args.real_nodes else ":")
        )
        for name, cluster in lc.clusters.items():
            for proc in cluster.processes:
                rss = _rss_kib(proc.popen.pid)
                total += rss
                _say(f"  {name:12} {proc.name:24} {rss / 1024:7.1f} MiB")
            if cluster.real_node is not None:
                for pname, rss in _real_node_rss(cluster.real_node):
                    total += rss
                    _say(f"  {name:12} {pname:24} {rss / 1024:7.1f} MiB")
        _say(f"  {'both clusters':37} {total / 1024:7.1f} MiB")
    return 0


# A short client script, as a user would write one: connect, start a workflow (no
# worker needed), describe, signal and terminate it, print, end with ENDING.
EXIT_SCRIPT = """\
import asyncio, sys, uuid
from temporalio.client import Client
from stsmigrate.api import run

async def main():
    client = await Client.connect(sys.argv[1])
    handle = await client.start_workflow("Nobody", id=str(uuid.uuid4()), task_queue="nobody")
    await handle.describe()
    await handle.signal("hello")
    await handle.terminate("exit-check")
    print("done")

{ending}
"""
ENDINGS = {"asyncio.run": "asyncio.run(main())", "stsmigrate.api.run": "run(main())"}


def cmd_exit_check(args: argparse.Namespace) -> int:
    """Run the script ``--runs`` times with each ending against a dev server and count
    how the processes ended (temporalio/sdk-python#300: a finished client script can
    abort in interpreter teardown). Fails when a run() ending ever did not end 0."""
    from devenv.temporal import DevServer

    workdir = _workdir(args.workdir, "stsmigrate-exit-check-")
    scripts = {}
    for name, ending in ENDINGS.items():
        scripts[name] = workdir / f"{name.replace('.', '_')}.py"
        scripts[name].write_text(EXIT_SCRIPT.format(ending=ending))
    server = DevServer(workdir / "temporal")
    server.start()
    outcomes: dict[str, collections.Counter[str]] = {n: collections.Counter() for n in ENDINGS}
    try:
        for i in range(args.runs):
            for name, script in scripts.items():
                done = subprocess.run(
                    [sys.executable, str(script), server.address],
                    capture_output=True,
                    text=True,
                    timeout=60,
                    cwd=REPO,
                )
                printed = "done" in done.stdout
                outcomes[name][
                    f"exit {done.returncode}, output {'kept' if printed else 'LOST'}"
                ] += 1
            if (i + 1) % 10 == 0:
                _say(f"  {i + 1}/{args.runs} runs of each ending")
    finally:
        server.stop()
    _say(f"{args.runs} runs of each ending (python {sys.version.split()[0]}):")
    for name, counter in outcomes.items():
        for outcome, n in sorted(counter.items()):
            _say(f"  {ENDINGS[name]:22} {outcome:26} {n:4}")
    run_outcomes = outcomes["stsmigrate.api.run"]
    return 0 if set(run_outcomes) == {"exit 0, output kept"} else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devenv",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build or reuse the Kubernetes binaries")
    up = sub.add_parser("up", help="run the two local clusters until Ctrl-C")
    up.add_argument("--workdir", help="folder for cluster state (default: a new temp folder)")
    up.add_argument("--nodes", type=int, default=3, help="fake nodes per cluster (default 3)")
    up.add_argument("--exit", action="store_true", help="stop as soon as the clusters are ready")
    up.add_argument(
        "--real-nodes",
        action="store_true",
        help="add a real kubelet node (containerd, runc, CNI bridge) to each cluster",
    )
    demo = sub.add_parser("demo", help="dev server, clusters, worker and a real migration")
    demo.add_argument("--workdir", help="folder for all state (default: a new temp folder)")
    demo.add_argument("--exit", action="store_true", help="stop once the migration is done")
    demo.add_argument(
        "--redis",
        action="store_true",
        help="the seed's 6-node Redis Cluster on real kubelet nodes, moved while a client "
        "reads and writes (devenv/redisdemo.py; needs root)",
    )
    demo.add_argument(
        "--no-hooks",
        action="store_true",
        help="with --redis: migrate without the failover hooks, to compare the client's figures",
    )
    measure = sub.add_parser("measure", help="warm start time and RSS of both clusters")
    measure.add_argument("--workdir", help="folder for cluster state (default: a temp folder)")
    measure.add_argument("--replicas", type=int, default=6, help="StatefulSet size (default 6)")
    measure.add_argument("--settle", type=int, default=20, help="seconds before reading RSS")
    measure.add_argument(
        "--real-nodes", action="store_true", help="with a real kubelet node in each cluster"
    )
    check = sub.add_parser("exit-check", help="how often a client script dies at exit")
    check.add_argument("--workdir", help="folder for the scripts and the dev server")
    check.add_argument("--runs", type=int, default=50, help="runs of each ending (default 50)")
    args = parser.parse_args(argv)
    stop_on_interrupt()
    try:
        if args.command == "build":
            _say(str(ensure_binaries()))
            return 0
        if args.command == "up":
            return cmd_up(args)
        if args.command == "measure":
            return cmd_measure(args)
        if args.command == "exit-check":
            return cmd_exit_check(args)
        return cmd_demo(args)
    except (BuildError, ClusterError, RealNodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # outside wait_for_interrupt; context managers stopped it all
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    exit_now(main())  # as the CLI and worker end: see stsmigrate.api.run
