"""The SDK in a cluster, against fake servers speaking the real wire
protocol: WRONG_NODE redirects (the decision, ``link.next_node``, and the
whole dance between two nodes: the step made again at the home node, the
home remembered for reconnects, at most three redirects in a row) and
FAILED receipts (the recipient's node refused a message: a Receipt event
with Status.FAILED, never resent, group ones ignored, the CLI's ✗).
The end-to-end test against a real multi-node cluster is the integrator's."""

from __future__ import annotations

import asyncio

import pytest

from client import (
    ClientClosed, ConnectionLost, Disconnected, Receipt, Reconnected, ServerError, Status,
    Undelivered,
)
from client.link import MAX_REDIRECTS, next_node
from client_testkit import CODE, CliProcess, FakeServer, next_event, now_ms, stop_all
from transport import wire
from transport.crypto import DeviceKey

E = wire.ErrorCode
ALICE, BOB = "+15550000001", "+15550000002"
FAILED = wire.ReceiptKind.FAILED


@pytest.fixture
async def home(tmp_path):
    """A second node: the user's home, where the first one sends them."""
    node = FakeServer(str(tmp_path / "home"))
    await node.listen()
    yield node
    await node.stop()


def redirect_to(node: FakeServer):
    """A handler: answer WRONG_NODE pointing at ``node``, then close (as a cluster node does)."""
    def handler(conn, frame):
        conn.send(wire.wrong_node(frame.ref, "127.0.0.1", node.port))
        conn.transport.close()
    return handler


def wrong_node(host: str = "10.0.0.2", port: int = 5222) -> ServerError:
    """The ServerError the connection makes of a decoded WRONG_NODE frame."""
    frame = wire.decode_server_frame(wire.encode(wire.wrong_node(1, host, port)))
    return ServerError(frame.code, frame.message, frame.retry_after, frame.redirect)


# -- the decision ----------------------------------------------------------------------------

def test_next_node_follows_a_wrong_node_with_an_address():
    assert [next_node(wrong_node(), n) for n in range(MAX_REDIRECTS)] == [("10.0.0.2", 5222)] * 3


def test_the_fourth_redirect_in_a_row_raises():
    with pytest.raises(ServerError) as caught:
        next_node(wrong_node("10.0.0.9", 7000), MAX_REDIRECTS)
    assert caught.value.code is E.WRONG_NODE and caught.value.redirect is None
    assert "4 times in a row" in str(caught.value) and "10.0.0.9:7000" in str(caught.value)


@pytest.mark.parametrize("error", [
    None, ConnectionLost("closed"), ServerError(E.SHUTTING_DOWN, "bye"),
    ServerError(E.WRONG_NODE, "somewhere else, not known where"),      # no address: not followed
    ServerError(E.LOGIN_FAILED, "no", redirect=("10.0.0.2", 5222)),    # only WRONG_NODE redirects
])
def test_anything_else_is_not_a_redirect(error):
    assert next_node(error, 0) is None and next_node(error, 99) is None


# -- redirects between two nodes -----------------------------------------------------------------

async def test_login_is_made_again_at_the_home_node_and_reconnects_go_there(server, home, make_client):
    # Step 1: Alice's account lives on `home`; the node the app was given sends her there
    device, key = home.add_account(ALICE)
    server.on(wire.Login, redirect_to(home))
    client = await make_client()
    assert client.home == ("127.0.0.1", server.port)
    await client.login(ALICE, device, key)
    assert client.connected and client.home == ("127.0.0.1", home.port)
    with pytest.raises(AttributeError):
        client.home = ("127.0.0.1", server.port)   # read-only
    assert len(server.frames(wire.Login)) == 1 and len(home.frames(wire.Login)) == 1
    assert ALICE in home.online

    # Step 2: a drop: the reconnect goes to the home node, not the first one
    home.drop()
    event = await next_event(client)
    assert isinstance(event, Disconnected) and "WRONG_NODE" not in event.reason   # the redirect was silent
    await next_event(client, (Reconnected,))
    assert len(server.conns) == 1 and len(home.frames(wire.Login)) == 2
    assert await client.ping() > 0


