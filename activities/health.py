"""Health gates: the probes run on a moved ordinal after its pod is Ready.

Every probe is tried ``1 + retries`` times, ``timeout`` seconds each, ``interval``
apart, and reports (never raises) what it saw: the workflow decides what a failure
means (``on_failure``). Targets are templated with the ordinal, pod, namespace,
service and StatefulSet. The activity heartbeats between attempts.

A command probe runs with a scrubbed environment (``probe_environment``: an
allowlist of the worker's variables plus the probe's own ``env``, never the
worker's credentials) in a fresh scratch directory removed after each attempt, so
an argv from a workflow input cannot read the codec key, the Temporal API key or
the kubeconfig from the worker's environment.

A redis_cluster probe with ``password_secret`` reads the password from that Secret
of the probed cluster (the application's namespace) at each attempt and sends it as
AUTH; the value stays in this process: no result, message or log names more than
the Secret's namespace, name and key.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping

import redis
from kubernetes import client
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import events
from activities.kube import Kube, is_ready, kube_for
from contract import HealthReport, Probe, ProbeInput, ProbeResult, SecretKeyRef
from contract.errors import UNAVAILABLE
from contract.request import CREDENTIAL_VARIABLES

COMMANDS_ALLOWED = "STSMIGRATE_ALLOW_COMMAND_PROBES"
# The only variables of the worker's environment a command probe sees (HOME and TMPDIR
# are set to its scratch directory). Everything else, the codec key, TEMPORAL_API_KEY
# and TEMPORAL_TLS_*, STSMIGRATE_KUBECONFIG and KUBECONFIG among it, stays home.
INHERITED = ("PATH", "LANG", "LC_ALL", "TZ")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
# Names a probe's own ``env`` may not set either: a request must not point a probe at
# the worker's credentials (e.g. KUBECONFIG=/var/run/secrets/...).
WORKER_SECRETS = re.compile(f"^({CREDENTIAL_VARIABLES})$", re.IGNORECASE)


def probe_environment(
    worker: Mapping[str, str], scratch: str, declared: Mapping[str, str]
) -> dict[str, str]:
    """The environment of a command probe: the allowlist, HOME and TMPDIR in the
    scratch directory, and the probe's declared variables (none of the worker's
    secret names: the request's validator refuses them, this drops them again)."""
    env = {name: worker[name] for name in INHERITED if name in worker}
    env.setdefault("PATH", DEFAULT_PATH)
    env.update({k: v for k, v in declared.items() if not WORKER_SECRETS.match(k)})
    env["HOME"] = env["TMPDIR"] = scratch
    return env


def _uses_pod_ip(probes: list[Probe]) -> bool:
    return any(
        "{pod_ip}" in text for p in probes for text in [p.url, p.host, *p.command, *p.env.values()]
    )


class Unhealthy(Exception):
    """One failed attempt, with what was seen."""


