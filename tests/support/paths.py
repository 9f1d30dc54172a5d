"""Where things are: the repository and the recorded histories."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HISTORIES = REPO / "tests" / "histories"
