"""A resend (or recover) that lands while an attempt of the same delivery is in flight: the attempt's
result must not overwrite the fresh schedule the merchant asked for, and attempt numbers stay unique."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from activities.webhook_delivery import WebhookDeliveryActivities, _Outcome
from db import outbox
from db import webhooks as store
from db.merchants import NewMerchant
from tests.helpers import relay_all
from tests.workflows.webhook_harness import BOX, Hooks, sub


@pytest.fixture
async def delivery_setup(engine: AsyncEngine, merchant: NewMerchant) -> tuple[Hooks, str]:
    hooks = Hooks(None, engine, merchant, "unused")  # type: ignore[arg-type]  # no workflow is woken here
    ref, _ = await hooks.endpoint("http://127.0.0.1:9/hook")
    async with hooks.sessions() as session:
        outbox.record(session, merchant.merchant_id, "sandbox", *sub(1))
        await session.commit()
    await relay_all(hooks.sessions)
    return hooks, ref.endpoint_id


@pytest.mark.parametrize("resent", [False, True], ids=["no resend", "resent mid-attempt"])
async def test_an_attempt_result_keeps_a_resend_made_while_it_was_in_flight(
    engine: AsyncEngine, delivery_setup: tuple[Hooks, str], resent: bool
) -> None:
    hooks, endpoint_id = delivery_setup
    async with httpx.AsyncClient() as http:
        activities = WebhookDeliveryActivities(engine, BOX, http)
        now = datetime.now(UTC)
        async with hooks.sessions() as session:
            [claimed] = await activities._claim(session, endpoint_id, now, 10)
        if resent:
            async with hooks.sessions() as session:
                owner = store.Owner(hooks.merchant_id, hooks.environment)
                await store.resend(session, owner, claimed.message_id, endpoint_id)
        async with hooks.sessions() as session:
            await activities._record(session, endpoint_id, [_Outcome(claimed, now, 500, "down", 3)], now)
            await session.commit()
        [delivery] = await hooks.deliveries(hooks.endpoints[0])
        state = (delivery.status, delivery.attempts, delivery.round_attempts, delivery.next_attempt_at)
        if resent:
            assert state == ("pending", 1, 0, None)  # due now, on a fresh schedule
            async with hooks.sessions() as session:
                [again] = await activities._claim(session, endpoint_id, now, 10)
            assert again.attempts == 1  # the next attempt is number 2
        else:
            assert state == ("pending", 1, 1, now + timedelta(seconds=5))
    assert [a.attempt for a in await hooks.attempts(hooks.endpoints[0])] == [1]