class HealthActivities:
    def __init__(
        self, clients: Mapping[str, client.ApiClient], allow_commands: bool = False
    ) -> None:
        self._clients = clients
        self._commands = allow_commands

    @activity.defn
    def probe_ordinal(self, task: ProbeInput) -> HealthReport:
        values = {
            "ordinal": str(task.ordinal),
            "pod": f"{task.statefulset}-{task.ordinal}",
            "namespace": task.namespace,
            "service": task.service,
            "statefulset": task.statefulset,
            "pod_ip": self._pod_ip(task) if _uses_pod_ip(task.probes) else "",
        }
        results = []
        for probe in task.probes:
            check = self._check(probe, task, values)
            results.append(attempt(probe, check))
            activity.logger.info(
                "probe %s of ordinal %d: %s", probe.label, task.ordinal, results[-1].detail
            )
        report = HealthReport(results=results)
        if task.context in self._clients:
            passed = f"all {len(results)} probe(s) passed"
            events.record_about_statefulset(
                kube_for(self._clients, task.context),
                task.namespace,
                task.statefulset,
                "HealthGatePassed" if report.ok else "HealthGateFailed",
                f"health gates of ordinal {task.ordinal}: "
                + (passed if report.ok else report.failures),
            )
        return report

    def _check(self, probe: Probe, task: ProbeInput, values: dict[str, str]) -> Callable[[], str]:
        host = probe.host.format_map(values)
        if probe.kind == "http":
            return lambda: http_get(probe.url.format_map(values), probe)
        if probe.kind == "tcp":
            return lambda: tcp_connect(host, probe.port, probe.timeout)
        if probe.kind == "redis_cluster":
            ref = probe.password_secret

            def check_redis() -> str:
                auth = self._password(task, ref) if ref else None
                return redis_cluster(host, probe.port, probe.expected_nodes, probe.timeout, auth)

            return check_redis
        if probe.kind == "command":
            argv = [a.format_map(values) for a in probe.command]
            env = {k: v.format_map(values) for k, v in probe.env.items()}
            return lambda: self._command(argv, env, probe.timeout)
        return lambda: self._ready_for(task, values["pod"], probe.soak)

    def _command(self, argv: list[str], declared: dict[str, str], timeout: int) -> str:
        if not self._commands:
            raise Unhealthy(
                f"command probes are off on this worker (set {COMMANDS_ALLOWED}=1 to allow "
                "workflow inputs to run commands on it)"
            )
        with tempfile.TemporaryDirectory(prefix="stsmigrate-probe-") as scratch:
            code = run_in_session(
                argv, scratch, probe_environment(os.environ, scratch, declared), timeout
            )
        if code != 0:
            raise Unhealthy(f"{argv[0]} exited {code}")
        return f"{argv[0]} exited 0"

    def _pod_ip(self, task: ProbeInput) -> str:
        """Pod k's IP in the probed cluster (status.podIP); a retryable error while it
        has none, as a probe of it could not run."""
        pod = self._kube(task.context).pod(task.namespace, f"{task.statefulset}-{task.ordinal}")
        ip = str(((pod or {}).get("status") or {}).get("podIP") or "")
        if not ip:
            raise ApplicationError(
                f"pod {task.statefulset}-{task.ordinal} has no IP in {task.context} yet, and "
                "a probe names {pod_ip}",
                type=UNAVAILABLE,
            )
        return ip

    def _kube(self, context: str) -> Kube:
        return kube_for(self._clients, context)

    def _password(self, task: ProbeInput, ref: SecretKeyRef) -> Password:
        where = f"Secret {task.namespace}/{ref.name} key {ref.key}"
        try:
            secret = self._kube(task.context).dependency("Secret", task.namespace, ref.name)
        except ApplicationError as e:  # its message is the API's Status message
            raise Unhealthy(f"cannot read the password of {where}: {e.message}") from None
        if secret is None:
            raise Unhealthy(f"the password's {where}: no such Secret in {task.context}")
        data = secret.get("data") or {}
        if ref.key not in data:
            keys = ", ".join(sorted(data)) or "none"
            raise Unhealthy(f"the password's {where}: the Secret has no such key (it has {keys})")
        try:
            value = base64.b64decode(data[ref.key], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise Unhealthy(f"the password in {where} is not UTF-8 text") from None
        return Password(value, where)

    def _ready_for(self, task: ProbeInput, pod: str, soak: int) -> str:
        """The pod Ready now and at every look for ``soak`` seconds (once a second)."""
        kube = self._kube(task.context)
        deadline = time.monotonic() + soak
        while True:
            found = kube.pod(task.namespace, pod)
            if found is None or not is_ready(found):
                raise Unhealthy(f"pod {pod} is not Ready")
            if time.monotonic() >= deadline:
                return f"pod {pod} Ready for {soak} s"
            activity.heartbeat(f"{pod} Ready")
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def run_in_session(argv: list[str], cwd: str, env: dict[str, str], timeout: int) -> int:
    """Run ``argv`` in a session of its own and return its exit code; whatever it
    started is killed with it (on a timeout and after it exits), so nothing outlives
    the probe in its scratch directory. Its output is not read (the exit code is the
    answer), so a child that keeps a pipe open cannot hold the probe past its timeout."""
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    except OSError as e:
        raise Unhealthy(f"{argv[0]}: {e.strerror or e}") from None
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise Unhealthy(f"{argv[0]}: no answer within {timeout} s") from None
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it and all it started are gone
        except PermissionError:
            proc.kill()
        proc.wait()


def attempt(probe: Probe, check: Callable[[], str]) -> ProbeResult:
    detail = ""
    for n in range(1, probe.retries + 2):
        try:
            return ProbeResult(probe=probe.label, ok=True, attempts=n, detail=check())
        except Unhealthy as e:
            detail = str(e)
        if n <= probe.retries:
            activity.heartbeat(f"{probe.label}: attempt {n} failed: {detail}")
            time.sleep(probe.interval)
    return ProbeResult(probe=probe.label, ok=False, attempts=probe.retries + 1, detail=detail)


def http_get(url: str, probe: Probe) -> str:
    context = ssl.create_default_context()
    if probe.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if not url.startswith(("http://", "https://")):
        raise Unhealthy(f"{url}: only http and https URLs")
    try:
        with urllib.request.urlopen(url, timeout=probe.timeout, context=context) as answer:  # noqa: S310 - scheme checked
            status = answer.status
    except urllib.error.HTTPError as e:
        status = e.code
    except (urllib.error.URLError, OSError) as e:
        raise Unhealthy(f"GET {url}: {getattr(e, 'reason', e)}") from None
    if status != probe.expect_status:
        raise Unhealthy(f"GET {url}: status {status}, expected {probe.expect_status}")
    return f"GET {url}: {status}"


def tcp_connect(host: str, port: int, timeout: int) -> str:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise Unhealthy(f"connect {host}:{port}: {e.strerror or e}") from None
    return f"connected to {host}:{port}"


class Password:
    """A password and where it came from; its repr and str name the source only, so
    a log line or traceback that shows one by mistake shows no value."""

    def __init__(self, value: str, source: str) -> None:
        self.value = value
        self.source = source

    def __repr__(self) -> str:
        return f"Password(from {self.source})"

    __str__ = __repr__

    def scrub(self, text: str) -> str:
        return text.replace(self.value, "***") if self.value else text


def redis_cluster(
    host: str,
    port: int,
    expected_nodes: int | None,
    timeout: int,
    password: Password | None = None,
) -> str:
    """CLUSTER INFO says cluster_state:ok (and the expected number of known nodes),
    after AUTH with ``password`` when given (redis-py sends it on connecting)."""
    conn = redis.Redis(
        host=host,
        port=port,
        password=password.value if password else None,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=True,
    )
    try:
        info = conn.execute_command("CLUSTER INFO")
    except redis.AuthenticationError as e:
        if password is None:
            raise Unhealthy(
                f"redis {host}:{port}: {e} (it asks for a password: give the probe a "
                "password_secret)"
            ) from None
        raise Unhealthy(
            f"redis {host}:{port}: AUTH failed with the password of {password.source}"
        ) from None
    except redis.RedisError as e:
        said = password.scrub(str(e)) if password else str(e)
        raise Unhealthy(f"redis {host}:{port}: {said}") from None
    finally:
        conn.close()
    if isinstance(info, bytes | str):
        text = info.decode() if isinstance(info, bytes) else info
        fields = dict(line.split(":", 1) for line in text.split() if ":" in line)
    else:
        fields = {str(k): str(v) for k, v in dict(info).items()}
    state, known = fields.get("cluster_state"), fields.get("cluster_known_nodes")
    if state != "ok":
        raise Unhealthy(f"redis {host}:{port}: cluster_state:{state}")
    if expected_nodes is not None and str(expected_nodes) != known:
        raise Unhealthy(f"redis {host}:{port}: {known} known nodes, expected {expected_nodes}")
    return f"redis {host}:{port}: cluster_state:ok, {known} known nodes"
