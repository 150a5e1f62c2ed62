"""Several nodes as one chat service: real ``run.py node --name X [--join]``
processes joined in one Thespian convention on loopback. Users live on
their home node (where they registered); what crosses between nodes is the
durable per-destination queue (messages, receipts), presence and typing."""

from __future__ import annotations

import asyncio

import pytest

from tests.cluster.cluster_nodes import cluster
from tests.cluster.mesh_node import next_of, spread
from tests.e2e.conftest import RawClient, login, register
from tests.launched import wait_until
from transport import wire

pytestmark = pytest.mark.timeout(120)

ALICE, BOB, CAROL = "+15550001001", "+15550002002", "+15550003003"


async def sees_online(client, user: str) -> None:
    """``client`` subscribes to ``user``'s presence and sees it online."""
    client.send(wire.Subscribe((user,), ref=client.ref()))
    await client.recv_until(lambda f: isinstance(f, wire.Presence) and f.online, 5)


async def test_two_nodes_chat_with_ticks_presence_and_typing(tmp_path):
    with cluster(tmp_path, ("A", "B")) as c:
        a, b = c["A"].node, c["B"].node
        alice, bob = await register(a, ALICE), await register(b, BOB)
        ca, cb = await login(a, alice), await login(b, bob)
        # alice (on A) watches bob (on B): online, seen across nodes.
        await sees_online(ca, BOB)
        # 20 messages each way, acked after the commit on the sender's node,
        # pushed to the recipient on the other node in order.
        for i in range(20):
            ref = ca.send(wire.Send(f"a{i}", BOB, b"hi bob %d" % i, ref=ca.ref()))
            assert isinstance(await ca.answer(ref), wire.Ack)
        for i in range(20):
            cb.send(wire.Send(f"b{i}", ALICE, b"hi alice %d" % i, ref=cb.ref()))
        got_b = [await next_of(cb, wire.Message) for _ in range(20)]
        assert [m.id for m in got_b] == [f"a{i}" for i in range(20)]
        assert got_b[3].body == b"hi bob 3" and got_b[3].sender == ALICE
        got_a = [await next_of(ca, wire.Message) for _ in range(20)]
        assert [m.id for m in got_a] == [f"b{i}" for i in range(20)]
        # two ticks, then read ticks, back across the nodes
        cb.send(wire.Received(tuple(m.seq for m in got_b), ref=cb.ref()))
        delivered = {(await next_of(ca, wire.Receipt)).id for _ in range(20)}
        assert delivered == {f"a{i}" for i in range(20)}
        cb.send(wire.Read(ALICE, ("a0", "a1"), ref=cb.ref()))
        reads = [await next_of(ca, wire.Receipt) for _ in range(2)]
        assert {(r.id, r.kind) for r in reads} == {("a0", wire.ReceiptKind.READ),
                                                   ("a1", wire.ReceiptKind.READ)}
        # typing crosses; bob leaving shows as offline with a last seen
        cb.send(wire.Typing(ALICE, True, ref=cb.ref()))
        assert (await next_of(ca, wire.TypingEvent)).sender == BOB
        await cb.close()
        gone = await next_of(ca, wire.Presence)
        assert not gone.online and gone.last_seen, gone
        await ca.close()


async def test_a_user_is_sent_to_its_home_node(tmp_path):
    with cluster(tmp_path, ("A", "B")) as c:
        a, b = c["A"].node, c["B"].node
        bob = await register(b, BOB)
        # login at A: WRONG_NODE with B's client address, and the connection closes
        client = await RawClient.connect(a)
        await client.hello()
        signature = bob.key.sign(wire.login_challenge(client.nonce, BOB, bob.device))
        reply = await client.answer(client.send(wire.Login(BOB, bob.device, signature,
                                                           ref=client.ref())))
        assert isinstance(reply, wire.Error) and reply.code == wire.ErrorCode.WRONG_NODE, reply
        assert tuple(reply.redirect) == ("127.0.0.1", b.port)
        assert await client.closed()
        # registering bob again at A goes to B too: one home per phone
        client = await RawClient.connect(a)
        await client.hello()
        reply = await client.answer(client.send(wire.Register(BOB, ref=client.ref())))
        assert reply.code == wire.ErrorCode.WRONG_NODE and reply.redirect[1] == b.port
        await client.close()
        # a new phone registered at B first is B's, even when asked at A next
        carol = await register(b, CAROL)
        client = await RawClient.connect(a)
        await client.hello()
        reply = await client.answer(client.send(wire.Register(CAROL, ref=client.ref())))
        assert reply.code == wire.ErrorCode.WRONG_NODE and reply.redirect[1] == b.port
        await client.close()
        assert carol.phone == CAROL


