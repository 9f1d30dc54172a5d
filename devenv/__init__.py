"""Local development and test environment: clusters, Temporal dev server, demo, observer."""

from __future__ import annotations

import signal
import time


def stop_on_interrupt() -> None:
    """Make Ctrl-C (SIGINT) and SIGTERM raise KeyboardInterrupt from now on, so the
    caller's context managers stop everything. Called first thing: a command started
    with ``&`` from a script inherits SIGINT ignored, and a signal that arrives before
    the handler is in place would be lost ("Ctrl-C stops" must hold at any moment)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)


def wait_for_interrupt() -> None:
    """Block until Ctrl-C or SIGTERM (see ``stop_on_interrupt``)."""
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
