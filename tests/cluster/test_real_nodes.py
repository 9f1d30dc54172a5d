"""Real kubelet nodes beside the kwok ones (``LocalClusters(real_nodes=True)``): real
pods from local images, one hostPath volume and one CSI volume (the nodes' own CSI
plugin) read in both clusters, pod IPs routed
between the clusters, and nothing left behind when the launcher is killed.

Marker ``real`` (``make real``): left out of ``make test``, which stays on kwok only.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devenv.build import cache_dir
from devenv.clusters import CSI_CLASS, CSI_DRIVER, HOSTPATH_CLASS, LocalClusters
from devenv.realnodes import (
    REAL_NODE_LABEL,
    REAL_NODE_NAME,
    redis_pod,
)
from tests.support.waits import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.real]

KEY = "migrated-key"
VALUE = "written-in-source"


def _apply(lc: LocalClusters, context: str, *objects: dict[str, Any]) -> None:
    lc.kubectl(
        context,
        "apply",
        "-f",
        "-",
        input=json.dumps({"kind": "List", "apiVersion": "v1", "items": list(objects)}),
    )


def _get(lc: LocalClusters, context: str, *args: str) -> Any:
    return json.loads(lc.kubectl(context, "get", *args, "-o", "json"))


def _namespace(lc: LocalClusters, context: str, ns: str) -> None:
    lc.kubectl(context, "create", "namespace", ns)
    wait_for(
        lambda: lc.kubectl(context, "get", "sa", "default", "-n", ns), 30, "default ServiceAccount"
    )


def _claim(ns: str, storage_class: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data-redis-0", "namespace": ns},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": storage_class,
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }


def _bound_source_claim(lc: LocalClusters, claim: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``claim`` made in the source and Bound: its PV's name and the PV."""
    _apply(lc, "source", claim)
    ns = claim["metadata"]["namespace"]
    pv_name: str = wait_for(
        lambda: _get(lc, "source", "pvc", "data-redis-0", "-n", ns)["spec"].get("volumeName"),
        60,
        "the source claim bound",
    )
    return pv_name, _get(lc, "source", "pv", pv_name)


def _taken_in_destination(
    lc: LocalClusters, claim: dict[str, Any], pv_name: str, volume: dict[str, Any]
) -> dict[str, Any]:
    """The source's volume imported as a migration does (a Retain PV of the same storage
    pre-bound to a claim of the same name) and a redis pod on it, Ready: the pod."""
    ns = claim["metadata"]["namespace"]
    dest_pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": pv_name},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "capacity": {"storage": "1Gi"},
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": claim["spec"]["storageClassName"],
            **volume,
            "claimRef": {"namespace": ns, "name": "data-redis-0"},
        },
    }
    dest_claim = {**claim, "spec": {**claim["spec"], "volumeName": pv_name}}
    _apply(lc, "destination", dest_pv, dest_claim)
    pod = {**redis_pod("redis-0", "data-redis-0"), "metadata": {"name": "redis-0", "namespace": ns}}
    _apply(lc, "destination", pod)
    return _ready_pod(lc, "destination", ns, "redis-0")


def _ready_pod(lc: LocalClusters, context: str, ns: str, name: str) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        pod = _get(lc, context, "pod", name, "-n", ns)
        conditions = pod.get("status", {}).get("conditions", [])
        if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
            return pod
        return None

    pod: dict[str, Any] = wait_for(ready, 120, f"{context}/{ns}/{name} Ready", interval=0.5)
    return pod


def _redis_cli(lc: LocalClusters, context: str, ns: str, pod: str, *args: str) -> str:
    return lc.kubectl(context, "exec", "-n", ns, pod, "--", "redis-cli", *args).strip()


