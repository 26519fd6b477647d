"""SourceInstallationWorkflow on the time-skipping server, the real database and the Stripe fake (localstripe
with accounts per key, through the real `stripe` library): connect, import, rules, reviews and billing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from tests.stripe_fake import new_key, pay_invoices, revoke_key
from tests.workflows import source_harness
from tests.workflows.billing_harness import GRACE
from tests.workflows.source_harness import POLL, START, Revenue, clock_bound
from tests.workflows.test_replay import RECORD, replay, run_chain, save
from workflows.client import review_source_events
from workflows.ids import source_installation_workflow_id
from workflows.reconciler import ReconcileRequest, ReconcilerWorkflow
from workflows.source_messages import ReviewEvents

D = Decimal
# The shared fixtures (one time-skipping server for this module).
env, revenue = source_harness.env, source_harness.revenue


async def review(
    revenue: Revenue, installation: str, action: str, ids: list[str], single: bool = False
) -> tuple[list[str], list[str]]:
    result = await review_source_events(
        revenue.billing.env.client,
        installation,
        ReviewEvents(action=action, event_ids=ids, processed_by="usr_test", single=single),  # type: ignore[arg-type]
    )
    return result.done, [f.id for f in result.failed]


async def accepted_updates(revenue: Revenue, installation: str) -> int:
    history = await revenue.handle(installation).fetch_history()
    return sum(1 for e in history.events if e.HasField("workflow_execution_update_accepted_event_attributes"))


async def test_imported_revenue_is_reviewed_and_billed_at_the_plans_percentage(revenue: Revenue) -> None:
    """Seed 000's flow on a test clock: pending events, one approved alone, two in bulk, one rejected; the
    period invoice bills 5 % of each approved one held to [minCharge, maxCharge], the rejected one nowhere."""
    clock, sub, source = await clock_bound(revenue, minCharge="0.10", maxCharge="3.00")
    key = new_key()
    installation, connected = await revenue.connect(source, sub, key)
    assert connected.status == "active"
    assert await revenue.outbox_ids("source.activated.v0") == [installation]

    ids = pay_invoices(revenue.stripe, key, [1000, 100, 10000, 5000], email="ops@acme.example", name="Acme")
    await revenue.billing.advance(clock, START + POLL)  # one poll
    events = {e.external_event_id: e for e in await revenue.events(installation)}
    assert sorted(events) == sorted(ids)
    first, second, third, fourth = (events[i] for i in ids)
    assert [e.amount for e in (first, second, third, fourth)] == [D(10), D(1), D(100), D(50)]
    assert {(e.status, e.currency, e.customer_email, e.customer_name) for e in events.values()} == {
        ("pending", "USD", "ops@acme.example", "Acme")
    }
    assert {e.usage_at for e in events.values()} == {START + POLL}  # the clock's time at import
    assert sorted(await revenue.outbox_ids("source_event.pending.v0")) == sorted(
        e.id for e in events.values()
    )
    assert sorted((await revenue.state(installation)).pending_event_ids) == sorted(
        e.id for e in events.values()
    )

    assert await review(revenue, installation, "approve", [first.id], single=True) == ([first.id], [])
    accepted_before = await accepted_updates(revenue, installation)
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await review(revenue, installation, "approve", [first.id], single=True)
    assert isinstance(refused.value.cause, ApplicationError) and refused.value.cause.type == "NotPending"
    # Refused by the validator: the update never entered the history.
    assert await accepted_updates(revenue, installation) == accepted_before
    assert await review(revenue, installation, "approve", [second.id, third.id, first.id]) == (
        [second.id, third.id],
        [first.id],
    )
    assert await review(revenue, installation, "reject", [fourth.id]) == ([fourth.id], [])
    with pytest.raises(WorkflowUpdateFailedError):
        await review(revenue, installation, "reject", [fourth.id], single=True)

    reviewed = {e.id: e for e in await revenue.events(installation)}
    assert [reviewed[e.id].status for e in (first, second, third, fourth)] == [
        "processed", "processed", "processed", "rejected",
    ]  # fmt: skip
    assert {reviewed[e.id].processed_by for e in (first, second, third, fourth)} == {"usr_test"}
    assert all(len(reviewed[e.id].usage_event_ids) == 1 for e in (first, second, third))
    assert sorted(await revenue.outbox_ids("source_event.processed.v0")) == sorted(
        [first.id, second.id, third.id]
    )
    assert await revenue.outbox_ids("source_event.rejected.v0") == [fourth.id]

    await revenue.billing.advance(clock, datetime(2028, 2, 1, tzinfo=UTC) + GRACE)
    invoice = (await revenue.billing.invoices(sub["id"]))[1]
    [line] = await revenue.billing.lines(invoice.id)
    # 5 % of 10.00, 1.00 and 100.00: 0.50, 0.05 raised to 0.10, 5.00 capped at 3.00; the rejected 50.00 is
    # not there.
    assert (line.quantity, line.subtotal) == (D(111), D("3.60"))
    assert (invoice.status, invoice.grand_total) == ("ISSUED", D("3.60"))


async def test_a_rule_per_operator_approves_what_matches_and_leaves_the_rest_pending(
    revenue: Revenue,
) -> None:
    """D17 through the import path: enabled rules by order, all conditions must match, the first wins."""
    clock, sub, source = await clock_bound(revenue)
    today = datetime.now(UTC).date()
    rules = {
        "amount equals": [{"type": "amount", "operator": "equals", "value": "12.34"}],
        "amount greaterThan": [{"type": "amount", "operator": "greaterThan", "value": 1000}],
        "amount lessThan": [{"type": "amount", "operator": "lessThan", "value": "1"}],
        "amount between": [{"type": "amount", "operator": "between", "value": {"from": "50", "to": "60"}}],
        "name equals": [{"type": "customerName", "operator": "equals", "value": "Exact Name"}],
        "name contains": [{"type": "customerName", "operator": "contains", "value": "CORP"}],
        "email domain": [{"type": "customerEmail", "operator": "domain", "value": "@trusted.com"}],
        "email contains": [{"type": "customerEmail", "operator": "contains", "value": "vip"}],
        "date between, and amount": [
            {"type": "date", "operator": "between",
             "value": {"from": str(today - timedelta(days=1)), "to": str(today + timedelta(days=1))}},
            {"type": "amount", "operator": "equals", "value": "77.77"},
        ],
        "date lessThan, and amount": [
            {"type": "date", "operator": "lessThan", "value": "2001-01-01"},
            {"type": "amount", "operator": "equals", "value": "88.88"},
        ],
    }  # fmt: skip
    rule_ids = {
        name: await revenue.rule(source, conditions, order=i)
        for i, (name, conditions) in enumerate(rules.items())
    }
    key = new_key()
    installation, _ = await revenue.connect(source, sub, key)
    # (cents, customer name, email) → the rule expected to approve it, or None (stays pending)
    cases: list[tuple[int, str, str, str | None]] = [
        (1234, "A", "a@x.example", "amount equals"),
        (1235, "A", "a@x.example", None),
        (200000, "A", "a@x.example", "amount greaterThan"),
        (100000, "A", "a@x.example", None),  # greaterThan is strict
        (50, "A", "a@x.example", "amount lessThan"),
        (5500, "A", "a@x.example", "amount between"),
        (500, "Exact Name", "a@x.example", "name equals"),
        (501, "Exact Namez", "a@x.example", None),
        (502, "Megacorp Ltd", "a@x.example", "name contains"),
        (503, "A", "x@sub.trusted.com", "email domain"),
        (504, "A", "x@untrusted.com", None),
        (505, "A", "vip.buyer@x.example", "email contains"),
        (7777, "A", "a@x.example", "date between, and amount"),
        (8888, "A", "a@x.example", None),  # its date condition fails
    ]
    expected: dict[str, str | None] = {}
    for cents, name, email, rule in cases:
        [invoice] = pay_invoices(revenue.stripe, key, [cents], name=name, email=email)
        expected[invoice] = rule_ids[rule] if rule else None
    await revenue.billing.advance(clock, START + POLL)

    events = await revenue.events(installation)
    assert {e.external_event_id: e.matched_rule_id for e in events} == expected
    for e in events:
        assert (e.status, e.processed_by) == (
            ("processed", e.matched_rule_id) if e.matched_rule_id else ("pending", None)
        )
    counters = await revenue.rules(source)
    # Every invoice is evaluated by the first rule; each rule matched what the table says.
    assert counters[rule_ids["amount equals"]].evaluation_count == len(cases)
    for name, rule_id in rule_ids.items():
        assert counters[rule_id].match_count == sum(1 for c in cases if c[3] == name), name
    assert counters[rule_ids["date lessThan, and amount"]].evaluation_count == 5  # the five left pending
    pending = sorted(e.id for e in events if e.status == "pending")
    assert sorted(await revenue.outbox_ids("source_event.pending.v0")) == pending
    assert sorted((await revenue.state(installation)).pending_event_ids) == pending


async def test_revoked_key_is_an_error_at_connect_and_later(revenue: Revenue) -> None:
    clock, sub, source = await clock_bound(revenue)
    refused = new_key()
    revoke_key(revenue.stripe, refused)
    installation, connected = await revenue.connect(source, sub, refused)
    assert connected.status == "error"
    assert connected.error_message is not None and "401 Unauthorized" in connected.error_message
    assert await revenue.outbox_ids("source.activation_failed.v0") == [installation]
    row = await revenue.installation(installation)
    assert (row.status, row.error_message, row.connected_at) == ("error", connected.error_message, None)

    key = new_key()
    second, connected = await revenue.connect(source, sub, key)
    assert connected.status == "active"
    pay_invoices(revenue.stripe, key, [700])
    await revenue.billing.advance(clock, START + POLL)
    [pending] = await revenue.events(second)
    revoke_key(revenue.stripe, key)
    await revenue.billing.advance(clock, START + 2 * POLL)
    row = await revenue.installation(second)
    assert row.status == "error"
    assert row.error_message and "Stripe refused the API key (401 Unauthorized)" in row.error_message
    assert await revenue.outbox_ids("source.disconnected.v0") == [second]
    # Polling stopped, but the pending event can still be reviewed; then the workflow completes.
    state = await revenue.state(second)
    assert (state.status, state.pending_event_ids) == ("error", [pending.id])
    assert await review(revenue, second, "reject", [pending.id]) == ([pending.id], [])
    await revenue.handle(second).result()


async def test_the_reconciler_restarts_an_installation_whose_workflow_is_gone(revenue: Revenue) -> None:
    clock, sub, source = await clock_bound(revenue)
    key = new_key()
    installation, _ = await revenue.connect(source, sub, key)
    pay_invoices(revenue.stripe, key, [900])
    await revenue.billing.advance(clock, START + POLL)
    [event] = await revenue.events(installation)
    await revenue.handle(installation).terminate("an operator's mistake")

    result = await revenue.billing.env.client.execute_workflow(
        ReconcilerWorkflow.run,
        ReconcileRequest(min_age_seconds=0, merchant_id=revenue.billing.merchant.merchant_id),
        id=f"reconciler-{revenue.billing.task_queue}",
        task_queue=revenue.billing.task_queue,
    )
    assert result.started == [installation]
    # The new run loads its pending events from the database and goes on polling on the clock.
    assert (await revenue.state(installation)).pending_event_ids == [event.id]
    pay_invoices(revenue.stripe, key, [950])
    await revenue.billing.advance(clock, START + 2 * POLL)
    assert len(await revenue.events(installation)) == 2


async def test_a_whole_lifecycle_replays(revenue: Revenue) -> None:
    """Connect, two polls (then continue-as-new), a single approval, a bulk rejection, a disconnect that
    ends the workflow; recorded as histories/source-installation-<run>.json (ACCRUE_RECORD_HISTORIES=1) and
    replayed by test_replay.py with every other recorded history."""
    revenue.polls_per_run = 2
    clock, sub, source = await clock_bound(revenue)
    key = new_key()
    installation, _ = await revenue.connect(source, sub, key)
    pay_invoices(revenue.stripe, key, [100, 200])
    await revenue.billing.advance(clock, START + POLL)
    first, second = await revenue.events(installation)
    assert await review(revenue, installation, "approve", [first.id], single=True) == ([first.id], [])
    assert await review(revenue, installation, "reject", [second.id]) == ([second.id], [])
    await revenue.disconnect(installation)
    await revenue.handle(installation).result()
    assert await revenue.outbox_ids("source.disconnected.v0") == [installation]
    assert (await revenue.installation(installation)).status == "disconnected"
    chain = await run_chain(revenue.billing, source_installation_workflow_id(installation))
    assert len(chain) == 2
    await replay(chain)
    if RECORD:
        save("source-installation", chain)
