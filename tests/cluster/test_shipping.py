"""The forwarder's protocol (``actors/shipping.py``) under a hostile network:
the real ``Shipping`` mixin on two real LMDB stores, A (alice's home) and B
(bob's), with a network run by hand: FIFO per direction (as Thespian is
between two actors), but messages lost at random, gateways restarted (what
was in flight is gone; a restarted origin forgets its window), time jumping
past the resend timeout. Every message must reach bob exactly once, in
order; a shipment the destination can never apply must not make the
origin resend in a tight loop."""

from __future__ import annotations

import asyncio
import random
import sys
import types
from pathlib import Path

import pytest

import actors.shipping as shipping
from actors.shipping import Shipping
from supervisor.cluster_directory import NodeInfo, Shipment

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "storage"))
from storage_testkit import KEY, Harness  # noqa: E402

pytestmark = pytest.mark.timeout(120)

ALICE, BOB = "+15550000001", "+15550000002"
HOMES = {ALICE: "A", BOB: "B"}
T = 1_700_000_000_000


def remote_of(here: str):
    return lambda user: HOMES.get(user) if HOMES.get(user) not in (None, here) else None


class Gateway(Shipping):
    """A node's gateway as the mixin sees it; what it posts goes to ``net``."""

    def __init__(self, name: str, mail, net: list, peer: str):
        self.node = self.worker = name
        self.mail, self.cap = mail, 10_000
        self.nodes = {peer: NodeInfo(peer, ("127.0.0.1", 1))}     # gateway "address": its name
        bridge = types.SimpleNamespace(address=name, post=lambda to, msg: net.append((to, msg)))
        self.cluster = types.SimpleNamespace(bridge=bridge)
        self.system = types.SimpleNamespace(env={})
        self.init_shipping()

    def is_up(self, node: str) -> bool:
        return node in self.nodes

    def remote(self, user: str):
        return remote_of(self.node)(user)

    def _nudge(self, appended: list) -> None:
        pass


async def store(tmp_path: Path, name: str, user: str):
    harness = Harness("lmdb", tmp_path / name)
    harness.storage.remote = remote_of(name)
    await harness.storage.register_device(user, KEY, 1)
    return harness


async def settle() -> None:
    for _ in range(2):              # applies complete on the writer thread, then the loop
        await asyncio.sleep(0.003)


@pytest.mark.parametrize("seed", range(5))
async def test_a_lossy_network_delivers_everything_once_in_order(tmp_path, monkeypatch, seed):
    rng = random.Random(seed)
    clock = [1000.0]
    monkeypatch.setattr(shipping, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    monkeypatch.setattr(shipping, "SHIP_MAX", rng.choice([1, 2, 3, 5]))
    a, b = await store(tmp_path, "A", ALICE), await store(tmp_path, "B", BOB)
    net: list = []
    gates = {"A": Gateway("A", a.storage, net, "B"), "B": Gateway("B", b.storage, net, "A")}
    epoch = await a.storage.outq_epoch()
    gates["A"].epoch = epoch
    sent = 0
    try:
        for _ in range(400):
            r = rng.random()
            if r < 0.25 and sent < 100:
                await a.storage.store_message(ALICE, f"m{sent}", BOB, b"x", T + sent, 10_000)
                sent += 1
            elif r < 0.27:                  # the origin's gateway restarts
                net[:] = [(to, m) for to, m in net if to != "A"]
                gates["A"] = Gateway("A", a.storage, net, "B")
                gates["A"].epoch = epoch
            elif r < 0.29:                  # the destination's gateway restarts
                net[:] = [(to, m) for to, m in net if to != "B"]
                gates["A"].restart_link("B")
            elif r < 0.31:
                clock[0] += 40              # past any resend timeout
            elif net:
                to = rng.choice(["A", "B"])
                i = next((k for k, (dest, _) in enumerate(net) if dest == to), None)
                if i is not None:
                    _, msg = net.pop(i)
                    if rng.random() >= 0.1:     # else lost
                        deliver(gates, to, msg)
                        await settle()
            gates["A"]._ship_to("B", clock[0])
            await asyncio.sleep(0)
        for _ in range(3000):               # the network heals: everything must arrive
            if not a.storage.outq_pending().get("B") and not net:
                break
            if net:
                to, msg = net.pop(0)
                deliver(gates, to, msg)
                await settle()
            else:
                clock[0] += 40
                gates["A"]._ship_to("B", clock[0])
        got = [item.payload.id for item in b.storage.inbox_after(BOB, 0, 1000)]
        assert got == [f"m{i}" for i in range(sent)]
        assert not a.storage.outq_pending().get("B")
    finally:
        a.close()
        b.close()


def deliver(gates: dict, to: str, msg) -> None:
    if isinstance(msg, Shipment):
        gates[to]._on_Shipment(msg)
    else:
        gates[to]._on_Shipped(msg)


async def test_a_shipment_never_applied_is_resent_with_backoff_not_in_a_loop(tmp_path,
                                                                             monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(shipping, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    monkeypatch.setattr(shipping, "SHIP_MAX", 1)
    a, b = await store(tmp_path, "A", ALICE), await store(tmp_path, "B", BOB)
    net: list = []
    origin, dest = Gateway("A", a.storage, net, "B"), Gateway("B", b.storage, net, "A")
    origin.epoch = await a.storage.outq_epoch()
    real_apply = b.storage.outq_apply

    def poisoned(origin_name, epoch, items, cap, after=None):   # the first item never applies
        if items and items[0][0] == 1:
            future = asyncio.get_running_loop().create_future()
            future.set_exception(RuntimeError("cannot apply this one"))
            return future
        return real_apply(origin_name, epoch, items, cap, after)
    b.storage.outq_apply = poisoned
    try:
        for i in range(6):
            await a.storage.store_message(ALICE, f"m{i}", BOB, b"x", T + i, 10_000)
        shipped = 0
        for _ in range(300):                # 300 turns within the same simulated second
            origin._ship_to("B", clock[0])
            while net:
                to, msg = net.pop(0)
                shipped += isinstance(msg, Shipment)
                deliver({"A": origin, "B": dest}, to, msg)
                await settle()
        assert shipped <= shipping.WINDOW, shipped       # one round, then it waits
        clock[0] += shipping.RESEND_AFTER + 0.1          # the timeout: one more round
        origin._ship_to("B", clock[0])
        assert 0 < sum(isinstance(m, Shipment) for _, m in net) <= shipping.WINDOW
        link = origin.links["B"]
        assert link.wait == shipping.RESEND_AFTER * 2 and link.acked == 0
        assert b.storage.inbox_after(BOB) == []          # nothing got past the poisoned one
    finally:
        a.close()
        b.close()
