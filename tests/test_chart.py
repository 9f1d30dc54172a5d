"""deploy/chart: lint and schema (bad values refused), what it renders, and that its roles
are exactly the permission table's (activities/permissions.py renders them). The same
renders go to the local clusters in a server-side dry run: tests/cluster/test_chart.py."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from activities import permissions
from tests.support.chart import CHART, helm, render
from tests.support.paths import REPO

RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "RoleBinding"}
EVERYTHING = (
    "metrics.enabled=true",
    "metrics.serviceMonitor.enabled=true",
    "temporal.tls.secretName=temporal-mtls",
    "temporal.tls.serverName=frontend.example.com",
    "temporal.apiKey.secretName=temporal-api-key",
    "codec.secretName=stsmigrate-codec",
    "kubeconfig.contexts={source,destination}",
)


def kinds(docs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((d["kind"], d["metadata"]["name"]) for d in docs)


@pytest.mark.parametrize(
    "values",
    [
        (),
        EVERYTHING,
        ("worker.enabled=false", "rbac.side=source", "rbac.namespaces={shop}"),
        ("worker.enabled=false", "rbac.side=both", "rbac.namespaces={a,b}", "rbac.statefulset=db"),
    ],
    ids=["defaults", "everything", "rbac-source", "rbac-both"],
)
def test_the_chart_lints_strictly(values: tuple[str, ...]) -> None:
    sets = [arg for value in values for arg in ("--set", value)]
    out = helm("lint", "--strict", str(CHART), *sets, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 chart(s) failed" in out.stdout


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("replicaCount=-1", "/replicaCount"),
        ("image.digest=latest", "/image/digest"),
        ("temporal.address=no-port", "/temporal/address"),
        ("logLevel=LOUD", "/logLevel"),
        ("metrics.port=70000", "/metrics/port"),
        ("rbac.side=sideways", "/rbac/side"),
        ("rbac.side=source", "/rbac/namespaces"),  # a side needs its namespaces
        ("rbac.namespaces={Not_A_Name}", "/rbac/namespaces/0"),
        ("podSecurityContext.runAsNonRoot=false", "/podSecurityContext/runAsNonRoot"),
        ("temporal.tls.enable=true", "/temporal/tls"),  # a misspelt key
    ],
)
def test_bad_values_are_refused_by_the_schema(value: str, complaint: str) -> None:
    for command in ("lint", "template"):
        args = [command, *(["t"] if command == "template" else []), str(CHART), "--set", value]
        out = helm(*args, check=False)
        assert out.returncode != 0, f"helm {command} accepted {value}"
        assert complaint in out.stdout + out.stderr, out.stdout + out.stderr


def test_the_default_release_is_the_worker_alone() -> None:
    assert kinds(render()) == [
        ("Deployment", "t-statefulset-migrator"),
        ("PodDisruptionBudget", "t-statefulset-migrator"),
        ("ServiceAccount", "t-statefulset-migrator"),
    ]


def test_every_secret_is_mounted_readable_by_uid_65532_only() -> None:
    docs = render("ops", *EVERYTHING)
    assert kinds(docs) == [
        ("Deployment", "t-statefulset-migrator"),
        ("PodDisruptionBudget", "t-statefulset-migrator"),
        ("Service", "t-statefulset-migrator-metrics"),
        ("ServiceAccount", "t-statefulset-migrator"),
        ("ServiceMonitor", "t-statefulset-migrator"),
    ]
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    security = pod["securityContext"]
    assert (security["runAsUser"], security["runAsGroup"], security["fsGroup"]) == (65532,) * 3
    assert pod["automountServiceAccountToken"] is False
    secrets = {v["name"]: v["secret"] for v in pod["volumes"] if "secret" in v}
    assert {s["secretName"] for s in secrets.values()} == {
        "stsmigrate-kubeconfig",
        "temporal-mtls",
        "stsmigrate-codec",
    }
    # Owned by root, group 65532 (fsGroup): group-read and nothing for others.
    assert {s["defaultMode"] for s in secrets.values()} == {0o440}
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    env = {e["name"]: e for e in container["env"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    # Every path the worker is told of is in a mounted Secret.
    assert env["STSMIGRATE_KUBECONFIG"]["value"] == mounts["kubeconfig"] + "/kubeconfig"
    assert env["TEMPORAL_TLS_CLIENT_CERT_PATH"]["value"] == mounts["temporal-tls"] + "/tls.crt"
    assert env["TEMPORAL_TLS_CLIENT_KEY_PATH"]["value"] == mounts["temporal-tls"] + "/tls.key"
    assert env["STSMIGRATE_CODEC_KEY_FILE"]["value"] == mounts["codec"] + "/codec-key"
    assert env["TEMPORAL_TLS"]["value"] == "true"
    assert env["TEMPORAL_TLS_SERVER_NAME"]["value"] == "frontend.example.com"
    # The API key only by reference: its value is never in the rendered manifest.
    assert env["TEMPORAL_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "temporal-api-key",
        "key": "api-key",
    }
    assert env["STSMIGRATE_CONTEXTS"]["value"] == "source,destination"
    assert env["STSMIGRATE_METRICS_PORT"]["value"] == "9464"
    assert container["ports"] == [{"name": "metrics", "containerPort": 9464, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert container["readinessProbe"]["exec"]["command"][0] == "/opt/stsmigrate/bin/python"


def test_the_metrics_port_is_one_value() -> None:
    docs = render("ops", "metrics.enabled=true", "metrics.port=9100")
    service = next(d for d in docs if d["kind"] == "Service")
    assert service["spec"]["ports"][0]["port"] == 9100
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert pod["containers"][0]["ports"][0]["containerPort"] == 9100
    # Without metrics there is no endpoint to probe for liveness.
    default = next(d for d in render() if d["kind"] == "Deployment")
    assert "livenessProbe" not in default["spec"]["template"]["spec"]["containers"][0]


def comparable(doc: dict[str, Any]) -> dict[str, Any]:
    """An RBAC object without the labels Helm adds (the side label stays)."""
    meta = {k: v for k, v in doc["metadata"].items() if k != "labels"}
    side = doc["metadata"]["labels"][permissions.SIDE_LABEL]
    return {**doc, "metadata": {**meta, "labels": {permissions.SIDE_LABEL: side}}}


def table_objects(
    sides: set[str],
    source_ns: str,
    destination_ns: str,
    statefulset: str | None,
    hooks: bool = False,
) -> list[dict[str, Any]]:
    """The table's objects for a release: those of its sides, the hooks' only with
    rbac.hooks."""
    docs = yaml.safe_load_all(permissions.render_rbac(source_ns, destination_ns, statefulset))
    out = [
        d
        for d in docs
        if d
        and d["kind"] != "Namespace"
        and d["metadata"]["labels"][permissions.SIDE_LABEL] in sides
        and (hooks or permissions.HOOKS_LABEL not in d["metadata"]["labels"])
    ]
    # A cluster that is both sides has one identity.
    accounts = [d for d in out if d["kind"] == "ServiceAccount"]
    return [d for d in out if d["kind"] != "ServiceAccount"] + accounts[:1]


def key(doc: dict[str, Any]) -> tuple[str, str, str]:
    return (doc["kind"], doc["metadata"]["name"], doc["metadata"].get("namespace", ""))


@pytest.mark.parametrize(
    ("side", "statefulset", "hooks"),
    [
        ("source", None, False),
        ("destination", "db", True),
        ("both", "db", False),
        ("both", None, True),
    ],
)
def test_the_charts_roles_are_the_permission_tables(
    side: str, statefulset: str | None, hooks: bool
) -> None:
    values = ["worker.enabled=false", f"rbac.side={side}", "rbac.namespaces={shop}"]
    if side == "both":
        values.append("rbac.destinationNamespaces={shop-new}")
    if statefulset:
        values.append(f"rbac.statefulset={statefulset}")
    if hooks:
        values.append("rbac.hooks=true")
    chart = render(permissions.SERVICE_ACCOUNT_NAMESPACE, *values)
    sides = {"source", "destination"} if side == "both" else {side}
    destination_ns = "shop-new" if side == "both" else "shop"
    table = table_objects(sides, "shop", destination_ns, statefulset, hooks)
    assert {d["kind"] for d in chart} == RBAC_KINDS
    assert sorted(map(key, chart)) == sorted(map(key, table))
    # pods/exec only with rbac.hooks.
    execs = [r for d in chart for r in d.get("rules", []) if "pods/exec" in r["resources"]]
    assert len(execs) == (len(sides) if hooks else 0)
    expected = {key(d): comparable(d) for d in table}
    for doc in chart:
        assert comparable(doc) == expected[key(doc)], key(doc)


def test_one_role_binding_per_application_namespace() -> None:
    chart = render("ops", "worker.enabled=false", "rbac.side=source", "rbac.namespaces={a,b}")
    bindings = [d for d in chart if d["kind"] == "RoleBinding"]
    assert sorted(d["metadata"]["namespace"] for d in bindings) == ["a", "b"]
    for doc in chart:
        for subject in doc.get("subjects", []):
            assert subject == {"kind": "ServiceAccount", "name": "stsmigrate", "namespace": "ops"}


def test_the_charts_copies_of_the_table_are_current() -> None:
    files = CHART / "files"
    assert (files / "rbac.yaml").read_text() == permissions.render_rbac(), (
        "deploy/chart/files/rbac.yaml is stale: `stsmigrate rbac > deploy/chart/files/rbac.yaml`"
    )
    assert (files / "rbac-statefulset.yaml").read_text() == permissions.render_rbac(
        statefulset="STATEFULSET"
    ), "deploy/chart/files/rbac-statefulset.yaml is stale: `stsmigrate rbac -s STATEFULSET > ...`"


def test_the_kustomize_base_is_the_charts_render() -> None:
    base = REPO / "deploy" / "kustomize" / "base" / "worker.yaml"
    rendered = helm(
        "template",
        "stsmigrate",
        str(CHART),
        "-n",
        "statefulset-migrator",
        "-f",
        str(REPO / "deploy" / "kustomize" / "values.yaml"),
    ).stdout
    header, _, body = base.read_text().partition("\n")
    assert header.startswith("# GENERATED")
    assert body == rendered, (
        "deploy/kustomize/base/worker.yaml is stale (see deploy/kustomize/values.yaml)"
    )
    assert "helm.sh/chart" not in body and "managed-by" not in body
