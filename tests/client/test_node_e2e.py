"""The SDK and the terminal client against a real node (the e2e suite's
``node`` fixture: the worker's real supervision tree, TCP, LMDB)."""

from __future__ import annotations

import asyncio
import random

import pytest

from actors.session_registry import clients_of, session_of
from client import Client, Message, Presence, Receipt, Status
from client_testkit import CliProcess, FAST, next_event, stop_all
from tests.conftest import wait_for
from tests.e2e.conftest import node  # noqa: F401  (the running-node fixture)
from tests.history import History
from transport.crypto import DeviceKey

pytestmark = pytest.mark.timeout(60)

ALICE, BOB = "+15550000051", "+15550000052"


async def sdk_user(running, phone: str, **options) -> Client:
    """Register, confirm and log in through the SDK on the ``running`` node."""
    client = await Client.connect(running.host, running.port, **{**FAST, **options})
    key = DeviceKey()
    await client.register(phone)
    device = await client.confirm(phone, running.codes[phone], key)
    await client.login(phone, device, key)
    return client


async def test_sdk_conversation_on_a_real_node(node):  # noqa: F811
    alice, bob = await sdk_user(node, ALICE), await sdk_user(node, BOB)
    try:
        # Step 1: presence: bob is online
        await alice.subscribe([BOB])
        presence = await next_event(alice, (Presence,))
        assert (presence.user, presence.online) == (BOB, True)
        # Step 2: one tick, two ticks, read
        sent = await alice.send(BOB, b"hello bob", id="e2e-1")
        assert sent.id == "e2e-1" and sent.ts > 0 and alice.status("e2e-1") is Status.SENT
        message = await next_event(bob, (Message,))
        assert (message.id, message.sender, message.body) == ("e2e-1", ALICE, b"hello bob")
        assert (await next_event(alice, (Receipt,))).kind is Status.DELIVERED
        await bob.mark_read(ALICE, [message.id])
        assert (await next_event(alice, (Receipt,))).kind is Status.READ
        assert alice.status("e2e-1") is Status.READ
        # Step 3: bob leaves: alice sees his last seen
        await bob.close()
        gone = await next_event(alice, (Presence,))
        assert gone.online is False and gone.last_seen >= sent.ts
    finally:
        await alice.close()
        await bob.close()


async def test_sdk_login_reports_the_previous_last_seen(node):  # noqa: F811
    """``Client.login`` returns the LOGIN ACK's map and sets ``last_seen``:
    None the first time, then the user's last seen as the node stored it
    (the node answered LOGIN with a nil ACK, found by review)."""
    key = DeviceKey()
    client = await Client.connect(node.host, node.port, **FAST)
    try:
        await client.register(ALICE)
        device = await client.confirm(ALICE, node.codes[ALICE], key)
        assert await client.login(ALICE, device, key) == {"last_seen": None}
        assert client.last_seen is None
    finally:
        await client.close()
    mail = node.system.env["mailbox"]
    seen = await wait_for(lambda: mail.get_last_seen(ALICE))    # written on disconnect
    client = await Client.connect(node.host, node.port, **FAST)
    try:
        assert await client.login(ALICE, device, key) == {"last_seen": seen}
        assert client.last_seen == seen
    finally:
        await client.close()


