"""The worker under exactly what we ship: the roles of deploy/rbac.yaml applied with the
README's commands (each side's part in its cluster), the admission policy of
deploy/admission.yaml, a ServiceAccount token per cluster, and the worker process
started as uid/gid 65532 reading its kubeconfig as the chart's Deployment mounts it
(deploy/kustomize/base/worker.yaml, its render: owner root, group 65532 from fsGroup,
mode 0440).

The apiservers audit every request of that identity (devenv AUDIT_POLICY). After a
whole life (move, a rollback asked by an operator, the re-move, a health gate's
rollback and its re-move) the audit log must hold no refused request, only requests
the permission table (activities/permissions.py) grants, and every verb the table
grants must have been used: the table is what the code does, no more, no less."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes import config as kubeconfig
from kubernetes.client.rest import ApiException
from temporalio.testing import WorkflowEnvironment

from activities import permissions
from activities.kube import Kube
from activities.preflight import build_plan
from contract import ApprovalPolicy, DescribeClustersResult, HealthGates, Hook, Hooks, Probe
from devenv.clusters import AUDITED_USERS, LocalClusters
from stsmigrate.api import start_migration
from tests.support.apps import AppHealth, apply_statefulset, deploy_app, statefulset
from tests.support.cluster_state import budgets, release_fence, snapshot
from tests.support.namespaces import fresh_namespace, remove_namespace
from tests.support.paths import REPO
from tests.support.processes import WorkerProcess
from tests.support.scenarios import observing, request_for

pytestmark = [pytest.mark.cluster, pytest.mark.field]

SIDES: tuple[permissions.Side, ...] = ("source", "destination")
USER = (
    f"system:serviceaccount:{permissions.SERVICE_ACCOUNT_NAMESPACE}:{permissions.SERVICE_ACCOUNT}"
)
WORKER_UID = 65532  # the chart's runAsUser, runAsGroup and fsGroup


def shipped(path: Path, namespace: str) -> str:
    """A file of deploy/ with its namespace placeholders set, as the README's sed does."""
    text = path.read_text()
    for placeholder in permissions.PLACEHOLDER.values():
        text = text.replace(placeholder, namespace)
    return text


@pytest.fixture(scope="module")
def app_namespace(kube: dict[str, client.ApiClient]) -> Iterator[str]:
    name = fresh_namespace(kube)
    yield name
    remove_namespace(kube, name)


@pytest.fixture(scope="module")
def identity(
    clusters: LocalClusters, kube: dict[str, client.ApiClient], app_namespace: str
) -> Iterator[dict[str, str]]:
    """deploy/rbac.yaml and deploy/admission.yaml applied in both clusters, as the README
    says; yields a token of the shipped ServiceAccount per cluster."""
    assert AUDITED_USERS == [USER]
    rbac = shipped(REPO / "deploy" / "rbac.yaml", app_namespace)
    # The local clusters' volumes are hostPath and CSI-style: the operator opts in.
    admission = shipped(REPO / "deploy" / "admission.yaml", app_namespace).replace(
        'allowHostPath: "false"', 'allowHostPath: "true"'
    )
    tokens = {}
    for side in SIDES:
        # As the README: without the hooks' role (no request here has hooks).
        label = f"{permissions.SIDE_LABEL}={side},{permissions.HOOKS_LABEL}!=true"
        clusters.kubectl(side, "apply", "-l", label, "-f", "-", input=rbac)
        both = f"{permissions.SIDE_LABEL} in ({side},both)"
        clusters.kubectl(side, "apply", "-l", both, "-f", "-", input=admission)
        token: Any = client.CoreV1Api(kube[side]).create_namespaced_service_account_token(
            permissions.SERVICE_ACCOUNT,
            permissions.SERVICE_ACCOUNT_NAMESPACE,
            {"spec": {"expirationSeconds": 3600}},
        )
        tokens[side] = token.status.token
    for side in SIDES:
        policies_enforced(clusters, kube, side, tokens, app_namespace)
    try:
        yield tokens
    finally:
        for side in SIDES:
            both = f"{permissions.SIDE_LABEL} in ({side},both)"
            clusters.kubectl(
                side, "delete", "--ignore-not-found", "-l", both, "-f", "-", input=admission
            )
            label = f"{permissions.SIDE_LABEL}={side}"
            clusters.kubectl(
                side, "delete", "--ignore-not-found", "-l", label, "-f", "-", input=rbac
            )


