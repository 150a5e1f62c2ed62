"""SIGKILL of the worker process at random points while 10 SDK clients
chat (``run.py chaos worker_kill`` runs it long). Pass: 0 lost, 0
duplicated, 0 unexpected, 0 reordered; each new worker listening within
10 s; the node up at the end."""

from __future__ import annotations

import pytest

from tests.chaos_launched import worker_kill

pytestmark = pytest.mark.timeout(150)


async def test_sigkill_the_worker_twice_while_10_clients_chat(tmp_path):
    result = await worker_kill(tmp_path, seed=31, kills=2, every=(2.0, 4.0), clients=10, rate=20.0)
    print(result.summary(), result.notes)
    assert result.kills == 2
    assert result.verdict.acked > 200
    assert result.ok, result.summary()
