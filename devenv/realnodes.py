"""A real kubelet node beside the kwok nodes of a local cluster (opt-in).

Per cluster: its own containerd (Debian's; config, logs, root and runc root under
the cluster's folder, its socket and state in a short folder of its own, see
``RealNode.run_dir``), a kubelet built from the wrapper module (its own ports and
root-dir, node name ``localhost`` so the apiserver reaches it on loopback), and
CNI from Debian's containernetworking-plugins: a bridge of its own with a /24 of
10.250.0.0/16. The bridges are on the host, so with forwarding on them the pods
of both clusters reach each other by pod IP (a flat network). The node carries
the label and taint ``stsmigrate.dev/real-node=true``, so only pods that select
it and tolerate the taint land there (``REAL_NODE_SELECTOR``,
``REAL_NODE_TOLERATIONS``); the kwok nodes stay for everything else.

Images come from no registry (devenv/images.py): a static pause and Debian's
redis-server and redis-cli, imported into each containerd; pods use
``imagePullPolicy: Never``. hostPath volumes of the ``local-hostpath`` class are
folders of the volume root both clusters see, so a real pod in each cluster
reads what the other wrote. So are the CSI volumes of the ``local-csi`` class
(``CSI_DRIVER``; a PV's ``csi.volumeHandle`` is its folder): each node runs a CSI
node plugin (devenv/go/csi, ``start_csi_plugin``) in its mount namespace, serving
CSI Identity and Node (NodePublishVolume bind-mounts the folder onto the kubelet's
target path) on ``csi_socket`` and registering with the kubelet through
``registration_socket`` in its ``plugins_registry``. The driver's CSIDriver says
attachRequired: kwok's csi-attach stage marks every VolumeAttachment of the driver
attached, the real node's as well, and only then does the kubelet publish.

Mount namespace: kubelet, containerd's shims and libcni use some host paths whatever
they are told (``PRIVATE_PATHS``), first of all kubelet's device manager, which
listens on the constant ``/var/lib/kubelet/device-plugins/kubelet.sock`` (kubelet
1.34 has no flag, config field or feature gate to move it or to turn the manager
off) and deletes every file in that folder on start: two kubelets on one host take
each other's socket ("bind: address already in use"). So containerd starts under
``unshare --mount --propagation slave`` with a folder of the node's ``run_dir``
bind-mounted on each of those paths, and the kubelet joins that namespace
(``nsenter --mount=/proc/<containerd>/ns/mnt``), and so does the CSI plugin: the
kubelet's and the plugin's volume mounts (the ServiceAccount token's tmpfs, the CSI
volumes' bind mounts, ...) are where containerd, its shims and runc see them, host
mounts still reach the namespace, and nothing mounted in it reaches the host. Pod
logs go to ``podLogsDir`` under the node's folder.

Lifetime: kubelet, containerd and the CSI plugin run under ``setpriv --pdeathsig
SIGTERM`` like the control plane, but the runc shims and containers they start
outlive them, and so do the node's mount namespace (while any of them lives),
network namespaces and the bridge. So each node has a guard (``python -m
devenv.realnodes guard STATE``, itself under pdeathsig, reading a pipe from the
launcher): when the launcher stops it, dies (even by SIGKILL: the pipe closes and
the guard gets SIGTERM) or the guard is told to stop, it kills the CSI plugin, the
kubelet and containerd, the containers (``runc --root``, the node's own), the shims
of this containerd (named by its socket) and what runs under them; with its last
process the mount namespace and its mounts go. Then it unmounts anything left under
the node's folders on the host, removes ``run_dir`` (sockets, private folders) and
deletes the node's bridge. It touches nothing of another node or run. ``cleanup`` is
idempotent; ``RealNode.stop`` runs it too and then ends the guard.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from devenv.images import PAUSE_IMAGE, REDIS_IMAGE
from devenv.spawn import spawn_logged

REAL_NODE_LABEL = "stsmigrate.dev/real-node"
# The CSI driver of the local-csi class (devenv/clusters.py); each real node runs its
# node plugin (devenv/go/csi).
CSI_DRIVER = "hostpath.csi.stsmigrate.dev"
REAL_NODE_NAME = "localhost"
REAL_NODE_SELECTOR = {REAL_NODE_LABEL: "true"}
REAL_NODE_TOLERATIONS = [
    {"key": REAL_NODE_LABEL, "operator": "Equal", "value": "true", "effect": "NoSchedule"}
]
CNI_BIN = Path("/usr/lib/cni")
POD_NETWORK = ipaddress.IPv4Network("10.250.0.0/16")
BRIDGE_PREFIX = "stsm"
# Debian packages and a file each one installs.
PACKAGES = {
    "containerd": Path("/usr/bin/containerd"),
    "runc": Path("/usr/sbin/runc"),
    "containernetworking-plugins": CNI_BIN / "bridge",
}
# The kubelet sets these host-wide when it starts (its "kernel tunables"); the guard
# puts back what was there before, once no other real node of ours is running.
KERNEL_TUNABLES = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
START_TIMEOUT = 120.0
# Host paths the kubelet, containerd, its shims or CNI use whatever they are told (none
# of them is under kubelet's --root-dir or containerd's root and state): each node's
# mount namespace has a folder of its own bind-mounted on each (RealNode.private_dirs).
#   /var/lib/kubelet     the device manager's socket device-plugins/kubelet.sock and its
#                        checkpoint (pluginapi.KubeletSocket, a constant; on start each
#                        kubelet deletes every file there, the other's socket included)
#   /var/log/containers  the kubelet's symlinks to container logs (a constant)
#   /var/lib/cni         libcni's cache of ADD results (go-cni sets no other)
#   /run/containerd      the shims' sockets (s/) and fifos (containerd 1.6 constants)
PRIVATE_PATHS = ("/var/lib/kubelet", "/var/log/containers", "/var/lib/cni", "/run/containerd")
# Mount a folder of the node on each of its private paths, then run the command: in the
# mount namespace ``unshare`` makes (mounts made in it never reach the host's).
_BIND_THEN_EXEC = (
    'while [ "$1" != -- ]; do mkdir -p "$1" "$2"; mount --bind "$1" "$2"; shift 2; done; '
    'shift; exec "$@"'
)


class RealNodeError(RuntimeError):
    """A real node could not start; the message says what and where its log is."""


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ensure_packages(progress: Any = _say) -> None:
    """Install Debian's containerd, runc and CNI plugins when one is missing."""
    missing = [pkg for pkg, path in PACKAGES.items() if not path.exists()]
    if not missing:
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    progress(f"installing Debian's {', '.join(missing)} for the real nodes ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
    ):
        done = subprocess.run([*sudo, *args], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RealNodeError(f"{' '.join(args)} failed: {done.stderr.strip()[-2000:]}")


def _claim_bridge() -> tuple[str, ipaddress.IPv4Network]:
    """Create a bridge ``stsmN`` for the subnet 10.250.N.0/24: creating it is the
    claim, so two launchers on one machine never share a bridge or a subnet. It gets
    the subnet's first address (the pods' gateway) and forwarding on itself only:
    pods of another bridge are routed through the host, and the host's own
    ``ip_forward`` stays as it was (the CNI bridge plugin's ``isGateway`` would turn it
    on for every interface)."""
    subnets = list(POD_NETWORK.subnets(new_prefix=24))[1:255]
    random.shuffle(subnets)
    for subnet in subnets:
        name = f"{BRIDGE_PREFIX}{subnet.network_address.packed[2]}"
        done = subprocess.run(
            ["ip", "link", "add", name, "type", "bridge"], capture_output=True, text=True
        )
        if done.returncode == 0:
            gateway = next(subnet.hosts())
            for args in (
                ["ip", "addr", "add", f"{gateway}/{subnet.prefixlen}", "dev", name],
                ["ip", "link", "set", name, "up"],
            ):
                subprocess.run(args, check=True, capture_output=True)
            Path(f"/proc/sys/net/ipv4/conf/{name}/forwarding").write_text("1")
            return name, ipaddress.IPv4Network(subnet)
        if "File exists" not in done.stderr:
            raise RealNodeError(f"ip link add {name} type bridge: {done.stderr.strip()}")
    raise RealNodeError("no free pod subnet in 10.250.0.0/16 (every stsmN bridge exists)")


def _read_tunables() -> dict[str, str]:
    return {t: Path("/proc/sys", t).read_text().strip() for t in KERNEL_TUNABLES}


@dataclass
class RealNode:
    """The real node of one cluster; ``LocalClusters(real_nodes=True)`` runs them."""

    cluster: str
    workdir: Path
    kubelet_bin: Path
    kubeconfig: Path
    images: list[Path]
    csi_plugin: Path
    volume_root: Path
    kubelet_port: int
    healthz_port: int
    bridge: str = ""
    subnet: ipaddress.IPv4Network | None = None
    processes: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = field(default_factory=list)
    guard: subprocess.Popen[bytes] | None = None
    # Unix socket paths are limited to 104 bytes, too short for a pytest tmp folder, and
    # the kubelet's root-dir and containerd's state hold sockets: they live in a short
    # folder /tmp/stsm-XXXXXXXX (removed with the node); configs, logs and containerd's
    # root (images, snapshots) stay under the cluster's folder.
    run_dir: Path = field(init=False)

    @property
    def socket(self) -> Path:
        return self.run_dir / "containerd.sock"

    @property
    def private_dirs(self) -> dict[str, Path]:
        """Host path -> the node's own folder mounted on it in the node's namespace."""
        return {p: self.run_dir / "private" / p.strip("/").replace("/", "-") for p in PRIVATE_PATHS}

    @property
    def device_plugin_socket(self) -> Path:
        """Where this node's kubelet.sock of the device manager really is."""
        return self.private_dirs["/var/lib/kubelet"] / "device-plugins" / "kubelet.sock"

    @property
    def kubelet_root(self) -> Path:
        return self.run_dir / "kubelet"

    @property
    def csi_socket(self) -> Path:
        """The CSI plugin's socket, where kubelet plugins usually put theirs."""
        return self.kubelet_root / "plugins" / CSI_DRIVER / "csi.sock"

    @property
    def registration_socket(self) -> Path:
        """The plugin's registration socket, in the folder the kubelet watches."""
        return self.kubelet_root / "plugins_registry" / f"{CSI_DRIVER}-reg.sock"

    @property
    def runc_root(self) -> Path:
        return self.workdir / "runc"

    @property
    def state_file(self) -> Path:
        return self.workdir / "guard.json"

    def log(self, name: str) -> Path:
        return self.workdir / "logs" / f"{name}.log"

    # -- start --------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        popen, log_file = spawn_logged(self.log(name), args, self.workdir)
        self.processes.append((name, popen, log_file))
        return popen

    def check_alive(self) -> None:
        for name, popen, _ in self.processes:
            if popen.poll() is not None:
                tail = self.log(name).read_text(errors="replace").splitlines()[-15:]
                raise RealNodeError(
                    f"{self.cluster}/{name} exited with {popen.returncode}; "
                    f"log {self.log(name)}:\n" + "\n".join(tail)
                )

    def _write_state(self) -> None:
        state = {
            "workdir": str(self.workdir),
            "bridge": self.bridge,
            "subnet": str(self.subnet),
            "socket": str(self.socket),
            "run_dir": str(self.run_dir),
            "runc_root": str(self.runc_root),
            "pids": [p.pid for _, p, _ in self.processes],
            "tunables": self._tunables,
        }
        self.state_file.write_text(json.dumps(state))

    def start_guard(self) -> None:
        """Claim the bridge and start the guard that removes it (and all else) later."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._tunables = _read_tunables()
        self.run_dir = Path(tempfile.mkdtemp(prefix="stsm-"))
        self.bridge, self.subnet = _claim_bridge()
        self._write_state()
        self.log("guard").parent.mkdir(parents=True, exist_ok=True)
        guard_log = self.log("guard").open("ab")
        self.guard = subprocess.Popen(
            [
                "setpriv",
                "--pdeathsig",
                "SIGTERM",
                "--",
                sys.executable,
                "-m",
                "devenv.realnodes",
                "guard",
                str(self.state_file),
            ],
            stdin=subprocess.PIPE,
            stdout=guard_log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parent.parent,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        )
        guard_log.close()

    def start_containerd(self) -> None:
        assert self.subnet is not None
        cni_dir = self.workdir / "cni"
        cni_dir.mkdir(parents=True, exist_ok=True)
        gateway = str(next(self.subnet.hosts()))
        conflist = {
            "cniVersion": "0.4.0",
            "name": f"stsmigrate-{self.cluster}",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": False,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": str(self.workdir / "cni-ipam"),
                        "ranges": [[{"subnet": str(self.subnet), "gateway": gateway}]],
                        # Every other real node's subnet is reached through the host.
                        "routes": [{"dst": str(POD_NETWORK), "gw": gateway}],
                    },
                },
                {"type": "loopback"},
            ],
        }
        (cni_dir / "10-stsmigrate.conflist").write_text(json.dumps(conflist, indent=1))
        c = self.workdir / "containerd"
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config = f"""\
version = 2
root = "{c / "root"}"
state = "{self.run_dir / "containerd-state"}"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
]
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  # This VM refuses a negative oom_score_adj, even for root.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "{self.runc_root}"
[{cri}.cni]
  bin_dir = "{CNI_BIN}"
  conf_dir = "{cni_dir}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{c / "opt"}"
