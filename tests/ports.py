"""Free ports for the servers tests start (API, Temporal, Stripe fake, webhook receivers).

Asking the kernel for port 0 hands out a port from the ephemeral range, which every outgoing connection
also draws from: between a test freeing the port and its server binding it, a client socket of this
process or of the other `make test` shard could take it ("address already in use"). These ports come from
below that range instead, each shard from its own slice, handed out in turn, so neither race can happen.
"""

from __future__ import annotations

import itertools
import os
import random
import socket

LOW, HIGH = 20_000, 32_000  # below Linux's default ephemeral range (32768–60999)


def _slice() -> range:
    shard, _, total = os.environ.get("ACCRUE_TEST_SHARD", "1/1").partition("/")
    index, count = int(shard) - 1, max(1, int(total or 1))
    width = (HIGH - LOW) // count
    return range(LOW + index * width, LOW + (index + 1) * width)


_PORTS = _slice()
_turn = itertools.count(random.randrange(len(_PORTS)))


def free_port() -> int:
    """A port nothing listens on now, not handed out before by this process (until its slice wraps)."""
    for _ in range(len(_PORTS)):
        port = _PORTS[next(_turn) % len(_PORTS)]
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port in {_PORTS.start}–{_PORTS.stop - 1}")
