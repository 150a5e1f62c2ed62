"""The janitor forgets the client ids of messages past their retention:
until then a resend is the same message; after, it is a new one."""

from __future__ import annotations

import asyncio

import pytest

from storage.keys import client_id_bytes, dedup_key, phone_bytes
from tests.e2e.conftest import login, register
from transport import wire

pytestmark = pytest.mark.timeout(30)

ALICE, BOB = "+15550000041", "+15550000042"


def remembered(node, sender: str, client_id: str) -> bool:
    key = dedup_key(phone_bytes(sender), client_id_bytes(client_id))
    return node.system.env["mailbox"].store.read(lambda txn: txn.get("dedup", key)) is not None


async def send(client, client_id: str) -> wire.Frame:
    return await client.answer(client.send(wire.Send(client_id, BOB, b"hi", ref=client.ref())))


@pytest.mark.node_config(dedup_retention=0.3, dedup_prune_every=0.1)
async def test_a_client_id_is_forgotten_after_the_retention(node):
    alice = await login(node, await register(node, ALICE))
    await register(node, BOB)
    # Step 1: within the retention a resend returns the first ACK
    first = await send(alice, "m1")
    assert isinstance(first, wire.Ack) and remembered(node, ALICE, "m1")
    again = await send(alice, "m1")
    assert again.value == first.value and node.system.env["mailbox"].inbox_count(BOB) == 1
    # Step 2: past it, the janitor forgets the id ...
    for _ in range(100):
        if not remembered(node, ALICE, "m1"):
            break
        await asyncio.sleep(0.05)
    assert not remembered(node, ALICE, "m1")
    assert node.system.whereis("janitor")._actor.forgotten == 1
    # Step 3: ... and the same id is a new message
    assert isinstance(await send(alice, "m1"), wire.Ack)
    assert node.system.env["mailbox"].inbox_count(BOB) == 2
    await alice.close()


@pytest.mark.node_config(dedup_retention=0.1, dedup_prune_every=0.1, worker_index=1)
async def test_only_the_first_worker_prunes(node):
    alice = await login(node, await register(node, ALICE))
    await register(node, BOB)
    assert isinstance(await send(alice, "m1"), wire.Ack)
    await asyncio.sleep(0.5)                            # five intervals, all idle
    assert remembered(node, ALICE, "m1")
    assert node.system.whereis("janitor")._actor.forgotten == 0
    await alice.close()


@pytest.mark.node_config(dedup_retention=0.1, dedup_prune_every=2.0)
async def test_a_backlog_is_pruned_pass_after_pass(node, monkeypatch):
    import actors.janitor
    monkeypatch.setattr(actors.janitor, "PRUNE_LIMIT", 2)   # 5 ids: passes of 2, 2, 1
    alice = await login(node, await register(node, ALICE))
    await register(node, BOB)
    for i in range(5):
        assert isinstance(await send(alice, f"m{i}"), wire.Ack)
    janitor = node.system.whereis("janitor")._actor
    loop = asyncio.get_running_loop()
    started = loop.time()
    while janitor.forgotten < 5 and loop.time() - started < 4.5:
        await asyncio.sleep(0.05)
    # one interval (2 s) to the first pass, then no wait between full passes
    # (an interval each would take 6 s)
    assert janitor.forgotten == 5 and not any(remembered(node, ALICE, f"m{i}") for i in range(5))
    await alice.close()
