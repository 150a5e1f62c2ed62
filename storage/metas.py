"""``Metas``: the ``inbox_meta`` of each user one transaction touches, and
the one door every inbox append goes through (``storage.mailbox``,
``storage.groups``, ``storage.keydir``, ``storage.outq``).

Being that door is what makes a cluster cheap to support: given a
``remote`` callable (``remote(user)`` is the node where ``user`` is homed
when that is not this node, else None), an append for a user homed on
another node goes into that node's outbound queue (``storage.outq.put``) in
the same transaction, instead of into an inbox this node does not hold.
Such a user is never loaded into or saved in the dict: its inbox_meta
lives at its home, and the append returns seq 0 ("went to another node,
nothing to nudge here"). ``remote=None``: a single node, every user local.

``Homes`` is the ``remote`` a cluster node uses: a replica of the phone ->
home node map. It pickles as "the writer process's replica", which
``storage.kv_process`` keeps current by sending each change ahead of the
ops that follow it.
"""

from __future__ import annotations

from typing import Callable

from storage import outq
from storage.errors import HomeUnknown, UnknownUser
from storage.keys import inbox_key
from storage.kv import Txn
from storage.records import Message, Receipt, pack, pack_item, unpack

__all__ = ["Metas", "MixedRemotes", "load_meta", "current_device", "Remote", "Homes",
           "WRITER_HOMES"]

Remote = Callable[[str], str | None]


class Homes:
    """Phone -> home node, and which node is this one: ``homes(user)`` is
    the node ``user`` is homed on when it is not this one, else None."""

    __slots__ = ("node", "map")

    def __init__(self, node: str = "", homes: dict[str, str] | None = None):
        self.node = node
        self.map: dict[str, str] = {} if homes is None else homes

    def __call__(self, user: str) -> str | None:
        home = self.map.get(user)
        return None if home is None or home == self.node else home

    def __reduce__(self):                   # ops carry a reference, never the map
        return _writer_homes, ()


WRITER_HOMES = Homes()      # in the LMDB writer process: the replica its parent keeps current


def _writer_homes() -> Homes:
    return WRITER_HOMES


def load_meta(txn: Txn, user: bytes) -> dict:
    """``next`` seq; ``msgs`` messages, ``rcpts`` other items held, of which
    ``evts`` are group items (system events and ``missed`` markers)."""
    raw = txn.get("inbox_meta", user)
    if raw is None:
        return {"next": 1, "msgs": 0, "rcpts": 0, "evts": 0}
    meta = unpack(raw)
    meta.setdefault("evts", 0)              # written before group items were counted
    return meta


def current_device(txn: Txn, user: bytes) -> int | None:
    """The device id ``user`` has registered on this node last (None: no
    account here). A SEND naming another device of ``user`` is stale."""
    raw = txn.get("users", user)
    return None if raw is None else unpack(raw)["device"]


class MixedRemotes(RuntimeError):
    """Two ops of one flat batch carry different ``remote``s (``Metas.of``)."""


