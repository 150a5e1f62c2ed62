"""1:1 sessions: X3DH to agree on a first secret, then the Double Ratchet.

Purpose: ``Session`` is one device's end of an encrypted conversation with
one other device; ``SessionRecord`` holds a peer's current session and a
few previous ones, so both sides starting a session at once converges.

X3DH (Signal's, with our key names; docs/e2e.md has the full picture).
Alice has Bob's verified ``KeyBundle``; ``EK`` is her fresh ephemeral key::

    DH1 = DH(IKdh_A, SPK_B)   DH2 = DH(EK, IKdh_B)   DH3 = DH(EK, SPK_B)   [DH4 = DH(EK, OPK_B)]
    SK, session id = HKDF(0xFF*32 || DH1 || DH2 || DH3 [|| DH4], salt 0, "switchboard-x3dh-v1")
    AD = IK_A || IKdh_A || IK_B || IKdh_B            (initiator first, on both sides)

Until Alice has decrypted a reply, each of her messages carries the X3DH
header in front (a "prekey message")::

    u8 version | u8 type=2 | IK_A 32 | IKdh_A 32 | sig(IKdh_A) 64 | EK 32 | u32 spk id | u32 opk id (0: none)
    | then a normal message: header (50 bytes) | nonce 24 | ciphertext + tag 16

The X3DH header is part of the associated data, so flipping any bit of it
fails decryption like any other bit. ``Session.respond`` deletes the
one-time prekey it used (persist ``LocalKeys`` afterwards); a first message
made without one is remembered by its ``EK`` for as long as its signed
prekey is kept, so replaying it fails too.
"""

from __future__ import annotations

import struct

from transport.crypto import verify
from transport.e2e_core import (
    KEY, DecryptError, E2EError, FormatError, Reader, UnknownSession, dh, hkdf,
    x25519_private, x25519_public,
)
from transport.e2e_keys import IDENTITY_DH_CONTEXT, KeyBundle, LocalKeys
from transport.e2e_ratchet import HEADER, NORMAL, PREKEY, VERSION, Ratchet

__all__ = ["Session", "SessionRecord", "MessageInfo", "message_info", "NoSession"]

X3DH_INFO = b"switchboard-x3dh-v1"
# u8 version | u8 type | IK 32 | IKdh 32 | sig 64 | EK 32 | u32 spk id | u32 opk id
PREKEY_PREFIX = struct.Struct(">BB32s32s64s32sII")
AD_SIZE = 4 * KEY
_SESSION_VERSION = 1
_RECORD_VERSION = 1
MAX_SEEN_BASE_KEYS = 4096          # per signed prekey: first messages without a one-time prekey


class NoSession(E2EError):
    """``SessionRecord.encrypt`` with no session yet: fetch the peer's bundle and ``initiate``."""


def _x3dh(*dhs: bytes) -> tuple[bytes, bytes]:
    out = hkdf(b"\xff" * KEY + b"".join(dhs), b"", X3DH_INFO, KEY + 8)
    return out[:KEY], out[KEY:]


class MessageInfo:
    """What a 1:1 ciphertext says about itself before decryption."""

    __slots__ = ("prekey", "session_id", "identity")

    def __init__(self, prekey: bool, session_id: bytes, identity: bytes | None):
        self.prekey, self.session_id, self.identity = prekey, session_id, identity


def message_info(ciphertext: bytes) -> MessageInfo:
    """Type, session id, and (first messages only) the sender's claimed
    Ed25519 identity. Unauthenticated until decrypted. FormatError if unreadable."""
    if len(ciphertext) < 2 or ciphertext[0] != VERSION or ciphertext[1] not in (NORMAL, PREKEY):
        raise FormatError("1:1 message: unknown version or type")
    offset, identity = 0, None
    if ciphertext[1] == PREKEY:
        if len(ciphertext) < PREKEY_PREFIX.size + HEADER.size:
            raise FormatError("1:1 message: truncated")
        identity, offset = ciphertext[2:2 + KEY], PREKEY_PREFIX.size
    if len(ciphertext) < offset + HEADER.size:
        raise FormatError("1:1 message: truncated")
    return MessageInfo(identity is not None, ciphertext[offset + 2:offset + 10], identity)


