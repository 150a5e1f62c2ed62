"""The SDK against a fake server: handshake, refs, errors, input checks,
heartbeats, close. (Delivery, outbox and reconnects: test_sdk_delivery.py.)"""

from __future__ import annotations

import asyncio

import pytest

from client import Client, ClientClosed, ClientError, Disconnected, RequestTimeout, ServerError
from client.groups import GroupInfo
from client_testkit import CODE, FAST, next_event, now_ms
from transport import wire
from transport.crypto import DeviceKey, verify
from transport.e2e import LocalKeys

E = wire.ErrorCode
ALICE, BOB, CAROL = "+15550000001", "+15550000002", "+15550000003"
CAROL, DAVE = "+15550000003", "+15550000004"


def with_keys(server, user):
    """An account with published keys (the fake directory checks no signatures)."""
    _, key = server.add_account(user)
    server.publish_keys(user, LocalKeys.generate(key, one_time=2).bundle())


async def test_handshake_register_confirm_login(server, make_client):
    # Step 1: connect -> HELLO with our version, heartbeat and name; HELLO_OK stored
    client = await make_client(heartbeat=45.0)
    conn = server.conns[0]
    (hello,) = server.frames(wire.Hello)
    assert (hello.version, hello.heartbeat, hello.ref) == (1, 45.0, 1)
    assert hello.client.startswith("switchboard-sdk/")
    assert (client.heartbeat, client.nonce, client.max_frame) == (45.0, conn.nonce, wire.MAX_FRAME)

    # Step 2: register and confirm with a fresh device key
    key = DeviceKey()
    await client.register(ALICE)
    device = await client.confirm(ALICE, CODE, key)
    assert device == 1 and server.accounts[ALICE] == (1, key.public)

    # Step 3: login signs the challenge over this connection's nonce
    info = await client.login(ALICE, device, key)
    (login,) = server.frames(wire.Login)
    assert verify(key.public, wire.login_challenge(conn.nonce, ALICE, device), login.signature)
    assert info == {"last_seen": None} and client.connected and client.user == ALICE
    assert [f.ref for _, f in server.log] == [1, 2, 3, 4]


async def test_login_ack_without_a_map_is_accepted(server, make_client):
    def login_acked_with_nil(conn, frame):          # what a server may send instead of a map
        conn.user = frame.user
        server.online[frame.user] = conn
        conn.ack(frame)
    server.on(wire.Login, login_acked_with_nil)
    device, key = server.add_account(ALICE)
    client = await make_client()
    assert await client.login(ALICE, device, key) == {}
    assert client.last_seen is None and client.connected


async def test_answers_matched_by_ref_in_any_order(server, logged_in):
    # The server holds the SEND's ACK and answers the PING first.
    held = []
    server.on(wire.Send, lambda conn, f: held.append((conn, f)))
    client = await logged_in(ALICE)
    server.add_account(BOB)
    send = asyncio.ensure_future(client.send(BOB, b"hi", id="m1"))
    await server.wait(lambda: held)
    assert await client.ping() > 0
    assert not send.done()
    conn, frame = held[0]
    conn.ack(frame, 1234)
    sent = await asyncio.wait_for(send, 2)
    assert (sent.id, sent.to, sent.ts) == ("m1", BOB, 1234)
    refs = [f.ref for _, f in server.log]
    assert refs == sorted(refs) and len(set(refs)) == len(refs)


async def test_errors_become_server_errors(server, make_client):
    client = await make_client()
    await client.register(ALICE)
    with pytest.raises(ServerError) as caught:
        await client.confirm(ALICE, "000000", DeviceKey())
    assert caught.value.code is E.BAD_CODE and not caught.value.fatal
    # a non-fatal error leaves the connection usable
    assert await client.confirm(ALICE, CODE, DeviceKey()) == 1
    with pytest.raises(ServerError) as caught:
        await client.login(ALICE, 1, DeviceKey())           # wrong key
    assert caught.value.code is E.LOGIN_FAILED


async def test_fatal_error_on_a_request_closes_the_connection(server, make_client):
    server.on(wire.Register, lambda conn, f: conn.fail(f.ref, E.OUT_OF_ORDER, "no"))
    client = await make_client()
    with pytest.raises(ServerError) as caught:
        await client.register(ALICE)
    assert caught.value.code is E.OUT_OF_ORDER and caught.value.fatal
    event = await next_event(client, (Disconnected,))
    assert event.reconnecting and "OUT_OF_ORDER" in event.reason