async def test_messages_to_an_offline_user_on_another_node_wait_for_it(tmp_path):
    with cluster(tmp_path, ("A", "B")) as c:
        a, b = c["A"].node, c["B"].node
        alice, bob = await register(a, ALICE), await register(b, BOB)
        ca = await login(a, alice)
        for i in range(30):
            ref = ca.send(wire.Send(f"m{i}", BOB, b"x", ref=ca.ref()))
            assert isinstance(await ca.answer(ref), wire.Ack)
        await asyncio.sleep(0.5)          # shipped to B and stored there meanwhile
        cb = await login(b, bob)
        got = [await next_of(cb, wire.Message) for _ in range(30)]
        assert [m.id for m in got] == [f"m{i}" for i in range(30)]
        # a resent id is stored once, even across nodes
        ref = ca.send(wire.Send("m5", BOB, b"x", ref=ca.ref()))
        assert isinstance(await ca.answer(ref), wire.Ack)
        with pytest.raises(asyncio.TimeoutError):
            await next_of(cb, wire.Message, timeout=1.0)
        await ca.close()
        await cb.close()


async def test_a_restarted_node_learns_who_is_online_and_gets_what_was_queued(tmp_path):
    with cluster(tmp_path, ("A", "B")) as c:
        a, b = c["A"].node, c["B"].node
        alice, bob = await register(a, ALICE), await register(b, BOB)
        ca = await login(a, alice)
        ca.send(wire.Subscribe((BOB,), ref=ca.ref()))
        port = b.port
        c["B"].kill()
        # A keeps accepting messages for bob while B is down: queued on A
        for i in range(10):
            ref = ca.send(wire.Send(f"q{i}", BOB, b"x", ref=ca.ref()))
            assert isinstance(await ca.answer(ref), wire.Ack)
        b = c.restart("B", port).node
        await asyncio.to_thread(wait_until, lambda: "heard of node B (up)" in c["A"].log()
                                or "node B is up" in c["A"].log(), 20)
        cb = await login(b, bob)
        got = [await next_of(cb, wire.Message, 10) for _ in range(10)]
        assert [m.id for m in got] == [f"q{i}" for i in range(10)]
        # bob, on the new B, sees alice online on A without her doing anything
        cb.send(wire.Subscribe((ALICE,), ref=cb.ref()))
        await cb.recv_until(lambda f: isinstance(f, wire.Presence) and f.user == ALICE
                            and f.online, 5)
        await ca.close()
        await cb.close()


async def test_the_cluster_heals_when_the_leader_is_restarted(tmp_path):
    with cluster(tmp_path, ("A", "B")) as c:
        a, b = c["A"].node, c["B"].node
        alice, bob = await register(a, ALICE), await register(b, BOB)
        port = a.port
        c["A"].kill()
        a = (await asyncio.to_thread(c.restart, "A", port)).node
        # B's launcher finds the new cluster directory and B joins it again
        await asyncio.to_thread(wait_until, lambda: "joining it again" in c["B"].log(), 30)
        await asyncio.to_thread(wait_until, lambda: "heard of node B (up)" in c["A"].log(), 20)
        ca, cb = await login(a, alice), await login(b, bob)
        ref = ca.send(wire.Send("after", BOB, b"x", ref=ca.ref()))
        assert isinstance(await ca.answer(ref), wire.Ack)
        assert (await next_of(cb, wire.Message, 10)).id == "after"
        ref = cb.send(wire.Send("back", ALICE, b"y", ref=cb.ref()))
        assert isinstance(await cb.answer(ref), wire.Ack)
        assert (await next_of(ca, wire.Message, 10)).id == "back"
        carol = await register(b, CAROL)           # a new home assigned by the new directory
        assert carol.phone == CAROL
        await ca.close()
        await cb.close()


