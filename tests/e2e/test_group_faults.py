"""A group request under a fault found in review: the user's session
restarts while its group command is in the writer. The request gets
exactly one answer. (A completion arriving at a full group mailbox is
covered by tests/actors/test_mailbox_overflow.py: ``notify``.)"""

from __future__ import annotations

import asyncio
import threading

import pytest

from actors.group import group_of
from actors.session_registry import session_of
from tests.conftest import wait_for
from tests.e2e.conftest import login, register
from transport import wire

pytestmark = pytest.mark.timeout(30)

ALICE, BOB = "+15550000161", "+15550000162"
GID = f"{ALICE}/team"


async def answers_to(client, ref: int, wait: float = 1.0) -> list:
    got = []
    try:
        while True:
            frame, _ = await client.recv_until(
                lambda f: isinstance(f, (wire.Ack, wire.Error)) and f.ref == ref, wait)
            got.append(frame)
    except asyncio.TimeoutError:
        return got


async def created_team(node):
    alice = await login(node, await register(node, ALICE))
    await register(node, BOB)
    ref = alice.send(wire.GroupCreate("team", "Team", (BOB,), ref=alice.ref()))
    assert isinstance(await alice.answer(ref), wire.Ack)
    return alice, await wait_for(lambda: group_of(node.system, GID))


def hold_the_writer(node) -> tuple[threading.Event, object]:
    """Park the LMDB writer until the event is set."""
    release = threading.Event()
    return release, node.system.env["mailbox"].store.submit(lambda txn: release.wait(10))


@pytest.mark.node_config(lmdb_writer="thread")    # hold_the_writer parks a writer thread
async def test_a_group_command_is_answered_once_across_a_session_restart(node):
    alice, group = await created_team(node)
    session = await wait_for(lambda: session_of(node.system, ALICE))
    # Step 1: a GROUP_SEND is forwarded and sits in the held writer; alice's
    # session crashes and its successor fails what it had outstanding.
    release, held = hold_the_writer(node)
    ref = alice.send(wire.GroupSend("m1", GID, b"x", ref=alice.ref()))
    await wait_for(lambda: group._actor.in_flight)
    session.exit(RuntimeError("injected crash"))
    await wait_for(lambda: (s := session_of(node.system, ALICE)) and s is not session)
    # Step 2: the group commits and answers, but the request had its answer.
    release.set()
    await held
    answers = await answers_to(alice, ref)
    assert len(answers) == 1, answers
    await alice.close()
