"""Build, or reuse, the Kubernetes binaries of the local test clusters.

Everything comes from the Go module proxy through the ordinary ``go`` command,
verified against the checksum database by the go.sum files committed under
``devenv/go``. Binaries are cached outside the repo in a folder keyed by the
versions; a binary is moved into place only once it built and reported the
expected version, so an interrupted build is simply resumed (Go's build cache
keeps what was compiled).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

KUBERNETES_VERSION = "v1.34.4"
# The k8s.io/kubernetes module's publication time, used as the buildDate so
# rebuilds are reproducible.
KUBERNETES_BUILD_DATE = "2026-02-10T12:53:36Z"
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.8.0"
# Helm renders and lints deploy/chart in the tests (tests/test_chart.py).
HELM_VERSION = "v4.3.2"
# kwok v0.8.0 declares `go 1.26.0`.
MIN_GO = (1, 26)

GO_DIR = Path(__file__).parent / "go"
KUBE_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
ALL_BINARIES = (*KUBE_BINARIES, "etcd", "kwok")

Progress = Callable[[str], None]


class BuildError(RuntimeError):
    """The binaries could not be built; the message says what to do."""


def _cache_root() -> Path:
    return Path(
        os.environ.get("STSMIGRATE_CACHE_DIR")
        or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
            "statefulset-migrator",
        )
    )


def image_cache_dir() -> Path:
    """Where the real nodes' OCI image tars are kept (devenv/images.py)."""
    return _cache_root() / "images"


def cache_dir() -> Path:
    key = f"k8s-{KUBERNETES_VERSION}_etcd-{ETCD_VERSION}_kwok-{KWOK_VERSION}"
    return _cache_root() / "bins" / key


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def check_go() -> str:
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            "Go is not installed. The local test clusters are built from the Go module proxy "
            f"and need Go >= {MIN_GO[0]}.{MIN_GO[1]} on PATH (Debian's golang-go is too old; "
            "install a current Go toolchain and re-run)."
        )
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=True)
    match = re.match(r"go(\d+)\.(\d+)", out.stdout.strip())
    if match is None or (int(match[1]), int(match[2])) < MIN_GO:
        raise BuildError(
            f"{out.stdout.strip() or 'unknown Go'} is too old: kwok {KWOK_VERSION} needs "
            f"Go >= {MIN_GO[0]}.{MIN_GO[1]}."
        )
    return go


def _kube_ldflags() -> str:
    minor = KUBERNETES_VERSION.split(".")[1]
    values = {
        "gitVersion": KUBERNETES_VERSION,
        "gitMajor": "1",
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": KUBERNETES_BUILD_DATE,
    }
    flags = ["-s", "-w"]
    for key, value in values.items():
        for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
            flags.append(f"-X {package}.{key}={value}")
    return " ".join(flags)


