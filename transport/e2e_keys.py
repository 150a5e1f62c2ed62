"""Device keys for end-to-end encryption: the public ``KeyBundle`` the server's
directory stores and serves, the private ``LocalKeys`` the device keeps,
safety numbers, and ``TrustStore`` (which identity each contact had).

Key types (docs/e2e.md, "Keys"):

- identity: the device's Ed25519 key, ``transport.crypto.DeviceKey``, the
  same key the server already knows as the login credential. It only signs.
- identity DH key: X25519, private = HKDF(identity seed, "identity-dh"), so
  the seed alone restores the whole identity; its public half is signed by
  the identity key. A separate scalar rather than the Ed25519->X25519
  birational map, because the identity key also signs login challenges and
  media requests, and libsodium recommends never using one key for both.
- signed prekey: X25519, rotated by the device (say weekly); signed by the
  identity key. The last ``KEEP_SIGNED_PREKEYS`` stay usable so that first
  messages made from a just-replaced bundle still decrypt.
- one-time prekeys: X25519, unsigned (as in Signal), each handed out once by
  the directory and deleted by the device when used.

Every signature covers a context string starting ``switchboard-e2e-``, so no
signature made here can be mistaken for a login or media signature made by
the same key (those start ``switchboard-login-`` / ``switchboard-media-``).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import time
from dataclasses import dataclass, field

from transport.crypto import DeviceKey, verify
from transport.e2e_core import (
    KEY, SIG, BadSignature, FormatError, Reader, hkdf, pack_str, x25519_private, x25519_public,
)

__all__ = ["KeyBundle", "LocalKeys", "SignedPrekey", "safety_number", "KeyChange", "TrustStore",
           "IDENTITY_DH_CONTEXT", "PREKEY_CONTEXT"]

BUNDLE_VERSION = 1
LOCAL_VERSION = 1
TRUST_VERSION = 1
IDENTITY_DH_CONTEXT = b"switchboard-e2e-identity-dh-v1\x00"
PREKEY_CONTEXT = b"switchboard-e2e-signed-prekey-v1\x00"
KEEP_SIGNED_PREKEYS = 3              # the current one and two previous
MAX_ONE_TIME = 10_000                # in a bundle or in LocalKeys
_ONE_TIME = struct.Struct(">I32s")


def _derive_identity_dh(seed: bytes) -> bytes:
    return hkdf(seed, b"", b"switchboard-e2e-identity-dh-v1", KEY)


@dataclass(frozen=True)
class KeyBundle:
    """The public keys of one device, as the directory stores and serves them.

    Binary form (version 1), big-endian::

        u8 version | identity 32 | identity_dh 32 | identity_dh_sig 64
        | u32 signed_prekey_id | signed_prekey 32 | signed_prekey_sig 64
        | u16 n | n x (u32 id | one-time prekey 32)

    231 bytes plus 36 per one-time prekey. ``from_bytes`` checks the format;
    ``verify`` checks the two signatures against ``identity``.
    """

    identity: bytes
    identity_dh: bytes
    identity_dh_sig: bytes
    signed_prekey_id: int
    signed_prekey: bytes
    signed_prekey_sig: bytes
    one_time: tuple[tuple[int, bytes], ...] = ()

    def to_bytes(self) -> bytes:
        if len(self.one_time) > MAX_ONE_TIME:
            raise ValueError(f"at most {MAX_ONE_TIME} one-time prekeys in a bundle")
        return b"".join([
            struct.pack(">B32s32s64sI32s64sH", BUNDLE_VERSION, self.identity, self.identity_dh,
                        self.identity_dh_sig, self.signed_prekey_id, self.signed_prekey,
                        self.signed_prekey_sig, len(self.one_time)),
            *(_ONE_TIME.pack(i, k) for i, k in self.one_time)])

    @classmethod
    def from_bytes(cls, data: bytes) -> "KeyBundle":
        r = Reader(data, "key bundle")
        r.version(BUNDLE_VERSION)
        identity, identity_dh, identity_dh_sig = r.take(KEY), r.take(KEY), r.take(SIG)
        spk_id, spk, spk_sig = r.u32(), r.take(KEY), r.take(SIG)
        n = r.u16()
        if n > MAX_ONE_TIME:
            raise r.fail(f"{n} one-time prekeys, at most {MAX_ONE_TIME}")
        one_time = tuple((r.u32(), r.take(KEY)) for _ in range(n))
        r.end()
        if len({i for i, _ in one_time}) != n:
            raise FormatError("key bundle: duplicate one-time prekey id")
        return cls(identity, identity_dh, identity_dh_sig, spk_id, spk, spk_sig, one_time)

    def verify(self) -> "KeyBundle":
        """Returns self if both signatures are the identity key's, else raises BadSignature."""
        if not verify(self.identity, IDENTITY_DH_CONTEXT + self.identity_dh, self.identity_dh_sig):
            raise BadSignature("key bundle: identity DH key not signed by the identity key")
        signed = PREKEY_CONTEXT + struct.pack(">I", self.signed_prekey_id) + self.signed_prekey
        if not verify(self.identity, signed, self.signed_prekey_sig):
            raise BadSignature("key bundle: signed prekey not signed by the identity key")
        return self

    def with_one_time(self, one_time: "tuple[tuple[int, bytes], ...] | list" = ()) -> "KeyBundle":
        """The same bundle with other one-time prekeys: what the directory
        serves is the stored bundle with (at most) one of them."""
        return KeyBundle(self.identity, self.identity_dh, self.identity_dh_sig, self.signed_prekey_id,
                         self.signed_prekey, self.signed_prekey_sig, tuple(one_time))


