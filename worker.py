"""The statefulset-migrator worker: runs our workflows and activities on the task
queue ``statefulset-migration``, and the long steps (watch-based waits, health gates,
preflight) on ``statefulset-migration-waits``.

Settings come from the environment. The Temporal connection is read like the
Temporal CLI reads it (``temporalio.envconfig``: TEMPORAL_ADDRESS,
TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS_*, TEMPORAL_PROFILE and the
CLI's config file); ours are:

    STSMIGRATE_KUBECONFIG     kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)
    STSMIGRATE_CONTEXTS       comma-separated contexts to serve (default: all in the file)
    STSMIGRATE_TASK_QUEUE     task queue (default: statefulset-migration); the long
                              steps' is the same name with "-waits" appended
    STSMIGRATE_MAX_ACTIVITIES concurrent quick steps, one thread each (default: 32)
    STSMIGRATE_MAX_WAITS      concurrent long steps, one thread each (default: 64)
    STSMIGRATE_LOG_LEVEL      DEBUG, INFO, WARNING or ERROR (default: INFO)
    STSMIGRATE_CODEC_KEY      base64 AES-256 key: encrypt every payload (stsmigrate.codec)
    STSMIGRATE_CODEC_KEY_FILE a file holding that key instead
    STSMIGRATE_ALLOW_COMMAND_PROBES  1: health probes of kind "command" may run here
    STSMIGRATE_METRICS_PORT   Prometheus metrics on http://<address>:<port>/metrics
                              (default: 9464; 0: none)
    STSMIGRATE_METRICS_ADDRESS  the address it binds (default: 127.0.0.1; in a pod
                              0.0.0.0, so Prometheus can scrape it)

The worker holds the cluster credentials: one kubernetes ApiClient per context,
built with ``new_client_from_config(persist_config=False)`` so nothing global is
loaded or written.

Slots: a wait holds its slot (and thread) for minutes, a quick step for one API round
trip. Two Workers in this process, one per task queue, each with its own thread pool,
keep them apart, so no number of waits makes a quick step of an identity that is
down queue behind them. The SDK's slot suppliers (``tuner``) cannot do it: a slot is
taken before the poll, when the activity's type is not yet known. One migration holds
at most two waits at once (an ordinal waits for both slices Ready) and one quick
step; the defaults serve 20 concurrent migrations on one worker (README, "Sizing
workers"); more replicas on the same task queues share the load.

Every running activity heartbeats every second (activities/liveness.py), so a killed
worker costs a step a few seconds (workflows/options.py HEARTBEAT), not its run
timeout. Logs are JSON lines on stderr, one renderer for our structlog
events, the SDK's stdlib loggers (workflow.logger, activity.logger) and the SDK
core's own log records. Metrics: the SDK's own (task latencies, slots, polls) and
ours (activities/telemetry.py, workflows/telemetry.py; README, "Metrics"); every step
also writes a Kubernetes Event about what it changed (activities/events.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

import structlog
import temporalio.activity
import temporalio.workflow
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from temporalio.client import Client
from temporalio.envconfig import ClientConfig
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)
from temporalio.worker import Worker

import stsmigrate.api
from activities.clusters import ClusterActivities
from activities.health import COMMANDS_ALLOWED, HealthActivities
from activities.hooks import HookActivities
from activities.liveness import HEARTBEAT_EVERY, KeepAlive
from activities.migration import MigrationActivities
from activities.telemetry import STEP_BUCKETS, STEP_DURATION, ActivityTelemetry
from activities.temporal import TemporalActivities
from contract import TASK_QUEUE, waits_queue
from stsmigrate.codec import AesGcmCodec, CodecKeyError, codec_from_env, data_converter
from workflows import (
    CleanupMigration,
    DescribeClusters,
    MigrateOrdinal,
    MigrateStatefulSet,
    RollbackOrdinal,
)
from workflows.telemetry import WorkflowTelemetry

WORKFLOWS: Sequence[type] = (
    DescribeClusters,
    MigrateStatefulSet,
    MigrateOrdinal,
    RollbackOrdinal,
    CleanupMigration,
)

log = structlog.get_logger("worker")


@dataclass(frozen=True)
class Settings:
    kubeconfig: Path
    contexts: tuple[str, ...] = ()
    task_queue: str = TASK_QUEUE
    max_activities: int = 32
    max_waits: int = 64
    log_level: str = "INFO"
    temporal: Mapping[str, Any] = field(default_factory=dict)
    codec: AesGcmCodec | None = None
    allow_command_probes: bool = False
    metrics_port: int = 9464
    metrics_address: str = "127.0.0.1"

    @property
    def metrics_bind(self) -> str | None:
        """host:port of the metrics endpoint, None when it is off."""
        if not self.metrics_port:
            return None
        host = self.metrics_address
        return f"[{host}]:{self.metrics_port}" if ":" in host else f"{host}:{self.metrics_port}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        kubeconfig = (
            env.get("STSMIGRATE_KUBECONFIG") or env.get("KUBECONFIG", "").split(os.pathsep)[0]
        )
        contexts = tuple(
            c.strip() for c in env.get("STSMIGRATE_CONTEXTS", "").split(",") if c.strip()
        )
        temporal = dict(ClientConfig.load_client_connect_config(override_env_vars=dict(env)))
        try:
            codec = codec_from_env(env)
        except CodecKeyError as e:
            raise SystemExit(f"payload codec: {e}") from None
        return cls(
            kubeconfig=Path(kubeconfig or "~/.kube/config").expanduser(),
            contexts=contexts,
            task_queue=env.get("STSMIGRATE_TASK_QUEUE", TASK_QUEUE),
            max_activities=int(env.get("STSMIGRATE_MAX_ACTIVITIES", "32")),
            max_waits=int(env.get("STSMIGRATE_MAX_WAITS", "64")),
            log_level=env.get("STSMIGRATE_LOG_LEVEL", "INFO").upper(),
            temporal=temporal,
            codec=codec,
            allow_command_probes=env.get(COMMANDS_ALLOWED) == "1",
            metrics_port=int(env.get("STSMIGRATE_METRICS_PORT") or "9464"),
            metrics_address=env.get("STSMIGRATE_METRICS_ADDRESS") or "127.0.0.1",
        )


_logging_configured = False


def configure_logging(level: str = "INFO") -> None:
    """JSON lines on stderr for structlog and stdlib loggers alike; safe to call twice."""
    global _logging_configured
    if _logging_configured:
        return
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        # ExtraAdder keeps the SDK's temporal_workflow / temporal_activity context.
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(default=str),
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The kubernetes client logs request bodies at DEBUG, which can hold Secret data.
    logging.getLogger("kubernetes").setLevel(max(logging.INFO, logging.getLevelName(level)))
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    # The SDK's context already arrives as temporal_workflow / temporal_activity keys.
    temporalio.workflow.logger.workflow_info_on_message = False
    temporalio.activity.logger.activity_info_on_message = False
    _logging_configured = True


def sdk_runtime(metrics: str | None = None) -> Runtime:
    """A Temporal runtime that forwards the SDK core's logs into our JSON logging and,
    given ``metrics`` (host:port), serves Prometheus metrics there at /metrics."""
    prometheus = None
    if metrics:
        prometheus = PrometheusConfig(
            bind_address=metrics,
            histogram_bucket_overrides={STEP_DURATION: STEP_BUCKETS},
        )
    try:
        return Runtime(
            telemetry=TelemetryConfig(
                logging=LoggingConfig(
                    filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
                    forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")),
                ),
                metrics=prometheus,
            )
        )
    except Exception as e:  # the port is taken, say: the SDK's error names the address
        raise SystemExit(f"metrics on {metrics}: {e} (set STSMIGRATE_METRICS_PORT)") from None


def kube_clients(
    kubeconfig: Path, contexts: Sequence[str] = (), connections: int | None = None
) -> dict[str, k8s.ApiClient]:
    """One ApiClient per context; all contexts of the file when none are named. Each
    keeps up to ``connections`` open (the client's default is 5 per CPU): every
    activity slot may hold a request or a watch on one context, and a pool too small
    reconnects (and logs a warning) for every request beyond it."""
    if not kubeconfig.exists():
        raise SystemExit(f"kubeconfig {kubeconfig} does not exist; set STSMIGRATE_KUBECONFIG")
    available, _ = k8s_config.list_kube_config_contexts(config_file=str(kubeconfig))
    names = [c["name"] for c in available]
    missing = [c for c in contexts if c not in names]
    if missing:
        raise SystemExit(
            f"kubeconfig {kubeconfig} has no context {', '.join(missing)} "
            f"(it has {', '.join(names)})"
        )
    return {
        name: k8s_config.new_client_from_config(
            config_file=str(kubeconfig),
            context=name,
            persist_config=False,
            # type.__call__, as the client does: Configuration() copies the global default.
            client_configuration=type.__call__(
                k8s.Configuration, connection_pool_maxsize=connections
            ),
        )
        for name in (contexts or names)
    }


async def connect(settings: Settings, runtime: Runtime | None = None) -> Client:
    return await Client.connect(
        **{**settings.temporal, "data_converter": data_converter(settings.codec)},
        runtime=runtime or sdk_runtime(settings.metrics_bind),
    )


def activities_of(
    temporal: Client, clients: Mapping[str, k8s.ApiClient], settings: Settings
) -> list[Callable[..., Any]]:
    """Every activity the worker registers, bound to its clients (the test fakes are
    checked against this list: tests/test_parity.py). Named one by one, as the SDK's
    samples do: an @activity.defn method runs on this worker once it is listed here."""
    cluster = ClusterActivities(clients)
    migration = MigrationActivities(clients, settings.allow_command_probes)
    health = HealthActivities(clients, settings.allow_command_probes)
    hooks = HookActivities(clients)
    server = TemporalActivities(temporal)
    return [
        cluster.read_cluster_info,
        # preflight and the parent's steps
        migration.plan_migration,
        migration.ensure_retention_policy,
        migration.ensure_destination_statefulset,
        migration.ensure_dependencies,
        migration.read_statefulset,
        migration.lock_statefulset,
        migration.unlock_statefulset,
        migration.share_disruption_budget,
        migration.restore_disruption_budget,
        # the steps of one ordinal (the hand-over: docs/design.md)
        migration.wait_for_slice_ready,
        migration.read_pod,
        migration.ensure_volumes_retained,
        migration.set_statefulset_slice,
        migration.take_ordinal,
        migration.wait_for_pod_gone,
        migration.release_claims,
        migration.import_volumes,
        migration.reclaim_volumes,
        migration.wait_for_claims_bound,
        migration.wait_for_pod_ready,
        health.probe_ordinal,
        hooks.run_hook,
        # the clean finish (workflows/cleanup.py)
        migration.plan_cleanup,
        migration.fence_source_statefulset,
        migration.remove_source_volumes,
        migration.restore_reclaim_policies,
        server.registered_search_attributes,
        server.running_workflows,
        server.running_children,
    ]


def build_workers(
    temporal: Client,
    settings: Settings,
    activities: Sequence[Callable[..., Any]],
    executor: ThreadPoolExecutor,
    waits_executor: ThreadPoolExecutor,
    clients: Mapping[str, k8s.ApiClient] | None = None,
) -> list[Worker]:
    """The workflows and quick steps on the task queue; the long steps on its waits
    queue, with slots and threads of their own. Both register every activity (those of
    ``activities_of``, or fakes by the same names), so the workflow alone decides where
    a step runs (workflows/options.py). ``clients`` write the MoveBlocked Events."""
    common: dict[str, Any] = {
        "activities": activities,
        "interceptors": [KeepAlive(), ActivityTelemetry(clients), WorkflowTelemetry()],
        # The SDK sends a heartbeat at most once per this interval (by default 0.8 of
        # the heartbeat timeout): every second, so a 4 s timeout has three to spare.
        "max_heartbeat_throttle_interval": timedelta(seconds=HEARTBEAT_EVERY),
        # Running activities get this long to finish (or see their cancellation
        # through a heartbeat) before the worker exits.
        "graceful_shutdown_timeout": timedelta(seconds=30),
    }
    return [
        Worker(
            temporal,
            task_queue=settings.task_queue,
            workflows=list(WORKFLOWS),
            activity_executor=executor,
            max_concurrent_activities=settings.max_activities,
            # A workflow's next task waits this long for the worker that ran its last
            # one (10 s by default) before any worker may take it: a killed worker
            # must not hold an identity that is down for that long.
            sticky_queue_schedule_to_start_timeout=timedelta(seconds=3),
            **common,
        ),
        Worker(
            temporal,
            task_queue=waits_queue(settings.task_queue),
            activity_executor=waits_executor,
            max_concurrent_activities=settings.max_waits,
            **common,
        ),
    ]


async def run(settings: Settings, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    clients = kube_clients(
        settings.kubeconfig, settings.contexts, settings.max_activities + settings.max_waits
    )
    temporal = await connect(settings)
    with (
        ThreadPoolExecutor(settings.max_activities, thread_name_prefix="activity") as executor,
        ThreadPoolExecutor(settings.max_waits, thread_name_prefix="wait") as waits_executor,
    ):
        activities = activities_of(temporal, clients, settings)
        workers = build_workers(temporal, settings, activities, executor, waits_executor, clients)
        log.info(
            "worker_started",
            task_queues=[w.task_queue for w in workers],
            contexts=sorted(clients),
            temporal=settings.temporal.get("target_host"),
            namespace=settings.temporal.get("namespace", "default"),
            metrics=settings.metrics_bind,
        )

        async def run_workers() -> None:
            await asyncio.gather(*(w.run() for w in workers))

        run_task = asyncio.create_task(run_workers())
        stop_task = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({run_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        # A signal stops both; so does one of them failing (its error is raised below).
        log.info("worker_stopping", reason="signal" if stop_task in done else "worker_failed")
        await asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True)
        stop_task.cancel()
        await run_task
    for api in clients.values():
        api.close()
    log.info("worker_stopped")


def main() -> NoReturn:
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    # Ends the process without interpreter teardown (temporalio/sdk-python#300).
    stsmigrate.api.run(run(settings))


if __name__ == "__main__":
    main()
