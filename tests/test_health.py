"""Health probes against real peers on loopback: an HTTP server, a TCP listener, a
command, and a real Redis Cluster made of Debian's redis-server (three masters,
created with redis-cli --cluster create), healthy and with a node stopped."""

from __future__ import annotations

import base64
import http.server
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHistory
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.health import HealthActivities, Password, probe_environment
from contract import SEARCH_ATTRIBUTES, HealthGates, HealthReport, Probe, ProbeInput, SecretKeyRef
from devenv.clusters import free_port
from tests.support.fakes import ORDINALS, FakeClusters, at, fake_worker, start
from tests.support.histories import histories
from tests.support.redis_cluster import RedisCluster, started_redis


def run_probes(*probes: Probe, allow_commands: bool = False, ordinal: int = 3) -> HealthReport:
    task = ProbeInput(
        probes=list(probes),
        context="nowhere",
        namespace="shop",
        statefulset="redis",
        service="redis-headless",
        ordinal=ordinal,
    )
    return ActivityEnvironment().run(HealthActivities({}, allow_commands).probe_ordinal, task)


@pytest.fixture(scope="module")
def http_server() -> Iterator[str]:
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(200 if self.path.startswith("/ok/") else 503)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_probe_is_templated_and_checks_the_status(http_server: str) -> None:
    ok = Probe(kind="http", url=http_server + "/ok/{pod}.{service}.{namespace}/{ordinal}")
    bad = Probe(kind="http", name="readiness", url=http_server + "/broken", retries=1, interval=0)
    report = run_probes(ok, bad)
    assert report.results[0].ok
    assert report.results[0].detail == f"GET {http_server}/ok/redis-3.redis-headless.shop/3: 200"
    assert not report.results[1].ok and report.results[1].attempts == 2
    assert "status 503, expected 200" in report.results[1].detail
    assert not report.ok and report.failures.startswith("readiness: GET")


def test_tcp_probe_connects_or_says_why() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        report = run_probes(
            Probe(kind="tcp", host="127.0.0.1", port=port),
            Probe(kind="tcp", host="127.0.0.1", port=free_port(), retries=0),
        )
    finally:
        listener.close()
    assert report.results[0].ok
    assert not report.results[1].ok and "Connection refused" in report.results[1].detail


def test_command_probes_run_only_where_the_worker_allows_them() -> None:
    probes = [
        Probe(kind="command", command=["true"]),
        Probe(kind="command", command=["sh", "-c", "exit {ordinal}"], retries=0),
    ]
    allowed = run_probes(*probes, allow_commands=True)
    assert allowed.results[0].ok and not allowed.results[1].ok
    assert allowed.results[1].detail == "sh exited 3"
    refused = run_probes(probes[0], allow_commands=False)
    assert not refused.ok and "STSMIGRATE_ALLOW_COMMAND_PROBES=1" in refused.failures


# What the worker's environment holds (worker.py, stsmigrate/codec.py codec_from_env,
# temporalio.envconfig): none of it may reach a command probe.
WORKER_SECRETS = {
    "STSMIGRATE_CODEC_KEY": "c2VjcmV0LWNvZGVjLWtleS0zMi1ieXRlcy1sb25nISE=",
    "STSMIGRATE_CODEC_KEY_FILE": "/etc/stsmigrate/codec-key",
    "STSMIGRATE_KUBECONFIG": "/etc/stsmigrate/kubeconfig",
    "KUBECONFIG": "/root/.kube/config",
    "TEMPORAL_API_KEY": "temporal-api-key-value",
    "TEMPORAL_TLS_CLIENT_KEY_PATH": "/etc/temporal/tls.key",
    "TEMPORAL_TLS_CLIENT_KEY_DATA": "-----BEGIN PRIVATE KEY-----",
    "TEMPORAL_TLS_CLIENT_CERT_PATH": "/etc/temporal/tls.crt",
    "GITHUB_TOKEN": "ghp_token",
    "AWS_SECRET_ACCESS_KEY": "aws-secret",
    "DB_PASSWORD_PRIMARY": "hunter2",
    "SOME_API_KEY": "api-key",
}