def policies_enforced(
    clusters: LocalClusters,
    kube: dict[str, client.ApiClient],
    side: str,
    tokens: dict[str, str],
    namespace: str,
) -> None:
    """Wait until the roles and the admission policies hold in ``side``: the shipped
    identity may read the app's claims, and a dry-run PV claimed from elsewhere is
    denied by the policy in the destination (by RBAC in the source, where the worker
    creates no PVs); both take effect a moment after they are created."""
    worker = as_worker(clusters, side, tokens)
    deadline = time.monotonic() + 30
    while True:
        try:
            worker.list_namespaced_persistent_volume_claim(namespace)
            worker.create_persistent_volume(hostpath_pv("probe", "kube-system"), dry_run="All")
        except ApiException as e:
            if e.status == 422 and "is not claimed from the migrated namespaces" in str(e.body):
                return
            if side == "source" and e.status == 403:
                return  # the source role creates no PVs at all: RBAC refuses first
        assert time.monotonic() < deadline, f"{side}: roles or policies never took effect"
        time.sleep(0.5)


def worker_config(clusters: LocalClusters, tokens: dict[str, str]) -> dict[str, Any]:
    """The local clusters' kubeconfig with the shipped identity's token per context."""
    config: dict[str, Any] = yaml.safe_load(clusters.kubeconfig.read_text())
    config["users"] = [{"name": f"{s}-worker", "user": {"token": tokens[s]}} for s in SIDES]
    for context in config["contexts"]:
        context["context"]["user"] = f"{context['name']}-worker"
    return config


def api_of(config: dict[str, Any] | Path, side: str) -> client.ApiClient:
    if isinstance(config, Path):
        return kubeconfig.new_client_from_config(
            config_file=str(config), context=side, persist_config=False
        )
    return kubeconfig.new_client_from_config_dict(config, context=side, persist_config=False)


