"""Local development and test environment: clusters, Temporal dev server, demo, observer."""

from __future__ import annotations

import signal
import time


def wait_for_interrupt() -> None:
    """Block until Ctrl-C (SIGINT) or SIGTERM; the caller's context managers then stop
    everything. Both are handled even when the process inherited SIGINT ignored, as a
    command started with ``&`` from a script does: "Ctrl-C stops" must hold."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
