"""The chaos scenarios in their short mode (``run.py chaos`` runs them long).

Pass: 0 lost, 0 duplicated, 0 unexpected, 0 reordered; every killed session
running again within 1 s; the root supervisor up throughout."""

from __future__ import annotations

import pytest

from tests import chaos
from tests.nodes import running_node

pytestmark = pytest.mark.timeout(120)


async def test_kill_a_session_every_second_while_20_clients_chat(tmp_path):
    async with running_node(tmp_path) as node:
        result = await chaos.kill_sessions(node, seed=11, duration=8.0, every=1.0, clients=20)
    print(result.summary())
    assert result.kills >= 6
    assert result.verdict.acked > 500
    assert result.ok, result.summary()


async def test_an_escalation_storm_restarts_sessions_and_the_root_stays_up(tmp_path):
    async with running_node(tmp_path) as node:
        result = await chaos.escalation_storm(node, seed=12, duration=6.0, clients=10)
    print(result.summary(), result.notes)
    assert "restarted" in result.notes[0] and "NOT" not in result.notes[0]
    assert result.ok, result.summary()