@contextlib.contextmanager
def mounted_kubeconfig(clusters: LocalClusters, tokens: dict[str, str]) -> Iterator[Path]:
    """The worker's kubeconfig as the kubelet mounts the Secret of the chart's Deployment
    (its render in the kustomize base): a folder anyone may enter, the file owned by root
    with group fsGroup, mode 0440."""
    rendered = yaml.safe_load_all(
        (REPO / "deploy" / "kustomize" / "base" / "worker.yaml").read_text()
    )
    (deployment,) = [d for d in rendered if d and d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    security = pod["securityContext"]
    assert security["runAsUser"] == security["runAsGroup"] == security["fsGroup"] == WORKER_UID
    (volume,) = [v for v in pod["volumes"] if v["name"] == "kubeconfig"]
    assert volume["secret"]["defaultMode"] == 0o440
    config = worker_config(clusters, tokens)
    folder = Path(tempfile.mkdtemp(prefix="stsmigrate-kubeconfig-"))
    try:
        folder.chmod(0o755)
        path = folder / "kubeconfig"
        path.write_text(yaml.safe_dump(config))
        os.chown(path, 0, WORKER_UID)
        path.chmod(0o440)
        yield path
    finally:
        shutil.rmtree(folder)


class AuditLog:
    """The shipped identity's requests in both clusters, from a point on."""

    def __init__(self, clusters: LocalClusters) -> None:
        self.paths = {side: clusters.clusters[side].audit_log for side in SIDES}
        self.offsets = {s: p.stat().st_size if p.exists() else 0 for s, p in self.paths.items()}

    def events(self, side: str) -> list[dict[str, Any]]:
        with self.paths[side].open("rb") as f:
            f.seek(self.offsets[side])
            lines = f.read().splitlines()
        events = [json.loads(line) for line in lines if line.strip()]
        return [
            e
            for e in events
            if e["user"]["username"] == USER and e.get("stage") in ("ResponseComplete", "Panic")
        ]


def used(events: list[dict[str, Any]]) -> set[tuple[str, str, str, bool]]:
    """(verb, group, resource, namespaced) of every resource request (not /version, not
    discovery), SelfSubjectAccessReviews left out (every user may make them)."""
    out = set()
    for e in events:
        ref = e.get("objectRef")
        if not ref or ref.get("resource") == "selfsubjectaccessreviews":
            continue
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        # A Namespace is cluster-scoped, though its audit event names it as namespace.
        namespaced = bool(ref.get("namespace")) and resource != "namespaces"
        out.add((e["verb"], ref.get("apiGroup", ""), resource, namespaced))
    return out


async def test_a_whole_life_under_exactly_the_shipped_roles(
    clusters: LocalClusters,
    kube: dict[str, client.ApiClient],
    temporal_env: WorkflowEnvironment,
    identity: dict[str, str],
    app_namespace: str,
    tmp_path: Path,
) -> None:
    """Three ordinals: 2 moves, an operator rolls it back, it moves again; 1 moves; 0
    moves, fails its health gate, is rolled back by the gate and moves again once the
    app recovers. The worker runs as uid 65532 with only the shipped identity."""
    name = "app"
    deploy_app(
        kube["source"],
        app_namespace,
        name,
        3,
        secret_value="x",
        ready_delay="300ms",
        service_account=True,
    )
    audit = AuditLog(clusters)
    with (
        mounted_kubeconfig(clusters, identity) as kubeconfig,
        AppHealth() as app,
        observing(kube, app_namespace, app_namespace, name) as observer,
    ):
        app.down.add(f"{name}-0")
        worker = WorkerProcess(
            temporal_env.client.service_client.config.target_host,
            kubeconfig,
            tmp_path / "worker.log",
            f"shipped-{uuid.uuid4().hex[:8]}",
            argv=[
                "setpriv",
                f"--reuid={WORKER_UID}",
                f"--regid={WORKER_UID}",
                "--clear-groups",
                sys.executable,
                str(REPO / "worker.py"),
            ],
        )
        worker.start()
        try:
            # The README's wiring check first, as an operator would run it.
            described = await temporal_env.client.execute_workflow(
                "DescribeClusters",
                {"contexts": ["source", "destination"]},
                id=f"describe-{uuid.uuid4().hex[:8]}",
                task_queue=worker.task_queue,
                result_type=DescribeClustersResult,
            )
            assert [c.nodes > 0 for c in described.clusters] == [True, True], described
            gates = HealthGates(
                probes=[Probe(kind="http", url=app.url, timeout=2, retries=1, interval=0)],
                on_failure="rollback_ordinal",
            )
            request = request_for(
                name,
                app_namespace,
                health=gates,
                approval=ApprovalPolicy(mode="ordinals", ordinals=[1]),
                cleanup=True,
            )
            migration = await start_migration(
                temporal_env.client,
                request,
                migration_id=f"shipped-{uuid.uuid4().hex[:8]}",
                task_queue=worker.task_queue,
            )
            waiting = lambda p: p.phase == "awaiting_approval" and p.current_ordinal == 1  # noqa: E731
            await migration.wait_until(waiting, within=120)
            # The app allows 1 disruption; with an ordinal about to move, none is left to
            # give either cluster: the two PDBs together never allow more than the app's.
            assert budgets(kube, app_namespace, name) == {"source": 0, "destination": 0}
            await migration.rollback(reason="an operator's rollback")
            held = await migration.wait_until(lambda p: p.phase == "paused", within=120)
            assert held.rolled_back == [2], held
            await migration.resume()  # 2 moves again
            await migration.wait_until(waiting, within=120)
            await migration.approve(1)
            gated = await migration.wait_until(
                lambda p: p.phase == "paused" and 0 in p.rolled_back, within=180
            )
            assert gated.pause_reason.startswith("rolled back ordinal 0"), gated.pause_reason
            app.down.clear()
            await migration.resume()  # 0 moves again
            result = await asyncio.wait_for(migration.result(), 180)
        finally:
            worker.stop()
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert [o.ordinal for o in result.moved] == [2, 1, 0] and not result.aborted, log[-3000:]
    assert sorted(result.rolled_back) == [0, 2]
    # The clean finish too, under the same roles and admission policies.
    assert result.cleanup is not None, result.cleanup_skipped
    actions = {s.action for s in result.cleanup.steps}
    release_fence(kube["source"], app_namespace, name)
    assert actions == {"fenced", "removed", "restored Delete"}, result.cleanup.steps
    assert observer.verdict([2, 1, 0], (0, 0), (0, 3), cleaned_up=True) == []
    assert budgets(kube, app_namespace, name) == {"source": 1, "destination": 1}  # restored

    unused = []
    for side in SIDES:
        events = audit.events(side)
        assert events, f"no audited request in the {side} cluster"
        refused = [
            f"{e['verb']} {e['requestURI']}: {e['responseStatus'].get('code')}"
            for e in events
            if e.get("responseStatus", {}).get("code") in (401, 403, 422)
        ]
        assert refused == [], f"{side}: refused requests {refused}"
        seen = used(events)
        beyond = sorted(
            f"{verb} {resource}.{group}"
            for verb, group, resource, _ in seen
            if not permissions.grants(side, verb, resource, group)
        )
        assert beyond == [], f"{side}: requests the table does not list: {beyond}"
        for rule in permissions.rules(side):
            if permissions.hooks_only(rule):
                # kwok's pods run no command: tests/cluster/test_hooks.py (make real)
                # execs into a real pod under exactly these roles.
                continue
            for verb in rule.verbs:
                if (verb, rule.group, rule.resource, rule.namespaced) in seen:
                    continue
                # Every wait lists, then watches only if what it waits for is not there
                # yet (activities/kube.py _wait): a watch is needed wherever its list is.
                listed = ("list", rule.group, rule.resource, rule.namespaced) in seen
                if verb != "watch" or not listed:
                    unused.append(f"{side} {verb} {rule.resource}")
    assert unused == [], f"the table grants verbs this life never used: {unused}"


def impersonating(clusters: LocalClusters, side: str, user: str) -> Kube:
    """A Kube of the admin credentials acting as ``user`` (Impersonate-User)."""
    api = api_of(clusters.kubeconfig, side)
    api.set_default_header("Impersonate-User", user)
    return Kube(api, side)


def roles_for(
    side: permissions.Side,
    user: str,
    namespace: str,
    drop: tuple[permissions.Rule, str] | None = None,
) -> list[dict[str, Any]]:
    """Every permission of ``side`` for ``user`` as roles and bindings, but ``drop``."""
    out: list[dict[str, Any]] = []
    for namespaced in (False, True):
        role = f"{user}-{'ns' if namespaced else 'cl'}"
        grants = [
            {
                "apiGroups": [r.group],
                "resources": [r.resource],
                "verbs": [v for v in r.verbs if drop != (r, v)],
            }
            for r in permissions.rules(side)
            if r.namespaced == namespaced
        ]
        ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role}
        binding: dict[str, Any] = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding" if namespaced else "ClusterRoleBinding",
            "metadata": {"name": role, **({"namespace": namespace} if namespaced else {})},
            "roleRef": ref,
            "subjects": [{"kind": "User", "name": user}],
        }
        out += [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": role},
                "rules": [g for g in grants if g["verbs"]],
            },
            binding,
        ]
    return out


