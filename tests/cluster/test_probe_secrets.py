"""The Redis probe's password in a real Secret of the probed cluster: read by the
worker at probe time (HealthActivities on the destination's real API server), sent as
AUTH to a real redis-server with requirepass, and found in no result; preflight names
a password Secret the destination lacks; an admission policy that echoes a Secret's
value (or a PV's flexVolume options) in its refusal has its message withheld."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.health import HealthActivities
from activities.kube import Kube, Obj
from activities.migration import MigrationActivities
from contract import HealthGates, MigrationRequest, PlanInput, Probe, ProbeInput, SecretKeyRef
from tests.support.apps import deploy_app
from tests.support.redis_cluster import RedisCluster, started_redis
from tests.support.waits import wait_for

pytestmark = pytest.mark.cluster

PASSWORD = "cluster-redis-pw-" + uuid.uuid4().hex


@pytest.fixture
def redis_with_password(tmp_path: Path) -> Iterator[RedisCluster]:
    cluster = started_redis(tmp_path, PASSWORD)
    yield cluster
    cluster.stop()


def redis_probe(port: int, name: str, key: str) -> Probe:
    return Probe(
        kind="redis_cluster",
        name=f"{name}/{key}",
        host="127.0.0.1",
        port=port,
        expected_nodes=3,
        password_secret=SecretKeyRef(name=name, key=key),
        retries=0,
    )


def test_the_redis_probe_reads_its_password_from_the_probed_cluster(
    kube: dict[str, client.ApiClient], namespace: str, redis_with_password: RedisCluster
) -> None:
    port = redis_with_password.ports[0]
    client.CoreV1Api(kube["destination"]).create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "probe-pw"},
            "stringData": {"password": PASSWORD, "old": "not-" + PASSWORD},
        },
    )
    # The source holds a Secret of the same name with another value: never read.
    client.CoreV1Api(kube["source"]).create_namespaced_secret(
        namespace, {"metadata": {"name": "probe-pw"}, "stringData": {"password": "source-side"}}
    )
    task = ProbeInput(
        probes=[
            redis_probe(port, "probe-pw", "password"),
            redis_probe(port, "probe-pw", "old"),
            redis_probe(port, "absent", "password"),
        ],
        context="destination",
        namespace=namespace,
        statefulset="redis",
        service="redis",
        ordinal=0,
    )
    report = ActivityEnvironment().run(HealthActivities(kube).probe_ordinal, task)
    detail = [r.detail for r in report.results]
    assert [r.ok for r in report.results] == [True, False, False], detail
    assert detail[0] == f"redis 127.0.0.1:{port}: cluster_state:ok, 3 known nodes"
    assert detail[1] == (
        f"redis 127.0.0.1:{port}: AUTH failed with the password of "
        f"Secret {namespace}/probe-pw key old"
    )
    assert detail[2] == (
        f"the password's Secret {namespace}/absent key password: no such Secret in destination"
    )
    assert PASSWORD not in report.model_dump_json() and PASSWORD not in task.model_dump_json()


def test_preflight_names_a_password_secret_the_destination_lacks(
    kube: dict[str, client.ApiClient], namespace: str
) -> None:
    deploy_app(kube["source"], namespace, "db", 1, secret_value="x", ready_delay="100ms")

    def plan(*probes: Probe) -> list[str]:
        request = MigrationRequest(
            statefulset="db",
            namespace=namespace,
            source_context="source",
            destination_context="destination",
            health=HealthGates(probes=list(probes)),
        )
        task = PlanInput(request=request, migration_id=f"mig-{uuid.uuid4().hex[:6]}")
        found = ActivityEnvironment().run(MigrationActivities(kube).plan_migration, task)
        return [f"{p.object}: {p.message}; {p.fix}" for p in found.problems]

    missing = plan(redis_probe(6379, "probe-pw", "password"))
    assert missing == [
        f"destination Secret {namespace}/probe-pw: the password of health probe "
        "probe-pw/password (key password) is missing; create the Secret with key password in "
        "destination, or name another one in password_secret"
    ]
    # The app's own Secret is copied to the destination by the run: fine as it is.
    assert plan(redis_probe(6379, "db-auth", "password")) == []
    client.CoreV1Api(kube["destination"]).create_namespaced_secret(
        namespace, {"metadata": {"name": "probe-pw"}, "stringData": {"other": "x"}}
    )
    wrong_key = plan(redis_probe(6379, "probe-pw", "password"))
    assert len(wrong_key) == 1 and "(key password) is not in it" in wrong_key[0]


def echoing_policy(api: client.ApiClient, resource: str, echo: str, name: str) -> None:
    """A ValidatingAdmissionPolicy (and binding) refusing creates of ``resource`` named
    ``name``, with a messageExpression that copies the object's secret into the message,
    as a careless webhook or policy may."""
    admission = client.AdmissionregistrationV1Api(api)
    admission.create_validating_admission_policy(
        {
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE"],
                            "resources": [resource],
                        }
                    ]
                },
                "matchConditions": [
                    {"name": "ours", "expression": f"object.metadata.name == '{name}'"}
                ],
                "validations": [
                    {"expression": "false", "messageExpression": f"'it holds ' + {echo}"}
                ],
            },
        }
    )
    admission.create_validating_admission_policy_binding(
        {
            "metadata": {"name": name},
            "spec": {"policyName": name, "validationActions": ["Deny"]},
        }
    )


def test_a_refusal_that_echoes_the_secret_is_withheld(
    kube: dict[str, client.ApiClient], namespace: str
) -> None:
    api = kube["destination"]
    admission = client.AdmissionregistrationV1Api(api)
    secret, volume = f"leak-{uuid.uuid4().hex[:6]}", f"leak-{uuid.uuid4().hex[:6]}"
    echoing_policy(api, "secrets", "string(object.data['password'])", secret)
    echoing_policy(api, "persistentvolumes", "object.spec.flexVolume.options['password']", volume)
    kube_dst = Kube(api, "destination")
    bodies = {
        "Secret": {"metadata": {"name": secret}, "stringData": {"password": PASSWORD}},
        "PersistentVolume": {
            "metadata": {"name": volume},
            "spec": {
                "capacity": {"storage": "1Mi"},
                "accessModes": ["ReadWriteOnce"],
                "flexVolume": {"driver": "example/none", "options": {"password": PASSWORD}},
            },
        },
    }
    try:
        for kind, body in bodies.items():
            messages: list[str] = []

            def refused(kind: str = kind, body: Obj = body, messages: list[str] = messages) -> bool:
                try:
                    kube_dst.create(kind, namespace, body)
                except ApplicationError as e:
                    messages.append(e.message)
                    return True
                # Created before the policy reached the apiserver's cache: take it away.
                if kind == "Secret":
                    client.CoreV1Api(api).delete_namespaced_secret(secret, namespace)
                else:
                    client.CoreV1Api(api).delete_persistent_volume(volume)
                return False

            wait_for(refused, 30, f"{kind} create refused by its policy", interval=0.2)
            name = body["metadata"]["name"]
            # The server's own answer carries the secret: what is withheld.
            with pytest.raises(client.exceptions.ApiException) as raw:
                if kind == "Secret":
                    client.CoreV1Api(api).create_namespaced_secret(namespace, body, dry_run="All")
                else:
                    client.CoreV1Api(api).create_persistent_volume(body, dry_run="All")
            # (a Secret's data as the API holds it: base64)
            forms = [PASSWORD, base64.b64encode(PASSWORD.encode()).decode()]
            assert any(form in str(raw.value.body) for form in forms)
            assert not any(form in " ".join(messages) for form in forms)
            assert messages[-1].startswith(
                f"create {kind} {name} in destination: 422 Invalid by "
                f"ValidatingAdmissionPolicy '{name}' with binding '{name}'"
            )
            assert messages[-1].endswith(
                "(the server's message is withheld: the object holds Secret data)"
            )
    finally:
        for n in (secret, volume):
            admission.delete_validating_admission_policy_binding(n)
            admission.delete_validating_admission_policy(n)
