"""Group chat from two terminal clients (``python -m client.cli``
processes) on a real node: create, chat, per-member ticks, members, leave."""

from __future__ import annotations

import pytest

from client_testkit import CliProcess, stop_all
from tests.e2e.conftest import node  # noqa: F401  (the running-node fixture)

pytestmark = pytest.mark.timeout(60)

ALICE, BOB = "+15550000081", "+15550000082"
GID = f"{ALICE}/trip"


async def test_two_cli_processes_chat_in_a_group(node, tmp_path):  # noqa: F811
    procs = []

    async def start(phone):
        procs.append(await CliProcess.logged_in(node, tmp_path, phone))
        return procs[-1]

    try:
        alice, bob = await start(ALICE), await start(BOB)
        # Step 1: alice creates the group; bob's client shows the system message.
        alice.write(f"/newgroup trip Summer trip {BOB}")
        await alice.expect(r"-- created Summer trip \(\+15550000081/trip\); chatting in it")
        await bob.expect(rf"-- Summer trip: \{ALICE} created the group \{BOB}")
        # Step 2: alice writes; bob sees it; alice sees bob's tick.
        alice.write("who brings the tent?")
        await bob.expect(rf"Summer trip \| \{ALICE}: who brings the tent\?   \(/group \+{GID[1:]}")
        await alice.expect(rf"you → Summer trip: who brings the tent\? ✓✓ \(\{BOB} ✓✓\)$")
        # Step 3: bob opens the group and answers; alice reads it at once.
        bob.write(f"/group {GID}")
        await bob.expect(rf"-- Summer trip: \{ALICE} \(admin\), \{BOB}$")
        bob.write("I do")
        await alice.expect(rf"Summer trip \| \{BOB}: I do$")
        await bob.expect(rf"you → Summer trip: I do ✓✓ read \(\{ALICE} ✓✓ read\)$")
        # Step 4: the group list, then bob leaves.
        bob.write("/groups")
        await bob.expect(r"-- Summer trip: \+15550000081/trip \(2 members\)")
        bob.write("/leave")
        await alice.expect(rf"-- Summer trip: \{BOB} left$")
        alice.write("/members")
        await alice.expect(rf"-- Summer trip: \{ALICE} \(admin\)$")
    finally:
        await stop_all(procs)
