"""Storage: the durable state of a node (accounts, inboxes, receipts, last
seen) as transactions over a small sorted key-value contract, run on LMDB
with group commit ("ack after commit") or in memory for tests.

Layering: ``storage`` imports only the standard library, ``lmdb`` and
``msgpack``; it never imports ``actors``, ``supervisor`` or ``transport``.
The actor layer holds a ``Storage`` (``storage.api``); ``storage.kv`` is the
contract the backends meet; ``storage.accounts`` and ``storage.mailbox``
are the transactions; ``storage.keys`` is the key layout; docs/storage.md
explains all of it.

Modules: ``errors``, ``keys``, ``records``, ``kv``, ``kv_lmdb``,
``kv_memory``, ``accounts``, ``metas``, ``mailbox``, ``batch``, ``groups``,
``outq`` (what is owed to users homed on other nodes), ``nonces`` (media
upload nonces, taken once per node), ``api``.
"""

from storage.api import Storage, open_storage
from storage.errors import (BadCode, CommitFailed, DuplicateId, EventsFull, GroupFull,
                            HomeUnknown, InvalidArgument, NotAdmin, NotMember, OfflineFull,
                            StaleDevice, StorageError, StoreClosed, UnknownGroup, UnknownUser)
from storage.kv import DBS, Store, StoreStats, Txn
from storage.records import (Account, CodeCheck, Confirmation, GroupEvent, GroupRecord, InboxItem,
                             InboxMeta, Message, Receipt, RoutedReceipt, Stored)

__all__ = [
    "Storage", "open_storage", "Store", "Txn", "StoreStats", "DBS",
    "StorageError", "InvalidArgument", "UnknownUser", "OfflineFull", "DuplicateId",
    "BadCode", "CommitFailed", "StoreClosed", "UnknownGroup", "NotMember", "NotAdmin",
    "GroupFull", "EventsFull", "HomeUnknown", "StaleDevice", "GroupEvent", "GroupRecord",
    "Account", "CodeCheck", "Confirmation", "InboxItem", "InboxMeta", "Message", "Receipt",
    "RoutedReceipt", "Stored",
]
