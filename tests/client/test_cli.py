"""The terminal client (``python -m client.cli``, behind ``run.py client``):
two processes chatting through the fake server, driven by stdin pipes; and
its ``Chat`` in-process where a test needs the SDK's timeouts made short."""

from __future__ import annotations

import asyncio
import os

import pytest

from client import Disconnected, encryption
from client.cli import Chat
from client_testkit import CliProcess, next_event, stop_all
from transport import wire
from transport.e2e import LocalKeys

ALICE, BOB, CAROL = "+15550000001", "+15550000002", "+15550000003"


def with_keys(server, user):
    """An account with published keys (the fake directory checks no signatures)."""
    _, key = server.add_account(user)
    server.publish_keys(user, LocalKeys.generate(key, one_time=1).bundle())


@pytest.fixture
async def cli(server, tmp_path):
    """``await cli(phone, *extra)``: a running client; all stopped at the end."""
    procs: list[CliProcess] = []

    async def start(phone: str, *extra: str) -> CliProcess:
        proc = await CliProcess.start(
            "--phone", phone, "--port", str(server.port), "--data-dir", server.data_dir,
            "--profile", str(tmp_path / "profiles" / phone), *extra, home=str(tmp_path))
        procs.append(proc)
        return proc

    yield start
    await stop_all(procs)


async def test_two_terminals_chat_with_ticks_and_last_seen(cli, server, tmp_path):
    # Step 1: both register (the code comes from the node's code file) and log in
    alice = await cli(ALICE)
    await alice.expect(r"registered: device \d+")
    await alice.expect(rf"logged in as \{ALICE}")
    bob = await cli(BOB)
    await bob.expect(rf"logged in as \{BOB}")
    assert os.path.exists(tmp_path / "profiles" / ALICE / "device.json")

    # Step 2: they open the chat with each other (presence is shown)
    alice.write(f"/chat {BOB}")
    await alice.expect(rf"-- \{BOB} is online")
    bob.write(f"/chat {ALICE}")
    await bob.expect(rf"-- \{ALICE} is online")

    # Step 3: Alice writes; her line gets ✓, then ✓✓, then read as Bob sees it
    alice.write("hello bob")
    await alice.expect(rf"\[\d\d:\d\d\] you → \{BOB}: hello bob ✓$")
    await bob.expect(rf"\[\d\d:\d\d\] \{ALICE}: hello bob$")
    await alice.expect(r"you → .*: hello bob ✓✓$")
    await alice.expect(r"you → .*: hello bob ✓✓ read$")

    # Step 4: Bob answers; then he quits and Alice sees his last seen
    bob.write("hi alice")
    await alice.expect(rf"\{BOB}: hi alice$")
    await bob.expect(r"hi alice ✓✓ read$")
    alice.write(f"/last {BOB}")
    await alice.expect(rf"-- \{BOB} is online")
    bob.write("/quit")
    assert await bob.stop() == 0
    await alice.expect(rf"-- \{BOB} last seen today at \d\d:\d\d")

    # Step 5: a message to Bob while he is away shows one tick; it arrives when he is back
    alice.write("are you there?")
    await alice.expect(r"are you there\? ✓$")
    bob = await cli(BOB)
    await bob.expect(rf"logged in as \{BOB}")     # no registration the second time
    await bob.expect(rf"\{ALICE}: are you there\?   \(/chat")
    await alice.expect(r"are you there\? ✓✓$")
    assert not any("registered" in line for line in bob.lines)


async def test_messages_written_offline_go_out_on_reconnect(cli, server):
    alice = await cli(ALICE)
    await alice.expect("logged in")
    _, bob_key = server.add_account(BOB)
    server.publish_keys(BOB, LocalKeys.generate(bob_key, one_time=1).bundle())
    alice.write(f"/chat {BOB}")
    await alice.expect("chatting with")
    # the node goes away: lines are queued
    await server.stop_listening()
    server.drop()
    await alice.expect("disconnected .*reconnecting")
    alice.write("sent while offline")
    await alice.expect(r"sent while offline … \(queued\)")
    # the node is back: the message goes out by itself
    await server.listen()
    await alice.expect("-- reconnected")
    await alice.expect(r"sent while offline ✓$")
    [stored] = server.inboxes[BOB].values()      # one message, end-to-end encrypted
    assert b"sent while offline" not in stored.body and len(stored.body) > 100


