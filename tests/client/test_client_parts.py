"""The SDK's pure parts: the backoff policy, message ids, inbox bookkeeping, the outbox journal."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given, strategies as st

from client.backoff import Backoff
from client.ids import ALPHABET, new_message_id
from client.inbox import InboxTracker
from client.e2e_store import write_private
from client.outbox import Outbox
from client.sealed import Sealed, SealedCopies
from client import outbox as outbox_module


# -- backoff -----------------------------------------------------------------------------
def test_backoff_grows_then_caps():
    policy = Backoff(initial=0.5, maximum=8.0, factor=2.0, jitter=0.0)
    assert [policy.delay(n) for n in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert policy.delay(10_000) == 8.0


@given(st.integers(0, 10_000), st.floats(0.0, 1.0))
def test_backoff_is_bounded_and_jittered_down_only(attempt, r):
    policy = Backoff(initial=0.2, maximum=5.0, jitter=0.5)
    full = min(5.0, 0.2 * 2.0 ** min(attempt, 64))
    assert full * 0.5 - 1e-9 <= policy.delay(attempt, lambda: r) <= full + 1e-9 <= 5.0 + 1e-9


def test_backoff_rejects_nonsense():
    with pytest.raises(ValueError):
        Backoff(initial=10, maximum=1)
    with pytest.raises(ValueError):
        Backoff(jitter=2)


# -- message ids --------------------------------------------------------------------------
@given(st.integers(0, (1 << 48) - 1), st.integers(0, (1 << 48) - 1))
def test_ids_sort_in_time_order_byte_for_byte(t1, t2):
    a, b = new_message_id(t1), new_message_id(t2)
    if t1 < t2:
        assert a.encode() < b.encode()
    elif t1 > t2:
        assert a.encode() > b.encode()


def test_the_id_alphabet_is_64_chars_in_byte_order():
    assert list(ALPHABET) == sorted(set(ALPHABET)) and len(ALPHABET) == 64


def test_ids_are_16_chars_of_the_wire_alphabet_and_unique_within_a_millisecond():
    ids = [new_message_id(1_700_000_000_000) for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert {len(i) for i in ids} == {16}
    assert set("".join(ids)) <= set(ALPHABET.decode())
    assert len({i[:8] for i in ids}) == 1              # the time part: one millisecond
    assert new_message_id() > new_message_id(1_700_000_000_000)   # the clock, today


def test_ids_refuse_a_time_out_of_range():
    for ms in (-1, 1 << 48):
        with pytest.raises(ValueError):
            new_message_id(ms)


# -- inbox --------------------------------------------------------------------------------
def test_new_item_is_acked_only_once_handed():
    inbox = InboxTracker()
    assert inbox.arrived(1, ("+1", "a"))
    assert inbox.take() == []
    inbox.handed(1)
    assert inbox.take() == [1]
    inbox.confirmed([1])
    assert inbox.pending == 0 and not inbox.delivered


def test_duplicates():
    inbox = InboxTracker()
    assert inbox.arrived(1, ("+1", "a"))
    assert not inbox.arrived(1, ("+1", "a"))         # still queued: ignored
    assert inbox.take() == []
    inbox.handed(1)
    assert inbox.take() == [1]
    assert not inbox.arrived(1, ("+1", "a"))         # in flight: not twice in a frame
    assert inbox.take() == []
    inbox.unconfirmed([1])                           # that RECEIVED failed
    assert not inbox.arrived(1)
    assert inbox.take() == [1]
    assert not inbox.arrived(7, ("+1", "a"))         # same message, new seq: ack, not deliver
    assert inbox.take() == [7]


def test_retry_all_after_reconnect():
    inbox = InboxTracker()
    for seq in (3, 1, 2):
        inbox.arrived(seq)
        inbox.handed(seq)
    assert inbox.take(2) == [1, 2]
    inbox.retry_all()
    assert inbox.take() == [1, 2, 3]


def test_take_splits_at_the_frame_limit():
    inbox = InboxTracker()
    for seq in range(1, 2501):
        inbox.arrived(seq)
        inbox.handed(seq)
    sizes = []
    while seqs := inbox.take():
        sizes.append(len(seqs))
    assert sizes == [1024, 1024, 452]


def test_message_keys_are_bounded():
    inbox = InboxTracker(keys_kept=3)
    for seq in range(1, 6):
        inbox.arrived(seq, ("+1", f"m{seq}"))
    assert len(inbox._keys) == 3


# -- outbox ---------------------------------------------------------------------------------
def test_outbox_keeps_order_in_memory():
    box = Outbox()
    for id in ("c", "a", "b"):
        box.add(id, "+15550000002", id.encode())
    box.remove("a")
    assert [e.id for e in box] == ["c", "b"] and [e.pos for e in box] == [0, 2]
    assert "b" in box and "a" not in box and len(box) == 2


def test_outbox_journal_replays(tmp_path):
    path = str(tmp_path / "outbox.jsonl")
    box = Outbox(path)
    for i in range(5):
        box.add(f"m{i}", "+15550000002", bytes([i, 255]))
    box.remove("m1")
    box.remove("m3")
    box.close()
    again = Outbox(path)
    assert [(e.id, e.body) for e in again] == [("m0", b"\x00\xff"), ("m2", b"\x02\xff"), ("m4", b"\x04\xff")]
    again.close()
    with open(path) as f:                           # compacted on open
        assert [json.loads(line)["add"] for line in f] == ["m0", "m2", "m4"]


def test_outbox_replace_keeps_the_place_and_replays(tmp_path):
    path = str(tmp_path / "outbox.jsonl")
    box = Outbox(path)
    for i in range(3):
        box.add(f"m{i}", "+15550000002", b"for 1", device=1 if i < 2 else None)
    box.replace("m0", b"for 2", 2)                  # sealed again: same place
    assert box.replace("gone", b"x", 2) is None
    box.close()
    again = Outbox(path)
    assert [(e.id, e.body, e.device) for e in again] == [
        ("m0", b"for 2", 2), ("m1", b"for 1", 1), ("m2", b"for 1", None)]
    again.close()
    with open(path) as f:                           # compacted: the new body in the add
        assert [json.loads(line).get("device") for line in f] == [2, 1, None]


def test_sealed_copies_are_bounded_kept_on_disk_and_read_back(tmp_path):
    copies = SealedCopies(str(tmp_path / "sealed"), write_private, kept=3)
    for i in range(4):
        copies.keep(f"m{i}", Sealed("+15550000002", 1, b"plain %d" % i, ("ab" * 32,) if i else ()))
    assert len(copies) == 3 and copies.get("m0") is None          # the oldest went
    copies.update("m1", device=2, failed_seq=7, reseals=1)
    copies.keep("../escape", Sealed("+15550000002", 1, b"x"))       # not a message id: not kept
    again = SealedCopies(str(tmp_path / "sealed"), write_private, kept=3)
    assert again.get("m1") == Sealed("+15550000002", 2, b"plain 1", ("ab" * 32,), 7, 1)
    assert again.get("m3").envelope == b"plain 3" and again.get("../escape") is None
    assert sorted(os.listdir(tmp_path / "sealed")) == ["m1.bin", "m2.bin", "m3.bin"]
    assert oct(os.stat(tmp_path / "sealed" / "m1.bin").st_mode & 0o777) == "0o600"
    again.forget("m1")
    assert again.get("m1") is None and len(again) == 2


def test_outbox_survives_a_torn_last_line(tmp_path):
    path = tmp_path / "outbox.jsonl"
    box = Outbox(str(path))
    box.add("ok", "+15550000002", b"x")
    box.close()
    with open(path, "a") as f:
        f.write('{"add": "torn", "to": "+1555')
    again = Outbox(str(path))
    assert [e.id for e in again] == ["ok"]
    again.close()


def test_outbox_compacts_when_mostly_deleted(tmp_path, monkeypatch):
    monkeypatch.setattr(outbox_module, "COMPACT_AFTER", 10)
    path = tmp_path / "outbox.jsonl"
    box = Outbox(str(path), fsync=False)
    for i in range(50):
        box.add(f"m{i}", "+15550000002", b"")
        box.remove(f"m{i}")
    box.add("last", "+15550000002", b"")
    box.close()
    assert len(path.read_text().splitlines()) < 15
    again = Outbox(str(path))
    assert [e.id for e in again] == ["last"]
    again.close()


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 9)), max_size=60))
def test_outbox_journal_matches_memory(tmp_path_factory, ops):
    path = str(tmp_path_factory.mktemp("ob") / "outbox.jsonl")
    box, model = Outbox(path, fsync=False), {}
    for add, n in ops:
        if add and f"m{n}" not in model:
            box.add(f"m{n}", "+15550000002", b"%d" % n)
            model[f"m{n}"] = b"%d" % n
        elif not add:
            box.remove(f"m{n}")
            model.pop(f"m{n}", None)
    box.close()
    replayed = Outbox(path, fsync=False)
    assert [(e.id, e.body) for e in replayed] == list(model.items())
    replayed.close()