async def test_each_missing_permission_is_named_before_anything_changes(
    clusters: LocalClusters,
    kube: dict[str, client.ApiClient],
    app_namespace: str,
) -> None:
    """For every verb of the table in turn, an identity holding all the others: the
    plan names exactly that verb and changes nothing (an optional one, such as creating
    Events: a warning names it and the plan has no problem)."""
    name = "lean"
    deploy_app(kube["source"], app_namespace, name, 1, secret_value="x", ready_delay="100ms")
    # With cleanup and a hook: preflight then checks the clean finish's verbs and the
    # hooks' too (every verb).
    hooks = Hooks(after_take=[Hook(name="noop", command=["true"])])
    request = request_for(name, app_namespace, cleanup=True, hooks=hooks)
    suffix = uuid.uuid4().hex[:6]
    cases = [(s, r, v) for s in SIDES for r in permissions.rules(s) for v in r.verbs]
    objects: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    for i, (side, rule, verb) in enumerate(cases):
        for other in SIDES:
            drop = (rule, verb) if other == side else None
            objects[other] += roles_for(other, f"less-{suffix}-{i}", app_namespace, drop)
    lists = {
        side: json.dumps({"apiVersion": "v1", "kind": "List", "items": objects[side]})
        for side in SIDES
    }
    for side in SIDES:
        clusters.kubectl(side, "apply", "-f", "-", input=lists[side])
    before = snapshot(kube, app_namespace)
    try:
        wrong = []
        for i, (side, rule, verb) in enumerate(cases):
            kubes = {s: impersonating(clusters, s, f"less-{suffix}-{i}") for s in SIDES}
            plan = build_plan(kubes["source"], kubes["destination"], request, f"less-{suffix}")
            found = [(p.object, p.message) for p in plan.problems]
            expected = [
                (
                    f"{side} cluster {side}",
                    f"the worker's credentials may not: {verb} {rule.resource}",
                )
            ]
            warned = [w for w in plan.warnings if f"may not {verb} {rule.resource}" in w]
            if rule.optional:  # the run goes on without it: a warning, no problem
                expected, warned = [], [w for w in warned if w.startswith(f"{side} cluster")]
            if found != expected or bool(warned) != rule.optional:
                wrong.append(f"without {side} {verb} {rule.resource}: {found} {warned}")
        assert wrong == [], "\n".join(wrong)
    finally:
        for side in SIDES:
            clusters.kubectl(side, "delete", "--ignore-not-found", "-f", "-", input=lists[side])
    assert snapshot(kube, app_namespace) == before
    assert len(cases) == len(permissions.needed("source")) + len(permissions.needed("destination"))


