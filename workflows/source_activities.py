"""The activities SourceInstallationWorkflow calls, declared without their implementation (as
workflows/subscription_activities.py does): `activities.source_installation.SourceInstallationActivities`
overrides them with the real Stripe calls and DB writes. A method's name is the activity name recorded in
histories."""

from __future__ import annotations

from temporalio import activity

from workflows.source_messages import (
    Disconnected,
    DisconnectInstallation,
    InstallationState,
    KeyValidated,
    LoadInstallation,
    Polled,
    PollInstallation,
    ReviewRequest,
    ReviewResult,
    ValidateKey,
)


class SourceInstallationActivityDefs:
    @activity.defn
    async def load_installation(self, request: LoadInstallation) -> InstallationState:
        raise NotImplementedError

    @activity.defn
    async def validate_installation_key(self, request: ValidateKey) -> KeyValidated:
        raise NotImplementedError

    @activity.defn
    async def poll_installation(self, request: PollInstallation) -> Polled:
        raise NotImplementedError

    @activity.defn
    async def review_source_events(self, request: ReviewRequest) -> ReviewResult:
        raise NotImplementedError

    @activity.defn
    async def disconnect_installation(self, request: DisconnectInstallation) -> Disconnected:
        raise NotImplementedError
