"""The node's log is bounded against clients: a flood of connections closed
for bad frames logs at most ``burst`` lines a period, then how many were
left out, and the node keeps serving."""

from __future__ import annotations

import asyncio
import logging
import struct

import pytest

from tests.conftest import wait_for
from tests.e2e.conftest import RawClient
from tests.e2e.test_bad_input import fatal, still_served
from transport import tcp, wire
from transport.log_limit import LogLimit

pytestmark = pytest.mark.timeout(30)


async def test_a_flood_of_bad_connections_logs_a_bounded_number_of_lines(node, caplog, monkeypatch):
    caplog.set_level(logging.INFO, "switchboard.tcp")
    monkeypatch.setattr(tcp, "closings", LogLimit(tcp.log, "connections closed", burst=5, period=1.0))
    for _ in range(4):                              # 40 bad connections, 10 at a time
        bad = [await RawClient.connect(node) for _ in range(10)]
        for client in bad:
            client.send_raw(struct.pack(">I", 3) + b"\xc1\xc1\xc1")
        await asyncio.gather(*(fatal(client, wire.ErrorCode.MALFORMED) for client in bad))
    closing = [r for r in caplog.records if r.getMessage().startswith("closing connection")]
    assert 5 <= len(closing) <= 15          # 5 a second: the run may span a few periods

    def left_out() -> int:
        return sum(int(r.getMessage().split()[0]) for r in caplog.records
                   if "more connections closed" in r.getMessage())
    # The listener's sweep (every second) says how many the last period left out.
    await wait_for(lambda: len(closing) + left_out() == 40, timeout=5.0)
    await still_served(node)