class Session:
    """One end of a 1:1 encrypted session. Persist ``to_bytes()`` after every
    ``encrypt`` (before sending) and every ``decrypt`` (before acknowledging)."""

    __slots__ = ("ad", "initiator", "prefix", "ratchet")

    def __init__(self, ad: bytes, initiator: bool, ratchet: Ratchet, prefix: bytes = b""):
        self.ad, self.initiator, self.ratchet, self.prefix = ad, initiator, ratchet, prefix

    # -- who -----------------------------------------------------------------------------------------
    @property
    def id(self) -> bytes:
        """8 bytes, the same on both ends; in every message's header."""
        return self.ratchet.session_id

    @property
    def peer_identity(self) -> bytes:
        """The other device's Ed25519 identity (check it: ``TrustStore.observe``)."""
        return self.ad[2 * KEY:3 * KEY] if self.initiator else self.ad[:KEY]

    @property
    def local_identity(self) -> bytes:
        return self.ad[:KEY] if self.initiator else self.ad[2 * KEY:3 * KEY]

    @property
    def acknowledged(self) -> bool:
        """True once the peer has answered (our messages no longer carry X3DH)."""
        return not self.prefix

    # -- start ---------------------------------------------------------------------------------------
    @classmethod
    def initiate(cls, local: LocalKeys, peer_bundle: KeyBundle) -> "Session":
        """Start a session with the device of ``peer_bundle`` (verified here:
        BadSignature if it is not signed by its identity). Uses the bundle's
        first one-time prekey if it has any."""
        peer_bundle.verify()
        ek = x25519_private()
        spk = peer_bundle.signed_prekey
        dhs = [dh(local.identity_dh_private, spk), dh(ek, peer_bundle.identity_dh), dh(ek, spk)]
        opk_id = 0
        if peer_bundle.one_time:
            opk_id, opk = peer_bundle.one_time[0]
            dhs.append(dh(ek, opk))
        shared, session_id = _x3dh(*dhs)
        ad = local.identity + local.identity_dh + peer_bundle.identity + peer_bundle.identity_dh
        prefix = PREKEY_PREFIX.pack(
            VERSION, PREKEY, local.identity, local.identity_dh,
            local.device_key.sign(IDENTITY_DH_CONTEXT + local.identity_dh),
            x25519_public(ek), peer_bundle.signed_prekey_id, opk_id)
        return cls(ad, True, Ratchet.initiator(session_id, shared, spk), prefix)

    @classmethod
    def respond(cls, local: LocalKeys, first_ciphertext: bytes) -> "tuple[Session, bytes]":
        """Accept a first (prekey) message: (session, plaintext). Deletes the
        one-time prekey used from ``local`` (persist both). DecryptError if
        it is not a first message for this device, was tampered with, or
        was already accepted."""
        if len(first_ciphertext) < PREKEY_PREFIX.size or first_ciphertext[:2] != bytes((VERSION, PREKEY)):
            raise DecryptError("not a first (prekey) message")
        _, _, identity, identity_dh, sig, base_key, spk_id, opk_id = PREKEY_PREFIX.unpack_from(first_ciphertext)
        if not verify(identity, IDENTITY_DH_CONTEXT + identity_dh, sig):
            raise DecryptError("sender's identity DH key is not signed by its identity key")
        spk = local.find_signed_prekey(spk_id)
        if spk is None:
            raise DecryptError(f"unknown or expired signed prekey {spk_id}")
        dhs = [dh(spk.private, identity_dh), dh(local.identity_dh_private, base_key), dh(spk.private, base_key)]
        if opk_id:
            opk = local.one_time.get(opk_id)
            if opk is None:
                raise DecryptError(f"one-time prekey {opk_id} unknown or already used")
            dhs.append(dh(opk, base_key))
        elif base_key in spk.seen:
            raise DecryptError("replayed first message")
        shared, session_id = _x3dh(*dhs)
        ad = identity + identity_dh + local.identity + local.identity_dh
        session = cls(ad, False, Ratchet.responder(session_id, shared, spk.private))
        try:
            plaintext = session.decrypt(first_ciphertext)
        except UnknownSession:
            raise DecryptError("not for this device, or tampered with") from None
        if opk_id:
            del local.one_time[opk_id]
        else:
            spk.seen.append(base_key)
            del spk.seen[:-MAX_SEEN_BASE_KEYS]
        return session, plaintext

    # -- messages ------------------------------------------------------------------------------------
    def encrypt(self, plaintext: bytes) -> bytes:
        return self.ratchet.encrypt(plaintext, self.ad, self.prefix)

    def decrypt(self, ciphertext: bytes) -> bytes:
        """DecryptError if tampered, replayed or not for this session
        (UnknownSession if it names another session id)."""
        prefix = b""
        if len(ciphertext) >= 2 and ciphertext[:2] == bytes((VERSION, PREKEY)):
            prefix = ciphertext[:PREKEY_PREFIX.size]
            if len(prefix) < PREKEY_PREFIX.size:
                raise DecryptError("message too short")
        inner = ciphertext[len(prefix):]
        if len(inner) >= HEADER.size and inner[2:10] != self.id:
            raise UnknownSession("message of another session")
        plaintext = self.ratchet.decrypt(inner, self.ad, prefix)
        if self.prefix:
            self.prefix = b""                   # the peer has the session: stop sending X3DH
        return plaintext

    # -- persistence ---------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """``u8 version | u8 initiator | AD 128 | u16 n | X3DH header n | ratchet``"""
        return (struct.pack(">BB", _SESSION_VERSION, self.initiator) + self.ad
                + struct.pack(">H", len(self.prefix)) + self.prefix + self.ratchet.to_bytes())

    @classmethod
    def from_bytes(cls, data: bytes) -> "Session":
        r = Reader(data, "session")
        session = cls._read(r)
        r.end()
        return session

    @classmethod
    def _read(cls, r: Reader) -> "Session":
        r.version(_SESSION_VERSION)
        initiator, ad = r.flag(), r.take(AD_SIZE)
        prefix = r.blob()
        if prefix and (not initiator or len(prefix) != PREKEY_PREFIX.size):
            raise r.fail("bad X3DH header")
        return cls(ad, initiator, Ratchet.read(r), prefix)


