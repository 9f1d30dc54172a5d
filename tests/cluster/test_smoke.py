"""The local clusters behave like Kubernetes where the migration depends on it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from kubernetes import client

from devenv.build import KUBERNETES_VERSION
from devenv.clusters import CSI_CLASS, HOSTPATH_CLASS, LocalClusters
from devenv.observer import Watcher
from tests.support.apps import apply_statefulset, statefulset
from tests.support.cluster_state import pod_names
from tests.support.waits import wait_for

pytestmark = pytest.mark.cluster


def _ready_replicas(api: client.ApiClient, ns: str, name: str) -> int:
    sts = client.AppsV1Api(api).read_namespaced_stateful_set(name, ns)
    return sts.status.ready_replicas or 0


def test_statefulset_with_two_claim_templates_becomes_ready(
    kube: dict[str, client.ApiClient], namespace: str
) -> None:
    api = kube["source"]
    core = client.CoreV1Api(api)
    apply_statefulset(
        api,
        namespace,
        statefulset("web", 3, templates={"data": None, "logs": CSI_CLASS}, ready_delay="200ms"),
    )
    wait_for(lambda: _ready_replicas(api, namespace, "web") == 3, 60, "3 Ready replicas")

    pods = {p.metadata.name: p for p in core.list_namespaced_pod(namespace).items}
    assert set(pods) == {"web-0", "web-1", "web-2"}
    pvcs = {
        c.metadata.name: c for c in core.list_namespaced_persistent_volume_claim(namespace).items
    }
    assert set(pvcs) == {f"{t}-web-{i}" for t in ("data", "logs") for i in range(3)}
    for pvc in pvcs.values():
        assert pvc.status.phase == "Bound", pvc.metadata.name
    # The claim without a class got the default class (DefaultStorageClass admission).
    assert pvcs["data-web-0"].spec.storage_class_name == HOSTPATH_CLASS

    pvs = {pv.metadata.name: pv for pv in core.list_persistent_volume().items}
    for name, pvc in pvcs.items():
        pv = pvs[pvc.spec.volume_name]
        assert pv.spec.claim_ref.uid == pvc.metadata.uid
        if name.startswith("data-"):
            assert pv.spec.host_path.path.startswith(str(Path("/")))
        else:
            assert pv.spec.csi.driver == "hostpath.csi.stsmigrate.dev"

    # The real attach/detach controller attached every CSI volume to its pod's node.
    def attachments() -> dict[str, client.V1VolumeAttachment]:
        vas = client.StorageV1Api(api).list_volume_attachment().items
        return {va.spec.source.persistent_volume_name: va for va in vas}

    for i in range(3):
        pv_name = pvcs[f"logs-web-{i}"].spec.volume_name
        va = wait_for(lambda pv_name=pv_name: attachments().get(pv_name), 30, f"VA of {pv_name}")
        assert va.spec.node_name == pods[f"web-{i}"].spec.node_name
        wait_for(
            lambda pv_name=pv_name: (
                (attachments()[pv_name].status or {}) and attachments()[pv_name].status.attached
            ),
            30,
            "attached",
        )


def test_one_patch_of_start_and_replicas_creates_exactly_the_expected_ordinals(
    kube: dict[str, client.ApiClient], namespace: str
) -> None:
    api = kube["destination"]
    apps = client.AppsV1Api(api)
    watcher = Watcher(client.CoreV1Api(api).list_namespaced_pod, {"namespace": namespace})
    try:
        apply_statefulset(api, namespace, statefulset("db", 0, start=6))
        apps.patch_namespaced_stateful_set(
            "db", namespace, {"spec": {"ordinals": {"start": 4}, "replicas": 2}}
        )
        wait_for(lambda: _ready_replicas(api, namespace, "db") == 2, 60, "ordinals 4 and 5")
        assert pod_names(api, namespace) == {"db-4", "db-5"}
        uids = {
            p.metadata.name: p.metadata.uid
            for p in client.CoreV1Api(api).list_namespaced_pod(namespace).items
        }

        # The migration's step: take ordinal 3 in the same request that grows replicas.
        apps.patch_namespaced_stateful_set(
            "db", namespace, {"spec": {"ordinals": {"start": 3}, "replicas": 3}}
        )
        wait_for(lambda: _ready_replicas(api, namespace, "db") == 3, 60, "ordinals 3 to 5")
        pods = client.CoreV1Api(api).list_namespaced_pod(namespace).items
        assert {p.metadata.name for p in pods} == {"db-3", "db-4", "db-5"}
        for pod in pods:
            if pod.metadata.name in uids:
                assert pod.metadata.uid == uids[pod.metadata.name], "a kept ordinal was recreated"
        time.sleep(0.5)
    finally:
        watcher.stop()
    created = {e.name for e in watcher.events if e.kind == "ADDED"}
    assert created == {"db-3", "db-4", "db-5"}, "a pod outside the slice was created"
    assert not [e for e in watcher.events if e.kind == "DELETED"], "a pod was deleted"


def test_prebound_volume_binds_to_claim_with_volume_name(
    kube: dict[str, client.ApiClient], namespace: str, clusters: LocalClusters
) -> None:
    core = client.CoreV1Api(kube["destination"])
    pv_name = f"{namespace}-moved"
    path = clusters.volume_root / pv_name
    core.create_persistent_volume(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv_name},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": HOSTPATH_CLASS,
                "hostPath": {"path": str(path)},
                "claimRef": {"namespace": namespace, "name": "data-db-3"},
            },
        }
    )
    try:
        core.create_namespaced_persistent_volume_claim(
            namespace,
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "data-db-3"},
                "spec": {
                    "storageClassName": HOSTPATH_CLASS,
                    "volumeName": pv_name,
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
        )
        wait_for(
            lambda: (
                core.read_namespaced_persistent_volume_claim("data-db-3", namespace).status.phase
                == "Bound"
            ),
            30,
            "claim Bound",
        )
        pvc = core.read_namespaced_persistent_volume_claim("data-db-3", namespace)
        pv = core.read_persistent_volume(pv_name)
        assert pvc.spec.volume_name == pv_name
        assert pv.status.phase == "Bound"
        assert pv.spec.claim_ref.uid == pvc.metadata.uid
        assert pv.spec.host_path.path == str(path)
        # The provisioner stayed out of it: no other volume claims this claim.
        others = [
            v
            for v in core.list_persistent_volume().items
            if v.spec.claim_ref
            and v.spec.claim_ref.namespace == namespace
            and v.metadata.name != pv_name
        ]
        assert others == []
    finally:
        core.delete_namespaced_persistent_volume_claim("data-db-3", namespace)
        core.delete_persistent_volume(pv_name)


def test_scale_down_removes_the_pod_only_after_its_grace_period(
    kube: dict[str, client.ApiClient], namespace: str
) -> None:
    api = kube["source"]
    core = client.CoreV1Api(api)
    grace = 3
    apply_statefulset(
        api, namespace, statefulset("kv", 2, templates={"logs": CSI_CLASS}, grace=grace)
    )
    wait_for(lambda: _ready_replicas(api, namespace, "kv") == 2, 60, "2 Ready replicas")
    pv_name = core.read_namespaced_persistent_volume_claim("logs-kv-1", namespace).spec.volume_name
    storage = client.StorageV1Api(api)
    wait_for(
        lambda: any(
            va.spec.source.persistent_volume_name == pv_name
            for va in storage.list_volume_attachment().items
        ),
        30,
        "attachment",
    )
    pods = Watcher(core.list_namespaced_pod, {"namespace": namespace})
    vas = Watcher(storage.list_volume_attachment)
    try:
        client.AppsV1Api(api).patch_namespaced_stateful_set(
            "kv", namespace, {"spec": {"replicas": 1}}
        )
        wait_for(lambda: pods.of("kv-1", "DELETED"), 30, "kv-1 deleted")
        wait_for(
            lambda: [
                e
                for e in vas.events
                if e.kind == "DELETED" and e.obj.spec.source.persistent_volume_name == pv_name
            ],
            30,
            "attachment of kv-1's volume deleted",
        )
    finally:
        pods.stop()
        vas.stop()
    terminating = [e for e in pods.of("kv-1") if e.obj.metadata.deletion_timestamp]
    deleted = pods.of("kv-1", "DELETED")[0]
    deadline: datetime = terminating[0].obj.metadata.deletion_timestamp
    # deletionTimestamp has whole seconds, so the observed wait is within a second of grace.
    assert deleted.at - terminating[0].at >= grace - 1.0
    assert deleted.at >= deadline.timestamp() - 0.05, "pod removed before its grace period ended"
    va_gone = next(
        e
        for e in vas.events
        if e.kind == "DELETED" and e.obj.spec.source.persistent_volume_name == pv_name
    )
    assert va_gone.at >= deleted.at, "volume detached while the pod still existed"
    assert pods.of("kv-0", "DELETED") == []
    assert pod_names(api, namespace) == {"kv-0"}


def test_kubectl_reports_the_server_version(clusters: LocalClusters) -> None:
    out = subprocess.run(
        [str(clusters.bins / "kubectl"), "--context", "source", "version", "-o", "json"],
        env={**os.environ, "KUBECONFIG": str(clusters.kubeconfig)},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    versions = json.loads(out.stdout)
    assert versions["serverVersion"]["gitVersion"] == KUBERNETES_VERSION
    assert versions["clientVersion"]["gitVersion"] == KUBERNETES_VERSION


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status  # a zombie has exited; only reaping is left


@pytest.mark.parametrize(
    ("how", "sigint_ignored"),
    [
        (signal.SIGINT, False),
        # make faults (make test's 20-minute bound): Ctrl-C and SIGKILL stay in make test.
        pytest.param(signal.SIGINT, True, marks=(pytest.mark.slow, pytest.mark.faults)),
        (signal.SIGKILL, False),
    ],
    ids=["interrupted", "interrupted-started-with-sigint-ignored", "killed"],
)
def test_launcher_leaves_nothing_running(
    tmp_path: Path, how: signal.Signals, sigint_ignored: bool
) -> None:
    # A script's `python -m devenv up &` inherits SIGINT ignored (one CI run's launcher
    # then never stopped): "Ctrl-C stops both clusters" must hold all the same.
    # The child inherits SIG_IGN, or gets SIG_DFL for a Python handler, whatever
    # this pytest process itself was started with.
    previous = signal.signal(
        signal.SIGINT, signal.SIG_IGN if sigint_ignored else signal.default_int_handler
    )
    try:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "devenv", "up", "--nodes", "1", "--workdir", str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        assert launcher.stdout is not None
        first = launcher.stdout.readline()
        assert first.startswith("clusters ready"), first + launcher.stdout.read()
        pids = json.loads((tmp_path / "pids.json").read_text())
        assert len(pids) == 10  # 5 processes per cluster
        assert all(_alive(pid) for pid in pids)
        launcher.send_signal(how)
        launcher.wait(60)
        wait_for(lambda: not any(_alive(pid) for pid in pids), 20, "every cluster process gone")
    finally:
        launcher.kill()  # one that did not stop takes its clusters with it (pdeathsig)
        launcher.wait()


def _processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line or environment names ``text``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            named = any(
                text.encode() in (proc / part).read_bytes() for part in ("cmdline", "environ")
            )
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if named and _alive(int(proc.name)):
            found.append(int(proc.name))
    return found


def test_the_readme_demo_command_migrates_and_leaves_nothing_running(tmp_path: Path) -> None:
    # `make demo ARGS=--exit` as the README gives it, with a workdir so its processes
    # can be found: the dev server, both clusters and the worker all name it.
    demo = subprocess.run(
        [sys.executable, "-m", "devenv", "demo", "--exit", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "destination owns ordinals [0, 6)" in demo.stdout
    assert "observer: no violation" in demo.stdout
    assert "Fatal Python error" not in demo.stderr
    wait_for(lambda: not _processes_mentioning(str(tmp_path)), 20, "every demo process gone")
