"""Create-to-Bound time of moved volumes (a benchmark, never a test).

For each of N ordinals, a retained hostPath PV is made in the source, then the real
``import_volumes`` and ``wait_for_claims_bound`` activities (in an ActivityEnvironment,
without Temporal) bind a copy of it to its claim in the destination; the time from
the import's start to the claim Bound is one sample. Prints p50/p90/max and how many
bind nudges (``claims_bind_nudged``) the waits needed. Then the same for each
``--also`` checkout (another binding order), on the same clusters:

    flock /tmp/cluster.lock python bench/binding.py                  # own clusters, N = 20
    flock /tmp/cluster.lock python bench/binding.py --also /tmp/old  # and an older order
    python bench/binding.py --kubeconfig K 50     # clusters of `python -m devenv up`

The imported ``activities`` are whichever come first on PYTHONPATH (``--also`` runs
this script again with PYTHONPATH set to the other checkout). With ``--raw`` the
orders are also timed with bare API calls, without the activities: the PV pre-bound
by name then its claim, with no nudge (the PV controller's race alone), and the claim
then its PV bound to it by uid, then the claim marked bind-completed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import structlog.testing
from kubernetes import client
from kubernetes import config as kubeconfig
from temporalio.testing import ActivityEnvironment

from activities.migration import MigrationActivities
from contract import ClaimsBoundInput, ImportInput, MigrationRequest, OrdinalPlan, VolumePlan
from devenv.clusters import HOSTPATH_CLASS, LocalClusters

APP = "bench"
RAW_TIMEOUT = 30.0  # s a bare claim may take (the PV controller resyncs every 15 s)


def _volume(name: str, root: str, claim_ref: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "capacity": {"storage": "1Gi"},
        "accessModes": ["ReadWriteOnce"],
        "persistentVolumeReclaimPolicy": "Retain",
        "storageClassName": HOSTPATH_CLASS,
        "hostPath": {"path": f"{root}/{name}"},
    }
    if claim_ref:
        spec["claimRef"] = claim_ref
    return {"metadata": {"name": name}, "spec": spec}


def _claim(name: str, volume: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": HOSTPATH_CLASS,
            "volumeName": volume,
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }


def _summary(label: str, samples: list[float], extra: str = "") -> None:
    ordered = sorted(samples)
    p90 = ordered[max(0, round(0.9 * len(ordered)) - 1)]
    print(
        f"{label}: n={len(ordered)} p50 {statistics.median(ordered):.3f} s, "
        f"p90 {p90:.3f} s, max {ordered[-1]:.3f} s{extra}",
        flush=True,
    )


def _until(what: str, phase: Callable[[str], str], name: str, want: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while phase(name) != want:
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.005)


def activities(apis: dict[str, client.ApiClient], root: str, pairs: int, label: str) -> None:
    """import_volumes then wait_for_claims_bound, one ordinal at a time."""
    ns = f"bench-bind-{uuid.uuid4().hex[:6]}"
    src, dst = (client.CoreV1Api(apis[s]) for s in ("source", "destination"))
    for core in (src, dst):
        core.create_namespace({"metadata": {"name": ns}})
    acts, env = MigrationActivities(apis), ActivityEnvironment()
    request = MigrationRequest(
        statefulset=APP, namespace=ns, source_context="source", destination_context="destination"
    )
    samples: list[float] = []
    names = [f"{ns}-{k}" for k in range(pairs)]
    try:
        with structlog.testing.capture_logs() as logs:
            for k, name in enumerate(names):
                src.create_persistent_volume(_volume(name, root))
                claim = f"data-{APP}-{k}"
                plan = VolumePlan(
                    template="data",
                    claim=claim,
                    volume=name,
                    storage_class=HOSTPATH_CLASS,
                    destination_storage_class=HOSTPATH_CLASS,
                    size="1Gi",
                )
                task = ImportInput(
                    request=request,
                    migration_id=f"bench-{ns}",
                    ordinal=OrdinalPlan(ordinal=k, pod=f"{APP}-{k}", volumes=[plan]),
                )
                bound = ClaimsBoundInput(
                    context="destination", namespace=ns, claims=[claim], timeout=60
                )
                started = time.monotonic()
                env.run(acts.import_volumes, task)
                env.run(acts.wait_for_claims_bound, bound)
                samples.append(time.monotonic() - started)
        nudges = sum(1 for e in logs if e.get("event") == "claims_bind_nudged")
        slowest = samples.index(max(samples))
        _summary(label, samples, f" (ordinal {slowest}), {nudges} bind nudge(s)")
    finally:
        for core in (src, dst):
            core.delete_namespace(ns)
        _remove_volumes(apis, names)


def raw(apis: dict[str, client.ApiClient], root: str, pairs: int) -> None:
    """The two orders with bare API calls (no activity, no nudge), one pair at a time."""
    core = client.CoreV1Api(apis["destination"])
    ns = f"bench-raw-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns}})
    names: list[str] = []

    def claim_phase(name: str) -> str:
        pvc: Any = core.read_namespaced_persistent_volume_claim(name, ns)
        return str(pvc.status.phase)

    def volume_phase(name: str) -> str:
        pv: Any = core.read_persistent_volume(name)
        return str(pv.status.phase)

    try:
        old: list[float] = []
        late = 0
        for k in range(pairs):
            volume, claim = f"{ns}-old-{k}", f"old-{k}"
            names.append(volume)
            started = time.monotonic()
            core.create_persistent_volume(
                _volume(
                    volume, root, {"namespace": ns, "name": claim, "kind": "PersistentVolumeClaim"}
                )
            )
            _until("PV Available", volume_phase, volume, "Available", 60)
            core.create_namespaced_persistent_volume_claim(ns, _claim(claim, volume))
            _until("claim Bound", claim_phase, claim, "Bound", RAW_TIMEOUT)
            old.append(time.monotonic() - started)
            late += old[-1] > 1.0
        _summary("raw PV pre-bound by name, then claim (no nudge)", old, f", {late} over 1 s")

        new: list[float] = []
        for k in range(pairs):
            volume, claim = f"{ns}-new-{k}", f"new-{k}"
            names.append(volume)
            started = time.monotonic()
            made: Any = core.create_namespaced_persistent_volume_claim(ns, _claim(claim, volume))
            ref = {
                "namespace": ns,
                "name": claim,
                "kind": "PersistentVolumeClaim",
                "uid": made.metadata.uid,
            }
            core.create_persistent_volume(_volume(volume, root, ref))
            _until("PV Bound", volume_phase, volume, "Bound", 60)
            core.patch_namespaced_persistent_volume_claim(
                claim, ns, {"metadata": {"annotations": {"pv.kubernetes.io/bind-completed": "yes"}}}
            )
            _until("claim Bound", claim_phase, claim, "Bound", RAW_TIMEOUT)
            new.append(time.monotonic() - started)
        _summary("raw claim, then PV bound by uid, then bind-completed", new)
    finally:
        core.delete_namespace(ns)
        _remove_volumes({"destination": apis["destination"]}, names)


def _remove_volumes(apis: dict[str, client.ApiClient], names: list[str]) -> None:
    """The PVs left behind (Retain): the namespaces' removal does not take them."""
    wanted = set(names)
    for api in apis.values():
        core = client.CoreV1Api(api)
        for pv in core.list_persistent_volume().items:
            if pv.metadata.name in wanted:
                core.delete_persistent_volume(pv.metadata.name)