def test_command_probe_sees_no_worker_secret_and_runs_in_a_scratch_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in WORKER_SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TZ", "Europe/Berlin")
    monkeypatch.setenv("UNRELATED_SETTING", "not on the allowlist either")
    seen = tmp_path / "env"
    where = tmp_path / "pwd"
    probe = Probe(
        kind="command",
        command=["sh", "-c", f"env > {seen} && pwd > {where}"],
        env={"APP_ORDINAL": "{ordinal}"},
        retries=0,
    )
    report = run_probes(probe, allow_commands=True)
    assert report.ok, report.failures
    env = dict(line.split("=", 1) for line in seen.read_text().splitlines() if "=" in line)
    scratch = where.read_text().strip()
    assert not set(WORKER_SECRETS) & set(env), env
    assert not any(value in seen.read_text() for value in WORKER_SECRETS.values())
    assert "UNRELATED_SETTING" not in env
    assert env["TZ"] == "Europe/Berlin" and env["APP_ORDINAL"] == "3"
    assert env["PATH"] and env["HOME"] == scratch and env["TMPDIR"] == scratch
    assert Path(scratch).name.startswith("stsmigrate-probe-")
    assert Path(scratch) != Path.cwd() and not Path(scratch).exists()


def alive(pid: int) -> bool:
    """The process exists and is no zombie (killed, it waits for its reaper: PID 1)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_nothing_a_command_probe_started_outlives_it(tmp_path: Path) -> None:
    started = tmp_path / "pids"
    left_behind = Probe(
        kind="command",
        name="background",
        command=["sh", "-c", f"sleep 300 & echo $! >> {started}"],
        retries=0,
    )
    hung = Probe(
        kind="command",
        name="hung",
        command=["sh", "-c", f"sleep 300 & echo $! >> {started}; sleep 300; true"],
        timeout=3,  # time enough for sh to write the pid on a loaded machine
        retries=0,
    )
    report = run_probes(left_behind, hung, allow_commands=True)
    assert report.results[0].ok
    assert report.results[1].detail == "sh: no answer within 3 s"
    pids = [int(p) for p in started.read_text().split()]
    assert len(pids) == 2
    # SIGKILL is sent before run_probes returns; dying takes the process a turn on
    # a CPU, which a loaded machine may give it a moment later.
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in pids if alive(pid)]


def test_command_probe_env_cannot_name_the_worker_credentials() -> None:
    for name in ["KUBECONFIG", "STSMIGRATE_CODEC_KEY_FILE", "TEMPORAL_API_KEY", "X_TOKEN", "1X"]:
        with pytest.raises(ValueError, match="cannot be set for a command probe"):
            Probe(kind="command", command=["true"], env={name: "/var/run/secrets/x"})
    with pytest.raises(ValueError, match="env is for command probes"):
        Probe(kind="tcp", host="h", port=1, env={"A": "b"})
    # The activity drops them again, should a request skip the validator.
    env = probe_environment({"PATH": "/bin", "KUBECONFIG": "/k"}, "/s", {"KUBECONFIG": "/k"})
    assert env == {"PATH": "/bin", "HOME": "/s", "TMPDIR": "/s"}


def test_probe_definitions_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown placeholder 'host'"):
        Probe(kind="http", url="http://{host}/")
    with pytest.raises(ValueError, match="cannot carry credentials"):
        Probe(kind="http", url="http://admin:hunter2@{pod}.db:8080/health")
    with pytest.raises(ValueError, match="a tcp probe needs host and port"):
        Probe(kind="tcp")
    with pytest.raises(ValueError, match="on_failure"):
        HealthGates(on_failure="ignore")  # type: ignore[arg-type]
    assert Probe(kind="http", url="http://x/{{literal}}/{pod}").url  # doubled braces are fine


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    cluster = started_redis(tmp_path)
    try:
        yield cluster
    finally:
        cluster.stop()


def test_redis_cluster_probe_against_a_real_cluster(redis_cluster: RedisCluster) -> None:
    port = redis_cluster.ports[0]

    def probe(**fields: Any) -> Probe:
        return Probe(kind="redis_cluster", host="127.0.0.1", port=port, **{"retries": 0, **fields})

    report = run_probes(probe(expected_nodes=3), probe(name="too many", expected_nodes=4))
    assert report.results[0].ok, report.failures
    assert report.results[0].detail == f"redis 127.0.0.1:{port}: cluster_state:ok, 3 known nodes"
    assert report.failures == f"too many: redis 127.0.0.1:{port}: 3 known nodes, expected 4"

    # A master stops: its slots are uncovered and the cluster goes to fail.
    redis_cluster.stop_node(redis_cluster.ports[2])
    deadline = time.monotonic() + 30
    while "cluster_state:fail" not in redis_cluster.info(port):
        assert time.monotonic() < deadline, "the cluster never noticed the stopped node"
        time.sleep(0.2)
    failed = run_probes(probe(expected_nodes=3, retries=1, interval=0))
    assert not failed.ok
    assert failed.results[0].attempts == 2
    assert failed.results[0].detail == f"redis 127.0.0.1:{port}: cluster_state:fail"
    # A node nobody listens on is named too.
    gone = run_probes(
        Probe(kind="redis_cluster", host="127.0.0.1", port=redis_cluster.ports[2], retries=0)
    )
    assert not gone.ok and f"redis 127.0.0.1:{redis_cluster.ports[2]}" in gone.failures


PASSWORD = "redis-pw-" + uuid.uuid4().hex


class SecretsOnly:
    """The one read the Redis probe makes of a cluster, from a dict of Secrets."""

    def __init__(self, context: str, secrets: dict[tuple[str, str], dict[str, str]]) -> None:
        self.context = context
        self.secrets = secrets
        self.reads: list[tuple[str, str, str]] = []

    def dependency(self, kind: str, ns: str, name: str) -> dict[str, Any] | None:
        self.reads.append((kind, ns, name))
        data = self.secrets.get((ns, name))
        if data is None:
            return None
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        return {"kind": "Secret", "metadata": {"name": name, "namespace": ns}, "data": encoded}


class ProbesWithSecrets(HealthActivities):
    def __init__(self, kube: SecretsOnly) -> None:
        super().__init__({})
        self.fake = kube

    def _kube(self, context: str) -> Any:
        assert context == self.fake.context
        return self.fake


@pytest.fixture(scope="module")
def redis_with_password(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    cluster = started_redis(tmp_path_factory.mktemp("redis-auth"), PASSWORD)
    yield cluster
    cluster.stop()


def test_redis_probe_takes_its_password_from_a_secret(
    redis_with_password: RedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    port = redis_with_password.ports[0]
    kube = SecretsOnly(
        "nowhere",
        {
            ("shop", "redis-auth"): {"password": PASSWORD, "wrong": PASSWORD + "x"},
            ("other", "redis-auth"): {"password": PASSWORD},
        },
    )

    def probe(name: str, key: str = "password", holder: str = "redis-auth") -> Probe:
        ref = SecretKeyRef(name=holder, key=key)
        return Probe(
            kind="redis_cluster",
            name=name,
            host="127.0.0.1",
            port=port,
            expected_nodes=3,
            password_secret=ref,
            retries=0,
        )

    probes = [
        probe("right"),
        probe("wrong", key="wrong"),
        probe("no key", key="missing"),
        probe("no secret", holder="absent"),
        Probe(kind="redis_cluster", name="none", host="127.0.0.1", port=port, retries=0),
    ]
    task = ProbeInput(
        probes=probes,
        context="nowhere",
        namespace="shop",
        statefulset="redis",
        service="redis-headless",
        ordinal=3,
    )
    report = ActivityEnvironment().run(ProbesWithSecrets(kube).probe_ordinal, task)
    detail = {r.probe: r.detail for r in report.results}
    assert [r.ok for r in report.results] == [True, False, False, False, False], detail
    assert detail["right"] == f"redis 127.0.0.1:{port}: cluster_state:ok, 3 known nodes"
    assert detail["wrong"] == (
        f"redis 127.0.0.1:{port}: AUTH failed with the password of Secret shop/redis-auth key wrong"
    )
    assert detail["no key"] == (
        "the password's Secret shop/redis-auth key missing: the Secret has no such key "
        "(it has password, wrong)"
    )
    assert detail["no secret"] == (
        "the password's Secret shop/absent key password: no such Secret in nowhere"
    )
    assert "password_secret" in detail["none"]
    # Read at probe time, in the namespace of the side probed, once per attempt.
    assert kube.reads == [("Secret", "shop", n) for n in ["redis-auth"] * 3 + ["absent"]]
    # The value is nowhere in what the activity returns, nor in any log record.
    assert PASSWORD not in report.model_dump_json()
    assert PASSWORD not in caplog.text and PASSWORD not in repr(caplog.records)
    assert PASSWORD not in task.model_dump_json()


def test_a_password_is_shown_by_its_source_only() -> None:
    secret = Password("hunter2-value", "Secret shop/a key b")
    assert "hunter2" not in repr(secret) and "hunter2" not in f"{secret}"
    assert secret.scrub("said hunter2-value twice: hunter2-value") == "said *** twice: ***"
    with pytest.raises(ValueError, match="password_secret is for redis_cluster probes"):
        Probe(kind="tcp", host="h", port=1, password_secret=SecretKeyRef(name="a", key="b"))
    with pytest.raises(ValueError, match="key"):
        SecretKeyRef(name="a", key="has space")


def history_text(history: WorkflowHistory) -> str:
    """A history's JSON with every payload's data decoded from base64 appended, so a
    search sees what payloads and failure messages hold."""
    raw = history.to_json()
    decoded: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "data" and isinstance(value, str):
                    decoded.append(base64.b64decode(value).decode(errors="replace"))
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(json.loads(raw))
    return "\n".join([raw, *decoded])


async def test_no_history_of_a_migration_holds_the_redis_password(
    temporal_env: WorkflowEnvironment, redis_with_password: RedisCluster
) -> None:
    """A whole (faked) migration whose health gate is the real Redis probe with its
    password in a Secret: healthy with the right key, paused with the Secret named on a
    wrong one, and the value in none of the parent's or children's events."""
    port = redis_with_password.ports[0]
    secrets = {("shop", "redis-auth"): {"password": PASSWORD, "stale": "old-" + PASSWORD}}
    probes = ProbesWithSecrets(SecretsOnly("destination", secrets))

    def gate(key: str) -> HealthGates:
        ref = SecretKeyRef(name="redis-auth", key=key)
        return HealthGates(
            probes=[
                Probe(
                    kind="redis_cluster",
                    host="127.0.0.1",
                    port=port,
                    password_secret=ref,
                    retries=0,
                )
            ]
        )

    clusters = FakeClusters(list(SEARCH_ATTRIBUTES))
    task_queue = f"redis-auth-{uuid.uuid4().hex[:8]}"
    with ThreadPoolExecutor(4) as executor:
        async with fake_worker(
            temporal_env.client,
            task_queue,
            [*clusters.activities(), probes.probe_ordinal],
            activity_executor=executor,
        ):
            healthy, _ = await start(temporal_env.client, task_queue, health=gate("password"))
            result = await healthy.result()
            assert [r.ordinal for r in result.moved] == ORDINALS
            assert all(r.health is not None and r.health.ok for r in result.moved)

            clusters.slices = {"source": (0, 3), "destination": (3, 0)}  # a fresh app
            stale, _ = await start(temporal_env.client, task_queue, health=gate("stale"))
            held = await stale.wait_until(at("paused"), within=60)
            assert held.pause_reason == (
                f"health gate failed on ordinal 2: redis_cluster: redis 127.0.0.1:{port}: "
                "AUTH failed with the password of Secret shop/redis-auth key stale"
            )
            await stale.abort()
            await stale.handle.result()
    searched = 0
    for migration in (healthy, stale):
        for history in await histories(temporal_env, migration.id):
            text = history_text(history)
            searched += len(history.events)
            assert PASSWORD not in text, history.workflow_id
            assert "redis-auth" in text or history.workflow_id != migration.id
    assert searched > 50


class PodsOnly:
    """The pod read a probe naming {pod_ip} makes, from a dict of pod IPs."""

    context = "nowhere"

    def __init__(self, ips: dict[str, str]) -> None:
        self.ips = ips

    def pod(self, ns: str, name: str) -> dict[str, Any] | None:
        return {"status": {"podIP": self.ips[name]}} if name in self.ips else None


class ProbesOfPods(HealthActivities):
    def __init__(self, kube: PodsOnly) -> None:
        super().__init__({})
        self.fake = kube

    def _kube(self, context: str) -> Any:
        return self.fake


def test_a_probe_may_name_the_pods_ip_read_when_it_runs() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    task = ProbeInput(
        probes=[Probe(kind="tcp", host="{pod_ip}", port=port, retries=0)],
        context="nowhere",
        namespace="shop",
        statefulset="redis",
        service="redis-headless",
        ordinal=3,
    )
    try:
        found = ActivityEnvironment().run(
            ProbesOfPods(PodsOnly({"redis-3": "127.0.0.1"})).probe_ordinal, task
        )
        assert found.ok and f"127.0.0.1:{port}" in found.results[0].detail, found
        with pytest.raises(ApplicationError, match="has no IP in nowhere yet"):
            ActivityEnvironment().run(ProbesOfPods(PodsOnly({})).probe_ordinal, task)
    finally:
        listener.close()
