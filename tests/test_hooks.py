"""Hooks: the request's validation, what a failure may quote, and where the hooks run in
the hand-over (fakes on the real Temporal server: workflow order, pauses, undo).

The exec itself, in a real pod under the shipped roles: tests/cluster/test_hooks.py
(make real)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError
from temporalio.testing import WorkflowEnvironment

from activities import errors
from activities.hooks import quoted_tail, redact, secret_names
from activities.kube import _exit_status, _tail
from contract import SEARCH_ATTRIBUTES, HealthGates, Hook, Hooks, MigrationRequest, Probe
from contract.errors import FORBIDDEN
from stsmigrate.api import Migration
from tests.support.fakes import ORDINALS, FakeClusters, FakeProbes, fake_worker, start
from tests.support.histories import histories, record

FAILOVER = Hook(name="failover", command=["sh", "-c", "redis-cli -h {pod_ip} cluster failover"])
SYNCED = Hook(name="synced", command=["sh", "-c", "true"], retries=0)


def request(**hooks: list[Hook]) -> MigrationRequest:
    return MigrationRequest(
        statefulset="redis",
        namespace="shop",
        source_context="a",
        destination_context="b",
        hooks=Hooks(**hooks),
    )


# -- the request ------------------------------------------------------------------------


def test_a_hook_with_an_unknown_placeholder_is_refused_before_anything_starts() -> None:
    with pytest.raises(ValidationError, match=r"unknown placeholder 'ip'; use ordinal, pod"):
        Hook(name="x", command=["redis-cli", "-h", "{ip}"])


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"name": "x", "command": []}, "at least 1 item"),
        ({"name": "Fail Over", "command": ["true"]}, "should match pattern"),
        ({"name": "x", "command": ["true"], "timeout": 0}, "greater than or equal to 1"),
        ({"name": "x", "command": ["true"], "password": "p"}, "Extra inputs are not permitted"),
    ],
)
def test_bad_hooks_are_refused(fields: dict[str, object], said: str) -> None:
    with pytest.raises(ValidationError, match=said):
        Hook.model_validate(fields)


def test_a_placeholder_with_an_attribute_is_refused_clearly() -> None:
    with pytest.raises(ValidationError, match="unknown placeholder"):
        Hook(name="x", command=["echo", "{pod.name}"])


def test_two_hooks_of_one_phase_may_not_share_a_name() -> None:
    with pytest.raises(ValidationError, match="hook name 'failover' is used twice"):
        request(before_give_up=[FAILOVER, FAILOVER])
    # One in each phase is fine.
    assert request(before_give_up=[FAILOVER], after_take=[FAILOVER]).hooks.configured
    assert not request().hooks.configured


# -- what a failure may say (invariant I5) ----------------------------------------------


def test_every_secret_a_pod_refers_to_is_found() -> None:
    pod = {
        "spec": {
            "initContainers": [{"envFrom": [{"secretRef": {"name": "init-env"}}]}],
            "containers": [
                {
                    "env": [
                        {"name": "A", "value": "plain"},
                        {"name": "P", "valueFrom": {"secretKeyRef": {"name": "auth", "key": "p"}}},
                        {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "c"}}},
                    ]
                }
            ],
            "volumes": [
                {"name": "tls", "secret": {"secretName": "tls"}},
                {"name": "p", "projected": {"sources": [{"secret": {"name": "projected"}}]}},
                {"name": "c", "configMap": {"name": "cm"}},
            ],
        }
    }
    assert secret_names(pod) == {"init-env", "auth", "tls", "projected"}


def test_a_failure_quotes_the_end_of_the_output_with_every_secret_value_masked() -> None:
    password = "s3cret-Passw0rd"
    output = f"connecting with {password}\n(error) ERR no replica\x1b[0m\n".encode()
    said = quoted_tail(output, [password, "ab"])
    assert said == "it said: connecting with *** (error) ERR no replica [0m"
    assert password not in said
    # A value cut at the 300 characters' edge is masked before the cut.
    long = (b"x" * 400) + password.encode()
    assert password[:5] not in quoted_tail(long, [password])
    # Secrets that could not be read: nothing of the output is quoted.
    assert "withheld" in quoted_tail(output, None) and password not in quoted_tail(output, None)
    assert quoted_tail(b"  \n", []) == "no output"
    assert redact("aaa-longer aaa", ["aaa", "aaa-longer"]) == "*** aaa"  # 3 chars: too short


def test_the_exec_apis_status_gives_the_exit_code() -> None:
    assert _exit_status('{"status": "Success"}') == (0, "")
    failure = (
        '{"status": "Failure", "reason": "NonZeroExitCode", "message": "command terminated '
        'with non-zero exit code: error executing command [false], exit code 3", "details": '
        '{"causes": [{"reason": "ExitCode", "message": "3"}]}}'
    )
    assert _exit_status(failure) == (3, "")
    not_run = '{"status": "Failure", "message": "exec: \\"sh\\": executable file not found"}'
    assert _exit_status(not_run) == (-1, 'exec: "sh": executable file not found')
    # No status at all: the connection closed before the command ended.
    assert _exit_status("") == (None, "the connection closed without the command's exit status")


def test_a_cut_output_starts_at_a_whole_line() -> None:
    # A Secret's value cut in half at the window's start would not be recognised.
    assert _tail(b"ret-value\nnext line\nlast", cut=True) == b"next line\nlast"
    assert _tail(b"no newline at all", cut=True) == b"(one line longer than 4096 bytes: withheld)"
    assert _tail(b"whole\nbuffer", cut=False) == b"whole\nbuffer"


def test_a_refused_exec_handshake_is_a_403_not_an_unreachable_cluster() -> None:
    body = '{"kind":"Status","status":"Failure","message":"pods \\"redis-0\\" is forbidden: User \\"x\\" cannot get resource \\"pods/exec\\"","reason":"Forbidden","code":403}'  # noqa: E501
    # websocket-client 1.8's text (the body decoded), and earlier releases' (a bytes repr).
    for shown in (body, str(body.encode())):
        raised = ApiException(
            status=0,
            reason=f"Handshake status 403 Forbidden -+-+- {{'audit-id': 'a'}} -+-+- {shown}",
        )
        typed = errors.classify(errors.handshake_status(raised), "exec in Pod shop/redis-0")
        assert typed.type == FORBIDDEN and typed.non_retryable
        assert 'cannot get resource "pods/exec"' in typed.message, typed.message
        assert "audit-id" not in typed.message
    refused = errors.handshake_status(ApiException(status=0, reason="[Errno 111] refused 10.0.0.1"))
    assert refused.status == 0 and "10.0.0.1" not in str(refused.reason)


# -- where the hooks run in the hand-over (fakes) ---------------------------------------


@pytest_asyncio.fixture
async def fake(temporal_env: WorkflowEnvironment) -> AsyncIterator[tuple[FakeClusters, str]]:
    clusters = FakeClusters(list(SEARCH_ATTRIBUTES))
    task_queue = f"hooks-{uuid.uuid4().hex[:8]}"
    async with fake_worker(temporal_env.client, task_queue, clusters.activities()):
        yield clusters, task_queue
        clusters.healthy.set()


async def test_hooks_run_in_the_givers_pod_before_it_gives_k_up_and_the_takers_after(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, str]
) -> None:
    clusters, task_queue = fake
    migration, _ = await start(
        temporal_env.client,
        task_queue,
        hooks=Hooks(before_give_up=[FAILOVER], after_take=[SYNCED]),
    )
    result = await migration.result()
    assert [r.ordinal for r in result.moved] == ORDINALS
    hooks = [c for c in clusters.changes if c.startswith("hook")]
    assert hooks == [
        f"hook {name} {side} {k}"
        for k in ORDINALS
        for name, side in (("failover", "source"), ("synced", "destination"))
    ]
    # Ordinal 1: the failover in the source while it still owns 1, the check after the
    # destination took it.
    source_gives = clusters.changes.index("source [0, 1)")
    assert clusters.changes.index("hook failover source 1") < source_gives
    assert clusters.changes.index("hook synced destination 1") > clusters.changes.index(
        "destination [1, 3)"
    )
    record("hooks_parent", (await histories(temporal_env, migration.id))[0])
    record("hooks_ordinal", (await histories(temporal_env, migration.id))[2])


async def failing_failover_at_1(
    temporal_env: WorkflowEnvironment, clusters: FakeClusters, task_queue: str
) -> Migration:
    """A migration whose failover hook fails once, with no retry, in the source's pod 1."""
    clusters.hook_failures[("failover", "source", 1)] = 1
    hook = FAILOVER.model_copy(update={"retries": 0})
    migration, _ = await start(temporal_env.client, task_queue, hooks=Hooks(before_give_up=[hook]))
    return migration


