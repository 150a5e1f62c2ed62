"""Fixtures for the client suite: a running ``FakeServer`` and connected or
logged-in ``Client``s, all closed at the end; the fake server and helpers
live in client_testkit.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from client import Client
from client_testkit import FAST, FakeServer


@pytest.fixture
async def server(tmp_path):
    server = FakeServer(str(tmp_path / "node"))
    await server.listen()
    yield server
    await server.stop()


@pytest.fixture
async def make_client(server):
    """``await make_client(**options)``: a connected Client with fast retries;
    all closed at the end of the test."""
    clients: list[Client] = []

    async def make(**options: Any) -> Client:
        # e2e off: these tests script the SDK's transport (outbox, acks,
        # reconnects) against accounts that never publish keys; end-to-end
        # encryption is tested against a real node (test_e2e_sdk.py)
        client = await Client.connect("127.0.0.1", server.port, **{**FAST, "e2e": False, **options})
        clients.append(client)
        return client

    yield make
    for client in clients:
        await asyncio.wait_for(client.close(), 5)


@pytest.fixture
async def logged_in(server, make_client):
    """``await logged_in(phone, **options)``: a client logged in as ``phone``
    (an account made directly in the fake server)."""
    async def make(phone: str, **options: Any) -> Client:
        device, key = server.add_account(phone)
        client = await make_client(**options)
        await client.login(phone, device, key)
        return client
    return make
