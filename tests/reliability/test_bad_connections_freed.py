"""A connection that a bad frame closed is freed when it closes, by
reference counting alone: nothing of it may wait for the cyclic collector.

The workers raise the collector's thresholds (``GC_THRESHOLDS``): garbage in
a reference cycle that outlives the young generation is freed only by a
full collection, which under load comes rarely. The long fuzz run
(``run.py chaos fuzz --frames 100000``) grew the worker by +58.7 MB that way:
the ``FrameError`` a connection kept (in its decoder and as its
``held_error``) held its traceback, whose frames held the connection, its
decoder and its last read (docs/reliability.md, "What the fuzz run found").
With the collector off, every such connection would stay in memory: here
none may."""

from __future__ import annotations

import asyncio
import gc
import random
import socket
import struct

import pytest

from tests.conftest import wait_for
from tests.e2e.conftest import RawClient, login, register
from tests.fuzz import BAD_KINDS, bad_frame
from tests.nodes import running_node
from transport import wire
from transport.tcp import Connection

pytestmark = pytest.mark.timeout(60)

N = 4 * len(BAD_KINDS)            # connections, each kind of bad frame four times


def live_connections() -> int:
    """``Connection`` objects alive, garbage in cycles included (no collection)."""
    return sum(1 for o in gc.get_objects() if type(o) is Connection)


async def abuse(node, kind: str, hello: bool, rng: random.Random) -> None:
    client = await RawClient.connect(node)
    try:
        if hello:
            await client.hello()
        client.send_raw(bad_frame(rng, kind))
        if kind in ("truncated", "garbage"):        # may be the start of a longer frame
            client.writer.write_eof()
        assert await client.closed(timeout=10.0)
    finally:
        await client.close()


async def test_connections_closed_by_bad_frames_are_freed_without_the_collector(tmp_path):
    async with running_node(tmp_path) as node:
        listener = node.system.whereis("listener")._actor
        rng = random.Random(5)
        await abuse(node, "garbage", False, rng)         # imports, caches: made once
        await wait_for(lambda: not listener.connections)
        gc.collect()
        before = live_connections()
        gc.disable()
        try:
            for i in range(N):
                await abuse(node, BAD_KINDS[i % len(BAD_KINDS)], i % 2 == 1, rng)
            await wait_for(lambda: not listener.connections, timeout=10.0)
            await asyncio.sleep(0.1)                      # the last connection_lost has run
            assert live_connections() == before, (
                f"{live_connections() - before} of {N} closed connections still in memory")
        finally:
            gc.enable()
        assert isinstance(await _hello_ok(node), wire.HelloOk)      # the node still serves


async def _hello_ok(node) -> wire.Frame:
    client = await RawClient.connect(node)
    try:
        return await client.hello()
    finally:
        await client.close()


async def test_a_bad_frame_held_behind_a_full_window_frees_its_connection(tmp_path):
    """The bad frame waits behind a full window (``held_error``) and the
    client resets the connection before the server reaches it."""
    async with running_node(tmp_path, max_in_flight=1) as node:
        listener = node.system.whereis("listener")._actor
        accounts = [await register(node, f"+1555000{i:04d}") for i in range(4)]
        await wait_for(lambda: not listener.connections, timeout=10.0)
        gc.collect()
        before = live_connections()
        gc.disable()
        try:
            for i in range(N):
                client = await login(node, accounts[i % len(accounts)])
                pings = b"".join(wire.encode(wire.Ping(ref=client.ref())) for _ in range(50))
                client.send_raw(pings + wire.encode_raw([200, client.ref()]))
                await client.writer.drain()
                sock = client.writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.writer.transport.abort()                 # a reset
            await wait_for(lambda: not listener.connections, timeout=10.0)
            await asyncio.sleep(0.1)
            assert live_connections() == before, (
                f"{live_connections() - before} of {N} closed connections still in memory")
        finally:
            gc.enable()
