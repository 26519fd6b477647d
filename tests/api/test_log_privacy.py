"""Logs keep no credential of the hosted pages and no bound customer data, and log files are owner-only."""

from __future__ import annotations

import io
import logging
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from uvicorn.logging import AccessFormatter

from accrue.children import Child
from api import log_redaction
from db.session import create_engine

TOKEN = "eyJzdWIiOiJzdWJfMSJ9.c2lnbmF0dXJl"
SESSION = "ps_4fTq9ZkLm2Xc8Rb7Yw1Nv3Hs"


@pytest.fixture
def access_log() -> Iterator[io.StringIO]:
    log_redaction.install()
    logger = logging.getLogger("uvicorn.access")
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False)
    )
    # setLevel, not `logger.level =`: it also clears the logger's cached isEnabledFor answers, which a
    # uvicorn server started earlier in the session (log_level="warning") has filled.
    level, disabled = logger.level, logger.disabled
    logger.setLevel(logging.INFO)
    logger.disabled = False
    logger.addHandler(handler)
    yield out
    logger.removeHandler(handler)
    logger.setLevel(level)
    logger.disabled = disabled


@pytest.mark.parametrize(
    "path",
    [f"/portal/{TOKEN}", f"/checkout/{SESSION}/done", f"/v0/paymentSessions/{SESSION}/complete?x=1"],
)
def test_access_log_redacts_portal_tokens_and_payment_sessions(access_log: io.StringIO, path: str) -> None:
    # The call uvicorn's h11/httptools protocols make for every request.
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", path, "1.1", 200
    )
    line = access_log.getvalue()
    assert "[redacted]" in line and TOKEN not in line and SESSION[3:] not in line
    assert line.startswith('127.0.0.1:5000 - "GET /') and line.rstrip().endswith("200 OK")


def test_app_errors_redact_the_path(caplog: pytest.LogCaptureFixture) -> None:
    log_redaction.install()
    with caplog.at_level(logging.ERROR, logger="accrue.api"):
        logging.getLogger("accrue.api").error("unhandled error on %s %s", "GET", f"/portal/{TOKEN}")
    assert TOKEN not in caplog.text and "/portal/[redacted]" in caplog.text


async def test_database_errors_do_not_print_bound_values(database_url: str) -> None:
    engine: AsyncEngine = create_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            with pytest.raises(DBAPIError) as raised:
                query = text("SELECT CAST(:email AS text), 1 / 0")
                await conn.execute(query, {"email": "jane@customer.test"})
    finally:
        await engine.dispose()
    assert "jane@customer.test" not in str(raised.value)


async def test_child_logs_are_owner_only(tmp_path: Path) -> None:
    old = tmp_path / "api.log"
    old.write_text("from an older version\n")
    old.chmod(0o644)
    for log in (old, tmp_path / "worker.log"):
        child = await Child.start("t", [sys.executable, "-c", "print('hi')"], log, os.environ)
        await child.process.wait()
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert "hi" in (tmp_path / "worker.log").read_text()
