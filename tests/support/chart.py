"""deploy/chart rendered by a real Helm (built once by devenv, cached beside the
Kubernetes binaries)."""

from __future__ import annotations

import subprocess
from typing import Any

import yaml

from devenv.build import ensure_helm
from tests.support.paths import REPO

CHART = REPO / "deploy" / "chart"


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ensure_helm()), *args], capture_output=True, text=True, check=check, timeout=120
    )


def render_text(namespace: str = "stsmigrate-system", *values: str, release: str = "t") -> str:
    """`helm template` of the chart; values are --set strings ("key=value")."""
    sets = [arg for value in values for arg in ("--set", value)]
    return helm("template", release, str(CHART), "-n", namespace, *sets).stdout


def render(namespace: str = "stsmigrate-system", *values: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(render_text(namespace, *values)) if doc]
