"""The merchant's review page (`GET /v0/sources/{id}/reviewLink`): pending events listed with amount,
customer and date; approve, reject and bulk actions through the installation's workflow updates, recorded
as the user who asked for the link; links that open nothing."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html import unescape
from urllib.parse import parse_qs, urlsplit

import httpx
from sqlalchemy import select

from api import portal_tokens
from db.models import SourceEvent
from db.session import session_factory
from settings import Settings
from tests.stripe_fake import new_key, pay_invoices
from tests.workflows import source_harness
from tests.workflows.source_harness import POLL, Revenue

env, revenue = source_harness.env, source_harness.revenue  # the module's fixtures

START = datetime(2028, 1, 1, tzinfo=UTC)


async def pending_source(revenue: Revenue, amounts: list[int]) -> tuple[str, list[str]]:
    """A manual source with one clock-bound installation that imported one pending event per amount
    (cents); returns (source id, event ids in payment order)."""
    plan, metric = await revenue.catalog("0.05")
    clock = await revenue.billing.clock(START)
    sub = await revenue.subscription(plan, START, clock)
    source = await revenue.source(plan, metric)
    key = new_key()
    installation, connected = await revenue.connect(source, sub, key)
    assert connected.status == "active"
    paid = pay_invoices(revenue.stripe, key, amounts, email="ops@acme.example", name="Acme Ltd")
    await revenue.billing.advance(clock, START + POLL)
    events = {e.external_event_id: e.id for e in await revenue.events(installation)}
    return source, [events[i] for i in paid]


async def source_events(revenue: Revenue, source: str) -> dict[str, SourceEvent]:
    async with session_factory(revenue.billing.engine)() as session:
        rows = await session.scalars(select(SourceEvent).where(SourceEvent.source_id == source))
        return {r.id: r for r in rows}


def page_path(url: str) -> str:
    parts = urlsplit(url)
    return parts.path


def rows(html: str) -> list[str]:
    return re.findall(r'data-testid="event-row" data-event-id="([^"]+)"', html)


def notice(response: httpx.Response) -> str:
    assert response.status_code == 303, response.text
    return parse_qs(urlsplit(response.headers["location"]).query)["notice"][0]


async def test_the_page_lists_pending_revenue_and_reviews_it_through_the_workflow(revenue: Revenue) -> None:
    source, (first, second, third, fourth) = await pending_source(revenue, [12345, 500, 990, 7000])
    http = revenue.billing.http
    link = await revenue.billing.get(f"/v0/sources/{source}/reviewLink")
    assert link["object"] == "sourceReviewLink"
    expires = datetime.fromisoformat(link["expiresAt"].replace("Z", "+00:00"))
    assert timedelta(minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=1)
    path = page_path(link["url"])

    page = await http.get(path)
    assert page.status_code == 200
    assert sorted(rows(page.text)) == sorted([first, second, third, fourth])
    text = unescape(page.text)
    assert "123.45 USD" in text and "9.90 USD" in text and "Acme Ltd · ops@acme.example" in text
    assert "Pending revenue: 4 events" in text
    assert page.headers["x-frame-options"] == "DENY" and "no-store" in page.headers["cache-control"]

    # One row's own button.
    done = await http.post(path, data={"one": f"approve {first}", "offset": "0"})
    assert notice(done) == "Approved 1 event."
    # The ticked rows; a processed one among them fails and says why.
    done = await http.post(path, data={"bulk": "approve selected", "event_ids": [second, first]})
    said = notice(done)
    assert said.startswith("Approved 1 event. 1 could not be approved: ") and first in said
    # The same row's button again: the 409's message, nothing changed.
    done = await http.post(path, data={"one": f"reject {first}"})
    assert "is processed, not pending" in notice(done)
    after = await http.get(done.headers["location"])
    assert 'class="notice bad"' in after.text
    # Everything left on the page.
    page = await http.get(path)
    assert sorted(rows(page.text)) == sorted([third, fourth])
    done = await http.post(path, data={"bulk": "reject page", "page_ids": rows(page.text)})
    assert notice(done) == "Rejected 2 events."
    assert "Nothing is waiting for review" in (await http.get(path)).text

    reviewed = await source_events(revenue, source)
    assert {i: reviewed[i].status for i in (first, second, third, fourth)} == {
        first: "processed", second: "processed", third: "rejected", fourth: "rejected",
    }  # fmt: skip
    # Recorded as the user whose API key asked for the link.
    assert {reviewed[i].processed_by for i in (first, second, third, fourth)} == {
        revenue.billing.merchant.user_id
    }


async def test_links_that_open_nothing_and_forms_that_ask_nothing(
    revenue: Revenue, settings: Settings
) -> None:
    source, [event] = await pending_source(revenue, [2500])
    http = revenue.billing.http
    path = page_path((await revenue.billing.get(f"/v0/sources/{source}/reviewLink", expiresIn="PT5M"))["url"])
    token = path.rsplit("/", 1)[1]

    tampered = await http.get(path[:-2] + ("AA" if not path.endswith("AA") else "BB"))
    assert tampered.status_code == 403 and "not valid" in tampered.text
    key = portal_tokens.signing_key(settings)
    claim = portal_tokens.verify_source_review(token, key)
    old = portal_tokens.issue_source_review(
        source, claim.merchant_id, "sandbox", claim.user_id, datetime.now(UTC) - timedelta(seconds=1), key
    )
    expired = await http.get(f"/sources/review/{old}")
    assert expired.status_code == 410 and "expired" in expired.text
    # A token naming another merchant's source (or none) shows nothing of it.
    foreign = portal_tokens.issue_source_review(
        source, "org_someoneelse", "sandbox", claim.user_id, datetime.now(UTC) + timedelta(hours=1), key
    )
    assert (await http.get(f"/sources/review/{foreign}")).status_code == 404

    cross = await http.post(path, data={"one": f"approve {event}"}, headers={"Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403
    empty = await http.post(path, data={"bulk": "approve selected"})
    assert notice(empty).startswith("Tick at least one event")
    bogus = await http.post(path, data={"one": "approve sev_notinthissource"})
    assert "not found in source" in notice(bogus)
    assert [e.status for e in (await source_events(revenue, source)).values()] == ["pending"]

    for bad in ("P8D", "PT0S", "soon"):
        response = await http.get(f"/v0/sources/{source}/reviewLink", params={"expiresIn": bad})
        assert response.status_code == 400, response.text
        assert response.json()["errors"][0]["field"] == "expiresIn"
    missing = await http.get("/v0/sources/src_doesnotexist/reviewLink")
    assert missing.status_code == 404