async def test_code_typed_by_hand_and_bad_commands(cli, server):
    # No code file: the client asks for the code on stdin.
    server.codes = None
    alice = await cli(ALICE, "--data-dir", "/nonexistent", "--code-wait", "0")
    await alice.expect("enter the code")
    alice.write("999999")
    await alice.expect("that code did not work: BAD_CODE")
    alice.write("123456")
    await alice.expect("logged in")
    alice.write("hello?")
    await alice.expect("pick someone first")
    alice.write("/chat 12345")
    await alice.expect("usage: /chat")
    alice.write("/nope")
    await alice.expect("unknown command")
    alice.write("/quit")
    await alice.expect("-- bye")
    assert await alice.stop() == 0


async def test_quit_right_after_a_first_message_sends_it_or_names_it(cli, server):
    """A first line to a contact fetches their keys before it enters the
    outbox. /quit right after it waits (up to 3 s) for that send, so the
    line goes out; a line whose keys never come is named as not sent."""
    # Step 1: the keys come 0.3 s later: the line typed just before /quit is sent
    alice = await cli(ALICE)
    await alice.expect(rf"logged in as \{ALICE}")
    with_keys(server, BOB)
    later = asyncio.get_running_loop().call_later
    server.on(wire.KeysFetch, lambda conn, frame: later(0.3, server.on_keysfetch, conn, frame))
    alice.write(f"/chat {BOB}")
    alice.write("typed just before quitting")
    alice.write("/quit")
    await alice.expect("-- bye")
    assert await alice.stop() == 0
    assert [type(m) for m in server.inboxes.get(BOB, {}).values()] == [wire.Message]
    assert not any("not sent" in line for line in alice.lines)
    # Step 2: no answer to KEYS_FETCH: after 3 s the line is reported, by name
    with_keys(server, CAROL)
    server.on(wire.KeysFetch, lambda conn, frame: None)
    alice = await cli(ALICE)
    await alice.expect(rf"logged in as \{ALICE}")
    alice.write(f"/chat {CAROL}")
    alice.write("no keys for this one")
    alice.write("/quit")
    await alice.expect(rf'-- not sent yet and not kept .*\{CAROL} "no keys for this one"')
    await alice.expect("-- bye")
    assert await alice.stop() == 0


async def test_a_line_that_cannot_get_the_contacts_keys_is_reported(server, logged_in,
                                                                     monkeypatch):
    """A line to a contact without a session needs their keys (KEYS_FETCH)
    before it enters the outbox. If they have none, or the node stays
    unreachable until the fetch gives up (5 tries of 10 s in the real
    client; shortened here), the line is reported "-- not sent" with the
    reason: never dropped silently, nor as an unretrieved task exception."""
    monkeypatch.setattr(encryption, "FETCH_TRIES", 2)
    monkeypatch.setattr(encryption, "FETCH_BACKOFF", 0.01)
    alice = await logged_in(ALICE, e2e=True, request_timeout=0.3)
    with_keys(server, BOB)
    server.add_account(CAROL)                       # never published keys
    shown: list[str] = []
    chat = Chat(alice, ALICE, out=shown.append)

    async def line(peer: str, text: str) -> None:
        chat.peer = peer
        chat.command(text)
        done, _ = await asyncio.wait(set(chat.tasks), timeout=5)
        assert not chat.tasks and all(not task.exception() for task in done)
    # Step 1: online, but CAROL has no keys: refused before the outbox
    await line(CAROL, "hello carol")
    assert shown and shown[-1].startswith(f'-- not sent to {CAROL} ("hello carol"): NO_KEYS'), shown
    # Step 2: the node is unreachable: the line is queued, then the fetch gives up
    await server.stop_listening()
    server.drop()
    await next_event(alice, (Disconnected,))
    await line(BOB, "sent while offline")
    assert shown[-2].endswith(f"you → {BOB}: sent while offline … (queued)")
    assert shown[-1] == f'-- not sent to {BOB} ("sent while offline"): not connected to the server', shown
