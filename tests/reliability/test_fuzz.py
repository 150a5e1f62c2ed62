"""The fuzzing run in its short mode (``run.py chaos fuzz --frames 100000``
runs the long one): 5,000 malformed, truncated, oversized and random
frames at a launched node while two pairs of raw clients chat.

Pass: every bad connection ends with an ERROR and a close (or a close, when
its frame was cut short); the chatting clients lose, duplicate and reorder
nothing, their p99 send -> delivery stays under 250 ms; the worker's RSS
grows by less than 50 MB."""

from __future__ import annotations

import pytest

from tests.fuzz import BAD_KINDS, fuzz
from tests.launched import _node_up, launched_node, node_of, rss_kb, wait_until

pytestmark = pytest.mark.timeout(120)


async def test_5000_bad_frames_while_clients_chat(tmp_path):
    with launched_node(tmp_path, 1) as (launcher, log_path, tag):
        worker = _node_up(log_path, wait_until)[0]
        result = await fuzz(node_of(tmp_path, log_path), worker, rss_kb, seed=21,
                            frames=5_000, concurrency=8, pairs=2)
    print(result.summary())
    assert result.frames >= 5_000 and result.connections >= 100
    assert set(result.kinds) == set(BAD_KINDS)
    assert result.endings["HANGING"] == 0, result.endings
    assert result.verdict.acked > 100
    assert result.ok, result.summary()
