"""Where the SDK keeps a device's end-to-end secrets: its ``LocalKeys``, the
``TrustStore`` (which identity each contact had) and one ``SessionRecord``
per contact, in memory or in the profile directory:

    <profile>/keys.bin              LocalKeys (holds the device seed)
    <profile>/trust.bin             TrustStore
    <profile>/sessions/<user>.bin   SessionRecord with that user's device
    <profile>/sessions/<user>.dev   which device that is: its identity (32
                                    bytes) and device id (u64), from the
                                    directory (KEYS_FETCH)
    <profile>/groups/<sha256>.bin   GroupCipher (sender keys), named by the
                                    SHA-256 (hex) of the group id
    <profile>/opened/<seq>.bin      a message decrypted but not yet acknowledged
    <profile>/sealed/<id>.bin       a message sealed, not yet delivered
                                    (``client.sealed``)

Every file holds secrets like the device seed does, so the directories are
0700 and the files 0600, each written to a temporary file, fsynced, then
renamed over the old one: a crash leaves the old state or the new one,
never half of either. The rules of when to save (docs/e2e.md,
"Persistence"): encrypt, save the session, then hand the ciphertext to the
outbox; decrypt, write the plaintext copy (below), save the session (and
the keys after a first message), then acknowledge. The copy comes first:
a crash after it leaves the old session, which can open the message
again; a crash after the session but before the copy would lose it.

Opened messages: decrypting consumes the message key, so a message pushed
again after a crash (decrypted and saved, RECEIVED never sent) would fail
as a replay. So the plaintext envelope of each decrypted message is kept,
keyed by its inbox seq with its (sender, id), until the server confirms
its RECEIVED; a re-push of that seq is opened from there. These files hold
plaintext (0600, like the rest), for as long as a message is unacknowledged.

Group files are named by a hash, never by the id itself: the id of a
sender key comes from whoever sent the distribution message, and a name
of any length or with any byte must not become a path.

Devices: a SEND names the device of the recipient its body is sealed for
(docs/e2e.md, "A recipient's replaced device"). ``device(user)`` is the id
the directory gave with the bundle the current session began from, or that
a lookup gave for the identity of a session the other side began; it holds
only while that identity is the current session's, so a new identity (a
first message from a new device) makes it unknown again.

A profile whose ``keys.bin`` belongs to another device key (the user
registered this profile's phone on a new device) is not used: new keys
and no sessions, since the old ones were with the old identity; and a new
own sender key in every group, since a copy of the profile on the old
device would know the current ones (keys received are kept). The same
holds for a device key registered again (``Encryption.after_login``
finds nothing published): its contacts dropped their sessions with it and
retire the sender keys they had from it, so it drops its sessions and
hands out new sender keys.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import struct
from typing import Callable

from transport.crypto import DeviceKey
from transport.e2e import E2EError, GroupCipher, LocalKeys, SessionRecord, TrustStore
from client.sealed import SealedCopies

__all__ = ["E2EStore", "write_private"]

ONE_TIME = 100                  # one-time prekeys generated at first
_HASHED = re.compile(r"[0-9a-f]{64}\.bin")   # a group file's name (_group_file)
_DEVICE = struct.Struct(">32sQ")                # a .dev file: identity, device id

log = logging.getLogger("switchboard.client")


def write_private(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, mode 0600."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class E2EStore:
    """The device's keys, trust and sessions; ``directory`` None keeps them in memory."""

    def __init__(self, directory: str | None = None):
        self.directory = directory
        self.keys: LocalKeys | None = None
        self.trust = TrustStore()
        self._sessions: dict[str, SessionRecord] = {}
        self._groups: dict[str, GroupCipher] = {}
        self._opened: dict[int, bytes] = {}     # in memory only: seq -> record
        self._devices: dict[str, tuple[bytes, int] | None] = {}   # user -> (identity, device)
        self.sealed = SealedCopies(None if directory is None else os.path.join(directory, "sealed"),
                                   write_private)
        if directory is not None:
            os.makedirs(os.path.join(directory, "sessions"), mode=0o700, exist_ok=True)
            os.makedirs(os.path.join(directory, "groups"), mode=0o700, exist_ok=True)
            os.makedirs(os.path.join(directory, "opened"), mode=0o700, exist_ok=True)
            self.keys = self._load("keys.bin", LocalKeys.from_bytes)
            self.trust = self._load("trust.bin", TrustStore.from_bytes) or TrustStore()
            self._rename_old_groups()

    def _rename_old_groups(self) -> None:
        """Group files of an older profile (named by the id) move to their hash name."""
        for name in os.listdir(self._path("groups")):
            if name.endswith(".bin") and not _HASHED.fullmatch(name):
                old = os.path.join("groups", name)
                try:
                    cipher = self._load(old, GroupCipher.from_bytes)
                except (ValueError, E2EError) as error:     # unreadable: left as it is
                    log.warning("group file %s not renamed: %s", name, error)
                    continue
                write_private(self._path("groups", _group_file(cipher.group)), cipher.to_bytes())
                os.unlink(self._path(old))

    def _path(self, *parts: str) -> str:
        return os.path.join(self.directory, *parts)

    def _load(self, name: str, parse: Callable[[bytes], object]):
        try:
            with open(self._path(name), "rb") as f:
                return parse(f.read())
        except FileNotFoundError:
            return None

    # -- keys ----------------------------------------------------------------------------
    def keys_for(self, device_key: DeviceKey) -> tuple[LocalKeys, bool]:
        """This device's keys, made (and saved) if there are none or they
        belong to another device key; True when they are new."""
        if self.keys is not None and self.keys.identity == device_key.public:
            return self.keys, False
        self.keys = LocalKeys.generate(device_key, one_time=ONE_TIME)
        self.drop_sessions()
        self.save_keys()
        self.rekey_groups()                     # the old device knew these: new ones
        return self.keys, True

    def save_keys(self) -> None:
        if self.directory is not None and self.keys is not None:
            write_private(self._path("keys.bin"), self.keys.to_bytes())

    def save_trust(self) -> None:
        if self.directory is not None:
            write_private(self._path("trust.bin"), self.trust.to_bytes())

    # -- sessions ------------------------------------------------------------------------
    def session(self, user: str) -> SessionRecord:
        """The record for ``user`` (an empty one if there is none yet)."""
        record = self._sessions.get(user)
        if record is None:
            record = None if self.directory is None else self._load(
                os.path.join("sessions", f"{user}.bin"), SessionRecord.from_bytes)
            record = self._sessions[user] = record or SessionRecord()
        return record

    def save_session(self, user: str) -> None:
        if self.directory is not None and user in self._sessions:
            write_private(self._path("sessions", f"{user}.bin"), self._sessions[user].to_bytes())

    def device(self, user: str) -> int | None:
        """The id of ``user``'s device the current session is with, if known."""
        if user not in self._devices:
            raw = None if self.directory is None else self._load(
                os.path.join("sessions", f"{user}.dev"), bytes)
            self._devices[user] = _DEVICE.unpack(raw) if raw and len(raw) == _DEVICE.size else None
        known, identity = self._devices[user], self.session(user).peer_identity
        if known is None or identity is None or known[0] != identity:
            return None
        return known[1]

    def set_device(self, user: str, identity: bytes, device: int) -> None:
        """``user``'s device with ``identity`` (their Ed25519 key) is ``device``."""
        self._devices[user] = (identity, device)
        if self.directory is not None:
            write_private(self._path("sessions", f"{user}.dev"), _DEVICE.pack(identity, device))

    # -- opened, not yet acknowledged -------------------------------------------------
    def remember_opened(self, seq: int, sender: str, id: str, envelope: bytes) -> None:
        record = f"{sender}\0{id}\0".encode() + envelope
        if self.directory is None:
            self._opened[seq] = record
        else:
            write_private(self._path("opened", f"{seq}.bin"), record)

    def opened(self, seq: int, sender: str, id: str) -> bytes | None:
        """The envelope of message ``seq`` if it was decrypted before (same sender and id)."""
        record = self._opened.get(seq) if self.directory is None else \
            self._load(os.path.join("opened", f"{seq}.bin"), bytes)
        prefix = f"{sender}\0{id}\0".encode()
        return record[len(prefix):] if record is not None and record.startswith(prefix) else None

    def forget_opened(self, seqs) -> None:
        """The server confirmed RECEIVED for ``seqs``."""
        for seq in seqs:
            if self.directory is None:
                self._opened.pop(seq, None)
            else:
                try:
                    os.unlink(self._path("opened", f"{seq}.bin"))
                except FileNotFoundError:
                    pass

    # -- groups --------------------------------------------------------------------------
    def group(self, group: str) -> GroupCipher:
        cipher = self._groups.get(group)
        if cipher is None:
            cipher = None if self.directory is None else self._load(
                os.path.join("groups", _group_file(group)), GroupCipher.from_bytes)
            cipher = self._groups[group] = cipher or GroupCipher(group)
        return cipher

    def rekey_groups(self) -> None:
        """A new own sender key in every group that has one (this profile
        moved to a new device, or its key was registered again: the keys a
        contact received from it before then retire)."""
        for group in self.group_ids():
            if self._groups[group].own is not None:
                self._groups[group].rekey()
                self.save_group(group)

    def group_ids(self) -> list[str]:
        """Every group this device keeps state for; the saved ones are loaded
        (and kept in memory, as ``group`` does). An unreadable file is skipped."""
        if self.directory is not None:
            cached = {_group_file(group) for group in self._groups}
            for name in sorted(os.listdir(self._path("groups"))):
                if not _HASHED.fullmatch(name) or name in cached:
                    continue
                try:
                    cipher = self._load(os.path.join("groups", name), GroupCipher.from_bytes)
                except (ValueError, E2EError) as error:
                    log.warning("group file %s unreadable: %s", name, error)
                    continue
                if cipher is not None and _group_file(cipher.group) == name:
                    self._groups[cipher.group] = cipher
        return list(self._groups)

    def has_group(self, group: str) -> bool:
        """Whether this device keeps state for ``group`` (in memory or saved)."""
        return group in self._groups or (
            self.directory is not None and os.path.exists(self._path("groups", _group_file(group))))

    def save_group(self, group: str) -> None:
        if self.directory is not None and group in self._groups:
            write_private(self._path("groups", _group_file(group)), self._groups[group].to_bytes())

    def drop_group(self, group: str) -> None:
        self._groups.pop(group, None)
        if self.directory is not None:
            try:
                os.unlink(self._path("groups", _group_file(group)))
            except FileNotFoundError:
                pass

    def replace_session(self, user: str, record: SessionRecord) -> None:
        self._sessions[user] = record

    def drop_sessions(self) -> None:
        """Forget every session (they were with this device's old
        registration: its contacts dropped theirs at the KEY_CHANGED notice)."""
        self._sessions.clear()
        self._devices.clear()
        if self.directory is not None:
            for name in os.listdir(self._path("sessions")):
                os.unlink(self._path("sessions", name))

    def drop_session(self, user: str) -> None:
        """Forget every session with ``user`` (their device changed)."""
        self._sessions[user] = SessionRecord()
        self._devices[user] = None
        if self.directory is not None:
            for name in (f"{user}.bin", f"{user}.dev"):
                try:
                    os.unlink(self._path("sessions", name))
                except FileNotFoundError:
                    pass


def _group_file(group: str) -> str:
    return hashlib.sha256(group.encode("utf-8", "surrogatepass")).hexdigest() + ".bin"
