"""LMDB only: an environment written with the old dedup layout (``sender \\0
client_id`` in ``dedup``) is converted when opened, a chunk per transaction,
and every record still does its work: a resend is a duplicate, a read
marks once, prune forgets by age."""

from __future__ import annotations

import lmdb
import pytest

from storage import Storage, Stored, upgrade
from storage.keys import SEP, dedup_key_of_ttl, dedup_ttl_key, u64
from storage.kv_lmdb import LmdbStore
from storage.records import unpack

from storage_testkit import KEY, OTHER, RECEIVER, SENDER

CAP = 1000
T = 1_700_000_000_000
IDS = [f"m{i}" for i in range(5)] + ["with\x00nul"]


def to_old_layout(path) -> int:
    """Rewrite what this release wrote as the release before it would have."""
    env = lmdb.open(str(path), max_dbs=64)
    with env.begin(write=True) as txn:
        new, ttl = env.open_db(b"dedup_by_id", txn=txn), env.open_db(b"dedup_ttl", txn=txn)
        old = env.open_db(upgrade.LEGACY_DEDUP, txn=txn)
        records = list(txn.cursor(db=new))
        for key, value in records:
            client_id, _, sender = key.rpartition(SEP)
            ts = unpack(value)["ts"]
            txn.delete(key, db=new)
            txn.delete(dedup_ttl_key(ts, key), db=ttl)
            txn.put(sender + SEP + client_id, value, db=old)
            txn.put(dedup_ttl_key(ts, sender + SEP + client_id), b"", db=ttl)
    env.close()
    return len(records)


def legacy_left(path) -> bool:
    env = lmdb.open(str(path), max_dbs=64, readonly=True)
    try:
        with env.begin() as txn:
            env.open_db(upgrade.LEGACY_DEDUP, txn=txn, create=False)
        return True
    except lmdb.NotFoundError:
        return False
    finally:
        env.close()


async def test_old_dedup_records_are_moved_and_keep_working(tmp_path, monkeypatch):
    path = tmp_path / "lmdb"
    with LmdbStore(path) as store:
        s = Storage(store)
        for phone in (SENDER, RECEIVER, OTHER):
            await s.register_device(phone, KEY, 1)
        for i, cid in enumerate(IDS):
            assert not (await s.store_message(SENDER, cid, RECEIVER, b"hi", T + i, CAP)).duplicate
        assert len(await s.store_read(RECEIVER, SENDER, ["m0"], T + 10)) == 1
    assert to_old_layout(path) == len(IDS)
    assert legacy_left(path)

    monkeypatch.setattr(upgrade, "CHUNK", 4)            # two chunks
    with LmdbStore(path) as store:
        s = Storage(store)
        ttl = store.read(lambda txn: [dedup_key_of_ttl(k) for k, _ in txn.range("dedup_ttl",
                                                                                u64(0), None)])
        assert sorted(ttl) == sorted(cid.encode() + SEP + SENDER.encode() for cid in IDS)
        for i, cid in enumerate(IDS):                   # a resend: the first commit's answer
            stored = await s.store_message(SENDER, cid, RECEIVER, b"hi", T + 50, CAP)
            assert stored == Stored(i + 1, T + i, True)
        assert await s.store_read(RECEIVER, SENDER, ["m0"], T + 60) == []    # read already
        assert len(await s.store_read(RECEIVER, SENDER, ["m1"], T + 60)) == 1
        assert await s.store_read(OTHER, SENDER, ["m2"], T + 60) == []      # not OTHER's
        assert await s.prune_dedup(before_ms=T + 2) == 2                     # by age, still
        assert not (await s.store_message(SENDER, "m0", RECEIVER, b"hi", T + 70, CAP)).duplicate
    assert not legacy_left(path)


async def test_an_environment_without_old_records_opens_as_it_is(tmp_path):
    path = tmp_path / "lmdb"
    with LmdbStore(path) as store:
        await Storage(store).register_device(SENDER, KEY, 1)
    for _ in range(2):
        with LmdbStore(path) as store:
            assert store.read(lambda txn: txn.get("users", SENDER.encode())) is not None
        assert not legacy_left(path)


@pytest.mark.parametrize("chunk", [1, 3, 1000])
async def test_every_chunk_size_moves_every_record_once(tmp_path, monkeypatch, chunk):
    path = tmp_path / "lmdb"
    with LmdbStore(path) as store:
        s = Storage(store)
        await s.register_device(SENDER, KEY, 1)
        await s.register_device(RECEIVER, KEY, 1)
        for i in range(7):
            await s.store_message(SENDER, f"c{i}", RECEIVER, b"x", T + i, CAP)
    to_old_layout(path)
    monkeypatch.setattr(upgrade, "CHUNK", chunk)
    with LmdbStore(path) as store:
        keys = store.read(lambda txn: [k for k, _ in txn.range("dedup_by_id", b"", None)])
    assert keys == sorted(f"c{i}".encode() + SEP + SENDER.encode() for i in range(7))