async def test_a_failing_before_give_up_hook_pauses_with_k_in_the_source_and_resume_runs_it(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, str]
) -> None:
    clusters, task_queue = fake
    migration = await failing_failover_at_1(temporal_env, clusters, task_queue)
    held = await migration.wait_until(lambda p: bool(p.blocked), within=30)
    assert (held.phase, held.current_ordinal) == ("paused", 1)
    assert "ordinal 1 before_give_up is blocked: hook failover: exit 1" in held.blocked
    assert "[HookFailed; to fix: see what the hook said" in held.blocked
    await asyncio.sleep(1)
    assert clusters.slices == {"source": (0, 2), "destination": (2, 1)}  # 1 not given up
    await migration.resume()
    result = await migration.result()
    assert [r.ordinal for r in result.moved] == ORDINALS
    assert [c for c in clusters.changes if "failover source 1" in c] == [
        "hook failover source 1 failed",
        "hook failover source 1",
    ]
    record("hooks_blocked_before_parent", (await histories(temporal_env, migration.id))[0])


async def test_a_resumed_before_give_up_runs_every_hook_again_from_the_first(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, str]
) -> None:
    clusters, task_queue = fake
    clusters.hook_failures[("synced", "source", 2)] = 1
    migration, _ = await start(
        temporal_env.client, task_queue, hooks=Hooks(before_give_up=[FAILOVER, SYNCED])
    )
    await migration.wait_until(lambda p: bool(p.blocked) and p.phase == "paused", within=30)
    await migration.resume()
    result = await migration.result()
    assert [r.ordinal for r in result.moved] == ORDINALS
    assert [c for c in clusters.changes if c.endswith(" 2") or c.endswith("2 failed")][:4] == [
        "hook failover source 2",
        "hook synced source 2 failed",
        "hook failover source 2",  # the failover again: it may have worn off meanwhile
        "hook synced source 2",
    ]