async def test_unknown_user_fails_the_send_and_empties_the_outbox(server, logged_in):
    client = await logged_in(ALICE)
    with pytest.raises(ServerError) as caught:
        await client.send("+15559999999", b"x", id="lost")
    assert caught.value.code is E.UNKNOWN_USER
    assert client.outbox == [] and client.status("lost").name == "FAILED"


@pytest.mark.parametrize("call, match", [
    (lambda c: c.register("5550000001"), "E.164"),
    (lambda c: c.register("+1555abc0001"), "E.164"),
    (lambda c: c.confirm(ALICE, "12", DeviceKey()), "code"),
    (lambda c: c.send("not-a-phone", b"x"), "E.164"),
    (lambda c: c.send(BOB, b"x" * (wire.MAX_BODY + 1)), "body"),
    (lambda c: c.send(BOB, "text, not bytes"), "body"),
    (lambda c: c.send(BOB, b"x", id="has space"), "message id"),
    (lambda c: c.send(BOB, b"x", id="x" * 65), "message id"),
    (lambda c: c.mark_read(BOB, ["ok", "not ok"]), "message id"),
    (lambda c: c.subscribe(["+0123"]), "E.164"),
])
async def test_bad_input_raises_value_error_before_sending(server, make_client, call, match):
    client = await make_client()
    before = len(server.log)
    with pytest.raises(ValueError, match=match):
        await call(client)
    await asyncio.sleep(0.02)
    assert len(server.log) == before and client.outbox == []


async def test_send_to_oneself_is_refused_locally(server, logged_in):
    client = await logged_in(ALICE)
    with pytest.raises(ValueError, match="yourself"):
        await client.send(ALICE, b"me")


async def test_request_timeout_is_bounded(server, make_client):
    server.on(wire.Register, lambda conn, f: None)       # never answered
    client = await make_client(request_timeout=0.3)
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(RequestTimeout):
        await client.register(ALICE)
    assert 0.25 < loop.time() - start < 1.0


async def test_connect_refused_raises(server):
    port = server.port
    await server.stop_listening()
    with pytest.raises(OSError):
        await Client.connect("127.0.0.1", port, **FAST)


async def test_heartbeat_pings_when_idle(server, make_client):
    # The fake server grants the minimum interval, 1 s; an idle client
    # PINGs about once a second, before login too.
    client = await make_client(heartbeat=1.0)
    assert client.heartbeat == 1.0
    await server.wait(lambda: len(server.frames(wire.Ping)) >= 2, timeout=3.5)
    pings = server.frames(wire.Ping)
    assert all(f.ref > 1 for f in pings)


async def test_busy_client_does_not_ping(server, logged_in):
    client = await logged_in(ALICE, heartbeat=1.0)
    server.add_account(BOB)
    for i in range(6):                          # something sent every 0.3 s
        await client.send(BOB, b"x", id=f"busy{i}")
        await asyncio.sleep(0.3)
    assert server.frames(wire.Ping) == []


async def test_silent_server_is_dropped_and_reconnected(server, logged_in):
    # PINGs go unanswered: after 3 silent intervals the client drops the
    # connection itself and reconnects.
    client = await logged_in(ALICE, heartbeat=1.0)
    server.on(wire.Ping, lambda conn, f: None)
    event = await next_event(client, (Disconnected,), timeout=5.0)
    assert "silent" in event.reason and event.reconnecting
    await server.wait(lambda: len(server.frames(wire.Login)) == 2)


async def test_close_says_bye_and_ends_events(server, logged_in):
    client = await logged_in(ALICE)
    await client.close()
    assert server.frames(wire.Bye)
    assert [e async for e in client.events()] == []
    with pytest.raises(ClientClosed):
        await client.send(BOB, b"late")
    await server.wait(lambda: all(c.closed.done() for c in server.conns))


