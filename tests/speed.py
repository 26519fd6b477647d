"""Test-session speed-ups that change no behaviour under test (imported once by tests/conftest.py).

One verifying SSL context for every httpx client the test process makes. httpx builds a new context for each
Client/AsyncClient, loading certifi's whole CA bundle each time (30-200 ms on a CI core); the suite makes
thousands of clients (each `client`/`sdk` fixture, each billing stack, `httpx.get` calls), nearly all of them
for plain-http servers on 127.0.0.1. The shared context is the very one httpx would build (same CA file,
same verification), made once per CA setting; clients given an explicit `verify` or `cert` are untouched."""

from __future__ import annotations

import os
import ssl
from typing import Any

import httpx._transports.default as _transports

_build = _transports.create_ssl_context
_shared: dict[tuple[str | None, str | None], ssl.SSLContext] = {}


def _create_ssl_context(verify: Any = True, cert: Any = None, trust_env: bool = True) -> ssl.SSLContext:
    if verify is not True or cert is not None:
        return _build(verify=verify, cert=cert, trust_env=trust_env)
    key = (os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")) if trust_env else (None, None)
    context = _shared.get(key)
    if context is None:
        context = _shared[key] = _build(verify=verify, cert=cert, trust_env=trust_env)
    return context


def install() -> None:
    _transports.create_ssl_context = _create_ssl_context
