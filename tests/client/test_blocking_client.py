"""Blocking from the SDK (``Client.block``, ``unblock``, ``blocked``) and
from the terminal client (``/block``, ``/unblock``, ``/blocked``), against a
real node."""

from __future__ import annotations

import asyncio

import pytest

from client import Message, ServerError
from client_testkit import CliProcess, next_event, stop_all
from tests.client.test_node_e2e import sdk_user
from tests.e2e.conftest import node  # noqa: F401  (the running-node fixture)
from transport import wire

pytestmark = pytest.mark.timeout(60)

ALICE, BOB = "+15550000091", "+15550000092"


async def test_sdk_block_unblock_and_the_list(node):  # noqa: F811
    alice, bob = await sdk_user(node, ALICE), await sdk_user(node, BOB)
    try:
        await bob.block(ALICE)
        assert await bob.blocked() == [ALICE]
        sent = await alice.send(BOB, b"spam")              # acked all the same: one tick
        assert sent.id
        with pytest.raises(asyncio.TimeoutError):
            await next_event(bob, (Message,), timeout=0.8)
        with pytest.raises(ServerError) as refused:
            await bob.send(ALICE, b"hey")
        assert refused.value.code == wire.ErrorCode.INVALID
        assert "unblock them first" in str(refused.value)
        with pytest.raises(ServerError) as self_block:
            await bob.block(BOB)
        assert self_block.value.code == wire.ErrorCode.INVALID
        await bob.unblock(ALICE)
        assert await bob.blocked() == []
        await alice.send(BOB, b"hello again")
        got = await next_event(bob, (Message,))
        assert (got.sender, got.body) == (ALICE, b"hello again")
    finally:
        for client in (alice, bob):
            await asyncio.wait_for(client.close(), 5)


async def test_cli_block_commands(node, tmp_path):  # noqa: F811
    procs = []
    try:
        await sdk_user(node, ALICE)
        bob = await CliProcess.logged_in(node, tmp_path, BOB)
        procs.append(bob)
        bob.write("/blocked")
        await bob.expect(r"-- you have blocked nobody")
        bob.write(f"/block {ALICE}")
        await bob.expect(rf"-- blocked \{ALICE}$")
        bob.write("/block nobody")
        await bob.expect(r"-- usage: /block \+NUMBER")
        bob.write("/blocked")
        await bob.expect(rf"-- blocked: \{ALICE}$")
        bob.write(f"/unblock {ALICE}")
        await bob.expect(rf"-- unblocked \{ALICE}$")
        bob.write("/blocked")
        await bob.expect(r"-- you have blocked nobody")
    finally:
        await stop_all(procs)
