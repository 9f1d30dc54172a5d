"""Other writers of the StatefulSet: what preflight refuses and warns about, against a
tiny fake of the API (no cluster needed; the real clusters are in
tests/cluster/test_bad_input_writers.py)."""

from __future__ import annotations

from typing import Any, cast

import pytest
from temporalio.exceptions import ApplicationError

from activities.kube import Kube
from activities.preflight.findings import Findings
from activities.preflight.writers import (
    SCALED_OBJECTS,
    VERTICAL_AUTOSCALERS,
    check_autoscalers,
    check_owner,
    gitops_warnings,
)
from contract import MigrationRequest
from contract.errors import FORBIDDEN

REQUEST = MigrationRequest(
    statefulset="db", namespace="shop", source_context="a", destination_context="b"
)


class FakeKube:
    """The two reads of check_autoscalers; a missing group/version is [] as in Kube."""

    context = "a"

    def __init__(self, hpas: list[Any], served: dict[tuple[str, str, str], list[Any]]) -> None:
        self._hpas, self._served = hpas, served

    def autoscalers(self, ns: str) -> list[Any]:
        if self._hpas == ["forbidden"]:
            raise ApplicationError("403", type=FORBIDDEN, non_retryable=True)
        return self._hpas

    def custom_objects(self, group: str, version: str, plural: str, ns: str) -> list[Any]:
        return self._served.get((group, version, plural), [])


def obj(name: str, spec: dict[str, Any], annotations: dict[str, str] | None = None) -> Any:
    return {"metadata": {"name": name, "annotations": annotations or {}}, "spec": spec}


STS_REF = {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db"}
CASES: list[tuple[str, list[Any], dict[Any, list[Any]], list[str]]] = [
    ("nothing", [], {}, []),
    (
        "HPA",
        [obj("db-hpa", {"scaleTargetRef": STS_REF})],
        {},
        ["source HorizontalPodAutoscaler shop/db-hpa", "kubectl --context a -n shop delete hpa"],
    ),
    (
        "HPA of another StatefulSet",
        [obj("x", {"scaleTargetRef": {**STS_REF, "name": "o"}})],
        {},
        [],
    ),
    (
        "HPA of a Deployment",
        [obj("x", {"scaleTargetRef": {**STS_REF, "kind": "Deployment"}})],
        {},
        [],
    ),
    (
        "KEDA's HPA",
        [
            {
                "metadata": {
                    "name": "keda-hpa-db-so",
                    "labels": {"scaledobject.keda.sh/name": "db-so"},
                },
                "spec": {"scaleTargetRef": STS_REF},
            }
        ],
        {},
        [
            "HorizontalPodAutoscaler shop/keda-hpa-db-so",
            "it is KEDA's, for ScaledObject db-so",
            "annotate scaledobject db-so",
        ],
    ),
    (
        "ScaledObject",
        [],
        {SCALED_OBJECTS: [obj("db-so", {"scaleTargetRef": STS_REF})]},
        ["source KEDA ScaledObject shop/db-so", 'autoscaling.keda.sh/paused="true"'],
    ),
    (
        "paused ScaledObject",
        [],
        {
            SCALED_OBJECTS: [
                obj("db-so", {"scaleTargetRef": STS_REF}, {"autoscaling.keda.sh/paused": "true"})
            ]
        },
        [],
    ),
    (
        "VPA without updatePolicy",
        [],
        {VERTICAL_AUTOSCALERS: [obj("db-vpa", {"targetRef": STS_REF})]},
        ["source VerticalPodAutoscaler shop/db-vpa", "updateMode Auto", "updateMode Off"],
    ),
    (
        "VPA Initial",
        [],
        {
            VERTICAL_AUTOSCALERS: [
                obj("v", {"targetRef": STS_REF, "updatePolicy": {"updateMode": "Initial"}})
            ]
        },
        ["with updateMode Initial"],
    ),
    (
        "VPA Off",
        [],
        {
            VERTICAL_AUTOSCALERS: [
                obj("v", {"targetRef": STS_REF, "updatePolicy": {"updateMode": "Off"}})
            ]
        },
        [],
    ),
    (
        "HPA list forbidden",
        ["forbidden"],
        {},
        ["source cluster a", "may not: list horizontalpodautoscalers", "deploy/rbac.yaml"],
    ),
]


@pytest.mark.parametrize(
    ("hpas", "served", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_autoscalers(hpas: list[Any], served: dict[Any, list[Any]], expected: list[str]) -> None:
    f = Findings()
    check_autoscalers(cast(Kube, FakeKube(hpas, served)), "source", "shop", "db", f)
    text = "\n".join(f"{p.object}: {p.message} (fix: {p.fix})" for p in f.problems)
    assert bool(f.problems) is bool(expected), text
    for part in expected:
        assert part in text, text


def sts(**meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": "db", "namespace": "shop", **meta}}


OWNER = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "name": "operator",
    "uid": "u",
    "controller": True,
}


def test_a_controller_owner_is_refused_unless_paused() -> None:
    f = Findings()
    check_owner(sts(ownerReferences=[OWNER]), REQUEST, f)
    (problem,) = f.problems
    assert problem.object == "source StatefulSet shop/db"
    assert "controlled by ConfigMap operator" in problem.message
    assert "then set owner_paused: true" in problem.fix
    paused = Findings()
    check_owner(
        sts(ownerReferences=[OWNER]), REQUEST.model_copy(update={"owner_paused": True}), paused
    )
    assert not paused.problems and "owner_paused: true" in paused.warnings[0]


def test_an_owner_that_is_not_the_controller_is_no_writer() -> None:
    f = Findings()
    check_owner(sts(ownerReferences=[{**OWNER, "controller": False}]), REQUEST, f)
    check_owner(sts(), REQUEST, f)
    assert not f.problems and not f.warnings


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({}, []),
        (
            {"annotations": {"argocd.argoproj.io/tracking-id": "shop:apps/StatefulSet:shop/db"}},
            ["Argo CD Application shop", "argocd app set shop --sync-policy none", "selfHeal"],
        ),
        (
            {"annotations": {"argocd.argoproj.io/tracking-id": "team_shop:apps/StatefulSet:x/db"}},
            ["argocd app set team/shop --sync-policy none"],
        ),
        (
            {"labels": {"app.kubernetes.io/instance": "shop-db"}},
            ["Argo CD Application shop-db (label app.kubernetes.io/instance)"],
        ),
        (
            {
                "labels": {
                    "kustomize.toolkit.fluxcd.io/name": "apps",
                    "kustomize.toolkit.fluxcd.io/namespace": "flux-system",
                }
            },
            [
                "Flux Kustomization flux-system/apps",
                "flux suspend kustomization apps -n flux-system",
            ],
        ),
        (
            {
                "labels": {
                    "helm.toolkit.fluxcd.io/name": "db",
                    "helm.toolkit.fluxcd.io/namespace": "shop",
                }
            },
            ["Flux HelmRelease shop/db", "flux suspend helmrelease db -n shop"],
        ),
        # Half a Flux pair names no object.
        ({"labels": {"helm.toolkit.fluxcd.io/name": "db"}}, []),
    ],
)
def test_gitops_ownership_is_warned_with_its_pause(
    meta: dict[str, Any], expected: list[str]
) -> None:
    warnings = gitops_warnings(sts(**meta))
    assert bool(warnings) is bool(expected), warnings
    for part in expected:
        assert part in "\n".join(warnings), warnings
    assert all(w.startswith("source StatefulSet shop/db is ") for w in warnings)