@dataclass
class SignedPrekey:
    id: int
    private: bytes = field(repr=False)
    created: int = 0                 # seconds since the epoch
    seen: list[bytes] = field(default_factory=list, repr=False)   # base keys of first messages without a one-time prekey

    @property
    def public(self) -> bytes:
        return x25519_public(self.private)


@dataclass
class LocalKeys:
    """The private side of a device's keys. Keep ``to_bytes()`` like the
    device seed: private to the device (mode 0600), never sent anywhere.

    Mutated by ``Session.respond`` (a used one-time prekey is deleted),
    ``rotate_signed_prekey`` and ``add_one_time``: persist it after those.
    """

    device_key: DeviceKey
    signed_prekeys: list[SignedPrekey]               # newest first
    one_time: dict[int, bytes] = field(default_factory=dict, repr=False)   # id -> private
    next_prekey_id: int = 1
    identity_dh_private: bytes = field(init=False, repr=False)
    identity_dh: bytes = field(init=False, repr=False)        # its public half

    def __post_init__(self) -> None:
        self.identity_dh_private = _derive_identity_dh(self.device_key.seed)
        self.identity_dh = x25519_public(self.identity_dh_private)

    @classmethod
    def generate(cls, device_key: DeviceKey | None = None, one_time: int = 100,
                 now: float | None = None) -> "LocalKeys":
        """Keys for ``device_key`` (a new one if None): a signed prekey and
        ``one_time`` one-time prekeys."""
        keys = cls(device_key or DeviceKey(), [])
        keys.rotate_signed_prekey(now)
        keys.add_one_time(one_time)
        return keys

    @property
    def identity(self) -> bytes:
        """The Ed25519 identity public key (= the login verify key)."""
        return self.device_key.public

    @property
    def signed_prekey(self) -> SignedPrekey:
        return self.signed_prekeys[0]

    def _new_id(self) -> int:
        out = self.next_prekey_id
        self.next_prekey_id = out % 0xFFFF_FFFF + 1         # 1..2^32-1, wraps
        return out

    def rotate_signed_prekey(self, now: float | None = None) -> SignedPrekey:
        """A new signed prekey; the oldest beyond KEEP_SIGNED_PREKEYS is deleted
        (forward secrecy for first messages that used it). Publish ``bundle()``."""
        spk = SignedPrekey(self._new_id(), x25519_private(), int(time.time() if now is None else now))
        self.signed_prekeys = [spk, *self.signed_prekeys][:KEEP_SIGNED_PREKEYS]
        return spk

    def retire_handed_out(self, held: int, keep: int) -> int:
        """Forget the oldest one-time prekeys the directory has handed out
        but no first message has used yet, beyond the newest ``keep`` of
        them; ``held``: how many the directory still holds (the newest
        published: it hands out the lowest ids first). A fetch that is
        never followed by a message (a fetcher that does not send, a safety
        number looked up) would otherwise leave its key here for good, and
        every top-up add more, up to ``MAX_ONE_TIME``. Returns how many
        were forgotten; a first message that comes later for one of them
        fails to open (docs/e2e.md)."""
        handed_out = list(self.one_time)[:max(0, len(self.one_time) - held)]   # oldest first
        stale = handed_out[:max(0, len(handed_out) - keep)]
        for i in stale:
            del self.one_time[i]
        return len(stale)

    def add_one_time(self, n: int) -> list[tuple[int, bytes]]:
        """``n`` new one-time prekeys; returns their (id, public) to upload."""
        if len(self.one_time) + n > MAX_ONE_TIME:
            raise ValueError(f"at most {MAX_ONE_TIME} one-time prekeys")
        out = []
        for _ in range(n):
            i, private = self._new_id(), x25519_private()
            self.one_time[i] = private
            out.append((i, x25519_public(private)))
        return out

    def bundle(self, one_time: bool = True) -> KeyBundle:
        """The public bundle to publish (with every one-time prekey, or none)."""
        spk = self.signed_prekey
        identity_dh = self.identity_dh
        return KeyBundle(
            self.identity, identity_dh, self.device_key.sign(IDENTITY_DH_CONTEXT + identity_dh),
            spk.id, spk.public, self.device_key.sign(PREKEY_CONTEXT + struct.pack(">I", spk.id) + spk.public),
            tuple((i, x25519_public(k)) for i, k in self.one_time.items()) if one_time else ())

    def find_signed_prekey(self, prekey_id: int) -> SignedPrekey | None:
        return next((s for s in self.signed_prekeys if s.id == prekey_id), None)

    def to_bytes(self) -> bytes:
        """``u8 version | seed 32 | u32 next_id | u8 n | n x (u32 id | u64 created | private 32
        | u16 s | s x base key 32) | u32 m | m x (u32 id | private 32)``"""
        return b"".join([
            struct.pack(">B32sIB", LOCAL_VERSION, self.device_key.seed, self.next_prekey_id,
                        len(self.signed_prekeys)),
            *(struct.pack(">IQ32sH", s.id, s.created, s.private, len(s.seen)) + b"".join(s.seen)
              for s in self.signed_prekeys),
            struct.pack(">I", len(self.one_time)),
            *(_ONE_TIME.pack(i, k) for i, k in self.one_time.items())])

    @classmethod
    def from_bytes(cls, data: bytes) -> "LocalKeys":
        r = Reader(data, "local keys")
        r.version(LOCAL_VERSION)
        seed, next_id, n = r.take(KEY), r.u32(), r.u8()
        if not 1 <= n <= KEEP_SIGNED_PREKEYS:
            raise r.fail(f"{n} signed prekeys, expected 1..{KEEP_SIGNED_PREKEYS}")
        spks = []
        for _ in range(n):
            i, created, private = r.u32(), r.u64(), r.take(KEY)
            spks.append(SignedPrekey(i, private, created, [r.take(KEY) for _ in range(r.u16())]))
        m = r.u32()
        if m > MAX_ONE_TIME:
            raise r.fail(f"{m} one-time prekeys, at most {MAX_ONE_TIME}")
        one_time = dict(_ONE_TIME.unpack(r.take(_ONE_TIME.size)) for _ in range(m))
        r.end()
        if next_id == 0:
            raise FormatError("local keys: next prekey id 0")
        return cls(DeviceKey(seed), spks, one_time, next_id)


