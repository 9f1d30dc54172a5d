"""Fresh namespaces of one name in both clusters, and their removal."""

from __future__ import annotations

import uuid

from kubernetes import client

from tests.support.waits import wait_for


def fresh_namespace(kube: dict[str, client.ApiClient]) -> str:
    name = f"t-{uuid.uuid4().hex[:10]}"
    for api in kube.values():
        core = client.CoreV1Api(api)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    for api in kube.values():
        core = client.CoreV1Api(api)
        # ServiceAccount admission rejects pods until the controller made "default".
        wait_for(
            lambda core=core: any(
                sa.metadata.name == "default"
                for sa in core.list_namespaced_service_account(name).items
            ),
            timeout=30,
            what=f"default ServiceAccount in {name}",
        )
    return name


def remove_namespace(kube: dict[str, client.ApiClient], name: str) -> None:
    for api in kube.values():
        client.CoreV1Api(api).delete_namespace(name)
