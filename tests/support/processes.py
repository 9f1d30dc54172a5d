"""The worker as a real process (``python worker.py`` or ``stsmigrate worker``)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

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
        self.env = {
            **os.environ,
            "TEMPORAL_ADDRESS": address,
            "TEMPORAL_NAMESPACE": "default",
            "STSMIGRATE_KUBECONFIG": str(kubeconfig),
            "STSMIGRATE_TASK_QUEUE": task_queue,
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