@contextlib.contextmanager
def clusters(given: str | None) -> Iterator[tuple[Path, str]]:
    """(kubeconfig, volume root) of the given clusters or of our own."""
    if given:
        yield Path(given), "/srv/bench"
        return
    with tempfile.TemporaryDirectory(prefix="stsmigrate-bench-") as tmp:
        started = time.monotonic()
        with LocalClusters(Path(tmp)) as lc:
            print(f"  clusters ready in {time.monotonic() - started:.0f} s", flush=True)
            yield lc.kubeconfig, str(lc.volume_root)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pairs", nargs="?", type=int, default=20)
    parser.add_argument("--kubeconfig", help="of running clusters (default: start our own)")
    parser.add_argument("--volume-root", help="hostPath root of the volumes (with --kubeconfig)")
    parser.add_argument("--also", action="append", default=[], help="another checkout to time")
    parser.add_argument("--raw", action="store_true", help="also time both orders with bare calls")
    parser.add_argument("--label", default=f"activities of {Path(__file__).resolve().parents[1]}")
    args = parser.parse_args(argv)
    with clusters(args.kubeconfig) as (path, root):
        root = args.volume_root or root
        apis = {
            side: kubeconfig.new_client_from_config(
                config_file=str(path), context=side, persist_config=False
            )
            for side in ("source", "destination")
        }
        activities(apis, root, args.pairs, args.label)
        for checkout in args.also:
            again = [sys.executable, __file__, "--kubeconfig", str(path), "--volume-root", root]
            subprocess.run(
                [*again, "--label", f"activities of {checkout}", str(args.pairs)],
                env={**os.environ, "PYTHONPATH": checkout},
                check=True,
            )
        if args.raw:
            raw(apis, root, args.pairs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