def _run_go(
    args: list[str], cwd: Path, env: dict[str, str], label: str, progress: Progress
) -> None:
    """Run a go command, reporting elapsed time and packages compiled every 20 s."""
    started = time.monotonic()
    compiled = 0
    tail: list[str] = []
    proc = subprocess.Popen(
        args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    stop = threading.Event()

    def report() -> None:
        while not stop.wait(20):
            progress(f"  {label}: {time.monotonic() - started:4.0f} s, {compiled} packages built")

    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    assert proc.stdout is not None
    for line in proc.stdout:
        # `go build -v` prints one package path per line as it is compiled.
        compiled += 1
        tail = [*tail[-30:], line.rstrip()]
    rc = proc.wait()
    stop.set()
    if rc != 0:
        raise BuildError(f"{label} failed (exit {rc}):\n" + "\n".join(tail))
    progress(f"  {label}: done in {time.monotonic() - started:.0f} s")


def _check_version(binary: Path, expected: str) -> None:
    # kubectl has no --version flag; its client version is `kubectl version --client`.
    args = ["version", "--client"] if binary.name == "kubectl" else ["--version"]
    out = subprocess.run([binary, *args], capture_output=True, text=True, timeout=60)
    text = out.stdout + out.stderr
    if expected.lstrip("v") not in text:
        raise BuildError(f"{binary.name} --version printed {text.strip()!r}, expected {expected}")


def _build_kube(
    go: str, names: tuple[str, ...], partial: Path, env: dict[str, str], progress: Progress
) -> None:
    """Build k8s.io/kubernetes commands of the wrapper module into ``partial``."""
    _run_go(
        [
            go,
            "build",
            "-v",
            "-trimpath",
            "-tags=selinux,notest",
            f"-ldflags={_kube_ldflags()}",
            "-o",
            f"{partial}/",
            *(f"k8s.io/kubernetes/cmd/{name}" for name in names),
        ],
        GO_DIR / "kubernetes",
        env,
        f"{', '.join(names)} {KUBERNETES_VERSION}",
        progress,
    )
    for name in names:
        _check_version(partial / name, KUBERNETES_VERSION)


def _go_env() -> dict[str, str]:
    return {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=readonly"}


def ensure_kubelet(progress: Progress = _stderr) -> Path:
    """Return the kubelet of the real nodes (devenv/realnodes.py), built once from the
    same wrapper module as the control plane (about 4 minutes warm on 2 cores). Kept
    apart from ``ensure_binaries`` so the kwok-only clusters never wait for it."""
    bins = cache_dir()
    kubelet = bins / "kubelet"
    if kubelet.exists():
        return kubelet
    go = check_go()
    partial = bins / ".partial-kubelet"
    partial.mkdir(parents=True, exist_ok=True)
    progress(f"Building kubelet into {bins} (once; later runs reuse it)")
    _build_kube(go, ("kubelet",), partial, _go_env(), progress)
    os.replace(partial / "kubelet", kubelet)
    shutil.rmtree(partial, ignore_errors=True)
    return kubelet


def _ensure_small(name: str, progress: Progress) -> Path:
    """Return the static binary of the small module devenv/go/<name>, cached under a
    key of its source files (go.mod, go.sum, *.go) so an edit rebuilds it."""
    module = GO_DIR / name
    digest = hashlib.sha256()
    for file in sorted(module.iterdir()):
        if file.name in ("go.mod", "go.sum") or file.suffix == ".go":
            digest.update(file.name.encode() + b"\0" + file.read_bytes())
    folder = _cache_root() / "bins" / f"{name}-{digest.hexdigest()[:12]}"
    binary = folder / name
    if binary.exists():
        return binary
    go = check_go()
    partial = folder / ".partial"
    partial.mkdir(parents=True, exist_ok=True)
    _run_go(
        [go, "build", "-v", "-trimpath", "-ldflags=-s -w", "-o", f"{partial}/{name}", "."],
        module,
        _go_env(),
        name,
        progress,
    )
    os.replace(partial / name, binary)
    shutil.rmtree(partial, ignore_errors=True)
    return binary


def ensure_pause(progress: Progress = _stderr) -> Path:
    """Return the static pause binary (devenv/go/pause: waits for SIGTERM, reaps
    children)."""
    return _ensure_small("pause", progress)


def ensure_csi_plugin(progress: Progress = _stderr) -> Path:
    """Return the real nodes' CSI node plugin of the local-csi class (devenv/go/csi:
    bind-mounts a volume's folder for the kubelet; a few seconds to build once the
    modules are downloaded)."""
    return _ensure_small("csi", progress)


def ensure_binaries(progress: Progress = _stderr) -> Path:
    """Return the folder holding every binary, building the missing ones first."""
    bins = cache_dir()
    missing = [name for name in ALL_BINARIES if not (bins / name).exists()]
    if not missing:
        return bins
    go = check_go()
    partial = bins / ".partial"
    partial.mkdir(parents=True, exist_ok=True)
    env = _go_env()
    progress(
        f"Building {', '.join(missing)} into {bins} "
        "(about 8 minutes cold on 2 cores; later runs reuse it)"
    )
    if any(name in missing for name in KUBE_BINARIES):
        _build_kube(go, KUBE_BINARIES, partial, env, progress)
        for name in KUBE_BINARIES:
            os.replace(partial / name, bins / name)
    if "etcd" in missing:
        _run_go(
            [
                go,
                "build",
                "-v",
                "-trimpath",
                "-ldflags=-s -w",
                "-o",
                f"{partial}/etcd",
                "go.etcd.io/etcd/server/v3",
            ],
            GO_DIR / "etcd",
            env,
            f"etcd {ETCD_VERSION}",
            progress,
        )
        _check_version(partial / "etcd", ETCD_VERSION)
        os.replace(partial / "etcd", bins / "etcd")
    if "kwok" in missing:
        # kwok's go.mod has no replace directives, so the documented `go install` works.
        _run_go(
            [
                go,
                "install",
                "-v",
                "-trimpath",
                "-ldflags=-s -w",
                f"sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}",
            ],
            bins,
            {**env, "GOBIN": str(partial), "GOFLAGS": ""},
            f"kwok {KWOK_VERSION}",
            progress,
        )
        _check_version(partial / "kwok", KWOK_VERSION)
        os.replace(partial / "kwok", bins / "kwok")
    shutil.rmtree(partial, ignore_errors=True)
    return bins


def ensure_helm(progress: Progress = _stderr) -> Path:
    """Return the helm binary, built once (about a minute and a half cold on 2 cores)."""
    folder = _cache_root() / "bins" / f"helm-{HELM_VERSION}"
    helm = folder / "helm"
    if helm.exists():
        return helm
    go = check_go()
    partial = folder / ".partial"
    partial.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOFLAGS": ""}
    progress(f"Building helm {HELM_VERSION} into {folder} (once; later runs reuse it)")
    # helm's go.mod has no replace directives, so the documented `go install` works.
    _run_go(
        [
            go,
            "install",
            "-v",
            "-trimpath",
            f"-ldflags=-s -w -X helm.sh/helm/v4/internal/version.version={HELM_VERSION}",
            f"helm.sh/helm/v4/cmd/helm@{HELM_VERSION}",
        ],
        folder,
        {**env, "GOBIN": str(partial)},
        f"helm {HELM_VERSION}",
        progress,
    )
    out = subprocess.run([partial / "helm", "version", "--short"], capture_output=True, text=True)
    if HELM_VERSION not in out.stdout:
        raise BuildError(f"helm version printed {out.stdout.strip()!r}, expected {HELM_VERSION}")
    os.replace(partial / "helm", helm)
    shutil.rmtree(partial, ignore_errors=True)
    return helm


def main() -> int:
    try:
        bins = ensure_binaries()
        ensure_helm()
    except BuildError as exc:
        _stderr(f"error: {exc}")
        return 1
    print(bins)
    return 0


if __name__ == "__main__":
    sys.exit(main())
