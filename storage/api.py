"""``Storage``: the one object the actor layer holds, over either backend.

Writes are submitted the moment they are called (so one caller's writes
keep their order: the writer is FIFO) and return an ``asyncio.Future`` that
settles after the op's batch is committed: a result in hand means it is
durable, so the caller may acknowledge it. ``await`` the future, or give it
an ``add_done_callback`` from a handler that must not wait. Reads are plain
calls that run a short read-only transaction at once. ``open_storage``
picks the backend.

Holds ``Storage`` and ``open_storage``; the transactions themselves live in
``storage.accounts`` and ``storage.mailbox``.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, Callable, Iterable

from storage import accounts, blob_refs, blocks, groups, keydir, mailbox, nonces, outq, outq_fold
from storage.batch import UserBatch
from storage.errors import BadCode
from storage.kv import Settles, Store, StoreStats
from storage.metas import Homes
from storage.records import (Account, CodeCheck, Confirmation, GroupRecord, InboxItem,
                             InboxMeta, RoutedReceipt, Stored)

__all__ = ["Storage", "open_storage"]

Future = asyncio.Future


def _now_ms() -> int:
    return int(time.time() * 1000)


class Storage:
    """Typed calls for every domain transaction; ``store`` is the backend.

    ``remote``: None on a single node; in a cluster, set it to a callable
    that names the node a user is homed on when that is not this one (else
    None): the inbox writes then queue what they owe such users for their
    node (``storage.outq``; seq 0 in the results) instead of storing it here.
    """

    remote: Callable[[str], str | None] | None = None     # see follow_homes

    def __init__(self, store: Store):
        self.store = store

    def follow_homes(self, homes: Homes) -> None:
        """Route what is owed to users homed elsewhere by ``homes`` (a
        cluster node's replica of the home map); tell each change with
        ``homes_changed``, before submitting anything that depends on it."""
        self.remote = homes
        self.homes_changed(homes.map, node=homes.node)

    def homes_changed(self, changes: dict[str, str], node: str | None = None) -> None:
        """``changes`` were made to the followed map: a store whose writer
        keeps a replica of its own (``storage.kv_process``) is told, in line
        with the ops."""
        replicate = getattr(self.store, "replicate_homes", None)
        if replicate is not None:
            replicate(dict(changes), node)

    # -- accounts --------------------------------------------------------------
    def put_code(self, phone: str, code_hash: bytes, expires_at_ms: int) -> Future[None]:
        return self.store.submit(accounts.PutCode(phone, code_hash, expires_at_ms))

    def check_code(self, phone: str, code: str, now_ms: int) -> Future[CodeCheck]:
        return self.store.submit(accounts.CheckCode(phone, code, now_ms))

    def confirm_device(self, phone: str, code_hash: bytes, verify_key: bytes,
                       now_ms: int, detail: bool = False) -> Future[int]:
        """The new device id, or ``BadCode`` (the attempt is still counted).
        ``detail``: the ``Confirmation`` instead of the id, whose ``notices``
        say which key contacts were told of the new device (to nudge them)."""
        confirmed = self.store.submit(
            accounts.ConfirmDevice(phone, code_hash, verify_key, now_ms, self.remote))
        outcome = confirmed.get_loop().create_future()

        def settle(done: Future[Confirmation]) -> None:
            if outcome.done():
                return
            if done.cancelled():
                outcome.cancel()
            elif done.exception() is not None:
                outcome.set_exception(done.exception())
            elif done.result().device_id is None:
                check = done.result().check
                outcome.set_exception(BadCode(check.status, check.attempts))
            else:
                outcome.set_result(done.result() if detail else done.result().device_id)

        confirmed.add_done_callback(settle)
        return outcome

    def register_device(self, phone: str, verify_key: bytes, now_ms: int) -> Future[int]:
        return self.store.submit(accounts.RegisterDevice(phone, verify_key, now_ms, self.remote))

    def get_account(self, phone: str) -> Account | None:
        return self.store.read(lambda txn: accounts.get_account(txn, phone))

    def stale_device(self, sender: str, client_id: str, to: str, device: int) -> int | None:
        """``to``'s current device if a SEND naming ``device`` is stale (a read)."""
        return self.store.read(lambda txn: accounts.stale_device(txn, sender, client_id, to, device))

    def local_users(self) -> list[str]:
        return self.store.read(accounts.all_phones)

    # -- inbox -----------------------------------------------------------------
    def store_message(self, sender: str, client_id: str, to: str, body: bytes,
                      ts_ms: int, cap: int) -> Future[Stored]:
        return self.store.submit(
            mailbox.StoreMessage(sender, client_id, to, body, ts_ms, cap, self.remote))

    def ack_inbox(self, user: str, seqs: Iterable[int], ts_ms: int | None = None
                  ) -> Future[list[RoutedReceipt]]:
        """``ts_ms`` (the receipts' time) defaults to now."""
        ts = _now_ms() if ts_ms is None else ts_ms
        return self.store.submit(mailbox.AckInbox(user, tuple(seqs), ts, self.remote))

    def store_read(self, reader: str, peer: str, ids: Iterable[str], ts_ms: int | None = None,
                   group: str | None = None) -> Future[list[RoutedReceipt]]:
        ts = _now_ms() if ts_ms is None else ts_ms
        return self.store.submit(
            mailbox.StoreRead(reader, peer, tuple(ids), ts, group, self.remote))

    def user_batch(self, user: str, requests: Iterable[tuple], ts_ms: int, cap: int,
                   into: Settles | None = None) -> Future[list[tuple[bool, Any]]]:
        """Several of ``user``'s requests as one op (``storage.batch``): a
        result ``(True, value)`` or ``(False, exception)`` per request
        (``into``: see ``Store.submit``)."""
        return self.store.submit(UserBatch(user, tuple(requests), ts_ms, cap, self.remote), into)

    def inbox_after(self, user: str, after_seq: int = 0, limit: int | None = 100
                    ) -> list[InboxItem]:
        return self.store.read(lambda txn: mailbox.inbox_after(txn, user, after_seq, limit))

    def inbox_count(self, user: str) -> int:
        return self.store.read(lambda txn: mailbox.inbox_count(txn, user))

    def inbox_meta(self, user: str) -> InboxMeta:
        return self.store.read(lambda txn: mailbox.inbox_meta(txn, user))

    # -- the outbound queue to other nodes (storage.outq) -------------------------
    def outq_peek(self, dest: str, limit: int = 512, after: int = 0,
                  max_bytes: int | None = None) -> list[tuple[int, tuple]]:
        """Up to ``limit`` items owed to node ``dest`` with seq > ``after``
        (and ``max_bytes`` packed), oldest first: (seq, item)."""
        return self.store.read(lambda txn: outq.peek(txn, dest, limit, after, max_bytes))

    def outq_pending(self) -> dict[str, int]:
        """Items queued per destination node (those with any)."""
        return self.store.read(outq.pending)

    def outq_folded(self) -> dict[str, int]:
        """Group items folded per destination node, waiting for room past
        ``outq_high`` (``storage.outq_fold``; nodes with any fold)."""
        return self.store.read(outq_fold.folded)

    def outq_trim(self, dest: str, upto: int, high: int | None = None) -> Future[int]:
        """Forget ``dest``'s items with seq <= ``upto`` (it confirmed them);
        with ``high``, queue the group items folded for it in the room left."""
        return self.store.submit(outq.Trim(dest, upto, high))

    def outq_apply(self, origin: str, epoch: str, items: Iterable[tuple[int, tuple]],
                   cap: int, after: int | None = None) -> Future[outq.Applied]:
        """Apply a shipment from node ``origin`` exactly once (``outq.apply``)."""
        return self.store.submit(outq.Apply(origin, epoch, tuple(items), cap, self.remote,
                                            after))

    def outq_epoch(self) -> Future[str]:
        """This store's epoch (drawn by the first call: hence a write)."""
        return self.store.submit(outq.Epoch())

    # -- groups ----------------------------------------------------------------
    def group_batch(self, group: str, requests: Iterable[tuple], ts_ms: int, cap: int,
                    group_cap: int, into: Settles | None = None, outq_high: int | None = None
                    ) -> Future[tuple[list[tuple[bool, Any]], GroupRecord | None]]:
        """One group's requests as one op (``storage.groups``): a result per
        request, and the group record after them (``into``: see ``Store.submit``;
        ``outq_high``: past it, items for members homed elsewhere fold)."""
        return self.store.submit(groups.GroupBatch(group, tuple(requests), ts_ms, cap, group_cap,
                                                   self.remote, outq_high), into)

    def get_group(self, group: str) -> GroupRecord | None:
        return self.store.read(lambda txn: groups.get_group(txn, group))

    def groups_of(self, user: str) -> list[str]:
        return self.store.read(lambda txn: groups.groups_of(txn, user))

    # -- key directory (storage.keydir) and blob references (storage.blob_refs) --
    def publish_keys(self, user: str, identity: bytes, signed: bytes,
                     one_time: Iterable[tuple[int, bytes]], cap: int = keydir.MAX_HELD
                     ) -> Future[int]:
        """One-time prekeys held after publishing; ``WrongIdentity``, ``KeysFull``."""
        return self.store.submit(keydir.PublishKeys(user, identity, signed, tuple(one_time), cap))

    def fetch_keys(self, fetcher: str, user: str, one_time: bool = True
                   ) -> Future[keydir.FetchedKeys]:
        """``UnknownUser``, ``NoKeys``; pops one one-time prekey (``one_time``)."""
        return self.store.submit(keydir.FetchKeys(fetcher, user, one_time))

    def count_keys(self, user: str) -> int | None:
        return self.store.read(lambda txn: keydir.count_keys(txn, user))

    def add_key_contact(self, phone: str, contact: str) -> Future[None]:
        return self.store.submit(keydir.AddKeyContact(phone, contact))

    def key_contacts(self, user: str) -> list[str]:
        return self.store.read(lambda txn: keydir.key_contacts(txn, user))

    def blobs_to_keep(self, since_ms: int) -> set[str]:
        """Blobs referenced now or released at or after ``since_ms``."""
        return self.store.read(lambda txn: blob_refs.keep(txn, since_ms))

    def blob_kept(self, sha256: str, since_ms: int) -> bool:
        """Whether ``blobs_to_keep(since_ms)`` would have it, read now."""
        return self.store.read(lambda txn: blob_refs.kept(txn, sha256, since_ms))

    def blob_refs(self, sha256: str) -> int:
        return self.store.read(lambda txn: blob_refs.count(txn, sha256))

    def forget_blob_refs(self, before_ms: int) -> Future[int]:
        return self.store.submit(blob_refs.Forget(before_ms))

    # -- media upload nonces (storage.nonces) -----------------------------------
    def take_nonce(self, user: str, device: int, nonce: str, ts_ms: int,
                   before_ms: int) -> Future[str]:
        """"fresh" the first time a request's nonce is taken on this node,
        "replayed" after; "stale" for a time the sweep has passed
        (``before_ms``: the window's start by the caller's clock)."""
        return self.store.submit(nonces.TakeNonce(user, device, nonce, ts_ms, before_ms))

    def nonces_held(self) -> int:
        return self.store.read(nonces.held)

    # -- presence and housekeeping ---------------------------------------------
    def set_block(self, user: str, target: str, on: bool,
                  limit: int = blocks.MAX_BLOCKED) -> Future[bool]:
        """Block (``on``) or unblock ``target``; whether anything changed."""
        return self.store.submit(blocks.SetBlock(user, target, on, limit, self.remote))

    def blocked_list(self, user: str) -> list[str]:
        return self.store.read(lambda txn: blocks.blocked_list(txn, user))

    def is_blocked(self, blocker: str, blocked: str) -> bool:
        return self.store.read(lambda txn: blocks.is_blocked(txn, blocker, blocked))

    def set_last_seen(self, user: str, ts_ms: int) -> Future[int]:
        return self.store.submit(mailbox.SetLastSeen(user, ts_ms))

    def set_last_seen_many(self, seen: Iterable[tuple[str, int]]) -> Future[int]:
        """``(user, ts_ms)`` pairs in one op; how many."""
        return self.store.submit(mailbox.SetLastSeenMany(tuple(seen)))

    def get_last_seen(self, user: str) -> int | None:
        return self.store.read(lambda txn: mailbox.get_last_seen(txn, user))

    def prune_dedup(self, before_ms: int, limit: int = 10_000) -> Future[int]:
        return self.store.submit(mailbox.PruneDedup(before_ms, limit))

    def stats(self) -> StoreStats:
        return self.store.stats()

    def close(self) -> None:
        self.store.close()


def open_storage(backend: str = "lmdb", path: str | os.PathLike | None = None,
                 **options) -> Storage:
    """``backend`` is ``"lmdb"`` (``path``: the node's LMDB directory;
    ``options`` go to ``LmdbStore``), ``"lmdb-process"`` (the same, its
    writer in a child process: ``ProcessStore``) or ``"memory"``."""
    if backend in ("lmdb", "lmdb-process"):
        if path is None:
            raise ValueError("the lmdb backend needs a path")
        if backend == "lmdb-process":
            from storage.kv_process import ProcessStore
            return Storage(ProcessStore(path, **options))
        from storage.kv_lmdb import LmdbStore
        return Storage(LmdbStore(path, **options))
    if backend == "memory":
        from storage.kv_memory import MemoryStore
        return Storage(MemoryStore(**options))
    raise ValueError(f"unknown storage backend {backend!r}")
