"""Two real Kubernetes control planes on loopback: "source" and "destination".

Each cluster is etcd, kube-apiserver, kube-controller-manager (all controllers),
kube-scheduler and kwok (playing the kubelets, a CSI provisioner and a CSI
attacher through the stages in stages.yaml), on 127.0.0.1 with free ports. Both
clusters provision hostPath and CSI volumes into one folder, so a volume of one
is storage the other can reach, as KEP-3335 requires.

Lifetime: every process is started through ``setpriv --pdeathsig SIGTERM``, so
if the launcher dies, even by SIGKILL, the kernel stops its children; ``stop()``
(also run by the context manager) stops them in order and waits for them. All
processes are started from the calling thread on purpose: the death signal is
tied to the thread that forked, not to the process.
"""

from __future__ import annotations

import base64
import contextlib
import json
import random
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from devenv import images, realnodes
from devenv import pki as pkimod
from devenv.build import (
    ensure_binaries,
    ensure_csi_plugin,
    ensure_kubelet,
    ensure_pause,
    image_cache_dir,
)
from devenv.spawn import spawn_logged

STAGES = Path(__file__).with_name("stages.yaml")
HOSTPATH_CLASS = "local-hostpath"
CSI_CLASS = "local-csi"
CSI_DRIVER = realnodes.CSI_DRIVER
HOSTPATH_PROVISIONER = "stsmigrate.dev/hostpath"
START_TIMEOUT = 120.0


class ClusterError(RuntimeError):
    """A cluster did not start; the message names the component and its log."""


_handed_out: set[int] = set()


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(also: int = 0) -> int:
    """A free loopback port below the kernel's ephemeral range.

    Ports from the ephemeral range (what binding to port 0 returns) are also what
    every outgoing connection on the machine draws from, so one could be taken
    between our check and the component's bind; below the range only listeners
    compete. No port is handed out twice by one process. With ``also``, port + also
    is free and below the range too (for a server that listens there as well, as a
    Redis Cluster node does on its bus port, port + 10000).
    """
    low, high = 20000, _ephemeral_start() - 1 - also
    while True:
        port = random.randint(low, high)  # noqa: S311 (not security-relevant)
        wanted = {port, port + also}
        if wanted & _handed_out or not all(_bindable(p) for p in wanted):
            continue
        _handed_out.update(wanted)
        return port


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    log_file: IO[bytes]


# The identity deploy/rbac.yaml binds its roles to. Only its requests are audited
# (metadata only: no bodies, so no Secret values), everything else is not logged.
AUDITED_USERS = ["system:serviceaccount:stsmigrate-system:stsmigrate"]
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata", "users": AUDITED_USERS}, {"level": "None"}],
}