async def test_sdk_loses_nothing_across_drops_and_session_crashes(node):  # noqa: F811
    # Alice sends 301 messages to Bob while the node drops her connection and
    # crashes her session and Bob's at random moments. Checked with the
    # history checker: nothing acked is lost, nothing duplicated or reordered.
    alice, bob = await sdk_user(node, ALICE), await sdk_user(node, BOB)
    history, rng = History(), random.Random(7)
    tasks: list[asyncio.Future] = []       # all cancelled and reaped at the end, pass or fail
    try:
        async def receive():
            async for event in bob.events():
                if isinstance(event, Message):
                    history.deliver(event.id, event.sender, BOB, event.body)
                    if len({d[0] for d in history.deliveries}) == 301:
                        return

        async def ticks():
            async for event in alice.events():
                if isinstance(event, Receipt) and event.kind is Status.DELIVERED:
                    history.receipt(event.id, "delivered", event.by, ALICE)

        def strike(victim: str) -> None:
            if victim == "drop":
                clients_of(node.system)[ALICE].transport.abort()
            elif (session := session_of(node.system, ALICE if victim == "crash alice" else BOB)):
                session.exit(RuntimeError("injected crash"))

        # Step 1: bursts of 30 sends; each burst is hit (connection drop, or a
        # session crash) a moment after it reached the wire, while unacked
        receiving = asyncio.ensure_future(receive())
        sends, unacked_when_hit = [], []
        tasks += [receiving, asyncio.ensure_future(ticks())]
        # a first message makes the end-to-end session (KEYS_FETCH): a burst's
        # sends are then sealed and in the outbox at once, before the hit
        history.send("h-first", ALICE, BOB, b"first")
        sends.append(asyncio.ensure_future(alice.send(BOB, b"first", id="h-first")))
        tasks.append(sends[-1])
        await asyncio.wait_for(asyncio.shield(sends[-1]), 10)
        for burst in range(10):
            for i in range(burst * 30, burst * 30 + 30):
                history.send(f"h{i}", ALICE, BOB, b"%d" % i)
                sends.append(asyncio.ensure_future(alice.send(BOB, b"%d" % i, id=f"h{i}")))
                tasks.append(sends[-1])
            await asyncio.sleep(rng.uniform(0, 0.001))
            unacked_when_hit.append(len(alice.outbox))
            strike(["drop", "crash alice", "crash bob"][burst % 3])
            await wait_for(lambda: alice.connected and ALICE in clients_of(node.system)
                           and not clients_of(node.system)[ALICE].closed)
        assert sum(n > 0 for n in unacked_when_hit) >= 5, unacked_when_hit
        # Step 2: every send completes; Bob gets each message once, in order
        for result in await asyncio.wait_for(asyncio.gather(*sends), 30):
            history.ack(result.id)
        await asyncio.wait_for(receiving, 30)
        await wait_for(lambda: not history.due(), timeout=10)    # and Alice's two ticks
        verdict = history.check()
        assert verdict.ok and verdict.acked == 301 and verdict.delivered == 301, verdict.summary()
    finally:
        await alice.close()
        await bob.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_two_cli_processes_chat_on_a_real_node(node, tmp_path):  # noqa: F811
    # The test node keeps codes in memory, so the clients ask for them on stdin.
    procs = []

    async def start(phone):
        procs.append(await CliProcess.logged_in(node, tmp_path, phone))
        return procs[-1]

    try:
        alice, bob = await start(ALICE), await start(BOB)
        alice.write(f"/chat {BOB}")
        bob.write(f"/chat {ALICE}")
        await alice.expect(rf"-- \{BOB} is online")
        alice.write("hello from a terminal")
        await alice.expect(rf"you → \{BOB}: hello from a terminal ✓$")
        await bob.expect(rf"\{ALICE}: hello from a terminal$")
        await alice.expect(r"hello from a terminal ✓✓$")
        await alice.expect(r"hello from a terminal ✓✓ read$")
        bob.write("/quit")
        assert await bob.stop() == 0
        await alice.expect(rf"-- \{BOB} last seen today at \d\d:\d\d")
        alice.write(f"/last {BOB}")
        await alice.expect(rf"-- \{BOB} last seen today")
        # Bob comes back: his terminal shows when he was last here (LOGIN's ACK)
        procs.append(await CliProcess.start(
            "--phone", BOB, "--port", str(node.port), "--data-dir", str(tmp_path / "none"),
            "--profile", str(tmp_path / BOB), home=str(tmp_path)))
        await procs[-1].expect(rf"logged in as \{BOB} \(last seen today at \d\d:\d\d\)")
    finally:
        await stop_all(procs)


@pytest.mark.timeout(20)
async def test_a_request_made_as_the_connection_dies_waits_for_the_next_one(node):  # noqa: F811
    # A request made while the current connection is closing (its transport
    # closed, the SDK not told yet: that comes at the loop's next turn) used
    # to spin on it, never yielding: the loop never ran again, so the SDK
    # never heard the connection was gone. Found by the chaos load, whose
    # READs during a worker kill hung the test process.
    alice = await sdk_user(node, ALICE)
    try:
        alice._conn.transport.close()         # in the same step as the request:
        assert await alice.ping() > 0           # awaited at once, not through a task
    finally:
        await alice.close()
