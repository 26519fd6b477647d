"""Outbox payloads (and, in the webhooks issue, webhook `data`) rendered with the API's own representations,
so a payload says exactly what GET says for the same state of the resource."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy.ext.asyncio import AsyncSession

from api.schemas.invoices import InvoiceOut
from api.schemas.source_views import InstallationOut, SourceEventOut
from api.schemas.subscriptions import SubscriptionOut
from db.invoice_totals import stored_totals
from db.models import Invoice, SourceEvent, SourceInstallation, Subscription
from db.sources import EventRow
from db.subscriptions import view_rows


async def invoice_data(session: AsyncSession, invoice: Invoice, base_url: str) -> dict[str, Any]:
    """GET /v2/invoices/{id} of the invoice as this transaction leaves it. Only finalized invoices are
    reported, whose stored columns are their totals."""
    await session.flush()
    # The server sets the timestamps; a flushed row's are expired and must be read back.
    await session.refresh(invoice, ["created_at", "updated_at"])
    return InvoiceOut.of(invoice, stored_totals(invoice), base_url).model_dump(mode="json", by_alias=True)


async def subscription_data(session: AsyncSession, sub: Subscription, base_url: str) -> dict[str, Any]:
    """GET /v0/subscriptions/{id} of the subscription as this transaction leaves it."""
    await session.flush()
    await session.refresh(sub, ["created_at", "updated_at"])
    rows = await view_rows(session, sub)
    out = SubscriptionOut.of(
        sub,
        invoice0=rows.invoice0,
        session=rows.payment,
        base_url=base_url,
        tax_rate=rows.tax_rate,
        wallet=rows.wallet,
        wallet_charge=rows.wallet_charge,
    )
    return out.model_dump(mode="json", by_alias=True)


async def installation_data(session: AsyncSession, installation: SourceInstallation) -> dict[str, Any]:
    """GET …/installations/{id} of the installation as this transaction leaves it."""
    await session.flush()
    await session.refresh(installation, ["created_at", "updated_at"])
    return InstallationOut.of(installation).model_dump(mode="json", by_alias=True)


def source_event_data(event: SourceEvent | EventRow) -> dict[str, Any]:
    """GET /v0/sources/{id}/events/{eventId} of the event; its timestamps are already read (the batched
    writes of db/sources.py return or set them), so no round trip. An EventRow has every column
    SourceEventOut reads."""
    return SourceEventOut.of(cast(SourceEvent, event)).model_dump(mode="json", by_alias=True)
