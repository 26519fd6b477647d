"""Source installations (D15, an extension: Paygentic documents the list but not the rest): a source
connected to one subscription with the customer's Stripe key. Connect goes through api/source_connect.py;
disconnect through the installation's workflow. The key is never returned: its last four and mode are."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from api.app_state import settings_of
from api.deps import Context, Ctx, Paging
from api.problems import not_found
from api.schemas.source_views import InstallationOut
from api.schemas.sources import InstallationCreate
from api.source_connect import connect
from api.source_disconnect import disconnect
from api.source_temporal import lazy_client
from api.wire import ListResponse, list_envelope
from db.models import Source, SourceInstallation

router = APIRouter(prefix="/v0/sources", tags=["sources"])

InstallationStatus = Literal["pending", "active", "disconnected", "error"]


async def _installation(ctx: Ctx, source_id: str, installation_id: str) -> SourceInstallation:
    source = await ctx.owned(Source, source_id, "Source")
    row = await ctx.session.get(SourceInstallation, installation_id)
    if row is None or row.source_id != source.id:
        raise not_found("Installation", installation_id)
    return row


@router.post("/{id}/installations", status_code=201, response_model=InstallationOut)
async def create_installation(
    id: str, body: InstallationCreate, ctx: Context, request: Request
) -> InstallationOut:
    """Connect a subscription of the source's plan with the customer's Stripe secret key (a test key in the
    sandbox, a live key in live). Answers once the key is validated: `active`, or `error` with
    `errorMessage`; `pending` if validation takes longer than 30 s."""
    source = await ctx.owned(Source, id, "Source")
    row = await connect(
        ctx.session,
        settings_of(request),
        lazy_client(request.app, "connect the source"),
        merchant_id=ctx.caller.merchant_id,
        environment=ctx.caller.environment,
        source=source,
        subscription_id=body.subscription_id,
        stripe_secret_key=body.stripe_secret_key,
        import_from=body.import_from,
    )
    return InstallationOut.of(row)


@router.get("/{id}/installations", response_model=ListResponse[InstallationOut])
async def list_installations(
    id: str,
    ctx: Context,
    page: Paging,
    subscription_id: Annotated[str | None, Query(alias="subscriptionId")] = None,
    status: Annotated[InstallationStatus | None, Query()] = None,
) -> ListResponse[InstallationOut]:
    """Newest first. An empty list for a subscription: its customer never connected."""
    source = await ctx.owned(Source, id, "Source")
    query = ctx.scoped(SourceInstallation).where(SourceInstallation.source_id == source.id)
    if subscription_id is not None:
        query = query.where(SourceInstallation.subscription_id == subscription_id)
    if status is not None:
        query = query.where(SourceInstallation.status == status)
    order = (SourceInstallation.created_at.desc(), SourceInstallation.id.desc())
    rows, total = await ctx.page(query, page, *order)
    return list_envelope([InstallationOut.of(r) for r in rows], page, total)


@router.get("/{id}/installations/{installationId}", response_model=InstallationOut)
async def get_installation(id: str, installationId: str, ctx: Context) -> InstallationOut:
    return InstallationOut.of(await _installation(ctx, id, installationId))


@router.delete("/{id}/installations/{installationId}", response_model=InstallationOut)
async def disconnect_source_installation(
    id: str, installationId: str, ctx: Context, request: Request
) -> InstallationOut:
    """Stop polling: the installation becomes `disconnected` (`source.disconnected.v0`). Idempotent: an
    installation already disconnected, or in `error` with its workflow ended, answers as it is."""
    row = await _installation(ctx, id, installationId)
    row = await disconnect(ctx.session, lazy_client(request.app, "disconnect the installation"), row)
    return InstallationOut.of(row)