class SessionRecord:
    """A peer device's sessions: the current one and up to ``MAX_PREVIOUS``
    older ones (messages still in flight on them decrypt). What an SDK keeps
    per (user, device)."""

    MAX_PREVIOUS = 5

    def __init__(self, sessions: "list[Session] | None" = None):
        self.sessions: list[Session] = list(sessions or [])      # current first

    @property
    def current(self) -> Session | None:
        return self.sessions[0] if self.sessions else None

    @property
    def peer_identity(self) -> bytes | None:
        return self.sessions[0].peer_identity if self.sessions else None

    def _promote(self, session: Session) -> None:
        self.sessions = [session, *(s for s in self.sessions if s is not session)][:self.MAX_PREVIOUS + 1]

    def initiate(self, local: LocalKeys, peer_bundle: KeyBundle) -> Session:
        """A new current session (e.g. after a KeyChange); older ones are kept."""
        session = Session.initiate(local, peer_bundle)
        self._promote(session)
        return session

    def encrypt(self, plaintext: bytes) -> bytes:
        if not self.sessions:
            raise NoSession("no session with this device")
        return self.sessions[0].encrypt(plaintext)

    def decrypt(self, local: LocalKeys, ciphertext: bytes) -> bytes:
        """Decrypt with the session the message names (which becomes current),
        or accept a first message as a new current session."""
        try:
            info = message_info(ciphertext)
        except FormatError as error:
            raise DecryptError(str(error)) from None
        for session in self.sessions:
            if session.id == info.session_id:
                plaintext = session.decrypt(ciphertext)
                self._promote(session)
                return plaintext
        if not info.prekey:
            raise UnknownSession("no session with this id")
        if self.sessions and info.identity != self.sessions[0].peer_identity:
            raise DecryptError("first message from a different identity: check TrustStore first")
        session, plaintext = Session.respond(local, ciphertext)
        self._promote(session)
        return plaintext

    def to_bytes(self) -> bytes:
        return struct.pack(">BB", _RECORD_VERSION, len(self.sessions)) + b"".join(
            struct.pack(">I", len(b)) + b for b in (s.to_bytes() for s in self.sessions))

    @classmethod
    def from_bytes(cls, data: bytes) -> "SessionRecord":
        r = Reader(data, "session record")
        r.version(_RECORD_VERSION)
        n = r.u8()
        if n > cls.MAX_PREVIOUS + 1:
            raise r.fail(f"{n} sessions, at most {cls.MAX_PREVIOUS + 1}")
        sessions = [Session.from_bytes(r.blob(4)) for _ in range(n)]
        r.end()
        return cls(sessions)
