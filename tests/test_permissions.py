"""The permission table is the one source: deploy/rbac.yaml is what it renders, and
preflight checks exactly its verbs. (That the table is what the code does is proven
on the clusters: tests/cluster/test_least_privilege.py.)"""

from __future__ import annotations

from typing import Any

import yaml
from click.testing import CliRunner

from activities import permissions
from stsmigrate.cli import main
from tests.support.paths import REPO


def test_deploy_rbac_is_what_the_table_renders() -> None:
    assert (REPO / "deploy" / "rbac.yaml").read_text() == permissions.render_rbac(), (
        "deploy/rbac.yaml is stale: run `stsmigrate rbac > deploy/rbac.yaml`"
    )


def test_preflight_checks_every_verb_of_the_table() -> None:
    """Every verb, those of the clean finish only for a request with cleanup."""
    for side in ("source", "destination"):
        table = {
            (v, r.resource, r.group, r.namespaced)
            for r in permissions.RULES
            if r.side == side
            for v in r.verbs
        }
        cleanup = {
            (v, r.resource, r.group, r.namespaced)
            for r in permissions.RULES
            if r.side == side and r.paths == ("cleanup",)
            for v in r.verbs
        }
        assert bool(cleanup) == (side == "source"), side  # the destination only patches
        with_cleanup = permissions.needed(side, cleanup=True)
        assert set(with_cleanup) == table and len(with_cleanup) == len(table)
        assert set(permissions.needed(side, cleanup=False)) == table - cleanup
        assert set(permissions.for_cleanup(side)) == cleanup


def test_every_rule_says_why_and_grants_no_deletion_of_storage() -> None:
    """A PV may be deleted only by the clean finish, in the source (whose Released PVs
    are Retain: the object goes, never the storage; deploy/admission.yaml holds it to
    that)."""
    for rule in permissions.RULES:
        assert len(rule.why) > 30, rule
        if rule.resource == "persistentvolumes" and "delete" in rule.verbs:
            assert (rule.side, rule.verbs, rule.paths) == ("source", ("delete",), ("cleanup",))
        assert rule.paths, rule


def docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def test_rendered_roles_are_bound_in_the_given_namespaces_and_narrowed_by_name() -> None:
    rendered = docs(permissions.render_rbac("shop", "shop-new", "db"))
    bindings = {d["metadata"]["name"]: d for d in rendered if d["kind"] == "RoleBinding"}
    assert bindings["stsmigrate-source-namespaced"]["metadata"]["namespace"] == "shop"
    assert bindings["stsmigrate-destination-namespaced"]["metadata"]["namespace"] == "shop-new"
    roles = {d["metadata"]["name"]: d for d in rendered if d["kind"] == "ClusterRole"}
    sts = [
        rule
        for rule in roles["stsmigrate-destination-namespaced"]["rules"]
        if rule["resources"] == ["statefulsets"]
    ]
    # create cannot be scoped by name: it keeps a rule of its own.
    assert sts == [
        {
            "apiGroups": ["apps"],
            "resources": ["statefulsets"],
            "verbs": ["get", "patch"],
            "resourceNames": ["db"],
        },
        {"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": ["create"]},
    ]
    for doc in rendered:
        assert doc["metadata"]["labels"][permissions.SIDE_LABEL] in ("source", "destination")
    placeholders = permissions.render_rbac()
    assert "APP_NAMESPACE" in placeholders and "DESTINATION_NAMESPACE" in placeholders
    bound = docs(permissions.render_rbac("shop"))
    assert {d["metadata"].get("namespace") for d in bound if d["kind"] == "RoleBinding"} == {"shop"}


def test_stsmigrate_rbac_prints_the_roles_for_the_given_namespaces() -> None:
    out = CliRunner().invoke(main, ["rbac", "-n", "shop", "-s", "db"])
    assert out.exit_code == 0, out.output
    assert out.output == permissions.render_rbac("shop", "shop", "db")
    assert CliRunner().invoke(main, ["rbac"]).output == (REPO / "deploy" / "rbac.yaml").read_text()
