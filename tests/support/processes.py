"""The worker as a real process (``python worker.py`` or ``stsmigrate worker``)."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from devenv.clusters import free_port
from tests.support.paths import REPO


class WorkerProcess:
    """``python worker.py`` as a real process on its own task queue; restartable."""

    def __init__(
        self,
        address: str,
        kubeconfig: Path,
        log: Path,
        task_queue: str,
        argv: list[str] | None = None,
    ) -> None:
        self.argv = argv or [sys.executable, str(REPO / "worker.py")]
        # Each worker its own metrics port: several run at once in some tests.
        self.metrics_port = free_port()
        self.env = {
            **os.environ,
            "TEMPORAL_ADDRESS": address,
            "TEMPORAL_NAMESPACE": "default",
            "STSMIGRATE_KUBECONFIG": str(kubeconfig),
            "STSMIGRATE_TASK_QUEUE": task_queue,
            "STSMIGRATE_METRICS_ADDRESS": "127.0.0.1",
            "STSMIGRATE_METRICS_PORT": str(self.metrics_port),
        }
        self.log, self.task_queue = log, task_queue
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL: no shutdown, no cleanup, exactly like a crash."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def metrics(self) -> dict[str, float]:
        """One scrape of the worker's /metrics: {'name{labels}': value} (labels sorted
        as the exporter writes them); a restarted worker starts from zero."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
        return parse_metrics(text)


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$")


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format: one entry per sample line (comments skipped)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if match := _SAMPLE.match(line.strip()):
            out[match[1]] = float(match[2])
    return out


def total(samples: dict[str, float], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(
        value
        for key, value in samples.items()
        if (key == name or key.startswith(name + "{")) and all(w in key for w in wanted)
    )


@contextlib.contextmanager
def worker_with(
    env: WorkflowEnvironment, kubeconfig: Path, tmp_path: Path, name: str
) -> Iterator[WorkerProcess]:
    """A worker process with its own kubeconfig and task queue, for the block."""
    worker = WorkerProcess(
        env.client.service_client.config.target_host,
        kubeconfig,
        tmp_path / "worker.log",
        f"{name}-{uuid.uuid4().hex[:8]}",
    )
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()
