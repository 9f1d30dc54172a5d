"""The worker image (make image) run for real: unpacked by umoci into an OCI bundle and
started by Debian's runc as the image says (uid 65532, its entrypoint), with a read-only
root and the kubeconfig mounted as the chart mounts it (owner root, group 65532, mode
0440), on the host's network to reach the local clusters and the Temporal dev server on
127.0.0.1; it migrates a small StatefulSet under the observer. make image-test runs it
(not make test: the image takes about two minutes to build)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from temporalio.testing import WorkflowEnvironment

from contract import MigrationResult
from devenv.clusters import LocalClusters
from tests.support.apps import deploy_app
from tests.support.paths import REPO
from tests.support.scenarios import observing, request_for

pytestmark = [pytest.mark.cluster, pytest.mark.image]

IMAGE = Path(os.environ.get("STSMIGRATE_IMAGE", REPO / "build" / "image"))
UID = 65532


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    layout = IMAGE / "oci"
    assert (layout / "index.json").exists(), f"no image at {layout}: run `make image` first"
    tag = json.loads((layout / "index.json").read_text())["manifests"][0]["annotations"][
        "org.opencontainers.image.ref.name"
    ]
    folder = tmp_path_factory.mktemp("image") / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:{tag}", str(folder)], check=True, timeout=300
    )
    return folder


@contextlib.contextmanager
def container(
    bundle: Path, kubeconfig: Path, address: str, task_queue: str, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """The image's own process (entrypoint, user, env) with our settings added."""
    config = json.loads((bundle / "config.json").read_text())
    process = config["process"]
    assert process["args"] == ["/opt/stsmigrate/bin/python", "-m", "worker"]
    assert (process["user"]["uid"], process["user"]["gid"]) == (UID, UID)
    mounted = bundle.parent / "kubeconfig"
    shutil.copyfile(kubeconfig, mounted)
    os.chown(mounted, 0, UID)
    mounted.chmod(0o440)
    process["terminal"] = False
    process["env"] += [
        f"TEMPORAL_ADDRESS={address}",
        "TEMPORAL_NAMESPACE=default",
        "STSMIGRATE_KUBECONFIG=/etc/stsmigrate/kubeconfig/kubeconfig",
        f"STSMIGRATE_TASK_QUEUE={task_queue}",
    ]
    config["root"]["readonly"] = True
    config["mounts"] += [
        {
            "destination": "/etc/stsmigrate/kubeconfig/kubeconfig",
            "type": "bind",
            "source": str(mounted),
            "options": ["bind", "ro"],
        },
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]},
    ]
    # The host's network namespace: the servers listen on 127.0.0.1 only.
    namespaces = config["linux"]["namespaces"]
    config["linux"]["namespaces"] = [n for n in namespaces if n["type"] != "network"]
    (bundle / "config.json").write_text(json.dumps(config))
    state, name = bundle.parent / "runc", f"stsmigrate-{uuid.uuid4().hex[:8]}"
    runc = ["runc", "--root", str(state)]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [*runc, "run", "--bundle", str(bundle), name], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield proc
    finally:
        subprocess.run([*runc, "kill", name, "KILL"], capture_output=True, timeout=30)
        proc.wait(timeout=30)
        subprocess.run([*runc, "delete", "--force", name], capture_output=True, timeout=30)


async def test_the_image_migrates_a_statefulset(
    bundle: Path,
    clusters: LocalClusters,
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    namespace: str,
    tmp_path: Path,
) -> None:
    deploy_app(kube["source"], namespace, "kv", 3, secret_value="x", ready_delay="100ms")
    task_queue = f"image-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "worker.log"
    address = temporal_env.client.service_client.config.target_host
    with (
        container(bundle, clusters.kubeconfig, address, task_queue, log) as proc,
        observing(kube, namespace, namespace, "kv") as observer,
    ):
        result = await temporal_env.client.execute_workflow(
            "MigrateStatefulSet",
            request_for("kv", namespace),
            id=f"image-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
            result_type=MigrationResult,
        )
        assert proc.poll() is None, log.read_text()
    assert observer.verdict([2, 1, 0], (0, 0), (0, 3)) == []
    assert [o.ordinal for o in result.moved] == [2, 1, 0]
    assert result.destination is not None and result.destination.replicas == 3
    # It was the image's worker that did it, as uid 65532: its JSON log lines.
    text = log.read_text()
    assert '"worker_started"' in text and task_queue in text, text[-2000:]
