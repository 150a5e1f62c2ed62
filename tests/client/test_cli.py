"""The terminal client (``python -m client.cli``, behind ``run.py client``):
two processes chatting through the fake server, driven by stdin pipes."""

from __future__ import annotations

import os

import pytest

from client_testkit import CliProcess, stop_all
from transport.e2e import LocalKeys

ALICE, BOB = "+15550000001", "+15550000002"


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