"""
        (self.workdir / "containerd.toml").write_text(config)
        binds = [str(a) for path, own in self.private_dirs.items() for a in (own, path)]
        self._spawn(
            "containerd",
            [
                # containerd makes the node's mount namespace; its shims, their
                # containers and (nsenter) the kubelet live in it.
                "unshare",
                "--mount",
                "--propagation",
                "slave",
                "--",
                "sh",
                "-euc",
                _BIND_THEN_EXEC,
                "sh",
                *binds,
                "--",
                "/usr/bin/containerd",
                f"--config={self.workdir / 'containerd.toml'}",
            ],
        )
        self._write_state()

    def mount_namespace(self) -> Path:
        """The node's mount namespace (containerd's, once it has started)."""
        containerd = next(p for name, p, _ in self.processes if name == "containerd")
        ns = Path(f"/proc/{containerd.pid}/ns/mnt")
        if os.readlink(ns) == os.readlink("/proc/self/ns/mnt"):
            raise RealNodeError(f"{self.cluster}/containerd is not in a mount namespace of its own")
        return ns

    def containerd_ready(self) -> bool:
        if not self.socket.exists():
            return False
        done = subprocess.run(
            ["ctr", "--address", str(self.socket), "version"], capture_output=True, timeout=10
        )
        return done.returncode == 0

    def import_images(self) -> None:
        for image in self.images:
            done = subprocess.run(
                [
                    "ctr",
                    "--address",
                    str(self.socket),
                    "-n",
                    "k8s.io",
                    "images",
                    "import",
                    str(image),
                ],
                capture_output=True,
                text=True,
                timeout=120,
            )
            if done.returncode != 0:
                raise RealNodeError(f"ctr images import {image}: {done.stderr.strip()}")

    def start_kubelet(self, client_ca: Path) -> None:
        """Start the kubelet; it trusts client certificates of the cluster's CA (the
        apiserver's --kubelet-client-certificate) and serves on loopback only."""
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": "127.0.0.1",
            "port": self.kubelet_port,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": self.healthz_port,
            "readOnlyPort": 0,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(client_ca)},
            },
            "authorization": {"mode": "AlwaysAllow"},
            "cgroupDriver": "cgroupfs",
            # This machine has cgroup v1, which kubelet 1.34 refuses unless told.
            "failCgroupV1": False,
            "failSwapOn": False,
            "cgroupsPerQOS": False,
            "enforceNodeAllocatable": [],
            "localStorageCapacityIsolation": False,
            "evictionHard": {},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "registerWithTaints": [
                {"key": REAL_NODE_LABEL, "value": "true", "effect": "NoSchedule"}
            ],
            "serializeImagePulls": False,
            "resolvConf": "",
            "nodeStatusReportFrequency": "10s",
            "syncFrequency": "10s",
            "fileCheckFrequency": "10s",
            "volumePluginDir": str(self.workdir / "volume-plugins"),
            "podLogsDir": str(self.workdir / "pod-logs"),
        }
        (self.workdir / "kubelet.yaml").write_text(yaml.safe_dump(config))
        self._spawn(
            "kubelet",
            [
                "nsenter",
                f"--mount={self.mount_namespace()}",
                "--",
                str(self.kubelet_bin),
                f"--config={self.workdir / 'kubelet.yaml'}",
                f"--kubeconfig={self.kubeconfig}",
                f"--root-dir={self.kubelet_root}",
                f"--cert-dir={self.workdir / 'kubelet-pki'}",
                # A kubelet refuses a loopback node IP and then reports no address;
                # Hostname "localhost" is how the apiserver reaches it (exec, logs).
                f"--hostname-override={REAL_NODE_NAME}",
                f"--node-labels={REAL_NODE_LABEL}=true",
                "--v=1",
            ],
        )
        self._write_state()

    def start_csi_plugin(self) -> None:
        """Start the CSI node plugin of ``CSI_DRIVER`` in the node's mount namespace, so
        its bind mounts are where the kubelet and runc look; it registers itself with
        the kubelet through ``registration_socket``."""
        self._spawn(
            "csi-plugin",
            [
                "nsenter",
                f"--mount={self.mount_namespace()}",
                "--",
                str(self.csi_plugin),
                f"-driver={CSI_DRIVER}",
                f"-node-id={REAL_NODE_NAME}",
                f"-volume-root={self.volume_root}",
                f"-csi-socket={self.csi_socket}",
                f"-registration-socket={self.registration_socket}",
            ],
        )
        self._write_state()

    def csi_plugin_registered(self) -> bool:
        """The kubelet took the plugin (it said so through NotifyRegistrationStatus)."""
        log = self.log("csi-plugin")
        return log.exists() and "registered with the kubelet" in log.read_text(errors="replace")

    # -- stop ---------------------------------------------------------------------
    def stop(self) -> None:
        for _, popen, _ in reversed(self.processes):
            if popen.poll() is None:
                popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _, popen, log_file in reversed(self.processes):
            try:
                popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()
            log_file.close()
        self.processes.clear()
        if self.state_file.exists():
            cleanup(json.loads(self.state_file.read_text()))
        if self.guard is not None:
            assert self.guard.stdin is not None
            with contextlib.suppress(OSError):
                self.guard.stdin.close()
            try:
                self.guard.wait(60)
            except subprocess.TimeoutExpired:
                self.guard.kill()
                self.guard.wait()
            self.guard = None


