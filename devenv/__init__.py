"""Local development and test environment: clusters, Temporal dev server, demo, observer."""

from __future__ import annotations

import signal
import time


def wait_for_interrupt() -> None:
    """Block until Ctrl-C or SIGTERM; the caller's context managers then stop everything."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
