"""Shared helpers of the storage suite (imported by conftest.py and the
tests): phone numbers, a key, and the ``Harness`` around one backend."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import pytest

from storage import Storage
from storage.kv_lmdb import LmdbStore
from storage.kv_memory import MemoryStore
from storage.kv_process import ProcessStore

SENDER = "+15550000001"
RECEIVER = "+15550000002"
OTHER = "+15550000003"
KEY = bytes(range(32))


class Blocker:
    """An op that holds the LMDB writer thread until released, so the ops
    submitted meanwhile are all taken by the next batch."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, txn) -> None:
        self.started.set()
        self.release.wait(10)


class Harness:
    def __init__(self, kind: str, tmp_path):
        self.kind, self.tmp_path = kind, tmp_path
        self.store = self._open()
        self.storage = Storage(self.store)

    def _open(self):
        if self.kind == "lmdb":
            return LmdbStore(self.tmp_path / "lmdb")
        if self.kind == "lmdb-process":
            return ProcessStore(self.tmp_path / "lmdb")
        return MemoryStore()

    @contextlib.asynccontextmanager
    async def hold(self):
        """Ops submitted (not awaited) inside the block form one batch."""
        if self.kind != "lmdb":             # one loop turn is one batch already (the
            yield                           # writer process gets it as one frame)
            return
        blocker = Blocker()
        done = self.store.submit(blocker)
        await asyncio.get_running_loop().run_in_executor(None, blocker.started.wait, 5)
        try:
            yield
        finally:
            blocker.release.set()
            await asyncio.wait([done])       # its own batch may be made to fail

    async def register(self, *phones: str) -> None:
        for phone in phones:
            await self.storage.register_device(phone, KEY, 1)

    def close(self) -> None:
        self.store.close()


def backend_fixture(*kinds: str):
    """A ``backend`` fixture over ``kinds``; a module whose ops are test
    closures defines its own without "lmdb-process" (the writer process
    takes picklable ops only: module-level dataclasses)."""
    @pytest.fixture(params=kinds)
    async def backend(request, tmp_path):
        harness = Harness(request.param, tmp_path)
        yield harness
        harness.close()
    return backend
