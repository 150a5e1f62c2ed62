"""Group messages with sender keys (Signal's design).

Purpose: one ciphertext per group message, whatever the group's size,
readable only by the members who hold the sender's current sender key.

- ``SenderKey``: one sender's chain in one group: a 32-byte chain key that
  ratchets forward per message (HMAC-SHA256, as in the 1:1 chains: forward
  secrecy within the chain) and an Ed25519 signing key made for this chain
  alone. The sender keeps the signing private key; members get only the
  public half, so a member who can decrypt still cannot forge.
- ``distribution_message()``: what a sender sends, inside the 1:1 session,
  to every member (the key as of now: a new member cannot read the past).
- ``GroupCipher``: one device's view of one group: its own sender key and
  the sender keys received from the others (by member name, a few key ids
  each, so messages in flight across a re-key still decrypt).

Re-key rule (docs/e2e.md, "Groups"): when a member leaves or is removed,
every remaining member calls ``member_removed(name)``, which drops the
leaver's keys and makes a NEW own sender key, and sends its distribution
message only to the current members. The leaver holds only old chain keys,
which never encrypt anything again. A join needs no re-key. The cipher
remembers who was removed (``removed``, until ``member_added``), so the
caller can refuse a new key from a removed member until the server says
it is a member again (``client.group_e2e``).

A member's **device changes** (it registered again: the old device, or
whoever holds its state, still knows our current sender key): the cipher
remembers to whom its current own key was handed (``given``, cleared at
each re-key), and ``device_changed(name)`` makes a new own key if ``name``
was among them, as Signal resets its sender key when a recipient's device
list loses a device. The keys received from ``name`` retire
(``retire(name)``, ``transport.e2e_retire``): they open messages in flight
for a short grace, then a message under one is refused, so the old device
cannot go on posting as the member.

Message format::

    u8 version | u32 key id | u32 iteration | nonce 24 | ciphertext + tag 16 | signature 64

AD of the AEAD = context + group + the 9-byte header; the signature covers
context + group + everything before it.
"""

from __future__ import annotations

import struct
import time

from transport.crypto import DeviceKey, verify
from transport.e2e_core import (
    KEY, SIG, DecryptError, FormatError, NoSenderKey, Reader, SenderKeyBehind, chain_step, pack_str,
    random_bytes, seal, unseal,
)
from transport.e2e_retire import Retirement

__all__ = ["SenderKey", "GroupCipher", "MAX_GROUP_SKIP", "KEYS_PER_SENDER"]

_DIST_VERSION = 1
_MSG_VERSION = 1
_STATE_VERSION = 1
_CIPHER_VERSION = 4            # 2: + the members removed; 3: + given; 4: + retirement (1-3 still read)
REMOVED_KEPT = 1024             # members removed remembered per group (the newest)
MAX_GROUP_SKIP = 1000          # iterations one message may jump ahead, and skipped keys kept
KEYS_PER_SENDER = 3            # sender keys kept per member (current + older ones)
CONTEXT = b"switchboard-e2e-group-v1\x00"
_HEADER = struct.Struct(">BII")
_SKIPPED = struct.Struct(">I32s")
_MIN_MESSAGE = _HEADER.size + 24 + 16 + SIG