@dataclass
class Cluster:
    """One control plane. Use ``LocalClusters`` to run the pair."""

    name: str
    workdir: Path
    bins: Path
    volume_root: Path
    nodes: int = 3
    etcd_port: int = field(default_factory=free_port)
    etcd_peer_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    kcm_port: int = field(default_factory=free_port)
    scheduler_port: int = field(default_factory=free_port)
    kwok_port: int = field(default_factory=free_port)
    processes: list[_Process] = field(default_factory=list)
    pki: pkimod.ClusterPKI = field(init=False)
    # The real kubelet node beside the kwok ones (LocalClusters(real_nodes=True)).
    real_node: realnodes.RealNode | None = None

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    @property
    def audit_log(self) -> Path:
        """Every request of the worker's shipped identity (AUDITED_USERS), one JSON
        event per line: the least-privilege test reads what the worker really did."""
        return self.workdir / "audit.log"

    # -- processes -------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str]) -> None:
        log = self.workdir / "logs" / f"{name}.log"
        popen, log_file = spawn_logged(log, args, self.workdir)
        self.processes.append(_Process(name, popen, log, log_file))

    def _check_alive(self) -> None:
        if self.real_node is not None:
            self.real_node.check_alive()
        for proc in self.processes:
            if proc.popen.poll() is not None:
                tail = proc.log.read_text(errors="replace").splitlines()[-15:]
                raise ClusterError(
                    f"{self.name}/{proc.name} exited with {proc.popen.returncode}; "
                    f"log {proc.log}:\n" + "\n".join(tail)
                )

    def stop(self) -> None:
        # The real node first (its kubelet, containers, mounts, bridge), then the
        # control plane in reverse start order: kwok and controllers first, etcd last.
        if self.real_node is not None:
            with contextlib.suppress(Exception):
                self.real_node.stop()
        for proc in reversed(self.processes):
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in reversed(self.processes):
            try:
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()
            proc.log_file.close()
        self.processes.clear()

    # -- start-up phases (LocalClusters interleaves them across clusters) ------------
    def prepare(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pki = pkimod.make_pki(self.workdir / "pki", self.name)
        self.admin_kubeconfig.write_text(yaml.safe_dump(kubeconfig_dict({self.name: self})))
        stages = STAGES.read_text().replace("@VOLUME_ROOT@", str(self.volume_root))
        (self.workdir / "stages.yaml").write_text(stages)
        (self.workdir / "audit-policy.yaml").write_text(yaml.safe_dump(AUDIT_POLICY))

    def start_etcd(self) -> None:
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        client = f"http://127.0.0.1:{self.etcd_port}"
        self._spawn(
            "etcd",
            [
                str(self.bins / "etcd"),
                f"--name={self.name}",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster={self.name}={peer}",
                "--log-level=warn",
                # Throwaway test data: fsync only costs time here.
                "--unsafe-no-fsync",
                "--quota-backend-bytes=2147483648",
            ],
        )

    def etcd_ready(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.etcd_port}/health", timeout=2
            ) as resp:
                return bool(json.load(resp).get("health") == "true")
        except (OSError, ValueError):
            return False

    def start_apiserver(self) -> None:
        p = self.pki
        self._spawn(
            "kube-apiserver",
            [
                str(self.bins / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.api_port}",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--tls-cert-file={p.server_cert}",
                f"--tls-private-key-file={p.server_key}",
                f"--client-ca-file={p.ca_cert}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={p.sa_pub}",
                f"--service-account-signing-key-file={p.sa_key}",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",
                # No kubelets or real endpoints: the "kubernetes" Service needs none.
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                f"--audit-policy-file={self.workdir / 'audit-policy.yaml'}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                *self._real_node_apiserver_flags(),
            ],
        )

    def _real_node_apiserver_flags(self) -> list[str]:
        if self.real_node is None:
            return []
        p = self.pki
        return [
            # The real kubelet reports Hostname "localhost" (on loopback): always use it.
            "--kubelet-preferred-address-types=Hostname",
            # exec, logs and port-forward authenticate to the kubelet with this cert.
            f"--kubelet-client-certificate={p.admin_cert}",
            f"--kubelet-client-key={p.admin_key}",
        ]

    def _tls_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        ctx.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        return ctx

    def api_ready(self) -> bool:
        try:
            with urllib.request.urlopen(  # noqa: S310 (loopback https, CA-verified)
                f"{self.server}/readyz", timeout=2, context=self._tls_context()
            ) as resp:
                return resp.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def start_components(self) -> None:
        kc = str(self.admin_kubeconfig)
        p = self.pki
        common = [
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
        ]
        self._spawn(
            "kube-controller-manager",
            [
                str(self.bins / "kube-controller-manager"),
                *common,
                f"--secure-port={self.kcm_port}",
                f"--cert-dir={self.workdir / 'kcm-certs'}",
                "--controllers=*",
                f"--root-ca-file={p.ca_cert}",
                f"--service-account-private-key-file={p.sa_key}",
                f"--cluster-signing-cert-file={p.ca_cert}",
                f"--cluster-signing-key-file={p.ca_key}",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(self.bins / "kube-scheduler"),
                *common,
                f"--secure-port={self.scheduler_port}",
                f"--cert-dir={self.workdir / 'scheduler-certs'}",
            ],
        )
        self._spawn(
            "kwok",
            [
                str(self.bins / "kwok"),
                f"--kubeconfig={kc}",
                f"--config={self.workdir / 'stages.yaml'}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--node-lease-duration-seconds=40",
                "--cidr=10.244.0.0/16",
                "--node-ip=10.0.0.1",
                f"--server-address=127.0.0.1:{self.kwok_port}",
            ],
        )
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(self.bootstrap_objects()))

    def bootstrap_objects(self) -> list[dict[str, Any]]:
        objects: list[dict[str, Any]] = [
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {
                    "name": HOSTPATH_CLASS,
                    "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
                },
                "provisioner": HOSTPATH_PROVISIONER,
                "reclaimPolicy": "Delete",
                "volumeBindingMode": "Immediate",
            },
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {"name": CSI_CLASS},
                "provisioner": CSI_DRIVER,
                "reclaimPolicy": "Delete",
                "volumeBindingMode": "Immediate",
            },
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "CSIDriver",
                "metadata": {"name": CSI_DRIVER},
                # attachRequired makes the attach/detach controller create and delete
                # VolumeAttachments as pods come and go, as for a real block-storage driver.
                "spec": {"attachRequired": True, "podInfoOnMount": False},
            },
        ]
        for i in range(self.nodes):
            name = f"{self.name}-node-{i}"
            objects.append(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": name,
                        "annotations": {
                            "kwok.x-k8s.io/node": "fake",
                            "node.alpha.kubernetes.io/ttl": "0",
                            # Normally set by the kubelet; without it the attach/detach
                            # controller leaves this node's volumes alone.
                            "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                        },
                        "labels": {
                            "kubernetes.io/hostname": name,
                            "kubernetes.io/os": "linux",
                            "kubernetes.io/arch": "amd64",
                            "type": "kwok",
                        },
                    },
                }
            )
        return objects

    def kubectl(self, *args: str, input: str | None = None) -> str:
        out = subprocess.run(
            [str(self.bins / "kubectl"), f"--kubeconfig={self.admin_kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if out.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} on {self.name}: {out.stderr.strip()}")
        return out.stdout

    def workload_ready(self) -> bool:
        """Nodes Ready and the default ServiceAccount present (KCM and kwok are working,
        and the real node's kubelet when there is one)."""
        try:
            nodes = json.loads(self.kubectl("get", "nodes", "-o", "json"))["items"]
            self.kubectl("get", "serviceaccount", "default", "-n", "default")
        except ClusterError:
            return False
        ready = [
            n
            for n in nodes
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in n.get("status", {}).get("conditions", [])
            )
        ]
        return len(ready) == self.nodes + (self.real_node is not None)