def as_worker(clusters: LocalClusters, side: str, tokens: dict[str, str]) -> client.CoreV1Api:
    return client.CoreV1Api(api_of(worker_config(clusters, tokens), side))


def hostpath_pv(name: str, namespace: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "hostPath": {"path": f"/srv/{name}"},
            "claimRef": {"namespace": namespace, "name": f"claim-{name}"},
        },
    }


async def test_the_admission_policy_keeps_the_worker_to_its_own_volumes(
    clusters: LocalClusters,
    kube: dict[str, client.ApiClient],
    identity: dict[str, str],
    app_namespace: str,
) -> None:
    """As the shipped identity, in the destination: a PV claimed from another namespace
    may be neither created nor patched; the app's own PV may change its labels but not
    its capacity, claim or Retain policy; a StatefulSet's pod template is not the
    worker's to change; with allowHostPath "false" no hostPath PV is created."""
    side = "destination"
    worker = as_worker(clusters, side, identity)
    admin = client.CoreV1Api(kube[side])
    tag = uuid.uuid4().hex[:6]
    own, foreign, created = f"own-{tag}", f"foreign-{tag}", f"new-{tag}"
    apply_statefulset(
        kube[side], app_namespace, statefulset(f"vap-{tag}", 0, start=0, templates={})
    )
    admin.create_persistent_volume(hostpath_pv(own, app_namespace))
    admin.create_persistent_volume(hostpath_pv(foreign, "kube-system"))
    cm = permissions.SERVICE_ACCOUNT_NAMESPACE
    try:
        worker.patch_persistent_volume(own, {"metadata": {"labels": {"moved": "yes"}}})
        denials = {}
        attempts = {
            "delete policy": lambda: worker.patch_persistent_volume(
                own, {"spec": {"persistentVolumeReclaimPolicy": "Delete"}}
            ),
            "pod template": lambda: client.AppsV1Api(
                api_of(worker_config(clusters, identity), side)
            ).patch_namespaced_stateful_set(
                f"vap-{tag}",
                app_namespace,
                {"spec": {"template": {"metadata": {"labels": {"evil": "yes"}}}}},
            ),
            "patch foreign": lambda: worker.patch_persistent_volume(
                foreign, {"spec": {"persistentVolumeReclaimPolicy": "Delete"}}
            ),
            "create foreign": lambda: worker.create_persistent_volume(
                {**hostpath_pv(created, "kube-system")}
            ),
            "grow own": lambda: worker.patch_persistent_volume(
                own, {"spec": {"capacity": {"storage": "2Gi"}}}
            ),
            "another claim": lambda: worker.patch_persistent_volume(
                own, {"spec": {"claimRef": {"name": "someone-else"}}}
            ),
        }
        for what, attempt in attempts.items():
            with pytest.raises(ApiException) as denied:
                attempt()
            denials[what] = (denied.value.status, str(denied.value.body))
        admin.patch_namespaced_config_map(
            "stsmigrate-volumes", cm, {"data": {"allowHostPath": "false"}}
        )
        with pytest.raises(ApiException) as hostpath:
            worker.create_persistent_volume(hostpath_pv(created, app_namespace))
    finally:
        admin.patch_namespaced_config_map(
            "stsmigrate-volumes", cm, {"data": {"allowHostPath": "true"}}
        )
        for pv in (own, foreign, created):
            with contextlib.suppress(ApiException):
                admin.delete_persistent_volume(pv)
    assert {status for status, _ in denials.values()} == {422}, denials
    assert "keeps every volume it touches Retain" in denials["delete policy"][1]
    assert "changes only replicas, ordinals" in denials["pod template"][1]
    assert "is not claimed from the migrated namespaces" in denials["patch foreign"][1]
    assert "is not claimed from the migrated namespaces" in denials["create foreign"][1]
    assert "may change only the reclaim policy" in denials["grow own"][1]
    assert "may not give it to another claim" in denials["another claim"][1]
    assert hostpath.value.status in (403, 422)
    assert "is a hostPath or local volume" in str(hostpath.value.body)