@pytest.mark.parametrize("how", ["send", "send_group"])
async def test_a_send_on_its_way_to_the_outbox_when_the_session_ends_fails(server, logged_in,
                                                                           tmp_path, how):
    """A send always ends. One still on its way to the outbox when the
    server ends the session (fetching the contact's keys, or waiting behind
    that fetch on the contact's lock) raises ClientClosed with the reason,
    and nothing is queued after the close: not in memory, not in the file."""
    path = str(tmp_path / "outbox.jsonl")
    alice = await logged_in(ALICE, e2e=True, outbox_path=path)
    with_keys(server, BOB)

    def fetch_then_replaced(conn, frame):
        server.on_keysfetch(conn, frame)
        conn.fail(0, E.SESSION_REPLACED, "logged in elsewhere")
    server.on(wire.KeysFetch, fetch_then_replaced)
    if how == "send":
        sends = [alice.send(BOB, text, id=text) for text in ("one", "two")]
    else:               # BOB gets the sender key over 1:1 first: the same fetch
        gid = f"{ALICE}/team"
        alice._groups.states[gid] = GroupInfo(gid, "team", ALICE, (ALICE,), (ALICE, BOB), 1)
        sends = [alice.send_group(gid, text.encode(), id=text) for text in ("one", "two")]
    tasks = [asyncio.ensure_future(send) for send in sends]
    _, pending = await asyncio.wait(tasks, timeout=3)
    for task in pending:
        task.cancel()
    assert not pending, "a send never ended after the session did"
    for task in tasks:
        with pytest.raises(ClientClosed) as closed:
            task.result()
        assert closed.value.reason.code is E.SESSION_REPLACED
    assert alice.closed and alice.outbox == []
    with open(path) as f:
        assert f.read() == ""


async def test_async_with_connect(server):
    async with Client.connect("127.0.0.1", server.port, **FAST) as client:
        await client.register(ALICE)
    assert client.closed and server.frames(wire.Bye)



async def test_a_key_fetch_that_gets_no_answer_is_tried_again(server, logged_in, monkeypatch):
    # A KEYS_FETCH goes unanswered for a while (a cluster node restarting, its
    # directory being rebuilt, past the request timeout; "try again" answers
    # are retried within it already): the message waits for the keys instead
    # of failing. A refusal (NO_KEYS) fails the send at once; so does the last try.
    from client import encryption
    monkeypatch.setattr(encryption, "FETCH_BACKOFF", 0.01)
    for user in (BOB, CAROL):
        _, key = server.add_account(user)
        server.publish_keys(user, LocalKeys.generate(key, one_time=1).bundle())
    answer, silent = server.on_keysfetch, {"left": 2}

    def on_keysfetch(conn, f):
        if silent["left"] > 0:
            silent["left"] -= 1                 # no answer at all
        else:
            answer(conn, f)
    server.on(wire.KeysFetch, on_keysfetch)
    alice = await logged_in(ALICE, e2e=True, request_timeout=0.3)
    # Step 1: two fetches time out, the third is answered: the message goes out.
    sent = await asyncio.wait_for(alice.send(BOB, b"hi", id="m1"), 10)
    assert sent.id == "m1" and len(server.frames(wire.KeysFetch)) == 3
    # Step 2: a user with no keys is refused once, not asked again.
    server.add_account(DAVE)
    with pytest.raises(ServerError) as refused:
        await asyncio.wait_for(alice.send(DAVE, b"hi", id="m2"), 10)
    assert refused.value.code is E.NO_KEYS and len(server.frames(wire.KeysFetch)) == 4
    # Step 3: no answer to any try: the send fails with the last timeout.
    silent["left"] = encryption.FETCH_TRIES
    with pytest.raises(RequestTimeout):
        await asyncio.wait_for(alice.send(CAROL, b"hi", id="m3"), 10)
    assert len(server.frames(wire.KeysFetch)) == 4 + encryption.FETCH_TRIES


async def test_group_info_answers_with_its_state_when_an_event_evicts_it_first(server, logged_in):
    """GROUP_STATE, then a GROUP_EVENT of that group pushed before the ACK
    (a member joined meanwhile): the event evicts the cached state, and the
    call still answers with the state it got (a chaos run of a killed
    leader raised KeyError here)."""
    alice = await logged_in(ALICE)
    gid = f"{ALICE}/team"

    def state_event_ack(conn, frame):
        conn.send(wire.GroupState(gid, "team", ALICE, (ALICE,), (ALICE, BOB), 3))
        conn.send(wire.GroupEvent(1, gid, wire.GroupEventKind.ADDED, ALICE, (CAROL,), "team",
                                  now_ms(), 0))
        conn.ack(frame)
    server.on(wire.GroupInfo, state_event_ack)
    info = await asyncio.wait_for(alice.group_info(gid), 3)
    assert info == GroupInfo(gid, "team", ALICE, (ALICE,), (ALICE, BOB), 3)
    assert gid not in alice._groups.states          # stale: fetched again when next needed

    server.on(wire.GroupInfo, lambda conn, frame: conn.ack(frame))
    with pytest.raises(ClientError, match="without its GROUP_STATE"):
        await asyncio.wait_for(alice.group_info(gid), 3)
    await alice.close()