# -- safety numbers -------------------------------------------------------------------------------

SAFETY_ITERATIONS = 5200


def _fingerprint(user: str, identity: bytes) -> str:
    """Signal's numeric fingerprint for one side: 30 digits."""
    if len(identity) != KEY:
        raise ValueError("identity must be a 32-byte Ed25519 public key")
    digest = hashlib.sha512(b"\x00\x00" + identity + user.encode("utf-8")).digest()
    for _ in range(SAFETY_ITERATIONS - 1):
        digest = hashlib.sha512(digest + identity).digest()
    return "".join(f"{int.from_bytes(digest[i:i + 5], 'big') % 100_000:05d}" for i in range(0, 30, 5))


def safety_number(my_user: str, my_identity: bytes, their_user: str, their_identity: bytes) -> str:
    """60 digits in 12 groups of 5, the same on both sides: compare them out of
    band (read aloud, or scan). Changes when either identity key changes."""
    a, b = _fingerprint(my_user, my_identity), _fingerprint(their_user, their_identity)
    digits = a + b if a <= b else b + a
    return " ".join(digits[i:i + 5] for i in range(0, 60, 5))


# -- which identity each contact had ----------------------------------------------------------------

@dataclass(frozen=True)
class KeyChange:
    """``user``'s identity key changed (a new device, or an attack): show a
    notice, and the new safety number, before trusting it again."""
    user: str
    old: bytes
    new: bytes


class TrustStore:
    """user -> the identity key last seen for them, and whether the user
    compared safety numbers for it (trust on first use, like Signal).

    Call ``observe`` with every identity the SDK meets (a fetched bundle,
    the identity in a first message); a ``KeyChange`` means: notify the user,
    drop ``verified``, and rebuild sessions with the new key."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[bytes, bool]] = {}

    def identity(self, user: str) -> bytes | None:
        entry = self._known.get(user)
        return entry[0] if entry else None

    def is_verified(self, user: str) -> bool:
        entry = self._known.get(user)
        return bool(entry and entry[1])

    def observe(self, user: str, identity: bytes) -> KeyChange | None:
        old = self._known.get(user)
        if old is not None and hmac.compare_digest(old[0], identity):
            return None
        self._known[user] = (bytes(identity), False)
        return KeyChange(user, old[0], bytes(identity)) if old is not None else None

    def mark_verified(self, user: str, identity: bytes) -> None:
        """The user compared safety numbers for exactly ``identity``."""
        if self.identity(user) != identity:
            raise ValueError(f"{user}: not the identity on record")
        self._known[user] = (bytes(identity), True)

    def to_bytes(self) -> bytes:
        return b"".join([struct.pack(">BI", TRUST_VERSION, len(self._known)),
                         *(pack_str(u) + k + bytes((v,)) for u, (k, v) in self._known.items())])

    @classmethod
    def from_bytes(cls, data: bytes) -> "TrustStore":
        r = Reader(data, "trust store")
        r.version(TRUST_VERSION)
        store = cls()
        for _ in range(r.u32()):
            user, identity, verified = r.text(), r.take(KEY), r.flag()
            store._known[user] = (identity, verified)
        r.end()
        return store