async def test_the_admission_policy_lets_the_clean_finish_delete_only_what_is_safe(
    clusters: LocalClusters,
    kube: dict[str, client.ApiClient],
    identity: dict[str, str],
    app_namespace: str,
) -> None:
    """As the shipped identity, in the source (whose roles grant the clean finish's
    deletes): a PV that is not Retain may not be deleted, nor a StatefulSet that owns
    an ordinal; an unbound Retain PV of the app may (its storage stays)."""
    side = "source"
    worker = as_worker(clusters, side, identity)
    worker_apps = client.AppsV1Api(api_of(worker_config(clusters, identity), side))
    admin = client.CoreV1Api(kube[side])
    tag = uuid.uuid4().hex[:6]
    deleting, retained = f"deleting-{tag}", f"retained-{tag}"
    doomed = hostpath_pv(deleting, app_namespace)
    doomed["spec"]["persistentVolumeReclaimPolicy"] = "Delete"
    admin.create_persistent_volume(doomed)
    admin.create_persistent_volume(hostpath_pv(retained, app_namespace))
    apply_statefulset(
        kube[side], app_namespace, statefulset(f"owns-{tag}", 1, start=0, templates={})
    )
    try:
        with pytest.raises(ApiException) as pv_denied:
            worker.delete_persistent_volume(deleting)
        with pytest.raises(ApiException) as sts_denied:
            worker_apps.delete_namespaced_stateful_set(f"owns-{tag}", app_namespace)
        worker.delete_persistent_volume(retained)  # allowed: Retain, not Bound
    finally:
        for pv in (deleting, retained):
            with contextlib.suppress(ApiException):
                admin.delete_persistent_volume(pv)
        client.AppsV1Api(kube[side]).delete_namespaced_stateful_set(f"owns-{tag}", app_namespace)
    assert pv_denied.value.status == 422, pv_denied.value.body
    assert "deletes only PersistentVolumes that are Retain and not Bound" in str(
        pv_denied.value.body
    )
    assert sts_denied.value.status == 422, sts_denied.value.body
    # A fenced StatefulSet (as the clean finish leaves it): a sync that replaces it
    # without the finalizer is refused, for anyone; the README's release lets it go.
    fenced = statefulset(f"fenced-{tag}", 0, start=0, templates={})
    fenced["metadata"]["finalizers"] = ["stsmigrate.dev/fence"]
    apps = client.AppsV1Api(kube[side])
    apps.create_namespaced_stateful_set(app_namespace, fenced)
    apps.delete_namespaced_stateful_set(f"fenced-{tag}", app_namespace)
    held: Any = apps.read_namespaced_stateful_set(f"fenced-{tag}", app_namespace)
    replaced = {**fenced, "metadata": {"name": f"fenced-{tag}"}}
    replaced["metadata"]["resourceVersion"] = held.metadata.resource_version
    with pytest.raises(ApiException) as replace_denied:
        apps.replace_namespaced_stateful_set(f"fenced-{tag}", app_namespace, replaced)
    release_fence(kube[side], app_namespace, f"fenced-{tag}")
    with pytest.raises(ApiException) as gone:
        apps.read_namespaced_stateful_set(f"fenced-{tag}", app_namespace)
    assert gone.value.status == 404
    assert replace_denied.value.status == 422, replace_denied.value.body
    assert "is held by the finalizer stsmigrate.dev/fence" in str(replace_denied.value.body)
    assert "deletes a StatefulSet only once it owns no ordinal" in str(sts_denied.value.body)
    assert retained not in {pv.metadata.name for pv in admin.list_persistent_volume().items}
