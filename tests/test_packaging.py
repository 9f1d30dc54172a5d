"""What ``pip install`` makes of the project: a wheel built without setuptools'
deprecation warnings (the license as an SPDX expression, PEP 639), and its two
commands, ``stsmigrate`` and ``kubectl-stsmigrate``, which the real kubectl (built by
devenv) runs as ``kubectl stsmigrate`` once it is on PATH."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from devenv.build import ensure_binaries
from stsmigrate.cli import main
from tests.support.paths import REPO


@dataclass
class Installed:
    build_output: str
    wheel: Path
    target: Path  # pip install --target: the packages, and the commands in bin/

    def env(self, path: str) -> dict[str, str]:
        # The wheel's own modules, not the checkout's (PYTHONPATH comes first).
        return {**os.environ, "PYTHONPATH": str(self.target), "PATH": path, "COLUMNS": "120"}


def source_tree(into: Path) -> Path:
    """What pyproject.toml packages, copied: a build leaves build/ behind in its source
    tree, which a later build of the checkout could package stale files from."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    setuptools = project["tool"]["setuptools"]
    tree = into / "source"
    tree.mkdir()
    files = [
        "pyproject.toml",
        project["project"]["readme"],
        *project["project"]["license-files"],
        *(f"{m}.py" for m in setuptools["py-modules"]),
    ]
    for name in files:
        shutil.copy2(REPO / name, tree / name)
    for pattern in setuptools["packages"]["find"]["include"]:
        package = pattern.removesuffix("*")
        shutil.copytree(
            REPO / package, tree / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    return tree


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    source = source_tree(tmp_path_factory.mktemp("build"))
    wheels = tmp_path_factory.mktemp("wheel")
    target = tmp_path_factory.mktemp("installed")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    # Build isolation as a user's pip install has it: the build backend pyproject.toml
    # asks for, from the package index.
    built = subprocess.run(
        [*pip, "wheel", "--no-deps", str(source), "-w", str(wheels)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = wheels.glob("statefulset_migrator-*.whl")
    subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
        capture_output=True,
        timeout=120,
        check=True,
    )
    return Installed(built.stdout + built.stderr, wheel, target)


def test_the_wheel_builds_without_deprecation_warnings(installed: Installed) -> None:
    output = installed.build_output
    assert "Successfully built statefulset-migrator" in output
    for warning in ("project.license", "DeprecationWarning", "BuildBackendWarning"):
        assert warning not in output, output
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = wheel.namelist()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        headers = wheel.read(metadata).decode()
    assert "License-Expression: Apache-2.0" in headers.splitlines()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def command_names(help_text: str) -> list[str]:
    listed = help_text.split("Commands:", 1)[1].splitlines()
    return sorted(line.split()[0] for line in listed if line.startswith("  ") and line.split())


def test_kubectl_stsmigrate_is_installed_with_the_same_commands(installed: Installed) -> None:
    plugin = installed.target / "bin" / "kubectl-stsmigrate"
    done = subprocess.run(
        [str(plugin), "--help"],
        capture_output=True,
        text=True,
        env=installed.env(os.environ["PATH"]),
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: kubectl stsmigrate [OPTIONS] COMMAND [ARGS]...")
    assert command_names(done.stdout) == sorted(main.commands)


def test_kubectl_finds_the_plugin_on_path(installed: Installed) -> None:
    kubectl = ensure_binaries() / "kubectl"
    path = f"{installed.target / 'bin'}{os.pathsep}{os.environ['PATH']}"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(kubectl), *args],
            capture_output=True,
            text=True,
            env=installed.env(path),
            timeout=60,
            check=False,
        )

    listed = run("plugin", "list")
    assert str(installed.target / "bin" / "kubectl-stsmigrate") in listed.stdout, listed.stderr
    done = run("stsmigrate", "start", "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: kubectl stsmigrate start [OPTIONS]")
    assert "--from, --context TEXT" in done.stdout
