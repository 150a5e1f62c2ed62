"""Nothing acknowledged is lost when the worker process is SIGKILLed: a real
``run.py node`` subprocess, its worker killed in the middle of a burst of
sends, the node supervisor restarting it, and the recipient finding every
acknowledged message in its inbox afterwards."""

from __future__ import annotations

import asyncio
import os
import re
import signal

import pytest

from tests.e2e.conftest import Node, RawClient, login, register
from tests.launched import FileCodes, _node_up, client_port, launched_node, wait_until
from transport import wire

pytestmark = pytest.mark.timeout(90)

ALICE, BOB = "+15550000011", "+15550000012"
TOTAL = 8_000        # below the session mailbox bound (10,000): one burst, no throttling


async def login_when_up(node: Node, account, timeout: float = 20.0) -> RawClient:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await login(node, account)
        except (OSError, EOFError, AssertionError, asyncio.TimeoutError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


def _writer_of(worker: int) -> int:
    """The worker's LMDB writer process (storage.kv_process): its one child."""
    children = []
    for task in os.listdir(f"/proc/{worker}/task"):
        with open(f"/proc/{worker}/task/{task}/children") as f:
            children += [int(c) for c in f.read().split()]
    assert len(children) == 1, children
    return children[0]


@pytest.mark.parametrize("victim", ["worker", "lmdb writer"])
async def test_acked_messages_survive_sigkill_of_the_worker(tmp_path, victim):
    """The LMDB writer's death stops its worker (they are linked), so both
    cases end in a restarted worker with a new writer."""
    with launched_node(tmp_path, 1) as (launcher, log_path, tag):
        # Step 1: a real node; alice and bob register (codes from the code files).
        worker = _node_up(log_path, wait_until)[0]
        target = worker if victim == "worker" else _writer_of(worker)
        node = Node("127.0.0.1", client_port(log_path), FileCodes(str(tmp_path / "data")),
                    None, str(tmp_path / "data"))
        alice_acct, bob_acct = await register(node, ALICE), await register(node, BOB)
        alice = await login(node, alice_acct)
        # Step 2: alice pipelines 8,000 sends (more than the worker commits before
        # the kill lands); once 100 are acked, it is SIGKILLed mid-burst.
        sent = {}
        for i in range(TOTAL):
            sent[alice.send(wire.Send(f"k{i}", BOB, b"%d" % i, ref=alice.ref()))] = f"k{i}"
        await alice.writer.drain()
        acked, killed = set(), False
        try:
            while True:
                frame = await alice.recv(timeout=5)
                if isinstance(frame, wire.Ack) and frame.ref in sent:
                    acked.add(sent[frame.ref])
                    if len(acked) == 100 and not killed:
                        os.kill(target, signal.SIGKILL)
                        killed = True
        except (EOFError, ConnectionError, asyncio.TimeoutError):
            pass
        assert killed and 100 <= len(acked) < TOTAL
        await alice.close()
        # Step 3: the node supervisor restarts the worker; bob logs in.
        bob = await login_when_up(node, bob_acct)
        wait_until(lambda: len(set(re.findall(         # restarted: a new process
            r"node_supervisor\[\d+\]: worker 0 started \(pid (\d+)\)", log_path.read_text()))) == 2,
            timeout=10.0)
        got = []
        try:
            while True:
                frame = await bob.recv(timeout=1.0)
                if isinstance(frame, wire.Message):
                    got.append(frame.id)
        except asyncio.TimeoutError:
            pass
        await bob.close()
        # Step 4: every acked message is there, none twice, in send order.
        print(f"acked {len(acked)}, delivered after restart {len(got)}")
        assert acked <= set(got), sorted(acked - set(got))[:10]
        assert len(got) == len(set(got))
        assert got == sorted(got, key=lambda m: int(m[1:]))
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=30) == 0
