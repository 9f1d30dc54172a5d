"""Edited copies of the local clusters' kubeconfig (other users, servers behind a proxy)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml


def edited_kubeconfig(kubeconfig: Path, path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of ``kubeconfig`` at ``path``, changed by ``edit`` (the parsed document)."""
    config = yaml.safe_load(kubeconfig.read_text())
    edit(config)
    path.write_text(yaml.safe_dump(config))
    return path


def servers_replaced(servers: dict[str, str]) -> Callable[[dict[str, Any]], None]:
    """An edit for ``edited_kubeconfig``: the named clusters reached at other URLs."""

    def edit(config: dict[str, Any]) -> None:
        for entry in config["clusters"]:
            if entry["name"] in servers:
                entry["cluster"]["server"] = servers[entry["name"]]

    return edit