def redis_pod(name: str, claim: str | None, tolerate: bool = True) -> dict[str, Any]:
    """A redis-server pod of the local image for the real node (it selects the node and
    tolerates its taint unless ``tolerate`` is false), its /data on ``claim`` or an
    emptyDir."""
    spec: dict[str, Any] = {
        "nodeSelector": REAL_NODE_SELECTOR,
        "terminationGracePeriodSeconds": 5,
        "containers": [
            {
                "name": "redis",
                "image": REDIS_IMAGE,
                "imagePullPolicy": "Never",
                # 0.0.0.0 of the pod's own network namespace (the launcher made it).
                "args": ["--bind", "0.0.0.0", "--protected-mode", "no", "--dir", "/data"],  # noqa: S104
                "readinessProbe": {
                    "exec": {"command": ["redis-cli", "ping"]},
                    "periodSeconds": 1,
                },
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }
        ],
        "volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": claim}}
            if claim
            else {"name": "data", "emptyDir": {}}
        ],
    }
    if tolerate:
        spec["tolerations"] = REAL_NODE_TOLERATIONS
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


# -- cleanup (the guard, and RealNode.stop) -----------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _processes() -> dict[int, tuple[int, list[str]]]:
    """pid -> (parent pid, argv) of every process."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(") ", 1)[1].split()[1])
        found[int(entry.name)] = (ppid, [a.decode(errors="replace") for a in argv if a])
    return found


def node_shims(node: RealNode) -> list[int]:
    """The pids of the runc shims of a real node's containerd."""
    return _shims(_processes(), str(node.socket))


