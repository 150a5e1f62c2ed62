"""A node of three SIGKILLed under chat load: the survivors mark it down
within seconds and keep serving, it comes back from its LMDB, and the
history checker finds nothing acknowledged lost, duplicated or reordered
(``tests/chaos_cluster.py``; ``run.py chaos node_kill`` is the long run)."""

from __future__ import annotations

import pytest

from tests.chaos_cluster import node_kill

pytestmark = pytest.mark.timeout(240)


async def test_a_killed_node_loses_nothing_acknowledged(tmp_path):
    result = await node_kill(tmp_path, seed=11, kills=1, clients=9, rate=8.0)
    print(result.summary())
    assert result.ok, result.summary()
    assert result.kills == 1 and len(result.restart_ms) == 1
    assert result.verdict.delivered > 100, result.summary()


async def test_a_killed_leader_loses_nothing_acknowledged(tmp_path):
    # The leader holds the cluster directory: nobody marks it down (no
    # detection to measure), but the others keep chatting, its users get
    # everything when it is back, and SENDs whose recipient the restarted
    # directory does not know yet wait for it in order (actors/session_homes.py).
    result = await node_kill(tmp_path, seed=3, kills=1, clients=9, rate=8.0, victims=("A",))
    print(result.summary())
    assert result.verdict.ok, result.summary()
    assert result.kills == 1 and result.verdict.delivered > 100, result.summary()
    assert not any("sends failed" in note for note in result.notes), result.summary()
