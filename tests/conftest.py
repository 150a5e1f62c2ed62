"""Shared fixtures: a fresh light-actor ``System`` per test, a fake clock, and
a ``Probe`` actor that records what it receives (links, monitors, casts)."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from actors import Actor, System  # noqa: E402


class FakeClock:
    """A clock the test moves by hand (cf. trio's autojump_clock)."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Probe(Actor):
    """Records every message; ``await probe_wait(ref, pred)`` waits for one."""

    trap_exit = False

    def __init__(self) -> None:
        self.seen: list = []
        self.arrived = asyncio.Event()

    def handle_other(self, msg):
        self.seen.append(msg)
        self.arrived.set()


async def wait_for(predicate, timeout: float = 2.0, interval: float = 0.005):
    """Poll ``predicate`` until true, bounded by ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def system(clock):
    async with System(clock=clock) as system:
        yield system