def _shims(procs: dict[int, tuple[int, list[str]]], socket: str) -> list[int]:
    return sorted(
        pid
        for pid, (_, argv) in procs.items()
        if argv and "containerd-shim" in argv[0] and socket in argv
    )


def _mountpoints_under(root: Path) -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point == str(root) or point.startswith(f"{root}/"):
            points.append(point)
    return sorted(set(points), key=len, reverse=True)


def cleanup(state: dict[str, Any]) -> list[str]:
    """Remove everything one real node left: kubelet and containerd (if still up),
    its containers, its shims, its mounts, its bridge. Returns what it removed."""
    removed: list[str] = []
    pids = [p for p in state.get("pids", []) if _pid_alive(p)]
    deadline = time.monotonic() + 10
    while pids and time.monotonic() < deadline:
        time.sleep(0.2)
        pids = [p for p in pids if _pid_alive(p)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        removed.append(f"process {pid}")
    # The runc shim keeps its containers in <Root>/<containerd namespace>.
    roots = sorted(p for p in Path(state["runc_root"]).glob("*") if p.is_dir())
    for root in roots:
        listed = subprocess.run(
            ["runc", "--root", str(root), "list", "-q"], capture_output=True, text=True
        )
        for cid in listed.stdout.split():
            for args in (["kill", "--all", cid, "KILL"], ["delete", "--force", cid]):
                subprocess.run(["runc", "--root", str(root), *args], capture_output=True)
            # runc delete removes the container's cgroups; one it could not (a process
            # still exiting) is removed here once empty.
            for folder in Path("/sys/fs/cgroup").glob(f"*/*/{cid}"):
                with contextlib.suppress(OSError):
                    folder.rmdir()
            removed.append(f"container {cid[:12]}")
    # The shims of this containerd (named by its socket), and anything under them.
    procs = _processes()
    shims = set(_shims(procs, state["socket"]))
    doomed = set(shims)
    grew = True
    while grew:
        more = {pid for pid, (ppid, _) in procs.items() if ppid in doomed} - doomed
        doomed |= more
        grew = bool(more)
    for pid in doomed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        removed.append(f"process {pid}")
    deadline = time.monotonic() + 10
    while any(_pid_alive(p) for p in doomed) and time.monotonic() < deadline:
        time.sleep(0.1)
    points = _mountpoints_under(Path(state["workdir"])) + _mountpoints_under(Path(state["run_dir"]))
    for point in sorted(points, key=len, reverse=True):
        done = subprocess.run(["umount", point], capture_output=True)
        if done.returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True)
        removed.append(f"mount {point}")
    run_dir = Path(state["run_dir"])
    if run_dir.exists():
        shutil.rmtree(run_dir, ignore_errors=True)
        removed.append(f"folder {run_dir}")
    bridge = state.get("bridge")
    if bridge and Path("/sys/class/net", bridge).exists():
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
        removed.append(f"bridge {bridge}")
    others = [n for n in os.listdir("/sys/class/net") if n.startswith(BRIDGE_PREFIX)]
    if not others:
        # containerd's parent cgroup of the containers, once empty.
        for folder in Path("/sys/fs/cgroup").glob("*/k8s.io"):
            with contextlib.suppress(OSError):
                folder.rmdir()
        for tunable, value in state.get("tunables", {}).items():
            path = Path("/proc/sys", tunable)
            with contextlib.suppress(OSError):
                if path.read_text().strip() != value:
                    path.write_text(value)
                    removed.append(f"{tunable.replace('/', '.')} back to {value}")
    return removed


def guard(state_file: Path) -> int:
    """Wait until the launcher closes our stdin or we get SIGTERM or SIGINT, then clean
    up. A launcher killed by SIGKILL does both at once (its pipe closes, pdeathsig sends
    SIGTERM): the handlers only wake the wait, so no second signal can cut the cleanup
    short."""
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, frame: None)
    stdin = sys.stdin.buffer.fileno()
    while True:
        ready, _, _ = select.select([stdin, wake_read], [], [])
        if wake_read in ready or not os.read(stdin, 4096):
            break
    state = json.loads(state_file.read_text())
    for line in cleanup(state):
        print(f"guard removed {line}", flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "guard":
        sys.exit(guard(Path(sys.argv[2])))
    print("usage: python -m devenv.realnodes guard STATE_FILE", file=sys.stderr)
    sys.exit(2)
