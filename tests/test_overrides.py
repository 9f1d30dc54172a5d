"""destination_overrides: the request's refusals (outside the pod template, a credential's
value), the patches applied to the pod template (RFC 7386 and RFC 6902), the selector's
labels kept, what the plan shows, and an existing destination judged by what the
overrides made (no cluster needed)."""

from __future__ import annotations

import copy
from typing import Any, cast

import pytest
from pydantic import ValidationError

from activities import manifests
from activities.kube import Kube
from activities.preflight.dry_runs import check_overrides_stored
from activities.preflight.findings import Findings, SourceSlice
from activities.preflight.overrides import (
    check_overrides,
    check_overrides_keep_selectors,
    check_overrides_kept,
)
from activities.preflight.statefulsets import (
    check_compatible,
    check_destination,
    destination_pods,
)
from contract import MigrationRequest
from contract.request import PodTemplatePatch

BASE = {
    "statefulset": "redis",
    "namespace": "shop",
    "source_context": "a",
    "destination_context": "b",
}
IMAGE = [
    {"op": "test", "path": "/spec/containers/0/name", "value": "redis"},
    {"op": "replace", "path": "/spec/containers/0/image", "value": "reg.b/redis:7.2"},
    {
        "op": "add",
        "path": "/spec/containers/0/env/-",
        "value": {"name": "REDIS_NODES", "value": "6"},
    },
    {"op": "add", "path": "/spec/containers/0/resources", "value": {"limits": {"cpu": "500m"}}},
]
PLACEMENT = {
    "spec": {
        "nodeSelector": {"pool": "b"},
        "tolerations": [{"key": "real", "operator": "Exists", "effect": "NoSchedule"}],
    },
    "metadata": {"annotations": {"moved": "yes", "team": None}},
}


def request(*overrides: dict[str, Any]) -> MigrationRequest:
    return MigrationRequest.model_validate({**BASE, "destination_overrides": list(overrides)})


def source_sts() -> dict[str, Any]:
    return {
        "metadata": {"name": "redis", "namespace": "shop"},
        "spec": {
            "replicas": 2,
            "serviceName": "redis",
            "selector": {
                "matchLabels": {"app": "redis"},
                "matchExpressions": [{"key": "tier", "operator": "Exists"}],
            },
            "template": {
                "metadata": {
                    "labels": {"app": "redis", "tier": "db", "version": "1"},
                    "annotations": {"team": "db"},
                },
                "spec": {
                    "containers": [
                        {
                            "name": "redis",
                            "image": "reg.a/redis:7.2",
                            "env": [{"name": "MODE", "value": "cluster"}],
                        }
                    ],
                    "nodeSelector": {"zone": "a"},
                },
            },
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {}}],
        },
    }