def kubeconfig_dict(clusters: dict[str, Cluster]) -> dict[str, Any]:
    """A self-contained kubeconfig with one context per cluster, named after it."""

    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": next(iter(clusters)),
        "clusters": [
            {
                "name": n,
                "cluster": {"server": c.server, "certificate-authority-data": b64(c.pki.ca_cert)},
            }
            for n, c in clusters.items()
        ],
        "users": [
            {
                "name": f"{n}-admin",
                "user": {
                    "client-certificate-data": b64(c.pki.admin_cert),
                    "client-key-data": b64(c.pki.admin_key),
                },
            }
            for n, c in clusters.items()
        ],
        "contexts": [
            {"name": n, "context": {"cluster": n, "user": f"{n}-admin"}} for n in clusters
        ],
    }


class LocalClusters:
    """The "source" and "destination" clusters, started together.

    >>> with LocalClusters(Path("/tmp/run")) as lc:
    ...     print(lc.kubeconfig)  # contexts "source" and "destination"
    """

    def __init__(
        self,
        workdir: Path,
        names: tuple[str, ...] = ("source", "destination"),
        nodes: int = 3,
        bins: Path | None = None,
        real_nodes: bool = False,
    ) -> None:
        self.workdir = workdir
        self.bins = bins or ensure_binaries()
        self.volume_root = workdir / "volumes"
        self.kubeconfig = workdir / "kubeconfig"
        self.real_nodes = real_nodes
        self.clusters = {
            n: Cluster(n, workdir / n, self.bins, self.volume_root, nodes) for n in names
        }
        if real_nodes:
            realnodes.ensure_packages()
            kubelet = ensure_kubelet()
            pause = ensure_pause()
            csi_plugin = ensure_csi_plugin()
            tars = [
                images.pause_image(image_cache_dir(), pause),
                images.redis_image(image_cache_dir()),
            ]
            for n, c in self.clusters.items():
                c.real_node = realnodes.RealNode(
                    n,
                    c.workdir / "realnode",
                    kubelet,
                    c.admin_kubeconfig,
                    tars,
                    csi_plugin,
                    self.volume_root,
                    kubelet_port=free_port(),
                    healthz_port=free_port(),
                )

    def real_node_list(self) -> list[realnodes.RealNode]:
        """The real nodes, one per cluster (none unless real_nodes=True)."""
        return [c.real_node for c in self.clusters.values() if c.real_node is not None]

    def _wait_real(self, what: str, check: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        pending = self.real_node_list()
        while pending:
            for node in list(pending):
                node.check_alive()
                if getattr(node, check)():
                    pending.remove(node)
            if pending and time.monotonic() > deadline:
                raise ClusterError(f"{what} not ready after {START_TIMEOUT:.0f} s")
            time.sleep(0.2)

    def __enter__(self) -> LocalClusters:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wait(self, what: str, check: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        pending = dict(self.clusters)
        while pending:
            for name, cluster in list(pending.items()):
                cluster._check_alive()
                if getattr(cluster, check)():
                    del pending[name]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"{what} not ready after {START_TIMEOUT:.0f} s in {list(pending)}"
                )
            time.sleep(0.2)

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.volume_root.mkdir(parents=True, exist_ok=True)
        try:
            for c in self.clusters.values():
                c.prepare()
            for c in self.clusters.values():
                c.start_etcd()
            # containerd and the image imports overlap the control plane's start.
            for node in self.real_node_list():
                node.start_guard()
                node.start_containerd()
            self._wait("etcd", "etcd_ready")
            for c in self.clusters.values():
                c.start_apiserver()
            self._wait_real("containerd", "containerd_ready")
            for node in self.real_node_list():
                node.import_images()
            self._wait("kube-apiserver", "api_ready")
            for c in self.clusters.values():
                c.start_components()
            for c in self.clusters.values():
                if c.real_node is not None:
                    c.real_node.start_kubelet(c.pki.ca_cert)
                    c.real_node.start_csi_plugin()
            self._wait("nodes and default ServiceAccount", "workload_ready")
            self._wait_real("the CSI plugins' registration", "csi_plugin_registered")
        except BaseException:
            self.stop()
            raise
        self.kubeconfig.write_text(yaml.safe_dump(kubeconfig_dict(self.clusters)))
        self.kubeconfig.chmod(0o600)

    def stop(self) -> None:
        for cluster in self.clusters.values():
            with contextlib.suppress(Exception):
                cluster.stop()

    def kubectl(self, context: str, *args: str, input: str | None = None) -> str:
        return self.clusters[context].kubectl(*args, input=input)

    def remove(self) -> None:
        """Stop and delete the work folder (volumes included)."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
