"""The relay bench's wire floor (``bench/floor.py``): a smoke run of
``run.py bench relay --floor`` (the real command, the real load generator,
the floor as a real process on loopback), and the floor's answers to a real
client's frames over TCP: the full tick flow, what came while a user was
away, and the refusals (before login, a bad code, a bad signature, a
malformed frame)."""

from __future__ import annotations

import asyncio
import re
import sys

import pytest

from bench.floor import FloorNode
from bench.loadgen import WireClient, device_key
from tests.launched import run_tagged
from transport.code_sender import read_code_file
from transport import wire

pytestmark = pytest.mark.timeout(120)

ALICE, BOB = "+15550000001", "+15550000002"


def test_bench_relay_floor_smoke():
    done, left = run_tagged(
        [sys.executable, "run.py", "bench", "relay", "--floor", "--pairs", "4", "--window", "8",
         "--duration", "1", "--warmup", "0.5", "--rounds", "1", "--clients", "1"], timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert not left, f"processes left behind: {left}"
    assert "the wire floor" in output
    median = [line for line in output.splitlines() if line.startswith("median")]
    assert median, output
    delivered, acked, e2e_p50, e2e_p99 = (float(x.replace(",", ""))
                                          for x in median[0].split()[1:5])
    assert delivered > 0 and acked > 0 and 0 < e2e_p50 <= e2e_p99, output
    assert re.search(r"unacked at the end 0, receipts missing at the end 0, errors none", output)


@pytest.mark.parametrize("option", [["--workers", "2"], ["--nodes", "2"], ["--set", "linger=1"]])
def test_bench_relay_floor_refuses_what_a_node_takes(option):
    done, left = run_tagged([sys.executable, "run.py", "bench", "relay", "--floor", *option,
                             "--duration", "1"], timeout=60)
    assert not left, f"processes left behind: {left}"
    assert done.returncode == 1 and "--floor is one process" in done.stdout


class Peer(WireClient):
    def __init__(self) -> None:
        super().__init__()
        self.pushed: asyncio.Queue = asyncio.Queue()

    def on_frames(self, frames: list) -> None:
        for frame in frames:
            self.pushed.put_nowait(frame)


async def _connect(floor: FloorNode) -> Peer:
    _, peer = await asyncio.get_running_loop().create_connection(Peer, "127.0.0.1", floor.port)
    await peer.hello()
    return peer


async def _login(floor: FloorNode, user: str) -> Peer:
    peer = await _connect(floor)
    await peer.login(user, await peer.register(user, floor.data_dir))
    return peer


def test_floor_relays_with_ticks_and_offline_delivery():
    async def run() -> None:
        with FloorNode() as floor:
            floor.start()
            alice = await _login(floor, ALICE)
            bob = await _login(floor, BOB)
            ack = await alice.request(wire.Send("m1", BOB, b"hi", ref=alice.ref()))
            assert isinstance(ack, wire.Ack) and isinstance(ack.value, int)
            message = await asyncio.wait_for(bob.pushed.get(), 10)
            assert (type(message), message.id, message.sender, message.body) == \
                (wire.Message, "m1", ALICE, b"hi")
            assert isinstance(await bob.request(wire.Received((message.seq,), ref=bob.ref())),
                              wire.Ack)
            receipt = await asyncio.wait_for(alice.pushed.get(), 10)
            assert (type(receipt), receipt.kind, receipt.id, receipt.by) == \
                (wire.Receipt, wire.ReceiptKind.DELIVERED, "m1", BOB)
            bob.transport.close()                     # away: what comes is held for him
            await bob.closed
            await alice.request(wire.Send("m2", BOB, b"later", ref=alice.ref()))
            back = await _connect(floor)
            await back.login(BOB)
            held = await asyncio.wait_for(back.pushed.get(), 10)
            assert (type(held), held.id, held.body) == (wire.Message, "m2", b"later")
    asyncio.run(run())


def test_floor_refuses_bad_input():
    async def run() -> None:
        with FloorNode() as floor:
            floor.start()
            peer = await _connect(floor)
            early = await peer.request(wire.Send("m1", BOB, b"x", ref=peer.ref()))
            assert isinstance(early, wire.Error) and early.code == wire.ErrorCode.UNAUTHENTICATED
            await peer.expect_ack(wire.Register(ALICE, ref=peer.ref()), "REGISTER")
            code = read_code_file(str(floor.data_dir), ALICE)
            wrong = await peer.request(wire.Confirm(ALICE, f"{(int(code) + 1) % 10**6:06d}",
                                                    device_key(ALICE).public, ref=peer.ref()))
            assert isinstance(wrong, wire.Error) and wrong.code == wire.ErrorCode.BAD_CODE
            stranger = await peer.request(wire.Login(BOB, 1, b"\0" * 64, ref=peer.ref()))
            assert isinstance(stranger, wire.Error) and stranger.code == wire.ErrorCode.LOGIN_FAILED
            peer.transport.write(wire.encode_raw([999, 7]))          # no such frame type
            error = await asyncio.wait_for(peer.pushed.get(), 10)
            assert isinstance(error, wire.Error) and error.code.fatal
            assert await asyncio.wait_for(peer.closed, 10) is None   # and it hangs up
    asyncio.run(run())