async def test_an_unconfirmed_register_decides_no_home(tmp_path):
    with cluster(tmp_path, ("A", "B")) as c:
        a, b = c["A"].node, c["B"].node
        # anyone may ask A for a code for carol's number: that decides nothing
        client = await RawClient.connect(a)
        await client.hello()
        assert isinstance(await client.answer(client.send(wire.Register(CAROL, ref=client.ref()))),
                          wire.Ack)
        await client.close()
        # carol registers on B for real: B is her home, and A sends her there
        carol = await register(b, CAROL)
        client = await RawClient.connect(a)
        await client.hello()
        signature = carol.key.sign(wire.login_challenge(client.nonce, CAROL, carol.device))
        reply = await client.answer(client.send(wire.Login(CAROL, carol.device, signature,
                                                           ref=client.ref())))
        assert reply.code == wire.ErrorCode.WRONG_NODE and reply.redirect[1] == b.port, reply
        await client.close()


async def test_senders_wait_when_the_queue_to_a_node_is_full(tmp_path):
    with cluster(tmp_path, ("A", "B"), settings=("outq_high=5",)) as c:
        a, b = c["A"].node, c["B"].node
        alice, bob = await register(a, ALICE), await register(b, BOB)
        ca = await login(a, alice)
        c["B"].kill()                      # bob's node is down: A queues for it
        for i in range(5):
            ref = ca.send(wire.Send(f"q{i}", BOB, b"x", ref=ca.ref()))
            assert isinstance(await ca.answer(ref), wire.Ack)
        await asyncio.sleep(0.2)           # (queue sizes are re-read every 0.1 s)
        reply = await ca.answer(ca.send(wire.Send("q5", BOB, b"x", ref=ca.ref())))
        assert reply.code == wire.ErrorCode.RATE_LIMITED and "behind" in reply.message, reply
        # carol, on A itself, is not held back
        carol = await register(a, CAROL)
        reply = await ca.answer(ca.send(wire.Send("c0", CAROL, b"x", ref=ca.ref())))
        assert isinstance(reply, wire.Ack) and carol.phone == CAROL
        await ca.close()


async def test_users_of_a_dead_leader_go_offline_when_it_is_back(tmp_path):
    with cluster(tmp_path, ("A", "B")) as c:
        a, b = c["A"].node, c["B"].node
        alice, bob = await register(a, ALICE), await register(b, BOB)
        ca, cb = await login(a, alice), await login(b, bob)
        await sees_online(cb, ALICE)
        port = a.port
        c["A"].kill()             # nobody can say so: the directory died with it
        await asyncio.to_thread(c.restart, "A", port)
        # A's new workers join under the old names at new addresses: what the
        # old ones said (alice online) is void, and alice did not come back
        gone, _ = await cb.recv_until(lambda f: isinstance(f, wire.Presence)
                                      and f.user == ALICE and not f.online, 20)
        assert gone.last_seen, gone
        await cb.close()


async def test_users_of_a_worker_that_never_comes_back_go_offline(tmp_path):
    """The leader ran two workers and comes back with one: nobody says that
    its worker 1 died, so B must learn it from the node's worker count."""
    with cluster(tmp_path, ("A", "B"), workers=2) as c:
        a, b = c["A"].node, c["B"].node
        phones = [f"+155500090{i:02d}" for i in range(6)]
        accounts = [await register(a, phone) for phone in phones]
        bob = await register(b, BOB)
        clients = [await login(a, account) for account in accounts]
        await spread(c["A"], clients, accounts)         # some on A/0, some on A/1
        cb = await login(b, bob)
        cb.send(wire.Subscribe(tuple(phones), ref=cb.ref()))
        online: set[str] = set()
        while online != set(phones):
            frame, _ = await cb.recv_until(lambda f: isinstance(f, wire.Presence), 10)
            (online.add if frame.online else online.discard)(frame.user)
        port = a.port
        c["A"].kill()
        await asyncio.to_thread(c.restart, "A", port)   # with one worker
        while online:
            frame, _ = await cb.recv_until(lambda f: isinstance(f, wire.Presence), 20)
            (online.add if frame.online else online.discard)(frame.user)
        await cb.close()