async def test_registration_steps_follow_the_redirect(server, home, make_client):
    # REGISTER is refused by the first node; CONFIRM and LOGIN then happen at home
    server.on(wire.Register, redirect_to(home))
    client = await make_client()
    await client.register(ALICE)
    key = DeviceKey()
    device = await client.confirm(ALICE, CODE, key)
    await client.login(ALICE, device, key)
    assert home.accounts[ALICE] == (device, key.public) and ALICE in home.online
    assert [type(f) for _, f in server.log] == [wire.Hello, wire.Register]
    assert client.home == ("127.0.0.1", home.port)


async def test_nodes_that_disagree_are_given_up_after_three_redirects(server, home, make_client):
    # Each node says Alice lives on the other: redirects 1..3 are followed, the 4th is refused
    server.on(wire.Login, redirect_to(home))
    home.on(wire.Login, redirect_to(server))
    device, key = server.add_account(ALICE)
    client = await make_client()
    with pytest.raises(ServerError) as caught:
        await client.login(ALICE, device, key)
    assert caught.value.code is E.WRONG_NODE and "in a row" in str(caught.value)
    assert len(server.frames(wire.Login)) == 2 and len(home.frames(wire.Login)) == 2
    assert client.closed and client.closed_reason is caught.value
    event = await next_event(client, (Disconnected,))
    assert not event.reconnecting
    with pytest.raises(ClientClosed):
        await client.ping()


async def test_a_wrong_node_without_an_address_reaches_the_app(server, make_client):
    server.on(wire.Login, lambda conn, f: conn.fail(f.ref, E.WRONG_NODE, "not here"))
    device, key = server.add_account(ALICE)
    client = await make_client()
    with pytest.raises(ServerError) as caught:
        await client.login(ALICE, device, key)
    assert caught.value.code is E.WRONG_NODE and caught.value.redirect is None
    assert client.home == ("127.0.0.1", server.port) and not client.closed


async def test_a_user_moved_meanwhile_is_followed_on_reconnect(server, home, logged_in):
    # Step 1: logged in at the first node; then the cluster moves Alice's home
    client = await logged_in(ALICE)
    home.accounts[ALICE] = server.accounts[ALICE]
    server.on(wire.Login, redirect_to(home))
    # Step 2: a drop; the re-login at the old home is sent on, and made at the new one
    server.drop()
    await next_event(client, (Reconnected,))
    assert client.home == ("127.0.0.1", home.port) and ALICE in home.online
    assert len(server.frames(wire.Login)) == 2


async def test_an_unreachable_home_is_retried_not_replaced(server, home, make_client):
    # Step 1: logged in at home after a redirect
    device, key = home.add_account(ALICE)
    server.on(wire.Login, redirect_to(home))
    client = await make_client()
    await client.login(ALICE, device, key)
    # Step 2: home goes down; the client keeps trying home (the backoff), never the first node
    await home.stop_listening()
    home.drop()
    await next_event(client, (Disconnected,))
    await asyncio.sleep(0.5)                        # several attempts at FAST's backoff (<= 0.1 s)
    assert not client.connected and len(server.conns) == 1
    # Step 3: home is back on its port; the client logs in there
    await home.listen()
    await next_event(client, (Reconnected,))
    assert client.home == ("127.0.0.1", home.port) and ALICE in home.online


# -- FAILED receipts ---------------------------------------------------------------------------

def failed(id: str, by: str = BOB, group: str | None = None):
    return lambda seq: wire.Receipt(seq, FAILED, id, by, now_ms(), group)


async def test_failed_receipt_is_an_event_and_the_status(server, logged_in):
    alice = await logged_in(ALICE)
    server.add_account(BOB)
    await alice.send(BOB, b"hi", id="m1")
    item = server.append(ALICE, failed("m1"))
    event = await next_event(alice, (Receipt,))
    assert (event.seq, event.kind, event.id, event.by) == (item.seq, Status.FAILED, "m1", BOB)
    assert alice.status("m1") is Status.FAILED and Status.FAILED.ticks == "✗ not delivered"
    await server.wait(lambda: item.seq not in server.inboxes[ALICE])    # acknowledged


