"""Hooks through the real exec API: a real redis-server pod on a real kubelet node,
reached as the worker's shipped identity (a ServiceAccount token bound by exactly the
roles of deploy/rbac.yaml, the hooks' role included or left out).

Marker ``real`` (``make real``): kwok's pods run no command."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes import config as kubeconfig
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import permissions
from activities.hooks import HookActivities
from contract import Hook, HookInput
from contract.errors import FORBIDDEN, HOOK_FAILED, INVALID
from devenv.clusters import LocalClusters
from devenv.realnodes import redis_pod
from tests.support.paths import REPO
from tests.support.waits import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.real]

PASSWORD = "hook-pw-" + uuid.uuid4().hex[:12]
NS = "hooked"


def _apply(lc: LocalClusters, objects: list[dict[str, Any]]) -> None:
    lc.kubectl(
        "source",
        "apply",
        "-f",
        "-",
        input=json.dumps({"kind": "List", "apiVersion": "v1", "items": objects}),
    )


def _roles(hooks: bool) -> list[dict[str, Any]]:
    """The source's objects of deploy/rbac.yaml for NS, the hooks' only if ``hooks``."""
    text = (REPO / "deploy" / "rbac.yaml").read_text()
    for placeholder in permissions.PLACEHOLDER.values():
        text = text.replace(placeholder, NS)
    return [
        d
        for d in yaml.safe_load_all(text)
        if d
        and d["metadata"]["labels"][permissions.SIDE_LABEL] == "source"
        and (hooks or permissions.HOOKS_LABEL not in d["metadata"]["labels"])
    ]


def _as_worker(lc: LocalClusters, admin: client.ApiClient) -> client.ApiClient:
    """An ApiClient of the shipped ServiceAccount's token in the source cluster."""
    token: Any = client.CoreV1Api(admin).create_namespaced_service_account_token(
        permissions.SERVICE_ACCOUNT,
        permissions.SERVICE_ACCOUNT_NAMESPACE,
        {"spec": {"expirationSeconds": 3600}},
    )
    config: dict[str, Any] = yaml.safe_load(lc.kubeconfig.read_text())
    config["users"] = [{"name": "worker", "user": {"token": token.status.token}}]
    for context in config["contexts"]:
        context["context"]["user"] = "worker"
    return kubeconfig.new_client_from_config_dict(config, context="source", persist_config=False)


@pytest.fixture(scope="module")
def pod(real_clusters: LocalClusters, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Pod redis-0 in NS: redis-server with the Secret's password in its environment."""
    lc = real_clusters
    lc.kubectl("source", "create", "namespace", NS)
    wait_for(lambda: lc.kubectl("source", "get", "sa", "default", "-n", NS), 30, "default SA")
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "redis-auth", "namespace": NS},
        "data": {"password": base64.b64encode(PASSWORD.encode()).decode()},
    }
    spec = redis_pod("redis-0", None)
    spec["metadata"]["namespace"] = NS
    spec["spec"]["containers"][0]["env"] = [
        {"name": "P", "valueFrom": {"secretKeyRef": {"name": "redis-auth", "key": "password"}}}
    ]
    _apply(lc, [secret, spec])

    def ready() -> bool:
        found = json.loads(lc.kubectl("source", "get", "pod", "redis-0", "-n", NS, "-o", "json"))
        conditions = found.get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    wait_for(ready, 120, "redis-0 Ready", interval=0.5)
    return "redis-0"


def outcome(api: client.ApiClient) -> str:
    """A ping hook's outcome: "ok", or its error's type."""
    try:
        run(api, Hook(name="ping", command=["redis-cli", "ping"]))
    except ApplicationError as e:
        return e.type or "error"
    return "ok"


def run(api: client.ApiClient, hook: Hook) -> Any:
    task = HookInput(
        hook=hook,
        phase="before_give_up",
        context="source",
        namespace=NS,
        statefulset="redis",
        service="redis",
        ordinal=0,
    )
    return ActivityEnvironment().run(HookActivities({"source": api}).run_hook, task)


def test_hooks_run_in_the_pod_as_the_shipped_identity_and_say_only_what_is_safe(
    real_clusters: LocalClusters, pod: str
) -> None:
    lc = real_clusters
    admin = kubeconfig.new_client_from_config(str(lc.kubeconfig), context="source")
    _apply(lc, _roles(hooks=True))
    worker = _as_worker(lc, admin)
    # Bound roles take a moment to reach the authorizer's cache.
    wait_for(lambda: outcome(worker) == "ok", 30, "the hooks' role in effect", interval=0.5)
    # Templated, in the pod's own network namespace and environment.
    done = run(
        worker, Hook(name="ip", command=["sh", "-c", '[ "$(redis-cli -h {pod_ip} ping)" = PONG ]'])
    )
    assert done.exit_code == 0 and done.pod == "redis-0"
    # A failure: its exit code, the end of what it said, the password masked.
    with pytest.raises(ApplicationError) as failed:
        run(worker, Hook(name="leaky", command=["sh", "-c", 'echo "password is $P" >&2; exit 3']))
    assert failed.value.type == HOOK_FAILED and not failed.value.non_retryable
    said = failed.value.message
    assert "hook leaky (before_give_up) in pod hooked/redis-0 of source: exit 3" in said, said
    assert "it said: password is ***" in said and PASSWORD not in said
    # No exit within the timeout: the connection closed, the attempt failed.
    began = time.monotonic()
    with pytest.raises(ApplicationError, match="no exit within 2 s"):
        run(worker, Hook(name="slow", command=["redis-cli", "blpop", "nothing", "20"], timeout=2))
    assert time.monotonic() - began < 15
    # An executable the image lacks: the runtime's reason.
    with pytest.raises(ApplicationError, match=r"did not run: .*nosuch"):
        run(worker, Hook(name="missing", command=["nosuch"]))
    with pytest.raises(ApplicationError) as wrong:
        run(worker, Hook(name="c", command=["true"], container="sidecar"))
    assert wrong.value.type == INVALID and "no container 'sidecar' (it has: redis)" in str(
        wrong.value
    )


def test_without_the_hooks_role_the_exec_is_refused_as_forbidden(
    real_clusters: LocalClusters, pod: str
) -> None:
    lc = real_clusters
    admin = kubeconfig.new_client_from_config(str(lc.kubeconfig), context="source")
    _apply(lc, _roles(hooks=True))
    hooks_role = [
        d for d in _roles(hooks=True) if permissions.HOOKS_LABEL in d["metadata"]["labels"]
    ]
    for doc in hooks_role:
        lc.kubectl(
            "source",
            "delete",
            doc["kind"],
            doc["metadata"]["name"],
            *(["-n", doc["metadata"]["namespace"]] if "namespace" in doc["metadata"] else []),
        )
    worker = _as_worker(lc, admin)

    wait_for(lambda: outcome(worker) == FORBIDDEN, 30, "exec refused without the role", 0.5)
    with pytest.raises(ApplicationError) as refused:
        run(worker, Hook(name="ping", command=["redis-cli", "ping"]))
    assert refused.value.non_retryable and "pods/exec" in refused.value.message
