"""Apps for the tests: StatefulSet manifests (as dicts), and a Redis-like app with
every kind of dependency deployed and waited for; the app's own health endpoint as
the probes see it."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kubernetes import client

from tests.support.cluster_state import ready_replicas
from tests.support.waits import wait_ready


def statefulset(
    name: str,
    replicas: int,
    *,
    start: int | None = None,
    templates: dict[str, str | None] | None = None,
    grace: int = 2,
    ready_delay: str | None = None,
) -> dict[str, Any]:
    """A StatefulSet manifest; ``templates`` maps claim template name -> storage class."""
    templates = templates if templates is not None else {}
    annotations = {"pod-ready.stage.kwok.x-k8s.io/delay": ready_delay} if ready_delay else {}
    spec: dict[str, Any] = {
        "replicas": replicas,
        "serviceName": name,
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}, "annotations": annotations},
            "spec": {
                "terminationGracePeriodSeconds": grace,
                "containers": [
                    {
                        "name": "app",
                        "image": "registry.invalid/app:1",
                        "volumeMounts": [{"name": t, "mountPath": f"/{t}"} for t in templates],
                    }
                ],
            },
        },
        "volumeClaimTemplates": [
            {
                "metadata": {"name": t},
                "spec": {
                    **({"storageClassName": sc} if sc else {}),
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }
            for t, sc in templates.items()
        ],
    }
    if start is not None:
        spec["ordinals"] = {"start": start}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": spec,
    }


def apply_statefulset(api: client.ApiClient, namespace: str, manifest: dict[str, Any]) -> None:
    client.AppsV1Api(api).create_namespaced_stateful_set(namespace, manifest)


def deploy_app(
    api: client.ApiClient,
    namespace: str,
    name: str,
    replicas: int,
    *,
    secret_value: str,
    start: int | None = None,
    ready_delay: str = "1s",
    grace: int = 2,
    when_scaled: str | None = None,
    service_account: bool = False,
    max_unavailable: int = 1,
    parallel: bool = False,
) -> None:
    """A Redis-like app: Secret (env and volume), ConfigMap, headless Service, PDB
    (``max_unavailable``; with ``service_account`` its own ServiceAccount) and a
    StatefulSet with two claim templates (hostPath and CSI; ``parallel``: Parallel pod
    management). Waits until all Ready."""
    core, policy = client.CoreV1Api(api), client.PolicyV1Api(api)
    if service_account:
        core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": f"{name}-auth"}, "stringData": {"password": secret_value}}
    )
    core.create_namespaced_config_map(
        namespace,
        {"metadata": {"name": f"{name}-config"}, "data": {"redis.conf": "cluster-enabled yes\n"}},
    )
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": name},
            "spec": {
                "clusterIP": "None",
                "selector": {"app": name},
                "ports": [{"name": "redis", "port": 6379}],
            },
        },
    )
    policy.create_namespaced_pod_disruption_budget(
        namespace,
        {
            "metadata": {"name": name},
            "spec": {
                "maxUnavailable": max_unavailable,
                "selector": {"matchLabels": {"app": name}},
            },
        },
    )
    manifest = statefulset(
        name,
        replicas,
        start=start,
        grace=grace,
        ready_delay=ready_delay,
        templates={"data": None, "logs": "local-csi"},
    )
    if parallel:
        manifest["spec"]["podManagementPolicy"] = "Parallel"
    pod = manifest["spec"]["template"]["spec"]
    if service_account:
        pod["serviceAccountName"] = name
    container = pod["containers"][0]
    container["env"] = [
        {
            "name": "REDIS_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": f"{name}-auth", "key": "password"}},
        }
    ]
    container["volumeMounts"] += [
        {"name": "auth", "mountPath": "/auth"},
        {"name": "config", "mountPath": "/config"},
    ]
    pod["volumes"] = [
        {"name": "auth", "secret": {"secretName": f"{name}-auth"}},
        {"name": "config", "configMap": {"name": f"{name}-config"}},
    ]
    if when_scaled:
        manifest["spec"]["persistentVolumeClaimRetentionPolicy"] = {
            "whenScaled": when_scaled,
            "whenDeleted": "Retain",
        }
    apply_statefulset(api, namespace, manifest)
    wait_ready(
        api,
        namespace,
        lambda: ready_replicas(api, namespace, name) == replicas,
        f"{name}: {replicas} Ready replicas",
    )


class AppHealth:
    """The app's own health endpoint, as the probes see it: GET /<pod> answers 200, or
    503 for the pods in ``down``."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        app = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(503 if self.path.strip("/") in app.down else 200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/{{pod}}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> AppHealth:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()
