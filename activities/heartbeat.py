"""Heartbeats for every activity: a worker that dies mid-activity is noticed within the workflow's heartbeat
timeout (seconds) instead of the activity's whole start-to-close budget, so its retry starts elsewhere at
once. Activities that finish within FIRST (almost all of them) send nothing: the heartbeat costs a server
round trip, which a period close should not pay."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

FIRST = 1.0  # seconds before the first heartbeat
EVERY = 2.0  # seconds between heartbeats (the SDK throttles to 0.8 × the heartbeat timeout anyway)


class _Heartbeating(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        if not activity.info().heartbeat_timeout:
            return await super().execute_activity(input)
        beat = asyncio.create_task(_beat())
        try:
            return await super().execute_activity(input)
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat


async def _beat() -> None:
    await asyncio.sleep(FIRST)
    while True:
        activity.heartbeat()
        await asyncio.sleep(EVERY)


class HeartbeatInterceptor(Interceptor):
    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Heartbeating(next)
