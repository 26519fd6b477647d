"""SourceInstallationWorkflow: one per source installation (`source-installation-<id>`).

SKELETON (the lead's seam): the message names and types are fixed; the bodies are the sources helper's.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.source_messages import (
        AwaitConnected,
        Connected,
        Disconnected,
        DisconnectRequest,
        InstallationInput,
        InstallationState,
        PollNow,
        ReviewEvents,
        ReviewResult,
    )
    from workflows.subscription_messages import ClockAdvance, ClockAdvanced


@workflow.defn
class SourceInstallationWorkflow:
    @workflow.init
    def __init__(self, request: InstallationInput) -> None:
        self.state: InstallationState | None = request.state

    @workflow.update
    async def await_connected(self, request: AwaitConnected) -> Connected:
        raise NotImplementedError

    @workflow.update
    async def review(self, request: ReviewEvents) -> ReviewResult:
        raise NotImplementedError

    @workflow.update
    async def disconnect(self, request: DisconnectRequest) -> Disconnected:
        raise NotImplementedError

    @workflow.update
    async def advance_clock(self, request: ClockAdvance) -> ClockAdvanced:
        raise NotImplementedError

    @workflow.signal
    def poll_now(self, request: PollNow) -> None:
        raise NotImplementedError

    @workflow.query
    def live_state(self) -> InstallationState | None:
        return self.state

    @workflow.run
    async def run(self, request: InstallationInput) -> None:
        raise NotImplementedError