class SenderKey:
    """One sender's chain in one group (ours if ``signing_seed`` is set)."""

    __slots__ = ("group", "key_id", "iteration", "chain_key", "signing_public", "signing_seed",
                 "skipped", "_signer")

    def __init__(self, group: str, key_id: int, iteration: int, chain_key: bytes, signing_public: bytes,
                 signing_seed: bytes | None = None, skipped: dict[int, bytes] | None = None):
        self.group, self.key_id, self.iteration, self.chain_key = group, key_id, iteration, chain_key
        self.signing_public, self.signing_seed = signing_public, signing_seed
        self.skipped = {} if skipped is None else skipped
        self._signer = DeviceKey(signing_seed) if signing_seed is not None else None

    @classmethod
    def create(cls, group: str) -> "SenderKey":
        """A fresh own sender key: random chain key, key id and signing key."""
        signer = DeviceKey()
        return cls(group, int.from_bytes(random_bytes(4), "big"), 0, random_bytes(KEY), signer.public, signer.seed)

    @property
    def own(self) -> bool:
        return self._signer is not None

    def distribution_message(self) -> bytes:
        """``u8 version | group | u32 key id | u32 iteration | chain key 32 | signing public 32``.
        Secret: send it only inside 1:1 sessions, only to current members."""
        return (bytes((_DIST_VERSION,)) + pack_str(self.group)
                + struct.pack(">II32s32s", self.key_id, self.iteration, self.chain_key, self.signing_public))

    @classmethod
    def from_distribution(cls, data: bytes) -> "SenderKey":
        r = Reader(data, "sender key distribution")
        r.version(_DIST_VERSION)
        group, key_id, iteration, chain_key, public = r.text(), r.u32(), r.u32(), r.take(KEY), r.take(KEY)
        r.end()
        return cls(group, key_id, iteration, chain_key, public)

    # -- messages ----------------------------------------------------------------------------------
    def encrypt(self, plaintext: bytes) -> bytes:
        if self._signer is None:
            raise ValueError("only the sender can encrypt with a sender key")
        if self.iteration == 0xFFFF_FFFF:
            raise ValueError("sender key exhausted: rekey")
        mk, self.chain_key = chain_step(self.chain_key)
        header = _HEADER.pack(_MSG_VERSION, self.key_id, self.iteration)
        self.iteration += 1
        context = CONTEXT + pack_str(self.group)
        body = header + seal(mk, plaintext, context + header)
        return body + self._signer.sign(context + body)

    def decrypt(self, ciphertext: bytes) -> bytes:
        """Verify, then decrypt; the chain moves only when both pass."""
        if len(ciphertext) < _MIN_MESSAGE or ciphertext[0] != _MSG_VERSION:
            raise DecryptError("not a group message of a known version")
        version, key_id, iteration = _HEADER.unpack_from(ciphertext)
        if key_id != self.key_id:
            raise NoSenderKey(f"message under sender key {key_id}, not {self.key_id}")
        context = CONTEXT + pack_str(self.group)
        body, sig = ciphertext[:-SIG], ciphertext[-SIG:]
        if not verify(self.signing_public, context + body, sig):
            raise DecryptError("bad signature: forged or tampered group message")
        header, sealed = body[:_HEADER.size], body[_HEADER.size:]
        if iteration < self.iteration:
            mk = self.skipped.get(iteration)
            if mk is None:
                raise DecryptError("replayed or too old group message")
            plaintext = unseal(mk, sealed, context + header)
            del self.skipped[iteration]
            return plaintext
        if iteration - self.iteration > MAX_GROUP_SKIP:
            raise SenderKeyBehind(f"group message {iteration - self.iteration} ahead (at most {MAX_GROUP_SKIP})")
        chain, found = self.chain_key, {}
        for i in range(self.iteration, iteration):
            found[i], chain = chain_step(chain)
        mk, chain = chain_step(chain)
        plaintext = unseal(mk, sealed, context + header)
        self.chain_key, self.iteration = chain, iteration + 1
        self.skipped.update(found)
        while len(self.skipped) > MAX_GROUP_SKIP:
            del self.skipped[next(iter(self.skipped))]
        return plaintext

    # -- persistence -------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """``u8 version | u8 own | group | u32 key id | u32 iteration | chain 32 | public 32
        | [seed 32] | u16 n | n x (u32 iteration | message key 32)``"""
        return b"".join([
            struct.pack(">BB", _STATE_VERSION, self.own), pack_str(self.group),
            struct.pack(">II32s32s", self.key_id, self.iteration, self.chain_key, self.signing_public),
            self.signing_seed or b"", struct.pack(">H", len(self.skipped)),
            *(_SKIPPED.pack(i, mk) for i, mk in self.skipped.items())])

    @classmethod
    def from_bytes(cls, data: bytes) -> "SenderKey":
        r = Reader(data, "sender key")
        r.version(_STATE_VERSION)
        own, group = r.flag(), r.text()
        key_id, iteration, chain_key, public = r.u32(), r.u32(), r.take(KEY), r.take(KEY)
        seed = r.take(KEY) if own else None
        n = r.u16()
        if n > MAX_GROUP_SKIP:
            raise r.fail(f"{n} skipped keys, at most {MAX_GROUP_SKIP}")
        skipped = dict(_SKIPPED.unpack(r.take(_SKIPPED.size)) for _ in range(n))
        r.end()
        key = cls(group, key_id, iteration, chain_key, public, seed, skipped)
        if seed is not None and key._signer.public != public:
            raise FormatError("sender key: signing seed does not match its public key")
        return key


class GroupCipher:
    """One device's keys for one group: ``own`` (made on first use) and
    ``keys[member]``, newest first. Persist ``to_bytes()`` after every call.

    ``given``: the members the current own key was handed to (``handed``),
    an ordered set; None when unknown (a state written before version 3
    with an own key), which counts as everyone. ``retirement``: the keys
    received from members whose device changed (``retire``)."""

    def __init__(self, group: str, own: SenderKey | None = None,
                 keys: dict[str, list[SenderKey]] | None = None,
                 removed: dict[str, None] | None = None,
                 given: dict[str, None] | None = None,
                 retirement: Retirement | None = None):
        self.group, self.own = group, own
        self.keys: dict[str, list[SenderKey]] = keys or {}
        self.removed: dict[str, None] = removed or {}    # an ordered set, oldest first
        self.given: dict[str, None] | None = {} if given is None and own is None else given
        self.retirement = retirement or Retirement()

    # -- membership and keys -------------------------------------------------------------------------
    def distribution_message(self) -> bytes:
        """Our current sender key, for members who lack it (a new member)."""
        if self.own is None:
            self.own = SenderKey.create(self.group)
        return self.own.distribution_message()

    def rekey(self) -> bytes:
        """A new own sender key, handed to nobody yet; returns its distribution message."""
        self.own = SenderKey.create(self.group)
        self.given = {}
        return self.own.distribution_message()

    def handed(self, member: str) -> None:
        """The current own key is on its way to ``member`` (call before it
        leaves: counting one too many only costs a re-key)."""
        if self.given is not None:
            self.given[member] = None

    def device_changed(self, member: str) -> bytes | None:
        """``member`` has a new device: if the current own key was handed to
        it (to its old device), make a new one and return its distribution
        message (for the current members, over sessions with their current
        devices); else None: nothing of ours to take back."""
        if self.own is None or (self.given is not None and member not in self.given):
            return None
        return self.rekey()

    def retire(self, member: str, now: float | None = None) -> bool:
        """``member`` has a new device: the keys received from it (made by
        its old device) retire: they open messages for a short grace, then
        are dropped and refused (``transport.e2e_retire``). True if any
        started retiring (save the state)."""
        ids = [k.key_id for k in self.keys.get(member, ())]
        return self.retirement.start(member, ids, time.time() if now is None else now)

    def _drop(self, member: str, key_ids) -> None:
        if key_ids:
            kept = [k for k in self.keys.get(member, ()) if k.key_id not in key_ids]
            if kept:
                self.keys[member] = kept
            else:
                self.keys.pop(member, None)

    def member_removed(self, member: str) -> bytes:
        """The re-key rule: forget ``member``'s keys, make a new own key.
        Send the returned distribution message to the *remaining* members."""
        self.keys.pop(member, None)
        self.retirement.end(member)
        self.removed.pop(member, None)
        self.removed[member] = None
        while len(self.removed) > REMOVED_KEPT:
            del self.removed[next(iter(self.removed))]
        return self.rekey()

    def member_added(self, member: str) -> None:
        """``member`` is a member (again): its keys are welcome."""
        self.removed.pop(member, None)

    def process(self, sender: str, distribution: bytes, now: float | None = None) -> bool:
        """Take a distribution message that came from ``sender`` over the 1:1
        session (which is what authenticates it). False: not kept, a key of
        ``sender``'s replaced device (retired, or past its grace); a new key
        of a member whose keys are retiring ends their grace."""
        key = SenderKey.from_distribution(distribution)
        if key.group != self.group:
            raise FormatError(f"sender key for group {key.group!r}, not {self.group!r}")
        if self.retirement.refused(sender, key.key_id, time.time() if now is None else now):
            return False
        self._drop(sender, self.retirement.arrived(sender, key.key_id))
        states = self.keys.get(sender, [])
        same = next((k for k in states if k.key_id == key.key_id and k.signing_public == key.signing_public), None)
        if same is not None:
            # The same key sent again (we asked for it): only ever move forward,
            # so an old copy cannot reopen message keys already used.
            if key.iteration > same.iteration:
                same.chain_key, same.iteration = key.chain_key, key.iteration
            return True
        states = [k for k in states if k.key_id != key.key_id]
        self.keys[sender] = [key, *states][:KEYS_PER_SENDER]
        return True

    @property
    def senders(self) -> list[str]:
        return list(self.keys)

    # -- messages ------------------------------------------------------------------------------------
    def encrypt(self, plaintext: bytes) -> bytes:
        if self.own is None:
            self.own = SenderKey.create(self.group)
        return self.own.encrypt(plaintext)

    def decrypt(self, sender: str, ciphertext: bytes, now: float | None = None) -> bytes:
        """DecryptError if forged, tampered or replayed, or under a key of
        ``sender``'s replaced device past its grace; NoSenderKey if we
        lack ``sender``'s key (ask them for it, or wait for it); its subclass
        SenderKeyBehind if the message, signed by the key held, is too far
        ahead of its chain (a newer copy of the key would open it)."""
        if len(ciphertext) < _MIN_MESSAGE or ciphertext[0] != _MSG_VERSION:
            raise DecryptError("not a group message of a known version")
        now = time.time() if now is None else now
        key_id = _HEADER.unpack_from(ciphertext)[1]
        if self.retirement.refused(sender, key_id, now):
            raise DecryptError(f"sender key {key_id} of {sender!r} retired: its device was replaced")
        key = next((k for k in self.keys.get(sender, ()) if k.key_id == key_id), None)
        if key is None:
            raise NoSenderKey(f"no sender key {key_id} from {sender!r} in this group")
        plaintext = key.decrypt(ciphertext)
        self._drop(sender, self.retirement.opened(sender, key_id, now))
        return plaintext

    # -- persistence ---------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """``u8 version | group | u32 n | own | u16 m | m x (member | u8 k | k x (u32 n | key))
        | u16 r | r x member | u8 known | [u16 g | g x member] | retirement``:
        the members removed (absent in version 1), then whether ``given`` is
        known and its members (absent before version 3: unknown if there is
        an own key), then the keys retiring and retired
        (``transport.e2e_retire``; absent before version 4: none)"""
        def blob(key: SenderKey | None) -> bytes:
            raw = key.to_bytes() if key is not None else b""
            return struct.pack(">I", len(raw)) + raw
        parts = [bytes((_CIPHER_VERSION,)), pack_str(self.group), blob(self.own), struct.pack(">H", len(self.keys))]
        for member, keys in self.keys.items():
            parts += [pack_str(member), bytes((len(keys),)), *(blob(k) for k in keys)]
        parts += [struct.pack(">H", len(self.removed)), *(pack_str(m) for m in self.removed)]
        parts.append(bytes((self.given is not None,)))
        if self.given is not None:
            parts += [struct.pack(">H", len(self.given)), *(pack_str(m) for m in self.given)]
        parts.append(self.retirement.to_bytes())
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> "GroupCipher":
        r = Reader(data, "group cipher")
        version = r.u8()
        if not 1 <= version <= _CIPHER_VERSION:
            raise r.fail(f"unsupported version {version} (this code reads 1 to {_CIPHER_VERSION})")
        group = r.text()
        own_raw = r.blob(4)
        own = SenderKey.from_bytes(own_raw) if own_raw else None
        keys: dict[str, list[SenderKey]] = {}
        for _ in range(r.u16()):
            member, n = r.text(), r.u8()
            if n > KEYS_PER_SENDER:
                raise r.fail(f"{n} sender keys for one member, at most {KEYS_PER_SENDER}")
            keys[member] = [SenderKey.from_bytes(r.blob(4)) for _ in range(n)]
        removed: dict[str, None] = {}
        if version >= 2:
            for _ in range(r.u16()):
                removed[r.text()] = None
        given: dict[str, None] | None = None            # before version 3: not known
        if version >= 3 and r.flag():
            given = {}
            for _ in range(r.u16()):
                given[r.text()] = None
        retirement = Retirement.read(r) if version >= 4 else None
        r.end()
        for key in [*(k for ks in keys.values() for k in ks), *([own] if own else [])]:
            if key.group != group:
                raise FormatError("group cipher: a sender key of another group")
        return cls(group, own, keys, removed, given, retirement)
