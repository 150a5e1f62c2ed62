"""The SDK under the server's send rate limit, against a real node: a
RATE_LIMITED refusal's retry-after is waited out, not cut short by the
refusals of the SENDs behind it (which carry the order gate's 1 ms), so
the outbox is not resent at every round trip."""

from __future__ import annotations

import asyncio
import time

import pytest

from client import Client
from client import connection as client_connection
from client.backoff import Backoff
from transport import wire
from transport.crypto import DeviceKey
from tests.e2e.conftest import login, node, register  # noqa: F401  (node: the running-node fixture)

pytestmark = pytest.mark.timeout(30)

ALICE, BOB = "+15550000221", "+15550000222"
MESSAGES = 40


@pytest.mark.node_config(send_rate=20, send_burst=5)
async def test_rate_limited_sends_wait_for_the_retry_after(node, monkeypatch):  # noqa: F811
    sends = 0
    request = client_connection.Connection.request

    def counting(self, frame, on_answer=None):       # the real request, counted
        nonlocal sends
        sends += type(frame) is wire.Send
        return request(self, frame, on_answer)
    monkeypatch.setattr(client_connection.Connection, "request", counting)

    bob = await login(node, await register(node, BOB))
    alice = await Client.connect(node.host, node.port, backoff=Backoff(initial=0.02, maximum=0.2),
                                 request_timeout=10.0, e2e=False)
    try:
        await alice.register(ALICE)
        key = DeviceKey()
        await alice.login(ALICE, await alice.confirm(ALICE, node.codes[ALICE], key), key)
        started = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(alice.send(BOB, b"%d" % i, id=f"s{i}")
                                                for i in range(MESSAGES))), 20)
        took = time.monotonic() - started
        # 5 at once, then 20 a second: ~1.75 s. Each message is sent about
        # three times (held one alone, then it and the next: one ACK, two
        # refusals); before, the whole window went again every round trip
        assert sends <= 4 * MESSAGES, f"{sends} SEND frames for {MESSAGES} messages in {took:.2f}s"
        assert took < 6
    finally:
        await alice.close()
        await bob.close()