async def test_failed_message_whose_ack_was_lost_is_never_resent(server, logged_in):
    # Step 1: the SEND is committed but its ACK lost; then the FAILED receipt comes
    alice = await logged_in(ALICE)
    server.add_account(BOB)
    server.on(wire.Send, lambda conn, f: None)
    send = asyncio.ensure_future(alice.send(BOB, b"hi", id="m1"))
    await server.wait(lambda: server.frames(wire.Send))
    server.append(ALICE, failed("m1"))
    with pytest.raises(Undelivered, match="m1"):
        await asyncio.wait_for(send, 3)
    assert alice.outbox == [] and alice.status("m1") is Status.FAILED
    # Step 2: after a reconnect nothing is sent again
    server.on(wire.Send, server.default)
    server.drop()
    await next_event(alice, (Reconnected,))
    assert await alice.ping() > 0
    assert len(server.frames(wire.Send)) == 1


async def test_failed_after_delivered_does_not_lower_the_status(server, logged_in):
    alice, bob = await logged_in(ALICE), await logged_in(BOB)
    await alice.send(BOB, b"hi", id="m1")
    await next_event(bob)
    await next_event(alice, (Receipt,))
    assert alice.status("m1") is Status.DELIVERED
    server.append(ALICE, failed("m1"))
    assert (await next_event(alice, (Receipt,))).kind is Status.FAILED
    assert alice.status("m1") is Status.DELIVERED


async def test_a_group_failed_receipt_is_acknowledged_and_ignored(server, logged_in):
    alice = await logged_in(ALICE)
    ignored = server.append(ALICE, failed("g1", group=f"{ALICE}/team"))
    server.append(ALICE, lambda seq: wire.Receipt(seq, wire.ReceiptKind.DELIVERED, "m9", BOB, now_ms()))
    event = await next_event(alice)                 # the next item's event: none for the first
    assert isinstance(event, Receipt) and event.id == "m9"
    await server.wait(lambda: ignored.seq not in server.inboxes[ALICE])
    assert alice.status("g1") is None


async def test_an_end_to_end_client_takes_a_failed_receipt(server, make_client):
    device, key = server.add_account(ALICE)
    alice = await make_client(e2e=True)
    await alice.login(ALICE, device, key)           # publishes its keys
    item = server.append(ALICE, failed("m1"))
    event = await next_event(alice, (Receipt,))
    assert (event.kind, event.id) == (Status.FAILED, "m1")
    await server.wait(lambda: item.seq not in server.inboxes[ALICE])
    assert alice.connected and await alice.ping() > 0


async def test_cli_shows_a_message_not_delivered(server, tmp_path):
    # Step 1: Bob registers once (publishing his keys) and leaves
    def start(phone):
        return CliProcess.start("--phone", phone, "--port", str(server.port), "--data-dir",
                                server.data_dir, "--profile", str(tmp_path / phone), home=str(tmp_path))
    procs = [await start(BOB)]
    try:
        await procs[0].expect(rf"logged in as \{BOB}")
        assert await procs[0].stop() == 0

        # Step 2: Alice writes to him; her node accepts it, his refuses it
        def refused_by_his_node(conn, f):
            ts = now_ms()
            conn.ack(f, ts)
            server.append(conn.user, lambda seq: wire.Receipt(seq, FAILED, f.id, f.to, ts))
        server.on(wire.Send, refused_by_his_node)
        procs.append(alice := await start(ALICE))
        await alice.expect(rf"logged in as \{ALICE}")
        alice.write(f"/chat {BOB}")
        alice.write("hello bob")
        await alice.expect(rf"you → \{BOB}: hello bob ✓$")
        await alice.expect(rf"you → \{BOB}: hello bob ✗ not delivered$")
    finally:
        await stop_all(procs)