def test_both_kinds_of_patch_reach_the_destination_statefulset_only() -> None:
    src = source_sts()
    r = request({"type": "json", "patch": IMAGE}, {"type": "merge", "patch": PLACEMENT})
    out = manifests.destination_statefulset(src, r, "mig/1", start=2)
    template = out["spec"]["template"]
    (container,) = template["spec"]["containers"]
    assert container["image"] == "reg.b/redis:7.2"
    assert container["env"] == [
        {"name": "MODE", "value": "cluster"},
        {"name": "REDIS_NODES", "value": "6"},
    ]
    assert container["resources"] == {"limits": {"cpu": "500m"}}
    # RFC 7386: maps merge, a list is replaced whole, null removes a key.
    assert template["spec"]["nodeSelector"] == {"zone": "a", "pool": "b"}
    assert template["spec"]["tolerations"] == PLACEMENT["spec"]["tolerations"]
    assert template["metadata"]["annotations"] == {"moved": "yes"}
    assert template["metadata"]["labels"] == {"app": "redis", "tier": "db", "version": "1"}
    # The StatefulSet's own fields are the source's; the source is untouched.
    assert out["spec"]["selector"] == src["spec"]["selector"]
    assert out["spec"]["serviceName"] == "redis"
    assert [t["metadata"]["name"] for t in out["spec"]["volumeClaimTemplates"]] == ["data"]
    assert src == source_sts()
    # Without overrides, the template is the source's.
    plain = manifests.destination_statefulset(src, request(), "mig/1", start=2)
    assert plain["spec"]["template"] == src["spec"]["template"]


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [  # RFC 7386 Appendix A, a selection
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_merge_patch_is_rfc_7386(target: Any, patch: Any, expected: Any) -> None:
    before = copy.deepcopy(target)
    assert manifests.merge_patch(target, patch) == expected
    assert target == before


@pytest.mark.parametrize(
    ("override", "said"),
    [
        ({"type": "merge", "patch": {"spec": {"serviceName": "x"}}}, "spec.serviceName is a field"),
        ({"type": "merge", "patch": {"spec": {"selector": {}}}}, "spec.selector is a field"),
        (
            {"type": "merge", "patch": {"spec": {"volumeClaimTemplates": []}}},
            "spec.volumeClaimTemplates is a field",
        ),
        ({"type": "merge", "patch": {"spec": {"template": {}}}}, "spec.template is a field"),
        ({"type": "merge", "patch": {"metadata": {"name": "x"}}}, "only the pod template's"),
        ({"type": "merge", "patch": {"status": {}}}, "only metadata and spec"),
        ({"type": "merge", "patch": {"spec": None}}, "spec of a merge patch is an object"),
        ({"type": "merge", "patch": [1]}, "a merge patch is an object"),
        ({"type": "json", "patch": {"op": "add"}}, "non-empty list of operations"),
        (
            {"type": "json", "patch": [{"op": "add", "path": "/spec/replicas", "value": 3}]},
            "spec.replicas is a field",
        ),
        ({"type": "json", "patch": [{"op": "remove", "path": "/metadata/name"}]}, "outside"),
        (
            {"type": "json", "patch": [{"op": "replace", "path": "", "value": {}}]},
            "not a JSON pointer",
        ),
        ({"type": "json", "patch": [{"op": "jump", "path": "/spec"}]}, "op is one of"),
        (
            {
                "type": "json",
                "patch": [{"op": "move", "from": "/spec/selector", "path": "/spec/x"}],
            },
            "spec.selector is a field",
        ),
        (
            {
                "type": "json",
                "patch": [
                    {
                        "op": "add",
                        "path": "/spec/containers/0/env/-",
                        "value": {"name": "DB_PASSWORD", "value": "hunter2"},
                    }
                ],
            },
            "env DB_PASSWORD has a value",
        ),
        (
            {
                "type": "json",
                "patch": [
                    {
                        "op": "add",
                        "path": "/spec/containers/-",
                        "value": {"name": "r", "env": [{"name": "api_token", "value": "t"}]},
                    }
                ],
            },
            "env api_token has a value",
        ),
        (
            {
                "type": "json",
                "patch": [
                    {"op": "replace", "path": "/spec/containers/0/env/1/value", "value": "x"}
                ],
            },
            "as a whole entry",
        ),
    ],
)
def test_the_request_refuses_what_an_override_must_not_touch(
    override: dict[str, Any], said: str
) -> None:
    with pytest.raises(ValidationError) as e:
        request(override)
    assert said in str(e.value)


def test_a_credential_from_a_secret_ref_is_accepted() -> None:
    ref = {"valueFrom": {"secretKeyRef": {"name": "redis-auth", "key": "password"}}}
    r = request(
        {
            "type": "json",
            "patch": [
                {
                    "op": "add",
                    "path": "/spec/containers/0/env/-",
                    "value": {"name": "REDIS_PASSWORD", **ref},
                }
            ],
        }
    )
    sts = manifests.with_overrides(source_sts(), r)
    assert (
        sts["spec"]["template"]["spec"]["containers"][0]["env"][-1]["valueFrom"] == ref["valueFrom"]
    )
    # Its Secret is a dependency of the destination's pods.
    needs = manifests.referenced_dependencies(sts["spec"]["template"]["spec"])
    assert needs["Secret"] == {"redis-auth"}


@pytest.mark.parametrize(
    ("override", "said"),
    [
        ({"type": "merge", "patch": {"metadata": {"labels": {"app": "other"}}}}, "label app"),
        ({"type": "merge", "patch": {"metadata": {"labels": {"tier": None}}}}, "label tier"),
        (
            {"type": "json", "patch": [{"op": "replace", "path": "/metadata/labels", "value": {}}]},
            "label app",
        ),
        (
            {
                "type": "json",
                "patch": [{"op": "test", "path": "/spec/containers/0/name", "value": "web"}],
            },
            "operation 0 .test /spec/containers/0/name. does not apply to the source's pod "
            "template: its test found another value there",
        ),
        (
            {
                "type": "json",
                "patch": [{"op": "replace", "path": "/spec/containers/3/image", "value": "x"}],
            },
            "operation 0 .replace /spec/containers/3/image. does not apply to the source's "
            "pod template: a path it names is not there",
        ),
        ({"type": "json", "patch": [{"op": "remove", "path": "/spec"}]}, "without a spec"),
    ],
)
def test_preflight_refuses_an_override_that_does_not_fit_the_source(
    override: dict[str, Any], said: str
) -> None:
    r, f = request(override), Findings()
    with pytest.raises(manifests.OverrideRefused, match=said):
        manifests.destination_statefulset(source_sts(), r, "mig/1", start=2)
    assert check_overrides(source_sts(), r, f) == (None, [])
    assert [p.object for p in f.problems] == ["request destination_overrides"]
    assert said.split(" ")[0] in f.problems[0].message


def test_other_labels_may_change() -> None:
    r = request(
        {"type": "merge", "patch": {"metadata": {"labels": {"version": "2", "moved": "y"}}}}
    )
    labels = manifests.overridden_template(source_sts(), r)["metadata"]["labels"]
    assert labels == {"app": "redis", "tier": "db", "version": "2", "moved": "y"}


def test_the_plan_lists_what_the_overrides_change() -> None:
    f = Findings()
    r = request({"type": "json", "patch": IMAGE}, {"type": "merge", "patch": PLACEMENT})
    pods, changes = check_overrides(source_sts(), r, f)
    assert not f.problems and len(f.warnings) == 1 and "image of container redis" in f.warnings[0]
    assert pods["spec"]["template"]["spec"]["nodeSelector"] == {"zone": "a", "pool": "b"}
    assert sorted(changes) == sorted(
        [
            'replace /spec/containers/0/image "reg.b/redis:7.2"',
            "add /spec/containers/0/env/1 (value withheld)",
            'add /spec/containers/0/resources {"limits":{"cpu":"500m"}}',
            'add /spec/nodeSelector/pool "b"',
            'add /spec/tolerations [{"effect":"NoSchedule","key":"real","operator":"Exists"}]',
            "remove /metadata/annotations/team",
            "add /metadata/annotations/moved (value withheld)",
        ]
    )
    assert check_overrides(source_sts(), request(), f) == (source_sts(), [])


def test_a_dropped_field_of_an_override_is_a_problem() -> None:
    src = source_sts()
    r = request({"type": "merge", "patch": {"spec": {"nodeselector": {"pool": "b"}}}})
    sent = manifests.destination_statefulset(src, r, "mig/1", start=2)
    stored = copy.deepcopy(sent)
    f = Findings()
    check_overrides_stored(stored, src, sent, r, "b", f)
    assert not f.problems
    del stored["spec"]["template"]["spec"]["nodeselector"]
    check_overrides_stored(stored, src, sent, r, "b", f)
    assert len(f.problems) == 1
    assert "b dropped /spec/nodeselector" in f.problems[0].message


def test_an_existing_destination_made_with_the_overrides_is_the_same() -> None:
    """A later run (a resume after a failure, a rollback's re-move) finds the destination
    the first run made: overridden, and not a difference to refuse or warn about."""
    src = source_sts()
    r = request({"type": "json", "patch": IMAGE}, {"type": "merge", "patch": PLACEMENT})
    made = manifests.destination_statefulset(src, r, "mig/1", start=2)
    f = Findings()
    check_compatible(src, made, r, f)
    check_overrides_kept(src, made, r, f)
    assert not f.problems and not f.warnings
    # One made without them (by hand, or by a run with other overrides) is warned about.
    plain = manifests.destination_statefulset(src, request(), "mig/1", start=2)
    check_compatible(src, plain, r, f)
    check_overrides_kept(src, plain, r, f)
    assert not f.problems
    (warning,) = f.warnings
    assert "/spec/containers/0/image" in warning and "/metadata/annotations/team" in warning
    assert "applied only when the run creates it" in warning


def test_a_field_no_pod_template_has_is_a_problem() -> None:
    f = Findings()
    r = request(
        {"type": "merge", "patch": {"spec": {"nodeselector": {"pool": "b"}, "tolerations": "x"}}}
    )
    assert check_overrides(source_sts(), r, f) == (None, [])
    (problem,) = f.problems
    assert problem.message == (
        "the overridden pod template is not one: spec.tolerations: Input should be a valid "
        "list; spec.nodeselector: Extra inputs are not permitted"
    )


def test_a_refusal_quotes_nothing_of_the_template() -> None:
    """jsonpatch's own messages quote the document; a template's literal env value
    must not reach a plan, the history or a log."""
    src = source_sts()
    src["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] = "s3cr3t-value"
    for op in (
        {"op": "test", "path": "/spec/containers/0", "value": {}},
        {"op": "remove", "path": "/spec/containers/0/env/0/nope"},
        {"op": "move", "from": "/spec/containers/0/nope", "path": "/spec/x"},
    ):
        f = Findings()
        check_overrides(src, request({"type": "json", "patch": [op]}), f)
        (problem,) = f.problems
        assert "s3cr3t" not in problem.message and "MODE" not in problem.message
        assert f"({op['op']} {op['path']})" in problem.message


@pytest.mark.parametrize(
    "override",
    [
        {"type": "merge", "patch": {"metadata": {"labels": "app=r"}}},
        {"type": "merge", "patch": {"metadata": {"annotations": ["a"]}}},
        {"type": "json", "patch": [{"op": "add", "path": "/metadata/labels", "value": "x"}]},
        {
            "type": "json",
            "patch": [{"op": "move", "from": "/metadata/labels/app", "path": "/metadata/labels"}],
        },
    ],
)
def test_labels_and_annotations_are_maps(override: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="is a map of names to strings"):
        request(override)


@pytest.mark.parametrize(
    ("patch", "said"),
    [
        (
            {"type": "merge", "patch": {"metadata": {"labels": "app=r"}}},
            "metadata.labels no map",
        ),
        ({"type": "json", "patch": ["s3cr3t"]}, r"destination_overrides\[0\] \(json\) .*"),
        (
            {"type": "json", "patch": [{"op": "add", "path": "/metadata/labels", "value": [1]}]},
            "metadata.labels no map",
        ),
    ],
)
def test_whatever_a_patch_breaks_is_a_refusal(patch: dict[str, Any], said: str) -> None:
    """Past the request's checks (a request made without them): never an AttributeError,
    which preflight would retry for ever; and no value quoted."""
    r = MigrationRequest.model_construct(
        **BASE, destination_overrides=[PodTemplatePatch.model_construct(**patch)]
    )
    with pytest.raises(manifests.OverrideRefused, match=said) as e:
        manifests.overridden_template(source_sts(), r)
    assert "s3cr3t" not in str(e.value)
    f = Findings()
    assert check_overrides(source_sts(), r, f) == (None, [])
    assert len(f.problems) == 1


@pytest.mark.parametrize("field", ["containers", "initContainers", "volumes"])
def test_a_merge_patch_never_replaces_a_list_of_the_pod_whole(field: str) -> None:
    with pytest.raises(ValidationError, match=f"replaces spec.{field} whole .*json patch"):
        request({"type": "merge", "patch": {"spec": {field: [{"name": "redis"}]}}})


def with_volumes() -> dict[str, Any]:
    sts = source_sts()
    pod = sts["spec"]["template"]["spec"]
    pod["containers"][0]["volumeMounts"] = [
        {"name": "data", "mountPath": "/data"},
        {"name": "conf", "mountPath": "/conf"},
    ]
    pod["volumes"] = [{"name": "conf", "configMap": {"name": "redis"}}]
    return sts


@pytest.mark.parametrize(
    ("ops", "said"),
    [
        ([{"op": "remove", "path": "/spec/volumes/0"}], "remove the pod template's volume conf"),
        (
            [{"op": "remove", "path": "/spec/containers/0/volumeMounts/0"}],
            "drop or change a mount of a claim template's volume in containers redis",
        ),
        (
            [
                {
                    "op": "replace",
                    "path": "/spec/containers/0/volumeMounts/0/mountPath",
                    "value": "/x",
                }
            ],
            "drop or change a mount",
        ),
        (
            [{"op": "replace", "path": "/spec/containers/0/name", "value": "other"}],
            "drop or change a mount",
        ),
    ],
)
def test_an_override_keeps_the_volumes_and_the_claims_mounts(
    ops: list[dict[str, Any]], said: str
) -> None:
    f = Findings()
    assert check_overrides(with_volumes(), request({"type": "json", "patch": ops}), f) == (None, [])
    (problem,) = f.problems
    assert said in problem.message
    # Other mounts, and the rest of the container, may change.
    other = [
        {"op": "replace", "path": "/spec/containers/0/volumeMounts/1/mountPath", "value": "/c"},
        {"op": "replace", "path": "/spec/containers/0/image", "value": "reg.b/redis:7.2"},
    ]
    pods, _ = check_overrides(with_volumes(), request({"type": "json", "patch": other}), f)
    assert pods is not None and len(f.problems) == 1


@pytest.mark.parametrize(
    ("op", "said"),
    [
        ({"op": "copy", "from": "/spec/containers/0/env/0", "path": "/spec/x"}, "copy is refused"),
        (
            {"op": "move", "from": "/metadata/annotations/team", "path": "/spec/x"},
            "a move from /metadata/annotations/team to /spec/x is refused",
        ),
        (
            {"op": "move", "from": "/spec/containers/0/env/0/value", "path": "/metadata/labels/x"},
            "a move stays in /spec",
        ),
        (
            {"op": "move", "from": "/spec/containers/0/env/0/value", "path": "/spec/hostname"},
            "a move out of env, args, command or annotations is refused",
        ),
        (
            {"op": "move", "from": "/spec/containers/0/args/0", "path": "/spec/subdomain"},
            "a move out of env",
        ),
    ],
)
def test_no_operation_carries_a_value_of_the_source_into_the_plan(
    op: dict[str, Any], said: str
) -> None:
    with pytest.raises(ValidationError, match=said):
        request({"type": "json", "patch": [op]})


@pytest.mark.parametrize("name", ["REDISCLI_AUTH", "DB_PASS", "aws_credentials", "DB_PASSWORD"])
def test_more_credential_names_are_refused_a_value(name: str) -> None:
    entry = {"name": name, "value": "hunter2"}
    with pytest.raises(ValidationError, match=f"env {name} has a value") as e:
        request(
            {
                "type": "json",
                "patch": [{"op": "add", "path": "/spec/containers/0/env/-", "value": entry}],
            }
        )
    assert "hunter2" not in " ".join(x["msg"] for x in e.value.errors())


def test_the_plan_withholds_env_args_command_and_annotations() -> None:
    r = request(
        {
            "type": "json",
            "patch": [
                {"op": "add", "path": "/spec/containers/0/args", "value": ["--pass", "s3cr3t"]},
                {"op": "add", "path": "/spec/containers/0/command", "value": ["s3cr3t"]},
                {
                    "op": "replace",
                    "path": "/spec/containers/0/env/0",
                    "value": {"name": "MODE", "value": "s3cr3t"},
                },
                {
                    "op": "add",
                    "path": "/spec/containers/-",
                    "value": {"name": "side", "args": ["s3cr3t"]},
                },
                {"op": "add", "path": "/metadata/annotations/note", "value": "s3cr3t"},
            ],
        }
    )
    changes = manifests.override_changes(source_sts(), r)
    assert changes and not [c for c in changes if "s3cr3t" in c]
    assert "add /spec/containers/0/args (value withheld)" in changes
    assert "add /metadata/annotations/note (value withheld)" in changes


@pytest.mark.parametrize("zero", [False, "", 0, [], {}])
def test_a_zero_value_the_server_omits_is_not_dropped(zero: Any) -> None:
    """The API server leaves out a zero value it stores (omitempty): that is no field it
    does not know."""
    src = source_sts()
    r = request(
        {
            "type": "merge",
            "patch": {"spec": {"hostNetwork": zero, "nodeselector": {"pool": "b"}}},
        }
    )
    sent = manifests.destination_statefulset(src, r, "mig/1", start=2)
    stored = copy.deepcopy(sent)
    del stored["spec"]["template"]["spec"]["hostNetwork"]
    f = Findings()
    check_overrides_stored(stored, src, sent, r, "b", f)
    assert not f.problems
    # A field it drops is still named.
    del stored["spec"]["template"]["spec"]["nodeselector"]
    check_overrides_stored(stored, src, sent, r, "b", f)
    assert [p.message.split(" of ")[0] for p in f.problems] == ["b dropped /spec/nodeselector"]


def test_an_existing_destination_without_a_zero_value_is_the_same() -> None:
    src = source_sts()
    r = request({"type": "merge", "patch": {"spec": {"hostNetwork": False}}})
    made = manifests.destination_statefulset(src, r, "mig/1", start=2)
    del made["spec"]["template"]["spec"]["hostNetwork"]  # as the server stores it
    f = Findings()
    check_overrides_kept(src, made, r, f)
    assert not f.warnings
    made["spec"]["template"]["spec"]["hostNetwork"] = True
    check_overrides_kept(src, made, r, f)
    assert len(f.warnings) == 1 and "/spec/hostNetwork" in f.warnings[0]


class SelectorsOnly:
    """The reads check_overrides_keep_selectors makes: the PDBs and the Service."""

    def __init__(self, pdbs: list[dict[str, Any]], service_selector: dict[str, str]) -> None:
        self._pdbs = pdbs
        self._service = {"spec": {"selector": service_selector}}

    def pdbs(self, ns: str) -> list[dict[str, Any]]:
        return self._pdbs

    def dependency(self, kind: str, ns: str, name: str) -> dict[str, Any] | None:
        return self._service if (kind, name) == ("Service", "redis") else None


def test_an_override_may_not_take_the_pods_out_of_their_service_or_budget() -> None:
    sts = source_sts()
    sts["spec"]["template"]["metadata"]["labels"].update(role="cache", team="a")
    pdb = {"metadata": {"name": "redis-pdb"}, "spec": {"selector": {"matchLabels": {"team": "a"}}}}
    kube: Any = SelectorsOnly([pdb], {"app": "redis", "role": "cache"})
    relabel = {"type": "merge", "patch": {"metadata": {"labels": {"role": "db", "team": None}}}}
    r = request(relabel)
    f = Findings()
    overridden, _ = check_overrides(sts, r, f)
    assert f.problems == [] and overridden is not None
    check_overrides_keep_selectors(kube, sts, overridden, r, f)
    said = sorted(p.message for p in f.problems)
    assert said == [
        "the overridden labels take the destination's pods out of PodDisruptionBudget "
        "shop/redis-pdb, which selects the source's (the app's disruption budget)",
        "the overridden labels take the destination's pods out of Service shop/redis, "
        "which selects the source's (the app's DNS names)",
    ]
    # A label neither selects may change.
    fine = Findings()
    other = request({"type": "merge", "patch": {"metadata": {"labels": {"moved": "yes"}}}})
    overridden, _ = check_overrides(sts, other, fine)
    check_overrides_keep_selectors(kube, sts, overridden, other, fine)
    assert fine.problems == []


def test_an_image_change_is_warned_about_for_rollbacks() -> None:
    f = Findings()
    check_overrides(source_sts(), request({"type": "json", "patch": IMAGE}), f)
    assert f.problems == []
    assert f.warnings == [
        "destination_overrides change the image of container redis (reg.a/redis:7.2 -> "
        "reg.b/redis:7.2): a rollback gives an ordinal's volume back to the source's pods, "
        "on reg.a/redis:7.2; make sure it reads what reg.b/redis:7.2 writes"
    ]


def test_the_plan_pins_the_template_it_checked_by_digest() -> None:
    """The digest is of the canonical JSON (key order is no change; a value is)."""
    src = source_sts()
    r = request({"type": "json", "patch": IMAGE})
    made = manifests.destination_statefulset(src, r, "mig/1", start=2)["spec"]["template"]
    checked = manifests.with_overrides(src, r)["spec"]["template"]
    assert manifests.template_digest(made) == manifests.template_digest(checked)
    reordered = dict(reversed(list(checked.items())))
    assert manifests.template_digest(reordered) == manifests.template_digest(checked)
    changed = copy.deepcopy(src)
    changed["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] = "standalone"
    again = manifests.destination_statefulset(changed, r, "mig/1", start=2)["spec"]["template"]
    assert manifests.template_digest(again) != manifests.template_digest(checked)
    assert len(manifests.template_digest(checked)) == 64


class OneStatefulSet:
    """A destination cluster holding one StatefulSet (``check_destination`` reads no more)."""

    def __init__(self, sts: dict[str, Any] | None) -> None:
        self.sts = sts

    def statefulset(self, ns: str, name: str) -> dict[str, Any] | None:
        return self.sts


def test_an_existing_destination_s_template_is_what_its_pods_are_checked_with() -> None:
    """A later run's checks of what the pods need (hooks, dependencies, quota, dry run,
    scheduling) see the destination's template as it is, not the overrides applied to the
    source's again."""
    src = source_sts()
    r = request({"type": "json", "patch": IMAGE})
    overridden, _ = check_overrides(src, r, Findings())
    assert overridden is not None
    source_slice = SourceSlice(sts=src, start=0, replicas=2, templates={"data": None})
    absent = check_destination(cast(Kube, OneStatefulSet(None)), source_slice, r, Findings())
    assert destination_pods(src, overridden, absent) is overridden
    assert destination_pods(src, None, absent) is None
    existing = manifests.destination_statefulset(src, request(), "mig/1", start=2)
    existing["spec"]["template"]["spec"]["containers"][0]["image"] = "reg.b/redis:7.0"
    there = check_destination(cast(Kube, OneStatefulSet(existing)), source_slice, r, Findings())
    pods = destination_pods(src, overridden, there)
    assert pods is not None
    assert pods["spec"]["template"] == existing["spec"]["template"]
    assert pods["spec"]["template"]["spec"]["containers"][0]["image"] == "reg.b/redis:7.0"
    assert pods["metadata"] == src["metadata"]  # the source's namespace: its dependencies
    assert pods["spec"]["volumeClaimTemplates"] == src["spec"]["volumeClaimTemplates"]
    assert destination_pods(src, None, there) is not None  # refused overrides: it is still there