class Metas(dict):
    """The inbox_meta of each local user a transaction touches, written back
    once; also remembers which recipients were found in ``users``. Several
    transactions of one op (``storage.batch.UserBatch``) may share one, and
    ``Metas.of`` gives every op of a flat batch the same (``BatchScope``):
    each user's meta is then read and written once per batch, not once per
    op (three ops per chat message read and wrote four metas)."""

    def __init__(self, txn: Txn, remote: Remote | None = None, shared: bool = False):
        super().__init__()
        self.txn = txn
        self.remote = remote
        self.shared = shared                # written back by the batch, not by ``save``
        self.known: set[bytes] = set()
        self._homes: dict[bytes, str | None] = {}

    @classmethod
    def of(cls, txn: Txn, remote: Remote | None = None) -> "Metas":
        """The Metas for an op: its batch's, else one of its own. A batch has
        ONE: two would each read a user's meta as it was before the batch
        and append at the same seq. An op whose ``remote`` is not the
        batch's (ops of one ``Storage`` all carry its own; a batch can mix
        them only around ``follow_homes``) raises ``MixedRemotes``, and the
        batch runs again with a transaction, and a Metas, per op."""
        batch = txn.batch
        if batch is None:
            return cls(txn, remote)
        metas = batch.shared(cls, lambda: cls(txn, remote, True))
        if metas.remote is not remote:
            raise MixedRemotes(f"an op with remote {remote!r} in a batch with {metas.remote!r}")
        return metas

    def node_of(self, user: bytes) -> str | None:
        """The node ``user`` is homed on when it is not this one, else None."""
        if self.remote is None:
            return None
        try:
            return self._homes[user]
        except KeyError:
            node = self._homes[user] = self.remote(user.decode())
            return node

    def __missing__(self, user: bytes) -> dict:
        if self.node_of(user) is not None:  # a bug in the caller, not bad input
            raise RuntimeError(f"inbox_meta of {user!r} is kept at its home node, not here")
        meta = self[user] = load_meta(self.txn, user)
        return meta

    def append(self, user: bytes, payload: Message | Receipt, via: str | None = None) -> int:
        return self.append_packed(user, isinstance(payload, Message), pack_item(payload), via)

    def append_packed(self, user: bytes, is_message: bool, value: bytes,
                      via: str | None = None) -> int:
        """Append to ``user``'s inbox; its seq there, or 0 when ``user`` is
        homed on another node (the item was queued for that node). ``via``:
        the node a message from ``user`` was shipped from; a receipt for
        ``user`` goes there when the home map does not list ``user`` yet
        (it lags the directory) and ``user`` has no account here."""
        node = self.node_of(user)
        if node is None and via is not None and not self._has_account(user):
            node = via
        if node is not None:
            outq.put(self.txn, node, ("item", user.decode(),
                                      "message" if is_message else "receipt", value))
            return 0
        meta = self[user]
        seq = meta["next"]
        meta["next"] = seq + 1
        meta["msgs" if is_message else "rcpts"] += 1
        self.txn.put("inbox", inbox_key(user, seq), value)
        return seq

    def append_event(self, user: bytes, value: bytes) -> int:
        """Append a group item (a system event or a ``missed`` marker)."""
        node = self.node_of(user)
        if node is not None:
            outq.put(self.txn, node, ("item", user.decode(), "event", value))
            return 0
        self[user]["evts"] += 1
        return self.append_packed(user, False, value)

    def delete_event(self, user: bytes, seq: int) -> None:
        """Delete the group item at ``seq`` (the caller knows it is there);
        nothing for a user homed on another node."""
        if self.node_of(user) is not None:
            return
        meta = self[user]
        meta["rcpts"] -= 1
        meta["evts"] -= 1
        self.txn.delete("inbox", inbox_key(user, seq))

    def reachable(self, user: bytes, via: str | None = None) -> None:
        """``HomeUnknown`` if an item for ``user`` could not be placed: in a
        cluster, a user with no account here whom the home map does not list
        (yet) and, for a receipt, no node its message was shipped from
        (``via``). Callers ask before their first write."""
        if (self.remote is not None and via is None and self.node_of(user) is None
                and not self._has_account(user)):
            raise HomeUnknown(user.decode())

    def require_user(self, user: bytes, phone: str) -> None:
        """``UnknownUser`` unless ``user`` has an account here; a user homed
        on another node passes (its home decides)."""
        if self.node_of(user) is None and not self._has_account(user):
            raise UnknownUser(phone)

    def _has_account(self, user: bytes) -> bool:
        """Whether ``user`` has an account on this node (remembered in ``known``)."""
        if user in self.known:
            return True
        if self.txn.get("users", user) is None:
            return False
        self.known.add(user)
        return True

    def save(self) -> None:
        """Write back what changed; a batch's shared Metas waits for its end."""
        if not self.shared:
            self.write_back()

    def write_back(self) -> None:
        put = self.txn.put
        for user, meta in self.items():
            put("inbox_meta", user, pack(meta))
