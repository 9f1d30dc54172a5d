"""A real Redis Cluster for the redis_cluster health probe: Debian's redis-server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from devenv.clusters import free_port


class RedisCluster:
    """Three cluster-enabled redis-server masters on loopback, joined by redis-cli."""

    def __init__(self, folder: Path, nodes: int = 3, password: str = "") -> None:
        self.folder = folder
        # With a password, every node has requirepass (the cluster bus needs none).
        self.password = password
        # Each node also listens on port + 10000, the cluster bus.
        self.ports = [free_port(also=10000) for _ in range(nodes)]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        for port in self.ports:
            work = self.folder / str(port)
            work.mkdir(parents=True)
            options = {
                "--port": str(port),
                "--bind": "127.0.0.1",
                "--cluster-enabled": "yes",
                "--cluster-node-timeout": "1000",
                "--cluster-config-file": str(work / "nodes.conf"),
                "--dir": str(work),
                "--save": "",
                "--appendonly": "no",
                "--protected-mode": "yes",
                "--logfile": str(work / "redis.log"),
            }
            if self.password:
                # In a config file, not argv: the test's own rule for secrets too.
                (work / "auth.conf").write_text(f"requirepass {self.password}\n")
            argv = ["setpriv", "--pdeathsig", "SIGTERM", "--", "redis-server"]
            if self.password:
                argv.append(str(work / "auth.conf"))
            argv += [word for option in options.items() for word in option]
            self.procs[port] = subprocess.Popen(
                argv,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
            )
        for port in self.ports:
            self._wait_listening(port, self.folder / str(port) / "redis.log")
        nodes = [f"127.0.0.1:{p}" for p in self.ports]
        create = ["redis-cli", "--cluster", "create", *nodes]
        create += ["--cluster-replicas", "0"]
        subprocess.run(
            [*create, "--cluster-yes"], check=True, capture_output=True, timeout=60, env=self._env()
        )

    @staticmethod
    def _wait_listening(port: int, log: Path) -> None:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        said = log.read_text()[-2000:] if log.exists() else "(no log)"
        raise AssertionError(f"redis-server on {port} did not listen; its log:\n{said}")

    def _env(self) -> dict[str, str]:
        # redis-cli takes the password from REDISCLI_AUTH: off argv, as for the server.
        return {**os.environ, "REDISCLI_AUTH": self.password} if self.password else {**os.environ}

    def info(self, port: int) -> str:
        out = subprocess.run(
            ["redis-cli", "-p", str(port), "cluster", "info"],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout

    def stop_node(self, port: int) -> None:
        self.procs[port].terminate()
        self.procs[port].wait(10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)


def started_redis(folder: Path, password: str = "") -> RedisCluster:
    """A RedisCluster started and reporting cluster_state:ok (the caller stops it)."""
    assert shutil.which("redis-server"), "Debian's redis-server is missing: `make test` installs it"
    cluster = RedisCluster(folder, password=password)
    try:
        cluster.start()
        deadline = time.monotonic() + 30
        while "cluster_state:ok" not in cluster.info(cluster.ports[0]):
            assert time.monotonic() < deadline, "the Redis Cluster never became ok"
            time.sleep(0.2)
    except BaseException:
        cluster.stop()
        raise
    return cluster