def test_real_nodes_join_beside_the_kwok_nodes(real_clusters: LocalClusters) -> None:
    for context, cluster in real_clusters.clusters.items():
        nodes = _get(real_clusters, context, "nodes")["items"]
        names = sorted(n["metadata"]["name"] for n in nodes)
        assert names == sorted([f"{context}-node-0", REAL_NODE_NAME])
        real = next(n for n in nodes if n["metadata"]["name"] == REAL_NODE_NAME)
        assert real["metadata"]["labels"][REAL_NODE_LABEL] == "true"
        assert {"key": REAL_NODE_LABEL, "value": "true", "effect": "NoSchedule"} in real["spec"][
            "taints"
        ]
        assert real["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
        assert real["status"]["nodeInfo"]["kubeletVersion"] == "v1.34.4"
        node = cluster.real_node
        assert node is not None and node.subnet is not None
    subnets = [n.subnet for n in real_clusters.real_node_list()]
    assert subnets[0] != subnets[1]


def test_each_kubelet_has_its_own_device_plugin_socket(real_clusters: LocalClusters) -> None:
    """kubelet's device manager listens on a fixed path; each real node's mount namespace
    has its own folder there, so the two kubelets never take each other's socket."""
    nodes = real_clusters.real_node_list()
    for node in nodes:
        assert node.device_plugin_socket.is_socket(), node.device_plugin_socket
        assert os.readlink(node.mount_namespace()) != os.readlink("/proc/self/ns/mnt")
    assert nodes[0].device_plugin_socket != nodes[1].device_plugin_socket
    assert os.readlink(nodes[0].mount_namespace()) != os.readlink(nodes[1].mount_namespace())


def test_a_pod_without_the_toleration_stays_off_the_real_node(
    real_clusters: LocalClusters,
) -> None:
    ns = "untolerated"
    real_clusters.kubectl("source", "create", "namespace", ns)
    try:
        wait_for(
            lambda: real_clusters.kubectl("source", "get", "sa", "default", "-n", ns),
            30,
            "default ServiceAccount",
        )
        _apply(
            real_clusters,
            "source",
            {**redis_pod("r", None, tolerate=False), "metadata": {"name": "r", "namespace": ns}},
        )

        def unschedulable() -> bool:
            pod = _get(real_clusters, "source", "pod", "r", "-n", ns)
            return any(
                c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable"
                for c in pod.get("status", {}).get("conditions", [])
            )

        wait_for(unschedulable, 60, "the untolerated pod reported Unschedulable")
        pod = _get(real_clusters, "source", "pod", "r", "-n", ns)
        assert "nodeName" not in pod["spec"]
    finally:
        real_clusters.kubectl("source", "delete", "namespace", ns, "--wait=false")


def test_a_key_written_in_source_is_read_in_destination_from_the_same_volume(
    real_clusters: LocalClusters,
) -> None:
    lc = real_clusters
    ns = "realpods"
    for context in lc.clusters:
        _namespace(lc, context, ns)
    claim = _claim(ns, HOSTPATH_CLASS)
    pv_name, source_pv = _bound_source_claim(lc, claim)
    folder = Path(source_pv["spec"]["hostPath"]["path"])
    assert folder.parent == lc.volume_root

    # The source pod writes the key and saves it to its volume, then goes.
    _apply(
        lc,
        "source",
        {**redis_pod("redis-0", "data-redis-0"), "metadata": {"name": "redis-0", "namespace": ns}},
    )
    pod = _ready_pod(lc, "source", ns, "redis-0")
    assert pod["spec"]["nodeName"] == REAL_NODE_NAME
    # The kubelet mounted the ServiceAccount token (a projected volume, a tmpfs it makes in
    # the node's mount namespace) where containerd's runc sees it: else no Ready.
    assert any("projected" in v for v in pod["spec"]["volumes"])
    assert _redis_cli(lc, "source", ns, "redis-0", "SET", KEY, VALUE) == "OK"
    assert _redis_cli(lc, "source", ns, "redis-0", "SAVE") == "OK"
    assert (folder / "dump.rdb").is_file()  # the real container wrote the shared folder
    lc.kubectl("source", "delete", "pod", "redis-0", "-n", ns, "--wait=true", "--timeout=60s")

    # The destination gets the same folder as a PV pre-bound to its claim, as a
    # migration imports it, and its pod reads the key from it.
    volume = {"hostPath": {"path": str(folder), "type": "Directory"}}
    dest = _taken_in_destination(lc, claim, pv_name, volume)
    assert dest["spec"]["nodeName"] == REAL_NODE_NAME
    assert _redis_cli(lc, "destination", ns, "redis-0", "GET", KEY) == VALUE

    # Pod IPs: a source pod reaches the destination pod, and back.
    _apply(
        lc, "source", {**redis_pod("client", None), "metadata": {"name": "client", "namespace": ns}}
    )
    client = _ready_pod(lc, "source", ns, "client")
    source_ip, dest_ip = client["status"]["podIP"], dest["status"]["podIP"]
    nodes = {n.cluster: n for n in lc.real_node_list()}
    assert ipaddress.ip_address(source_ip) in nodes["source"].subnet  # type: ignore[operator]
    assert ipaddress.ip_address(dest_ip) in nodes["destination"].subnet  # type: ignore[operator]
    assert _redis_cli(lc, "source", ns, "client", "-h", dest_ip, "GET", KEY) == VALUE
    assert _redis_cli(lc, "destination", ns, "redis-0", "-h", source_ip, "PING") == "PONG"


def _node_mounts(lc: LocalClusters, cluster: str, folder: Path) -> list[list[str]]:
    """The mountinfo lines of a real node's mount namespace whose root is ``folder``
    (the CSI plugin's bind mounts of that volume)."""
    node = lc.clusters[cluster].real_node
    assert node is not None
    containerd = next(p for name, p, _ in node.processes if name == "containerd")
    lines = Path(f"/proc/{containerd.pid}/mountinfo").read_text().splitlines()
    # A bind mount's root (field 4) is the folder's path within its filesystem, a suffix
    # of the folder; its mount point (field 5) is the kubelet's target_path.
    return [
        line.split()
        for line in lines
        if str(folder).endswith(line.split()[3]) and "kubernetes.io~csi" in line.split()[4]
    ]


def test_a_key_written_in_source_is_read_in_destination_from_the_same_csi_volume(
    real_clusters: LocalClusters,
) -> None:
    """The local-csi class on the real nodes: the kubelet registers each node's plugin,
    waits for kwok's attacher, and the plugin bind-mounts the volume's folder."""
    lc = real_clusters
    ns = "realcsi"
    for context in lc.clusters:
        csinode = _get(lc, context, "csinode", REAL_NODE_NAME)
        drivers = {d["name"]: d["nodeID"] for d in csinode["spec"]["drivers"]}
        assert drivers == {CSI_DRIVER: REAL_NODE_NAME}
        _namespace(lc, context, ns)
    claim = _claim(ns, CSI_CLASS)
    pv_name, source_pv = _bound_source_claim(lc, claim)
    assert source_pv["spec"]["csi"]["driver"] == CSI_DRIVER
    folder = Path(source_pv["spec"]["csi"]["volumeHandle"])
    assert folder.parent == lc.volume_root

    _apply(
        lc,
        "source",
        {**redis_pod("redis-0", "data-redis-0"), "metadata": {"name": "redis-0", "namespace": ns}},
    )
    pod = _ready_pod(lc, "source", ns, "redis-0")
    assert pod["spec"]["nodeName"] == REAL_NODE_NAME
    attachments = [
        a
        for a in _get(lc, "source", "volumeattachments")["items"]
        if a["spec"]["source"].get("persistentVolumeName") == pv_name
    ]
    assert [(a["spec"]["nodeName"], a["status"]["attached"]) for a in attachments] == [
        (REAL_NODE_NAME, True)
    ]
    mounts = _node_mounts(lc, "source", folder)
    assert len(mounts) == 1 and pv_name in mounts[0][4], mounts
    assert _redis_cli(lc, "source", ns, "redis-0", "SET", KEY, VALUE) == "OK"
    assert _redis_cli(lc, "source", ns, "redis-0", "SAVE") == "OK"
    assert (folder / "dump.rdb").is_file()  # written through the plugin's bind mount
    lc.kubectl("source", "delete", "pod", "redis-0", "-n", ns, "--wait=true", "--timeout=60s")
    # NodeUnpublishVolume unmounted the folder and removed the target.
    assert _node_mounts(lc, "source", folder) == []
    assert not Path(mounts[0][4]).exists()

    # The destination imports the same folder as a CSI PV of the same volumeHandle.
    volume = {"csi": {"driver": CSI_DRIVER, "volumeHandle": str(folder)}}
    dest = _taken_in_destination(lc, claim, pv_name, volume)
    assert dest["spec"]["nodeName"] == REAL_NODE_NAME
    assert _redis_cli(lc, "destination", ns, "redis-0", "GET", KEY) == VALUE
    assert len(_node_mounts(lc, "destination", folder)) == 1


def _ours(workdir: Path, run_dirs: list[str]) -> dict[str, list[str]]:
    """Processes naming the launcher's work folder or its real nodes' socket folders
    (the shims), and mounts under those folders that the host or one of those processes
    (the nodes' own mount namespaces) still sees."""
    processes = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                text = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
            except OSError:
                continue
            if any(name.encode() in text for name in [str(workdir), *run_dirs]):
                processes.append(proc.name)
    mounts = set()
    for pid in ["self", *processes]:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
                if line.split()[4].startswith((str(workdir), *run_dirs)):
                    mounts.add(line.split()[4])
    return {"processes": processes, "mounts": sorted(mounts)}


def test_a_killed_launcher_leaves_no_process_mount_or_bridge(tmp_path: Path) -> None:
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devenv",
            "up",
            "--real-nodes",
            "--nodes",
            "1",
            "--workdir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    try:
        assert launcher.stdout is not None
        first = launcher.stdout.readline()
        assert first.startswith("clusters ready"), first + launcher.stdout.read()
        state = {
            name: json.loads((tmp_path / name / "realnode" / "guard.json").read_text())
            for name in ("source", "destination")
        }
        bridges = [s["bridge"] for s in state.values()]
        sockets = [s["run_dir"] for s in state.values()]
        assert all(Path("/sys/class/net", b).exists() for b in bridges)
        # The CSI plugins' sockets (in the run_dirs, which must go).
        for s in state.values():
            plugin_sockets = [
                Path(s["run_dir"], "kubelet", "plugins_registry", f"{CSI_DRIVER}-reg.sock"),
                Path(s["run_dir"], "kubelet", "plugins", CSI_DRIVER, "csi.sock"),
            ]
            assert all(p.is_socket() for p in plugin_sockets), plugin_sockets
        # A running real pod: containers, its shim, netns and volume mounts to leave.
        kubeconfig = str(tmp_path / "kubeconfig")
        lc_kubectl = [
            str(cache_dir() / "kubectl"),
            f"--kubeconfig={kubeconfig}",
            "--context=source",
        ]
        pod = {**redis_pod("r", None), "metadata": {"name": "r", "namespace": "default"}}
        subprocess.run(
            [*lc_kubectl, "apply", "-f", "-"],
            input=json.dumps(pod),
            check=True,
            text=True,
            capture_output=True,
        )
        subprocess.run(
            [*lc_kubectl, "wait", "pod/r", "--for=condition=Ready", "--timeout=120s"],
            check=True,
            capture_output=True,
        )
        runc = subprocess.run(
            ["runc", "--root", f"{state['source']['runc_root']}/k8s.io", "list", "-q"],
            capture_output=True,
            text=True,
            check=True,
        )
        containers = runc.stdout.split()
        assert len(containers) == 2  # the sandbox and redis
        root = f"{state['source']['runc_root']}/k8s.io"
        pids = [
            json.loads(
                subprocess.run(
                    ["runc", "--root", root, "state", c], capture_output=True, text=True, check=True
                ).stdout
            )["pid"]
            for c in containers
        ]
        before = _ours(tmp_path, sockets)
        assert before["mounts"] and before["processes"]
        launcher.send_signal(signal.SIGKILL)
        launcher.wait(60)

        def left_over() -> dict[str, list[str]]:
            left = _ours(tmp_path, sockets)
            left["containers"] = [str(p) for p in pids if Path(f"/proc/{p}").exists()]
            left["cgroups"] = [
                str(f) for c in containers for f in Path("/sys/fs/cgroup").glob(f"*/*/{c}")
            ]
            left["folders"] = [s for s in sockets if Path(s).exists()]
            left["bridges"] = [b for b in bridges if Path("/sys/class/net", b).exists()]
            return {k: v for k, v in left.items() if v}

        try:
            wait_for(lambda: not left_over(), 60, "the real nodes' leftovers gone", interval=0.5)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {left_over()}") from None
    finally:
        launcher.kill()
        launcher.wait()
