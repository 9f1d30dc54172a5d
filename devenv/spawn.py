"""Start a process of the local clusters: its output appended to its log, and it dies
with the launcher (``setpriv --pdeathsig``)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import IO


def spawn_logged(
    log: Path, args: list[str], cwd: Path
) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    """The process and its open log file (the caller closes it once the process ends)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    log_file = log.open("ab")
    popen = subprocess.Popen(
        ["setpriv", "--pdeathsig", "SIGTERM", "--", *args],
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        cwd=cwd,
    )
    return popen, log_file
