"""Preflight wall time against the number of ordinals (a benchmark, never a test).

For each N: a StatefulSet of N replicas with two claim templates (kwok pods, no
start delay, Parallel pod management) in a fresh namespace of the source, the same
namespace empty in the destination; once every pod is Ready, ``build_plan`` is
timed (the plan_migration activity's work, without Temporal). Prints one line per N.
The claims are made ahead, each pre-bound to a hostPath PV (the StatefulSet adopts
them by name), since the local provisioner takes many minutes for thousands.

    python bench/preflight.py                      # own clusters, N = 200 and 1000
    python bench/preflight.py --kubeconfig K 200   # clusters of `python -m devenv up`
    python bench/preflight.py --also /other/checkout   # that checkout's preflight too

The imported ``activities`` are whichever come first on PYTHONPATH; ``--also`` runs
this script again for each N on the same namespace with PYTHONPATH set to another
checkout, so two versions of preflight are timed on the same cluster state.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes import config as kubeconfig

from activities.kube import Kube
from activities.preflight import build_plan
from contract import MigrationRequest
from devenv.clusters import LocalClusters

APP = "bench"
SETUP_TIMEOUT = 900.0
TEMPLATES = {"data": "local-hostpath", "logs": "local-csi"}


def _statefulset(replicas: int) -> dict[str, Any]:
    templates = TEMPLATES
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": APP},
        "spec": {
            "replicas": replicas,
            "serviceName": APP,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": APP}},
            "template": {
                "metadata": {
                    "labels": {"app": APP},
                    "annotations": {"pod-ready.stage.kwok.x-k8s.io/delay": "0s"},
                },
                "spec": {
                    "terminationGracePeriodSeconds": 0,
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
                        "storageClassName": sc,
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}},
                    },
                }
                for t, sc in templates.items()
            ],
        },
    }


def _claim(api: client.ApiClient, ns: str, claim: str) -> None:
    core = client.CoreV1Api(api)
    storage_class = TEMPLATES[claim.split("-", 1)[0]]
    volume = f"{ns}-{claim}"
    core.create_persistent_volume(
        {
            "metadata": {"name": volume},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": storage_class,
                "hostPath": {"path": f"/srv/bench/{volume}"},
                "claimRef": {"namespace": ns, "name": claim},
            },
        }
    )
    core.create_namespaced_persistent_volume_claim(
        ns,
        {
            "metadata": {"name": claim, "labels": {"app": APP}},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": storage_class,
                "volumeName": volume,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )


def _ready(api: client.ApiClient, ns: str) -> int:
    sts: Any = client.AppsV1Api(api).read_namespaced_stateful_set(APP, ns)
    return int(sts.status.ready_replicas or 0)


def deploy(apis: dict[str, client.ApiClient], replicas: int) -> str:
    """A fresh namespace in both clusters, the app of ``replicas`` Ready in the source."""
    ns = f"bench-{replicas}-{uuid.uuid4().hex[:6]}"
    for api in apis.values():
        client.CoreV1Api(api).create_namespace({"metadata": {"name": ns}})
    source = apis["source"]
    deadline = time.monotonic() + 60
    core = client.CoreV1Api(source)
    while not any(
        sa.metadata.name == "default" for sa in core.list_namespaced_service_account(ns).items
    ):
        if time.monotonic() > deadline:
            raise RuntimeError(f"no default ServiceAccount in {ns}")
        time.sleep(0.2)
    claims = [f"{t}-{APP}-{k}" for k in range(replicas) for t in TEMPLATES]
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda claim: _claim(source, ns, claim), claims))
    print(f"  N={replicas}: {len(claims)} claims made in {time.monotonic() - started:.0f} s")
    client.AppsV1Api(source).create_namespaced_stateful_set(ns, _statefulset(replicas))
    started = time.monotonic()
    while (ready := _ready(source, ns)) < replicas:
        if time.monotonic() - started > SETUP_TIMEOUT:
            raise RuntimeError(f"{ready}/{replicas} Ready after {SETUP_TIMEOUT:.0f} s")
        time.sleep(2)
    print(
        f"  N={replicas}: {replicas} pods Ready in {time.monotonic() - started:.0f} s", flush=True
    )
    return ns


def measure(apis: dict[str, client.ApiClient], ns: str, replicas: int) -> None:
    request = MigrationRequest(
        statefulset=APP,
        namespace=ns,
        source_context="source",
        destination_context="destination",
    )
    source, destination = Kube(apis["source"], "source"), Kube(apis["destination"], "destination")
    started = time.monotonic()
    plan = build_plan(source, destination, request, f"bench-{uuid.uuid4().hex[:6]}")
    elapsed = time.monotonic() - started
    print(
        f"N={replicas}: build_plan {elapsed:.2f} s "
        f"({len(plan.ordinals)} ordinals planned, {len(plan.problems)} problems)",
        flush=True,
    )
    for problem in plan.problems[:3]:
        print(f"    problem: {problem.object}: {problem.message}", flush=True)


@contextlib.contextmanager
def kubeconfig_path(given: str | None, pods: int) -> Iterator[Path]:
    if given:
        yield Path(given)
        return
    # A kwok node takes 110 pods, as a kubelet does: enough nodes for every pod.
    nodes = max(3, pods // 100 + 1)
    with tempfile.TemporaryDirectory(prefix="stsmigrate-bench-") as tmp:
        started = time.monotonic()
        with LocalClusters(Path(tmp), nodes=nodes) as lc:
            print(f"  clusters ready in {time.monotonic() - started:.0f} s", flush=True)
            yield lc.kubeconfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("replicas", nargs="*", type=int, default=[200, 1000])
    parser.add_argument("--kubeconfig", help="of running clusters (default: start our own)")
    parser.add_argument(
        "--namespace", action="append", default=[], help="reuse N's namespace: N=NAME"
    )
    parser.add_argument("--also", action="append", default=[], help="another checkout to time")
    args = parser.parse_args(argv)
    reuse = dict(item.split("=", 1) for item in args.namespace)
    with kubeconfig_path(args.kubeconfig, sum(args.replicas)) as path:
        apis = {
            side: kubeconfig.new_client_from_config(
                config_file=str(path), context=side, persist_config=False
            )
            for side in ("source", "destination")
        }
        for replicas in args.replicas:
            ns = reuse.get(str(replicas)) or deploy(apis, replicas)
            print(f"  N={replicas}: namespace {ns}", flush=True)
            measure(apis, ns, replicas)
            for checkout in args.also:
                print(f"  the same with {checkout}:", flush=True)
                again = [sys.executable, __file__, "--kubeconfig", str(path)]
                subprocess.run(
                    [*again, "--namespace", f"{replicas}={ns}", str(replicas)],
                    env={**os.environ, "PYTHONPATH": checkout},
                    check=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
