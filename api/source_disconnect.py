"""Disconnecting a source installation (D15): the one service behind
`DELETE /v0/sources/{id}/installations/{installationId}` and the portal's Disconnect button."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from api.source_temporal import UNREACHABLE, ClientSource, resolve, unavailable
from db.models import SourceInstallation
from workflows.client import disconnect_installation


async def disconnect(
    session: AsyncSession, client: ClientSource, row: SourceInstallation
) -> SourceInstallation:
    """Stop polling: the installation becomes `disconnected` (`source.disconnected.v0`), written by its
    workflow. Idempotent: one already disconnected, or in `error` with its workflow ended, is left as it
    is. Returns the row reloaded; ApiError 503 when the workflow service is out of reach."""
    if row.status in ("pending", "active"):
        temporal = await resolve(client)
        await session.commit()  # end the read: the workflow writes the disconnection
        try:
            await disconnect_installation(temporal, row.id)
        except WorkflowUpdateFailedError:
            pass  # refused: already disconnected (or in error); the row says which
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise unavailable("disconnect the installation", exc) from None
        except UNREACHABLE as exc:
            raise unavailable("disconnect the installation", exc) from None
        await session.refresh(row)
    return row
