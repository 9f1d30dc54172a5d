"""The stsmigrate command's pure parts: request building, validation before any
connection, the progress display, and how a process ends (``stsmigrate.api.run``,
shared by the commands, the worker and scripts). (Its commands against a real server
and the real clusters are in tests/cluster/test_operations.py.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console

from contract import OrdinalPlan, OrdinalResult, Plan, Problem, Progress, StepTiming
from stsmigrate.cli import (
    build_request,
    ended_view,
    kubectl_defaults,
    main,
    plan_view,
    progress_view,
    ui_link,
)
from stsmigrate.describe import Child, placement
from tests.support.paths import REPO

FLAGS = {
    "statefulset": None,
    "namespace": None,
    "source_context": None,
    "destination_context": None,
    "destination_namespace": None,
    "storage_class_mapping": (),
    "stop_at_ordinal": None,
    "max_unavailable": None,
    "fix_retention_policy": None,
    "approval_mode": None,
    "approve_ordinals": None,
}


def plan_of(ordinals: list[int], **fields: Any) -> Plan:
    return Plan(
        migration_id="m",
        source_context="a",
        destination_context="b",
        namespace="shop",
        destination_namespace="shop",
        statefulset="redis",
        ordinals=[OrdinalPlan(ordinal=k, pod=f"redis-{k}") for k in ordinals],
        **fields,
    )


def render(renderable: object) -> str:
    console = Console(width=160, record=True)
    console.print(renderable)
    return console.export_text()


def test_a_yaml_file_and_flags_make_one_request(tmp_path: Path) -> None:
    file = tmp_path / "request.yaml"
    file.write_text(
        "statefulset: redis\nnamespace: shop\nsource_context: prod-a\n"
        "destination_context: prod-b\nstorage_class_mapping: {fast: fast-b}\n"
        "timeouts: {pod_ready: 1200}\n"
    )
    request = build_request(
        file,
        **{
            **FLAGS,
            "storage_class_mapping": ("slow=slow-b",),
            "approval_mode": "ordinals",
            "approve_ordinals": "5,3",
            "destination_context": "prod-c",
            "max_unavailable": 3,
        },
    )
    assert request.destination_context == "prod-c" and request.max_unavailable == 3
    assert request.storage_class_mapping == {"fast": "fast-b", "slow": "slow-b"}
    assert (request.approval.mode, request.approval.ordinals) == ("ordinals", [5, 3])
    assert request.timeouts.pod_ready == 1200


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["-s", "Redis", "-n", "shop", "--from", "a", "--to", "b"],
            "statefulset: Value error, 'Redis' is not a valid Kubernetes name",
        ),
        (["-s", "redis", "-n", "shop", "--from", "a"], "destination_context: Field required"),
        (
            ["-s", "redis", "-n", "shop", "--from", "a", "--to", "b", "--storage-class", "x"],
            "use SRC=DST",
        ),
        (
            ["-s", "redis", "-n", "shop", "--from", "a", "--to", "b", "--approval", "ordinals"],
            'approval mode "ordinals" needs a non-empty list',
        ),
        (
            ["-s", "redis", "-n", "shop", "--from", "a", "--to", "b", "--stop-at-ordinal", "-1"],
            "stop_at_ordinal: Input should be greater than or equal to 0",
        ),
        (
            ["-s", "redis", "-n", "shop", "--from", "a", "--to", "b", "--max-unavailable", "0"],
            "max_unavailable: Input should be greater than or equal to 1",
        ),
    ],
)
def test_bad_input_is_refused_before_connecting(args: list[str], message: str) -> None:
    # TEMPORAL_ADDRESS points nowhere: a connection attempt would fail differently.
    runner = CliRunner(env={"TEMPORAL_ADDRESS": "127.0.0.1:1"})
    result = runner.invoke(main, ["start", *args])
    assert result.exit_code == 2
    assert message in result.output


def test_kubectl_stsmigrate_takes_the_current_context_and_its_namespace(tmp_path: Path) -> None:
    """As kubectl does: --context and -n default to the kubeconfig's current context and
    its namespace (KUBECONFIG); stsmigrate itself asks for them."""
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: prod-a\n"
        "clusters: [{name: a, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {}}]\n"
        "contexts:\n- {name: prod-a, context: {cluster: a, user: u, namespace: shop}}\n"
        "- {name: prod-b, context: {cluster: a, user: u}}\n"
    )
    runner = CliRunner(env={"TEMPORAL_ADDRESS": "127.0.0.1:1", "KUBECONFIG": str(kubeconfig)})
    args = ["start", "-s", "Redis", "--to", "prod-b"]
    plugin = runner.invoke(main, args, prog_name="kubectl stsmigrate")
    assert plugin.exit_code == 2
    assert "statefulset: Value error, 'Redis' is not a valid Kubernetes name" in plugin.output
    assert "source_context" not in plugin.output and "namespace" not in plugin.output
    plain = runner.invoke(main, args, prog_name="stsmigrate")
    assert "source_context: Field required" in plain.output
    assert "namespace: Field required" in plain.output
    # Flags win over the kubeconfig.
    flags = {**FLAGS, "statefulset": "redis", "destination_context": "prod-b"}
    request = build_request(None, defaults=kubectl_defaults(str(kubeconfig)), **flags)
    assert (request.source_context, request.namespace) == ("prod-a", "shop")
    request = build_request(
        None,
        defaults=kubectl_defaults(str(kubeconfig)),
        **{**flags, "source_context": "prod-c", "namespace": "web"},
    )
    assert (request.source_context, request.namespace) == ("prod-c", "web")
    assert kubectl_defaults(str(tmp_path / "missing")) == {}


@pytest.mark.parametrize(
    ("content", "message"),
    [("- redis\n", "must hold a mapping of request fields"), ("a: [b\n", "is not valid YAML")],
)
def test_a_bad_request_file_is_refused(tmp_path: Path, content: str, message: str) -> None:
    file = tmp_path / "request.yaml"
    file.write_text(content)
    result = CliRunner().invoke(main, ["plan", "-f", str(file)])
    assert result.exit_code == 2
    assert message in result.output


def test_progress_display_says_what_waits_and_where() -> None:
    progress = Progress(
        phase="awaiting_approval",
        current_ordinal=4,
        waiting_for_approval=4,
        finished=[OrdinalResult(ordinal=5, seconds=3.9, steps=[StepTiming(step="x", seconds=1)])],
        remaining=[4, 3],
        warnings=["hostPath volumes"],
    )
    plan = plan_of([5, 4, 3])
    text = render(progress_view("stsmigrate/a/shop/redis", progress, plan))
    assert "phase: awaiting_approval  ordinals moved: 1/3" in text
    assert "waiting for approval of ordinal 4: stsmigrate approve stsmigrate/a/shop/redis" in text
    rows = [[c.strip() for c in re.split(r"[│|]", ln) if c.strip()] for ln in text.splitlines()]
    rows = [r for r in rows if r and r[0].isdigit()]
    assert rows == [["5", "moved", "3.9"], ["4", "awaiting_approval"], ["3", "waiting"]]
    assert "warning: hostPath volumes" in text


def test_a_failed_or_cancelled_run_says_why_and_where_each_ordinal_runs() -> None:
    failed = Progress(
        phase="failed",
        error="plan_migration: PreflightFailed: preflight found 1 problem(s)",
        placement={"2": "destination", "1": "source"},
    )
    text = render(ended_view("m", failed))
    assert "m failed: plan_migration: PreflightFailed: preflight found 1 problem(s)" in text
    rows = [[c.strip() for c in re.split(r"[│|]", ln) if c.strip()] for ln in text.splitlines()]
    assert [r for r in rows if r and r[0].isdigit()] == [["2", "destination"], ["1", "source"]]
    cancelled = Progress(phase="cancelled", abort_reason="cancel requested from the Temporal UI")
    assert "m cancelled (cancel requested from the Temporal UI)" in render(
        ended_view("m", cancelled)
    )


def test_plan_display_lists_steps_and_blocking_problems() -> None:
    plan = plan_of(
        [1, 0],
        source_replicas=2,
        end=2,
        problems=[Problem(object="storage class fast", message="missing", fix="create it")],
    )
    text = render(plan_view(plan))
    assert "create owning the empty slice [2, 2)" in text
    assert "move redis-1" in text and "move redis-0" in text
    assert "1 blocking problem(s):" in text and "fix: create it" in text

    overridden = plan.model_copy(
        update={"destination_overrides": ['replace /spec/containers/0/image "reg.b/redis:7"']}
    )
    text = render(plan_view(overridden))
    assert "pod template override" in text and '/spec/containers/0/image "reg.b/redis:7"' in text
    assert "pod template override" not in render(plan_view(plan))


def test_ui_links_escape_the_workflow_id() -> None:
    assert ui_link("http://ui:8233/", "default", "stsmigrate/a/shop/redis") == (
        "http://ui:8233/namespaces/default/workflows/stsmigrate%2Fa%2Fshop%2Fredis"
    )


@pytest.mark.parametrize(
    ("body", "code", "stdout", "stderr"),
    [
        ("print('unflushed', end='')", 0, "unflushed", None),
        ("print('partial', end=''); return 3", 3, "partial", None),
        ("raise ValueError('boom')", 1, "", "ValueError: boom"),
        ("raise SystemExit('kubeconfig missing')", 1, "", "kubeconfig missing"),
        ("raise SystemExit(4)", 4, "", None),
        ("logging.getLogger('x').warning('logged')", 0, "", "logged"),
    ],
)
def test_run_ends_the_process_with_the_coroutines_outcome(
    body: str, code: int, stdout: str, stderr: str | None
) -> None:
    """``run`` skips interpreter teardown (os._exit), so whatever it must keep is
    checked here: output still buffered in a pipe, the exit code, the traceback."""
    script = (
        "import logging\n"
        "from stsmigrate.api import run\n"
        "logging.basicConfig()\n"
        f"async def main():\n    {body}\n"
        "run(main())\n"
        "print('after run')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # pipes buffer
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=60,
    )
    assert done.returncode == code, done.stderr
    assert done.stdout == stdout
    if stderr is None:
        assert done.stderr == ""
    else:
        assert stderr in done.stderr


def test_placement_follows_what_each_child_did() -> None:
    """Where each ordinal runs while a migration runs (its result says it at the end):
    the plan's sides, then each child's block moved, given back or in flight."""
    plan = plan_of([2, 1, 0])

    def child(kind: str, ordinals: list[int], status: str = "completed") -> Child:
        result = None
        if status == "completed":
            rows = [OrdinalResult(ordinal=k) for k in ordinals]
            result = rows[0].model_copy(update={"together": rows[1:]})
        return Child.model_validate(
            {
                "workflow_id": f"m/{kind}-{ordinals[0]}",
                "run_id": "r",
                "kind": kind,
                "ordinals": ordinals,
                "status": status,
                "result": result,
            }
        )

    moved, back = child("move", [2, 1]), child("rollback", [1])
    assert placement(plan, []) == {"2": "source", "1": "source", "0": "source"}
    assert placement(plan, [moved]) == {"2": "destination", "1": "destination", "0": "source"}
    assert placement(plan, [moved, back]) == {"2": "destination", "1": "source", "0": "source"}
    again = child("move", [1, 0], status="running")
    assert placement(plan, [moved, back, again]) == {
        "2": "destination",
        "1": "moving",
        "0": "moving",
    }
    undone = child("move", [1, 0]).model_copy(
        update={"result": OrdinalResult(ordinal=1, moved=False, undone=True)}
    )
    assert placement(plan, [moved, back, undone])["1"] == "source"
