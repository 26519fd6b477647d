"""Keep the credentials of the hosted pages out of log files.

A portal link's token and a payment session id are the only credential of the portal and the checkout
page, and both travel in URL paths, which the access log prints in full. The filter replaces them before
any handler formats the record.
"""

from __future__ import annotations

import logging
import re

from domain.ids import PREFIXES

_SECRETS = re.compile(r"(/portal/)[^/?#\s\"]+|\b(" + PREFIXES["payment_session"] + r"_)[A-Za-z0-9]+")
REDACTED = "[redacted]"
LOGGERS = ("uvicorn.access", "uvicorn.error", "accrue.api")


def redact(text: str) -> str:
    return _SECRETS.sub(lambda m: (m[1] or m[2]) + REDACTED, text)


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            # uvicorn's access formatter unpacks exactly these five args; only the path can hold a secret.
            record.args = (args[0], args[1], redact(str(args[2])), args[3], args[4])
            return True
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def install() -> None:
    """Idempotent: one filter per logger however many apps a process builds (the tests build several)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())