async def test_an_abort_while_a_before_give_up_hook_runs_cancels_it_and_moves_nothing(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, str]
) -> None:
    clusters, task_queue = fake
    clusters.hook_holds["failover"] = asyncio.Event()  # a failover that takes long
    migration, _ = await start(
        temporal_env.client, task_queue, hooks=Hooks(before_give_up=[FAILOVER])
    )
    await migration.wait_until(
        lambda p: "hook failover source 2 begun" in clusters.changes, within=30
    )
    await migration.abort("not today")
    result = await asyncio.wait_for(migration.result(), 30)  # not held by the hook
    assert result.aborted and result.moved == []
    assert clusters.slices == {"source": (0, 3), "destination": (3, 0)}
    clusters.hook_holds["failover"].set()
    record("hooks_aborted_parent", (await histories(temporal_env, migration.id))[0])
    record("hooks_aborted_ordinal", (await histories(temporal_env, migration.id))[1])


async def test_an_abort_of_a_failed_before_give_up_hook_leaves_k_in_the_source(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, str]
) -> None:
    clusters, task_queue = fake
    migration = await failing_failover_at_1(temporal_env, clusters, task_queue)
    await migration.wait_until(lambda p: bool(p.blocked) and p.phase == "paused", within=30)
    await migration.abort("the replica is not ready")
    result = await migration.result()
    assert result.aborted and [r.ordinal for r in result.moved] == [2]
    assert clusters.slices == {"source": (0, 2), "destination": (2, 1)}


