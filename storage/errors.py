"""Exceptions raised by the storage layer.

Every exception a domain transaction raises on purpose derives from
``StorageError``, so a caller can tell "the store refused this" from a bug.
An op that raises is rolled back alone; its future carries the exception.
"""

from __future__ import annotations

__all__ = [
    "StorageError", "InvalidArgument", "UnknownUser", "OfflineFull",
    "DuplicateId", "BadCode", "CommitFailed", "StoreClosed",
    "UnknownGroup", "NotMember", "NotAdmin", "GroupFull", "EventsFull", "HomeUnknown",
    "StaleDevice",
]


class StorageError(Exception):
    """Base class of every error the storage layer raises on purpose.

    Picklable whatever a subclass's ``__init__`` takes (the default pickling
    of an exception calls ``cls(*args)``): errors come back from the LMDB
    writer process (storage/kv_process.py)."""

    def __reduce__(self):
        return _rebuild, (type(self), self.args, self.__dict__)


def _rebuild(cls: type, args: tuple, state: dict) -> "StorageError":
    err = cls.__new__(cls)
    err.args = args
    err.__dict__.update(state)
    return err


class InvalidArgument(StorageError, ValueError):
    """An argument cannot be stored: a malformed phone number, a key that is
    not 32 bytes, a client id that is empty or too long, ..."""


class UnknownUser(StorageError):
    """The user (a phone number) has no account."""

    def __init__(self, phone: str):
        super().__init__(f"no account for {phone}")
        self.phone = phone


class HomeUnknown(StorageError):
    """In a cluster: an item is due to a user who has no account on this
    node and whom its replica of the home map does not list, not yet: the
    replica lags the directory, which may itself be rebuilding after a
    restart. Nothing was written; try again shortly (INTERNAL)."""

    def __init__(self, phone: str):
        super().__init__(f"the home node of {phone} is not known here yet; try again")
        self.phone = phone


class OfflineFull(StorageError):
    """The recipient already holds ``cap`` undelivered messages."""

    def __init__(self, phone: str, cap: int):
        super().__init__(f"inbox of {phone} is full ({cap} undelivered messages)")
        self.phone = phone
        self.cap = cap


class EventsFull(OfflineFull):
    """A user to be added to a group holds ``cap`` unread group items
    (events and ``missed`` markers): a join would grow the inbox past its
    event cap (storage/groups.py). An ``OfflineFull``: the same answer."""

    def __init__(self, phone: str, held: int, cap: int):
        StorageError.__init__(self, f"inbox of {phone} is full ({held} unread group "
                                    f"events, cap {cap}): add them once they have read them")
        self.phone, self.held, self.cap = phone, held, cap


class DuplicateId(StorageError):
    """A sender reused a client id for a different recipient: the first
    message keeps the id and the new one is refused, not silently dropped."""

    def __init__(self, sender: str, client_id: str, first_to: str, to: str):
        super().__init__(f"{sender} already used client id {client_id!r} for a message "
                         f"to {first_to}, not {to}")
        self.sender, self.client_id, self.first_to, self.to = sender, client_id, first_to, to


class StaleDevice(StorageError):
    """A message sealed end to end for ``device`` of ``phone``, which has
    registered another device since (``current``): stored, it could never
    be opened. Nothing was written; the sender seals it again."""

    def __init__(self, phone: str, device: int, current: int):
        super().__init__(f"device {device} is not the current device of {phone} ({current}): "
                         f"fetch their keys and seal the message again")
        self.phone, self.device, self.current = phone, device, current


class BadCode(StorageError):
    """``confirm_device`` refused: ``status`` is ``"bad"``, ``"expired"`` or
    ``"missing"`` (no pending code); ``attempts`` counts checks of the
    current code, this one included (0 when missing)."""

    _TEXT = {"bad": "wrong code", "expired": "the code has expired",
             "missing": "no code was requested for this number"}

    def __init__(self, status: str, attempts: int):
        text = self._TEXT.get(status, status)
        super().__init__(f"{text} (attempt {attempts})" if status == "bad" else text)
        self.status, self.attempts = status, attempts


class CommitFailed(StorageError):
    """The batch's write transaction could not be committed; nothing of the
    batch was stored. ``__cause__`` holds the backend's exception."""


class StoreClosed(StorageError):
    """``submit`` after ``close()``."""


class UnknownGroup(StorageError):
    """No group has this id."""

    def __init__(self, group: str):
        super().__init__(f"no such group: {group}")
        self.group = group


class NotMember(StorageError):
    """The user is not a member of the group (or the user named is not)."""

    def __init__(self, group: str, phone: str):
        super().__init__(f"{phone} is not a member of {group}")
        self.group, self.phone = group, phone


class NotAdmin(StorageError):
    """Only the group's admins may do this."""

    def __init__(self, group: str, phone: str):
        super().__init__(f"{phone} is not an admin of {group}")
        self.group, self.phone = group, phone


class GroupFull(StorageError):
    """The change would take the group past its size cap."""

    def __init__(self, group: str, cap: int):
        super().__init__(f"group {group} would have more than {cap} members")
        self.group, self.cap = group, cap
