"""Every running activity heartbeats while it runs, from the worker's event loop.

A worker that dies (SIGKILL, a lost node) is noticed by the heartbeat timeout of the
activity it was running, and another worker retries the step (workflows/options.py
gives the steps inside an identity's downtime a timeout of a few seconds). So the
heartbeat must stand for "the worker process is alive", at a steady period, whatever
the activity does: a quick step makes one API round trip and never heartbeats
itself, and a wait heartbeats only when it re-lists (every few seconds).

``KeepAlive`` starts one task per running activity that has a heartbeat timeout and
sends a heartbeat every ``HEARTBEAT_EVERY`` s (at most a quarter of the timeout),
repeating the details the activity last gave (a wait's "what"), until the activity
ends. Sync activities run in a thread pool; the task runs on the event loop, where
the SDK's heartbeat call belongs. An activity stuck in its thread is then bounded by
its start-to-close timeout, not its heartbeat: every API request has a timeout of
its own (activities/kube.py), so a thread is never stuck for long. The heartbeats
also bring a cancellation to a quick step, as they always did to the waits; every
activity converges (invariant I3), so one cut short is like one killed.

The SDK throttles what it sends (at most once per ``max_heartbeat_throttle_interval``,
by default 0.8 of the heartbeat timeout): the worker sets that interval to
``HEARTBEAT_EVERY`` so that a heartbeat reaches the server every second.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ActivityOutboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

# Seconds between two heartbeats of a running activity.
HEARTBEAT_EVERY = 1.0


class _Remembering(ActivityOutboundInterceptor):
    """Keeps the details of the activity's latest own heartbeat, to repeat them."""

    details: Sequence[Any] = ()

    def heartbeat(self, *details: Any) -> None:
        self.details = details
        super().heartbeat(*details)


class _KeepAliveInbound(ActivityInboundInterceptor):
    def init(self, outbound: ActivityOutboundInterceptor) -> None:
        self._outbound = _Remembering(outbound)
        super().init(self._outbound)

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        timeout = activity.info().heartbeat_timeout
        if not timeout:
            return await super().execute_activity(input)
        every = min(HEARTBEAT_EVERY, timeout.total_seconds() / 4)
        beats = asyncio.create_task(self._beat(every))
        try:
            return await super().execute_activity(input)
        finally:
            beats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beats

    async def _beat(self, every: float) -> None:
        outbound = self._outbound
        while True:
            # The outbound's next is the SDK's: calling it on the loop never blocks
            # (the sync activity's own heartbeat hops onto the loop to make it).
            outbound.next.heartbeat(*outbound.details)
            await asyncio.sleep(every)


class KeepAlive(Interceptor):
    """The worker interceptor: a heartbeat every second from every running activity
    that has a heartbeat timeout (module docstring)."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _KeepAliveInbound(next)