async def test_a_failing_after_take_hook_pauses_with_k_moved_and_a_rollback_puts_it_back(
    temporal_env: WorkflowEnvironment, fake: tuple[FakeClusters, str]
) -> None:
    clusters, task_queue = fake
    clusters.hook_failures[("synced", "destination", 1)] = 5
    migration, _ = await start(temporal_env.client, task_queue, hooks=Hooks(after_take=[SYNCED]))
    held = await migration.wait_until(lambda p: bool(p.blocked), within=30)
    assert "ordinal 1 after_take is blocked: hook synced: exit 1" in held.blocked
    assert clusters.slices == {"source": (0, 1), "destination": (1, 2)}  # moved, one pod 1
    await migration.rollback(reason="1 never caught up")
    back = await migration.wait_until(
        lambda p: p.phase == "paused" and not p.blocked and clusters.slices["source"] == (0, 2),
        within=60,
    )
    assert back.current_ordinal is not None
    assert clusters.slices == {"source": (0, 2), "destination": (2, 1)}
    await migration.abort("done for today")
    result = await migration.result()
    assert result.aborted and [r.ordinal for r in result.moved] == [2]
    found = await histories(temporal_env, migration.id)
    record("hooks_blocked_after_parent", found[0])
    record("hooks_blocked_after_ordinal_1", found[2])


async def test_a_rollback_runs_the_hooks_with_the_sides_swapped(
    temporal_env: WorkflowEnvironment,
) -> None:
    """A health gate's rollback gives k back: before_give_up in the destination's pod k,
    after_take in the source's once it is Ready there again."""
    clusters, probes = FakeClusters(list(SEARCH_ATTRIBUTES)), FakeProbes()
    probes.failing = {1}
    task_queue = f"hooks-{uuid.uuid4().hex[:8]}"
    activities = [*clusters.activities(), *probes.activities()]
    async with fake_worker(temporal_env.client, task_queue, activities):
        migration, _ = await start(
            temporal_env.client,
            task_queue,
            hooks=Hooks(before_give_up=[FAILOVER], after_take=[SYNCED]),
            health=HealthGates(probes=[Probe(kind="ready")], on_failure="rollback_ordinal"),
        )
        held = await migration.wait_until(lambda p: p.phase == "paused", within=60)
        assert held.rolled_back == [1], held
        back = clusters.changes[clusters.changes.index("hook synced destination 1") + 1 :]
        assert [c for c in back if c.startswith("hook")] == [
            "hook failover destination 1",
            "hook synced source 1",
        ]
        gives = back.index("destination [2, 3)")
        assert back.index("hook failover destination 1") < gives
        assert back.index("hook synced source 1") > back.index("source [0, 2)")
        await migration.abort("1 stays in the source")
        result = await migration.result()
        assert result.aborted and clusters.slices == {"source": (0, 2), "destination": (2, 1)}
        found = await histories(temporal_env, migration.id)
    rollback = [h for h in found if h.workflow_id.endswith("/rollback-1")]
    assert len(rollback) == 1
    record("hooks_rollback_parent", found[0])
    record("hooks_rollback_1", rollback[0])


def test_no_hook_is_in_a_request_that_names_none() -> None:
    # The default: a request without hooks runs none and needs no pods/exec.
    plain = request()
    assert plain.hooks == Hooks() and plain.model_dump()["hooks"] == {
        "before_give_up": [],
        "after_take": [],
    }
