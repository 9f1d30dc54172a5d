"""Container images without a registry: OCI image layouts made from local files.

Two images for the real nodes (devenv/realnodes.py), each an OCI layout tar
(oci-layout, index.json naming the image by the ``io.containerd.image.name``
annotation, one gzip layer, its config and manifest) that ``ctr images import``
takes as is; pods use them with ``imagePullPolicy: Never``:

- ``PAUSE_IMAGE``: the static Go program of devenv/go/pause, the sandbox image;
- ``REDIS_IMAGE``: Debian's ``redis-server`` and ``redis-cli`` with the libraries
  ``ldd`` names, ``dash`` as ``/bin/sh`` and coreutils' ``sleep`` (dash has no
  sleep builtin; the Redis demo's hook scripts wait with it).

Layers are made reproducibly (sorted entries, zero times and owners), so one set
of host files always gives the same digests.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

PAUSE_IMAGE = "stsmigrate.dev/pause:1"
REDIS_IMAGE = "stsmigrate.dev/redis:1"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def _libraries(binary: Path) -> list[Path]:
    """The shared libraries and loader ``ldd`` names for a binary (none if static)."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
    found = []
    for line in out.stdout.splitlines():
        match = re.search(r"(/\S+) \(0x", line)
        if match:
            found.append(Path(match[1]))
    return found


def _layer(files: dict[str, Path], dirs: tuple[str, ...]) -> bytes:
    """A gzip tar of ``files`` (path in the image -> host file, links followed) and empty
    ``dirs``, with parent folders, sorted and with zeroed times and owners."""
    folders = set(dirs)
    for name in files:
        parts = name.split("/")[:-1]
        folders.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(folders - {""}):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if name == "tmp" else 0o755
            tar.addfile(info)
        for name in sorted(files):
            data = files[name].resolve().read_bytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue(), mtime=0)


def _blob(blobs: dict[str, bytes], data: bytes, media_type: str) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def oci_layout_tar(
    folder: Path, name: str, files: dict[str, Path], config: dict[str, Any], dirs: tuple[str, ...]
) -> Path:
    """An OCI layout tar of one layer, named ``name`` for ``ctr images import``, in
    ``folder`` under a key of its inputs: built once, then reused (compressing the
    layer is most of the work)."""
    key = hashlib.sha256(json.dumps([name, config, dirs, sorted(files)]).encode())
    for image_path in sorted(files):
        key.update(files[image_path].resolve().read_bytes())
    out = folder / f"{name.replace('/', '_').replace(':', '_')}-{key.hexdigest()[:16]}.tar"
    if out.exists():
        return out
    blobs: dict[str, bytes] = {}
    layer = _layer(files, dirs)
    diff_id = "sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest()
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": _blob(blobs, json.dumps(image_config, sort_keys=True).encode(), OCI_CONFIG),
        "layers": [_blob(blobs, layer, OCI_LAYER)],
    }
    entry = _blob(blobs, json.dumps(manifest, sort_keys=True).encode(), OCI_MANIFEST)
    entry["annotations"] = {
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": "1",
    }
    entry["platform"] = {"architecture": "amd64", "os": "linux"}
    index = {"schemaVersion": 2, "manifests": [entry]}
    members = {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": json.dumps(index, sort_keys=True).encode(),
        **{f"blobs/sha256/{d.split(':', 1)[1]}": data for d, data in sorted(blobs.items())},
    }
    folder.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    with tarfile.open(partial, "w") as tar:
        for path in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(path)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for path, data in members.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    os.replace(partial, out)
    return out


def pause_image(folder: Path, pause_binary: Path) -> Path:
    return oci_layout_tar(
        folder,
        PAUSE_IMAGE,
        {"pause": pause_binary},
        {"Entrypoint": ["/pause"], "User": "65535:65535"},
        (),
    )


def redis_image(folder: Path) -> Path:
    """Debian's redis-server and redis-cli (and dash as /bin/sh, coreutils' sleep) with
    their libraries."""
    files: dict[str, Path] = {}
    for image_path, command in (
        ("usr/bin/redis-server", "redis-server"),
        ("usr/bin/redis-cli", "redis-cli"),
        ("bin/sh", "dash"),
        ("bin/sleep", "sleep"),
    ):
        host = shutil.which(command)
        if host is None:
            raise FileNotFoundError(f"{command} is not installed (Debian package of the image)")
        files[image_path] = Path(host)
        for lib in _libraries(Path(host)):
            files[str(lib).lstrip("/")] = lib
    return oci_layout_tar(
        folder,
        REDIS_IMAGE,
        files,
        {
            "Entrypoint": ["/usr/bin/redis-server"],
            "WorkingDir": "/data",
            "Env": ["PATH=/usr/bin:/bin"],
        },
        ("data", "tmp", "etc"),
    )
