"""Pure preflight checks of what the destination needs: the ordinals kept by the
StatefulSet's dry run, CSI drivers and secret references, claims outside the claim
templates, and an empty destination's start."""

from __future__ import annotations

from typing import Any

from activities.preflight.csi import csi_needs
from activities.preflight.dry_runs import check_ordinals_kept
from activities.preflight.findings import Findings, SourceSlice
from activities.preflight.listing import Volumes
from activities.preflight.statefulsets import check_template_claims
from contract import MigrationRequest

REQUEST = MigrationRequest(
    statefulset="db", namespace="shop", source_context="a", destination_context="b"
)


def test_ordinals_dropped_by_the_destination_are_a_problem() -> None:
    f = Findings()
    check_ordinals_kept(
        {"metadata": {"name": "db"}, "spec": {"ordinals": {"start": 6}}}, 6, "b", "shop", f
    )
    assert not f.problems
    check_ordinals_kept({"metadata": {"name": "db"}, "spec": {}}, 6, "b", "shop", f)
    assert len(f.problems) == 1
    assert "dropped spec.ordinals.start=6" in f.problems[0].message
    assert "StatefulSetStartOrdinal" in f.problems[0].fix


def test_csi_needs_each_driver_and_secret_once() -> None:
    def pv(name: str, **csi: Any) -> dict[str, Any]:
        return {"metadata": {"name": name}, "spec": {"csi": {"driver": "d.example", **csi}}}

    ref = {"namespace": "kube-system", "name": "creds"}
    drivers, secrets = csi_needs(
        [
            pv("pv-1", nodeStageSecretRef=ref),
            pv(
                "pv-2",
                nodeStageSecretRef=ref,
                controllerExpandSecretRef={"namespace": "x", "name": "y"},
            ),
            {"metadata": {"name": "pv-3"}, "spec": {"hostPath": {"path": "/a"}}},
        ]
    )
    assert drivers == {"d.example": "pv-1"}
    assert secrets == {
        ("kube-system", "creds"): "pv-1 (nodeStageSecretRef)",
        ("x", "y"): "pv-2 (controllerExpandSecretRef)",
    }


def test_claims_outside_the_templates() -> None:
    sts = {
        "spec": {
            "template": {
                "spec": {
                    "volumes": [
                        {"name": "data", "persistentVolumeClaim": {"claimName": "data-db-0"}},
                        {"name": "shared", "persistentVolumeClaim": {"claimName": "shared"}},
                        {"name": "other", "persistentVolumeClaim": {"claimName": "there"}},
                    ]
                }
            }
        }
    }
    source = SourceSlice(sts=sts, start=0, replicas=1, templates={"data": None})
    f = Findings()
    check_template_claims(source, Volumes(claims={"there": {}}), REQUEST, f)
    assert [p.message.split(" (")[0] for p in f.problems] == [
        "its pod template mounts claim shared"
    ]
    assert "create PersistentVolumeClaim shop/shared" in f.problems[0].fix
    assert len(f.warnings) == 1 and "claim there" in f.warnings[0]
