"""transport.e2e: key bundles, X3DH + Double Ratchet sessions, sender-key
groups, media encryption, safety numbers, envelopes, and the persistence of
every stateful object. Pure library tests: no network, no actors."""

from __future__ import annotations

import hashlib
import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transport.crypto import DeviceKey
from transport.e2e import (
    MAX_SKIP, BadSignature, DecryptError, Envelope, FormatError, GroupCipher, KeyBundle, KeyChange,
    LocalKeys, Media, MediaDecryptor, MediaEncryptor, MediaKey, NoSenderKey, NoSession, SenderKey,
    SenderKeyMessage, SenderKeyRequest, Session, SessionRecord, Text, TrustStore, UnknownSession,
    decrypt_media, encrypt_media, encrypted_size, message_info, safety_number,
)
from transport.e2e_envelope import PAD
from transport.e2e_group import KEYS_PER_SENDER, MAX_GROUP_SKIP
from transport.e2e_keys import KEEP_SIGNED_PREKEYS
from transport.e2e_retire import RETIRE_AFTER, RETIRE_MESSAGES

pytestmark = pytest.mark.timeout(60)
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def flip(data: bytes, i: int, bit: int = 0) -> bytes:
    return data[:i] + bytes((data[i] ^ (1 << bit),)) + data[i + 1:]


def pair(one_time: int = 5) -> tuple[LocalKeys, LocalKeys]:
    return LocalKeys.generate(one_time=one_time), LocalKeys.generate(one_time=one_time)


def served(keys: LocalKeys) -> KeyBundle:
    """What the directory serves: the stored bundle with one one-time prekey."""
    stored = KeyBundle.from_bytes(keys.bundle().to_bytes())
    return stored.with_one_time(stored.one_time[:1])


def established(msg: bytes = b"hello") -> tuple[LocalKeys, LocalKeys, Session, Session]:
    """Alice initiated, Bob responded, Alice got Bob's reply: a session both
    ways, past the X3DH header."""
    alice, bob = pair()
    a = Session.initiate(alice, served(bob))
    b, plaintext = Session.respond(bob, a.encrypt(msg))
    assert plaintext == msg
    assert a.decrypt(b.encrypt(b"reply")) == b"reply"
    return alice, bob, a, b


# --- key bundles and local keys -------------------------------------------------------------------

def test_bundle_round_trip_and_verify():
    keys = LocalKeys.generate(one_time=3)
    bundle = keys.bundle()
    raw = bundle.to_bytes()
    assert len(raw) == 231 + 3 * 36
    assert KeyBundle.from_bytes(raw) == bundle
    assert KeyBundle.from_bytes(raw).verify() == bundle
    assert bundle.identity == keys.device_key.public       # the identity IS the login key
    assert keys.bundle(one_time=False).one_time == ()


@pytest.mark.parametrize("field", ["identity", "identity_dh", "identity_dh_sig", "signed_prekey",
                                   "signed_prekey_sig", "signed_prekey_id"])
def test_bundle_with_a_bad_signature_is_rejected(field):
    alice, bob = pair()
    bundle = bob.bundle()
    value = getattr(bundle, field)
    bad = value ^ 1 if isinstance(value, int) else flip(value, 5)
    forged = KeyBundle(**{**bundle.__dict__, field: bad})
    with pytest.raises(BadSignature):
        forged.verify()
    with pytest.raises(BadSignature):
        Session.initiate(alice, forged)


def test_bundle_signed_by_another_identity_is_rejected():
    alice, bob = pair()
    mallory = LocalKeys.generate(one_time=0).bundle()
    # Mallory's prekeys under Bob's identity: the signatures are Mallory's
    forged = KeyBundle(bob.identity, *list(mallory.__dict__.values())[1:])
    with pytest.raises(BadSignature):
        forged.verify()


@pytest.mark.parametrize("mutate, why", [
    (lambda b: b[:-1], "truncated"),
    (lambda b: b + b"\x00", "trailing"),
    (lambda b: b"\x02" + b[1:], "version"),
    (lambda b: b"", "truncated"),
])
def test_bundle_malformed_bytes_raise_format_error(mutate, why):
    raw = LocalKeys.generate(one_time=2).bundle().to_bytes()
    with pytest.raises(FormatError, match=why):
        KeyBundle.from_bytes(mutate(raw))


def test_bundle_duplicate_one_time_ids_rejected():
    bundle = LocalKeys.generate(one_time=1).bundle()
    twice = bundle.with_one_time(bundle.one_time * 2)
    with pytest.raises(FormatError, match="duplicate"):
        KeyBundle.from_bytes(twice.to_bytes())


def test_local_keys_round_trip_and_restore_from_seed():
    keys = LocalKeys.generate(one_time=4)
    keys.rotate_signed_prekey()
    again = LocalKeys.from_bytes(keys.to_bytes())
    assert again.to_bytes() == keys.to_bytes()
    assert again.bundle() == keys.bundle()          # Ed25519 signatures are deterministic
    # The identity DH key is derived from the seed: the seed alone restores the identity.
    assert LocalKeys(DeviceKey(keys.device_key.seed), []).identity_dh == keys.identity_dh
    with pytest.raises(FormatError):
        LocalKeys.from_bytes(keys.to_bytes() + b"\x00")
    shown = repr(keys)                               # no private key in logs
    assert keys.signed_prekey.private.hex() not in shown and "private" not in shown


def test_signed_prekey_rotation_keeps_the_last_few():
    keys = LocalKeys.generate(one_time=0)
    first = keys.signed_prekey.id
    ids = [keys.rotate_signed_prekey().id for _ in range(KEEP_SIGNED_PREKEYS)]
    assert [s.id for s in keys.signed_prekeys] == ids[::-1]
    assert keys.find_signed_prekey(first) is None
    new = keys.add_one_time(3)
    assert len(new) == 3 and len(keys.one_time) == 3 and len({i for i, _ in new} | set(ids)) == 6


# --- 1:1 sessions ---------------------------------------------------------------------------------

def test_first_message_and_reply():
    alice, bob = pair()
    a = Session.initiate(alice, served(bob))
    first = a.encrypt(b"hi bob")
    info = message_info(first)
    assert info.prekey and info.identity == alice.identity and info.session_id == a.id
    b, plaintext = Session.respond(bob, first)
    assert plaintext == b"hi bob" and b.id == a.id
    assert b.peer_identity == alice.identity and a.peer_identity == bob.identity
    assert a.local_identity == alice.identity and b.local_identity == bob.identity
    assert len(bob.one_time) == 4                    # the one-time prekey used is gone
    assert not a.acknowledged
    assert a.decrypt(b.encrypt(b"hi alice")) == b"hi alice"
    assert a.acknowledged and not message_info(a.encrypt(b"x")).prekey


def test_works_without_one_time_prekeys():
    alice, bob = pair(one_time=0)
    a = Session.initiate(alice, served(bob))
    b, plaintext = Session.respond(bob, a.encrypt(b"no opk"))
    assert plaintext == b"no opk"
    assert a.decrypt(b.encrypt(b"ok")) == b"ok"


def test_several_first_messages_before_a_reply():
    alice, bob = pair()
    a = Session.initiate(alice, served(bob))
    m1, m2, m3 = (a.encrypt(b"%d" % i) for i in range(3))
    assert all(message_info(m).prekey for m in (m1, m2, m3))
    b, p1 = Session.respond(bob, m1)
    assert (p1, b.decrypt(m3), b.decrypt(m2)) == (b"0", b"2", b"1")


def test_many_messages_interleaved_both_ways_with_out_of_order_delivery():
    # Step 1: an established session, a deterministic random schedule.
    rnd = random.Random(7)
    _, _, a, b = established()
    ends = {"a": a, "b": b}
    in_flight = {"a": [], "b": []}               # messages waiting for a/b
    sent = received = 0
    # Step 2: 2,000 steps: send a burst one way, or deliver some in any order.
    for step in range(2000):
        sender = rnd.choice("ab")
        receiver = "b" if sender == "a" else "a"
        if rnd.random() < 0.6:
            for _ in range(rnd.randint(1, 4)):
                plaintext = b"%s-%d" % (sender.encode(), step)
                in_flight[receiver].append((plaintext, ends[sender].encrypt(plaintext)))
                sent += 1
        elif in_flight[receiver]:
            queue = in_flight[receiver]
            plaintext, ct = queue.pop(rnd.randrange(len(queue)))     # out of order
            assert ends[receiver].decrypt(ct) == plaintext
            received += 1
    # Step 3: deliver the rest, newest first.
    for who, queue in in_flight.items():
        for plaintext, ct in reversed(queue):
            assert ends[who].decrypt(ct) == plaintext
            received += 1
    assert sent == received > 1000


def test_skipped_keys_across_a_dh_step():
    _, _, a, b = established()
    early = [a.encrypt(b"early-%d" % i) for i in range(5)]        # chain 1 of Alice
    assert a.decrypt(b.encrypt(b"turn")) == b"turn"                # b has not read chain 1 yet
    late = a.encrypt(b"late")                                      # chain 2
    assert b.decrypt(late) == b"late"                              # skips chain 1's keys (pn)
    for i, ct in reversed(list(enumerate(early))):
        assert b.decrypt(ct) == b"early-%d" % i


def test_skipped_key_bound():
    _, _, a, b = established()
    lost = [a.encrypt(b"lost") for _ in range(MAX_SKIP + 1)]
    too_far = a.encrypt(b"too far")
    before = b.to_bytes()
    with pytest.raises(DecryptError, match="skip"):
        b.decrypt(too_far)
    assert b.to_bytes() == before                                  # nothing changed
    assert b.decrypt(lost[1]) == b"lost"                           # skips 1 key (lost[0])
    assert b.decrypt(too_far) == b"too far"                        # skips MAX_SKIP - 1 keys
    assert b.decrypt(lost[0]) == b"lost"


def test_every_flipped_bit_position_of_a_first_message_is_detected():
    alice, bob = pair()
    first = Session.initiate(alice, served(bob)).encrypt(b"x" * 20)
    saved = bob.to_bytes()
    for i in range(len(first)):
        for bit in (0, 7):
            with pytest.raises(DecryptError):
                Session.respond(bob, flip(first, i, bit))
    assert bob.to_bytes() == saved                                  # no prekey consumed
    with pytest.raises(DecryptError):
        Session.respond(bob, first[:-1])
    with pytest.raises(DecryptError):
        Session.respond(bob, first + b"\x00")
    assert Session.respond(bob, first)[1] == b"x" * 20


def test_every_flipped_bit_position_of_a_message_is_detected():
    _, _, a, b = established()
    for plaintext in (b"", b"m" * 30):
        ct = a.encrypt(plaintext)
        state = b.to_bytes()
        for i in range(len(ct)):
            for bit in (0, 3, 7):
                with pytest.raises(DecryptError):
                    b.decrypt(flip(ct, i, bit))
        for cut in (ct[:-1], ct[:10], ct + b"!", b""):
            with pytest.raises(DecryptError):
                b.decrypt(cut)
        assert b.to_bytes() == state                                # failed attempts change nothing
        assert b.decrypt(ct) == plaintext


def test_replays_are_rejected():
    alice, bob, a, b = established()
    ct = a.encrypt(b"once")
    assert b.decrypt(ct) == b"once"
    with pytest.raises(DecryptError, match="replayed"):
        b.decrypt(ct)
    # a skipped key is used once too
    c1, c2 = a.encrypt(b"1"), a.encrypt(b"2")
    assert b.decrypt(c2) == b"2" and b.decrypt(c1) == b"1"
    with pytest.raises(DecryptError):
        b.decrypt(c1)
    # and a message of a chain the ratchet has since moved past
    assert a.decrypt(b.encrypt(b"y")) == b"y"
    assert b.decrypt(a.encrypt(b"z")) == b"z"
    state = b.to_bytes()
    with pytest.raises(DecryptError):
        b.decrypt(ct)
    assert b.to_bytes() == state


@pytest.mark.parametrize("one_time", [5, 0])
def test_a_replayed_first_message_is_rejected(one_time):
    alice, bob = pair(one_time)
    a = Session.initiate(alice, served(bob))
    first = a.encrypt(b"first")
    b, _ = Session.respond(bob, first)
    with pytest.raises(DecryptError, match="replayed|already used"):
        Session.respond(bob, first)                          # as a new session
    with pytest.raises(DecryptError, match="replayed"):
        b.decrypt(first)                                     # within the session
    restored = LocalKeys.from_bytes(bob.to_bytes())          # and after a restart
    with pytest.raises(DecryptError):
        Session.respond(restored, first)


def test_wrong_recipient_cannot_decrypt():
    alice, bob = pair()
    carol = LocalKeys.generate(one_time=5)
    a = Session.initiate(alice, served(bob))
    first = a.encrypt(b"for bob only")
    with pytest.raises(DecryptError):
        Session.respond(carol, first)
    b, _ = Session.respond(bob, first)
    # Carol's own session with Alice does not open Bob's messages either.
    a2 = Session.initiate(alice, served(carol))
    c, _ = Session.respond(carol, a2.encrypt(b"hi carol"))
    with pytest.raises(DecryptError):
        c.decrypt(a.encrypt(b"still for bob"))


def test_first_message_after_signed_prekey_rotation():
    alice, bob = pair()
    a = Session.initiate(alice, served(bob))                 # made from the old bundle
    bob.rotate_signed_prekey()
    assert Session.respond(bob, a.encrypt(b"late"))[1] == b"late"
    stale = Session.initiate(alice, served(bob)).encrypt(b"stale")
    for _ in range(KEEP_SIGNED_PREKEYS):
        bob.rotate_signed_prekey()
    with pytest.raises(DecryptError, match="signed prekey"):
        Session.respond(bob, stale)


def test_messages_of_other_sessions_and_kinds_are_refused():
    alice, bob, a, b = established()
    other = Session.initiate(alice, served(bob))
    with pytest.raises(UnknownSession):
        b.decrypt(other.encrypt(b"another session"))
    with pytest.raises(DecryptError, match="prekey"):
        Session.respond(bob, a.encrypt(b"not a first message"))
    with pytest.raises(FormatError):
        message_info(b"\x07\x01")


def test_resent_sender_key_never_moves_a_chain_backwards():
    group = make_group(MEMBERS[:2])
    a, b = MEMBERS[:2]
    old_copy = group[a].distribution_message()
    ct = group[a].encrypt(b"once")
    assert group[b].decrypt(a, ct) == b"once"
    group[b].process(a, old_copy)                       # an old copy arrives again
    with pytest.raises(DecryptError, match="replayed"):
        group[b].decrypt(a, ct)
    for _ in range(MAX_GROUP_SKIP + 5):                 # b misses many, then asks again
        group[a].encrypt(b"missed")
    group[b].process(a, group[a].distribution_message())
    assert group[b].decrypt(a, group[a].encrypt(b"caught up")) == b"caught up"


def test_sessions_survive_a_restart_mid_conversation():
    # Step 1: a conversation with a pending X3DH header and skipped keys on both sides.
    alice, bob = pair()
    a = Session.initiate(alice, served(bob))
    first, held = a.encrypt(b"1"), a.encrypt(b"2")
    b, _ = Session.respond(bob, first)
    a = Session.from_bytes(a.to_bytes())                     # restart before the reply
    assert not a.acknowledged
    reply_held, reply = b.encrypt(b"r1"), b.encrypt(b"r2")
    assert a.decrypt(reply) == b"r2"
    # Step 2: both restart, with state on disk only.
    a, b = Session.from_bytes(a.to_bytes()), Session.from_bytes(b.to_bytes())
    alice, bob = LocalKeys.from_bytes(alice.to_bytes()), LocalKeys.from_bytes(bob.to_bytes())
    assert b.decrypt(held) == b"2" and a.decrypt(reply_held) == b"r1"
    # Step 3: the conversation goes on.
    for i in range(20):
        assert b.decrypt(a.encrypt(b"a%d" % i)) == b"a%d" % i
        a, b = Session.from_bytes(a.to_bytes()), Session.from_bytes(b.to_bytes())
        assert a.decrypt(b.encrypt(b"b%d" % i)) == b"b%d" % i


@pytest.mark.parametrize("mutate", [lambda b: b[:-1], lambda b: b + b"\x00", lambda b: b"\x09" + b[1:]])
def test_session_bytes_are_checked(mutate):
    _, _, a, _ = established()
    with pytest.raises(FormatError):
        Session.from_bytes(mutate(a.to_bytes()))


def test_session_record_converges_when_both_sides_initiate():
    alice, bob = pair()
    ra, rb = SessionRecord(), SessionRecord()
    with pytest.raises(NoSession):
        ra.encrypt(b"x")
    # Step 1: both start a session at the same time.
    ra.initiate(alice, served(bob))
    rb.initiate(bob, served(alice))
    from_a, from_b = ra.encrypt(b"from a"), rb.encrypt(b"from b")
    # Step 2: each accepts the other's first message: a new current session each.
    assert rb.decrypt(bob, from_a) == b"from a"
    assert ra.decrypt(alice, from_b) == b"from b"
    # Step 3: they talk, through restarts, and end up on one session.
    for i in range(4):
        assert rb.decrypt(bob, ra.encrypt(b"a%d" % i)) == b"a%d" % i
        assert ra.decrypt(alice, rb.encrypt(b"b%d" % i)) == b"b%d" % i
        ra, rb = SessionRecord.from_bytes(ra.to_bytes()), SessionRecord.from_bytes(rb.to_bytes())
    assert ra.current.id == rb.current.id
    assert ra.peer_identity == bob.identity and rb.peer_identity == alice.identity
    with pytest.raises(UnknownSession):
        SessionRecord().decrypt(bob, ra.encrypt(b"no such session here"))


def test_session_record_refuses_a_first_message_from_another_identity():
    alice, bob = pair()
    mallory = LocalKeys.generate()
    rb = SessionRecord()
    rb.decrypt(bob, Session.initiate(alice, served(bob)).encrypt(b"hi"))
    with pytest.raises(DecryptError, match="different identity"):
        rb.decrypt(bob, Session.initiate(mallory, served(bob)).encrypt(b"it's alice, honest"))


@SETTINGS
@given(order=st.permutations(list(range(12))), plaintexts=st.lists(st.binary(max_size=64), min_size=12, max_size=12))
def test_any_delivery_order_decrypts(order, plaintexts):
    _, _, a, b = established()
    cts = [a.encrypt(p) for p in plaintexts[:6]]
    assert a.decrypt(b.encrypt(b"turn")) == b"turn"
    cts += [a.encrypt(p) for p in plaintexts[6:]]
    assert [b.decrypt(cts[i]) for i in order] == [plaintexts[i] for i in order]


# --- groups ---------------------------------------------------------------------------------------

MEMBERS = ["+15550000001", "+15550000002", "+15550000003", "+15550000004", "+15550000005"]


NO_RETIREMENT = b"\x00\x00" * 2          # a GroupCipher's last section (version 4): none retiring or retired


def make_group(members=MEMBERS) -> dict[str, GroupCipher]:
    group = {m: GroupCipher("family") for m in members}
    for sender in members:
        dist = group[sender].distribution_message()       # sent to each member over 1:1
        for member in members:
            if member != sender:
                group[member].process(sender, dist)
    return group


def test_group_of_five():
    group = make_group()
    for sender in MEMBERS:
        for i in range(3):
            ct = group[sender].encrypt(b"%s says %d" % (sender.encode(), i))
            for member in MEMBERS:
                if member != sender:
                    assert group[member].decrypt(sender, ct) == b"%s says %d" % (sender.encode(), i)


def test_group_member_cannot_forge_another_sender():
    group = make_group()
    alice, bob, carol = MEMBERS[:3]
    # Bob knows Alice's chain key (he can decrypt her messages), but not her signing key.
    stolen = group[bob].keys[alice][0]
    bobs_signer = DeviceKey()
    forger = SenderKey("family", stolen.key_id, stolen.iteration, stolen.chain_key,
                       bobs_signer.public, bobs_signer.seed)
    forged = forger.encrypt(b"I, Alice, owe Bob 100")
    with pytest.raises(DecryptError, match="signature"):
        group[carol].decrypt(alice, forged)
    # Bob's own message passed off as Alice's: no such sender key of Alice's.
    with pytest.raises(NoSenderKey):
        group[carol].decrypt(alice, group[bob].encrypt(b"from bob"))
    assert group[carol].decrypt(alice, group[alice].encrypt(b"real")) == b"real"


def test_group_message_tamper_replay_and_window():
    group = make_group(MEMBERS[:2])
    a, b = MEMBERS[:2]
    ct = group[a].encrypt(b"group body")
    for i in range(len(ct)):
        with pytest.raises(DecryptError):
            group[b].decrypt(a, flip(ct, i))
    assert group[b].decrypt(a, ct) == b"group body"
    with pytest.raises(DecryptError, match="replayed"):
        group[b].decrypt(a, ct)
    # out of order inside the window, then beyond it
    c1, c2, c3 = (group[a].encrypt(b"%d" % i) for i in range(3))
    assert [group[b].decrypt(a, c) for c in (c3, c1, c2)] == [b"2", b"0", b"1"]
    for _ in range(MAX_GROUP_SKIP + 1):
        group[a].encrypt(b"lost")
    with pytest.raises(DecryptError, match="ahead"):
        group[b].decrypt(a, group[a].encrypt(b"too far"))


def test_removed_member_cannot_read_after_rekey():
    group = make_group()
    removed, remaining = MEMBERS[-1], MEMBERS[:-1]
    before = group[MEMBERS[0]].encrypt(b"before")
    assert group[removed].decrypt(MEMBERS[0], before) == b"before"
    # Step 1: the re-key rule: every remaining member forgets the leaver and
    # distributes a NEW sender key to the remaining members only.
    for member in remaining:
        dist = group[member].member_removed(removed)
        for other in remaining:
            if other != member:
                group[other].process(member, dist)
    # Step 2: everything sent after the re-key is unreadable to the leaver.
    for sender in remaining:
        ct = group[sender].encrypt(b"after, from " + sender.encode())
        for member in remaining:
            if member != sender:
                assert group[member].decrypt(sender, ct) == b"after, from " + sender.encode()
        with pytest.raises(DecryptError):
            group[removed].decrypt(sender, ct)
        # not even with the old state forced onto the new key id
        old = group[removed].keys[sender][0]
        old.key_id = ct[1] << 24 | ct[2] << 16 | ct[3] << 8 | ct[4]
        with pytest.raises(DecryptError):
            old.decrypt(ct)
    # Step 3: and the remaining members no longer accept the leaver's messages.
    with pytest.raises(NoSenderKey):
        group[MEMBERS[0]].decrypt(removed, group[removed].encrypt(b"still here?"))


def test_group_rekey_keeps_messages_in_flight_and_a_join_sees_no_past():
    group = make_group(MEMBERS[:3])
    a, b, c = MEMBERS[:3]
    in_flight = group[a].encrypt(b"old key")
    group[b].process(a, group[a].rekey())
    assert group[b].decrypt(a, group[a].encrypt(b"new key")) == b"new key"
    assert group[b].decrypt(a, in_flight) == b"old key"          # older sender keys kept
    for _ in range(KEYS_PER_SENDER):
        group[b].process(a, group[a].rekey())
    assert len(group[b].keys[a]) == KEYS_PER_SENDER
    # A new member gets the current key: earlier messages stay closed to them.
    past = group[a].encrypt(b"past")
    newcomer = GroupCipher("family")
    newcomer.process(a, group[a].distribution_message())
    with pytest.raises(DecryptError):
        newcomer.decrypt(a, past)
    assert newcomer.decrypt(a, group[a].encrypt(b"welcome")) == b"welcome"
    with pytest.raises(FormatError, match="group"):
        GroupCipher("other").process(a, group[a].distribution_message())


def test_group_state_survives_a_restart():
    group = make_group(MEMBERS[:3])
    a, b, _ = MEMBERS[:3]
    skipped = group[a].encrypt(b"skipped")
    assert group[b].decrypt(a, group[a].encrypt(b"next")) == b"next"
    group = {m: GroupCipher.from_bytes(g.to_bytes()) for m, g in group.items()}
    assert group[b].decrypt(a, skipped) == b"skipped"
    assert group[b].decrypt(a, group[a].encrypt(b"after restart")) == b"after restart"
    assert group[a].decrypt(b, group[b].encrypt(b"and back")) == b"and back"


def test_the_members_removed_are_kept_with_the_keys_and_a_version_1_state_still_reads():
    """``removed`` (who was removed and not added again) survives a restart;
    a state written before it was kept (version 1) reads with none."""
    group = make_group(MEMBERS[:3])
    a, b, c = MEMBERS[:3]
    group[a].member_removed(c)
    assert list(GroupCipher.from_bytes(group[a].to_bytes()).removed) == [c]
    group[a].member_added(c)
    assert GroupCipher.from_bytes(group[a].to_bytes()).removed == {}
    group[a].member_removed(c)
    current = group[a].to_bytes()
    assert current.endswith(NO_RETIREMENT)
    current = current[:-len(NO_RETIREMENT)]                             # as version 3 ended
    given = bytes((1,)) + b"\x00\x00"                                  # known, handed to nobody
    assert current.endswith(given)
    version_1 = bytes((1,)) + current[1:-(2 + 2 + len(c.encode()) + len(given))]  # no removed section
    old = GroupCipher.from_bytes(version_1)
    assert old.removed == {} and old.keys.keys() == group[a].keys.keys()


def test_a_device_change_rekeys_where_the_own_key_was_handed_and_a_version_2_state_still_reads():
    """``given`` (whom the current own key was handed to) survives a
    restart; ``device_changed`` re-keys only if the member was among them.
    A state written before ``given`` was kept (version 2) counts as handed
    to everyone."""
    group = make_group(MEMBERS[:3])
    a, b, c = MEMBERS[:3]
    group[a].handed(b)
    assert GroupCipher.from_bytes(group[a].to_bytes()).given == {b: None}
    assert group[a].device_changed(c) is None                    # never had it: nothing to do
    old_device = GroupCipher.from_bytes(group[b].to_bytes())      # b's old device keeps its state
    in_flight = group[a].encrypt(b"before the new device")
    dist = group[a].device_changed(b)
    assert dist is not None and group[a].given == {}
    # Step 2: the new key reaches c (and b's new device); the old device's state cannot open it
    group[c].process(a, dist)
    new_device = GroupCipher("family")
    new_device.process(a, dist)
    after = group[a].encrypt(b"after the new device")
    assert group[c].decrypt(a, after) == new_device.decrypt(a, after) == b"after the new device"
    with pytest.raises(NoSenderKey):
        old_device.decrypt(a, after)
    assert group[c].decrypt(a, in_flight) == b"before the new device"   # older keys still open
    assert group[a].device_changed(b) is None                     # the new key was not handed to b
    # Step 3: version 2 (no given section) reads as "unknown": any device change re-keys
    group[a].handed(c)
    current = group[a].to_bytes()[:-len(NO_RETIREMENT)]               # as version 3 ended
    version_2 = bytes((2,)) + current[1:-(1 + 2 + 2 + len(c.encode()))]
    old = GroupCipher.from_bytes(version_2)
    assert old.given is None and old.own.key_id == group[a].own.key_id
    assert old.device_changed(MEMBERS[4]) is not None and old.given == {}
    empty = GroupCipher("family").to_bytes()[1:-len(NO_RETIREMENT)]
    assert GroupCipher.from_bytes(bytes((2,)) + empty[:-3]).given == {}


def test_a_replaced_devices_sender_keys_retire_and_a_version_3_state_still_reads():
    """b registers a new device: the keys a holds from b's old device open
    messages for a grace only (until b's new key arrives, RETIRE_AFTER
    seconds, RETIRE_MESSAGES messages), then a message or a distribution
    under them is refused, also after a restart; b's new key, and c's keys,
    work as before. A state written before retirement (version 3) reads."""
    group = make_group(MEMBERS[:3])
    a, b, c = MEMBERS[:3]
    old_b = GroupCipher.from_bytes(group[b].to_bytes())          # what b's old device keeps
    t = 1_000_000.0
    # Step 1: the change is seen (twice: a notice, then the new identity): the grace starts once
    assert group[a].retire(b, now=t) and not group[a].retire(b, now=t + 60)
    assert not group[a].retire(MEMBERS[4], now=t)                  # nothing held from it
    assert group[a].decrypt(b, old_b.encrypt(b"in flight"), now=t + 1) == b"in flight"
    # Step 2: the grace ends with time, and with the messages opened, and survives a restart
    late = old_b.encrypt(b"late")
    restarted = GroupCipher.from_bytes(group[a].to_bytes())
    with pytest.raises(DecryptError, match="retired"):
        restarted.decrypt(b, late, now=t + RETIRE_AFTER)
    assert restarted.decrypt(b, late, now=t + RETIRE_AFTER - 1) == b"late"
    budget = GroupCipher.from_bytes(group[a].to_bytes())
    for i in range(RETIRE_MESSAGES - 1):                           # one was opened in step 1
        assert budget.decrypt(b, old_b.encrypt(b"%d" % i), now=t + 2) == b"%d" % i
    with pytest.raises(DecryptError, match="retired"):
        budget.decrypt(b, old_b.encrypt(b"one too many"), now=t + 2)
    assert b not in budget.keys and b not in GroupCipher.from_bytes(budget.to_bytes()).keys
    # Step 3: b's new device hands its key: the old one retires at once
    new_b = GroupCipher("family")
    assert group[a].process(b, new_b.distribution_message(), now=t + 2)
    forged = old_b.encrypt(b"posted by the old device")
    for cipher in (group[a], GroupCipher.from_bytes(group[a].to_bytes())):
        with pytest.raises(DecryptError, match="retired"):
            cipher.decrypt(b, forged, now=t + 3)
        assert not cipher.process(b, old_b.distribution_message(), now=t + 3)   # not kept again
        with pytest.raises(DecryptError, match="retired"):
            cipher.decrypt(b, forged, now=t + 3)
        assert cipher.decrypt(b, new_b.encrypt(b"new device"), now=t + 3) == b"new device"
        assert cipher.decrypt(c, group[c].encrypt(b"c as before"), now=t + 3) == b"c as before"
    # Step 4: a version 3 state (no retirement section) reads with none
    fresh = make_group(MEMBERS[:2])[a]
    old = GroupCipher.from_bytes(bytes((3,)) + fresh.to_bytes()[1:-len(NO_RETIREMENT)])
    assert old.retirement.retiring == {} and old.retirement.retired == {}
    assert old.keys.keys() == fresh.keys.keys() and old.to_bytes() == fresh.to_bytes()


# --- media ----------------------------------------------------------------------------------------

CHUNK = 1024


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 5 * CHUNK + 17])
def test_media_round_trip(size):
    data = os.urandom(size)
    ct, key = encrypt_media(data, CHUNK)
    assert len(ct) == encrypted_size(size, CHUNK) and key.size == size
    assert key.sha256 == hashlib.sha256(ct).digest()        # what the server names the blob by
    assert decrypt_media(ct, key) == data
    assert MediaKey.from_bytes(key.to_bytes()) == key and len(key.to_bytes()) == 73
    assert key.key.hex() not in repr(key)


def test_media_streaming_in_odd_pieces():
    data = os.urandom(10 * CHUNK + 333)
    enc, out = MediaEncryptor(CHUNK), []
    for i in range(0, len(data), 777):
        out.append(enc.update(data[i:i + 777]))
    tail, key = enc.finish()
    ct = b"".join(out) + tail
    assert decrypt_media(ct, key) == data
    dec, plain = MediaDecryptor(key), []
    for i in range(0, len(ct), 1000):
        plain.append(dec.update(ct[i:i + 1000]))
    plain.append(dec.finish())
    assert b"".join(plain) == data
    dec = MediaDecryptor(key)                                    # the header split across reads
    plain = [dec.update(ct[i:i + 2]) for i in range(0, 12, 2)] + [dec.update(ct[12:]), dec.finish()]
    assert b"".join(plain) == data
    assert encrypt_media(data)[1].key != key.key                # a fresh key every time


def test_media_truncation_extension_and_tamper_are_detected():
    data = os.urandom(4 * CHUNK)
    ct, key = encrypt_media(data, CHUNK)
    sealed = CHUNK + 16
    cases = {
        "final chunk dropped": ct[:5 + 3 * sealed],
        "cut mid-chunk": ct[:-100],
        "empty": b"",
        "chunk appended": ct + ct[5:5 + sealed],
        "byte appended": ct + b"\x00",
        "chunks swapped": ct[:5] + ct[5 + sealed:5 + 2 * sealed] + ct[5:5 + sealed] + ct[5 + 2 * sealed:],
    }
    cases.update({f"bit flipped at {i}": flip(ct, i) for i in (0, 1, 4, 5, 600, 5 + sealed, len(ct) - 1)})
    for name, bad in cases.items():
        with pytest.raises(DecryptError):
            decrypt_media(bad, key)
        # even a reader that trusts the hash it is given (the streaming path) catches it
        relaxed = MediaKey(key.key, hashlib.sha256(bad).digest(), key.size)
        with pytest.raises(DecryptError):
            dec = MediaDecryptor(relaxed)
            dec.update(bad)
            dec.finish()
    with pytest.raises(DecryptError):
        decrypt_media(ct, MediaKey(os.urandom(32), key.sha256, key.size))
    with pytest.raises(DecryptError):
        decrypt_media(ct, MediaKey(key.key, key.sha256, key.size - 1))


def test_media_dropping_the_final_chunk_at_a_boundary_is_truncation():
    # A stream cut exactly at a chunk boundary, read by a streaming decryptor
    # that was told the shorter size: the last chunk is not marked final.
    data = os.urandom(3 * CHUNK)
    ct, key = encrypt_media(data, CHUNK)
    cut = ct[:5 + 2 * (CHUNK + 16)]
    lie = MediaKey(key.key, hashlib.sha256(cut).digest(), 2 * CHUNK)
    with pytest.raises(DecryptError):
        decrypt_media(cut, lie)


# --- safety numbers and trust ---------------------------------------------------------------------

def test_safety_number_is_symmetric_and_tracks_keys():
    alice, bob = DeviceKey().public, DeviceKey().public
    number = safety_number("+15550000001", alice, "+15550000002", bob)
    assert number == safety_number("+15550000002", bob, "+15550000001", alice)
    groups = number.split(" ")
    assert len(groups) == 12 and all(len(g) == 5 and g.isdigit() for g in groups)
    assert safety_number("+15550000001", DeviceKey().public, "+15550000002", bob) != number
    assert safety_number("+15550000001", alice, "+15550000002", DeviceKey().public) != number
    assert safety_number("+15550000009", alice, "+15550000002", bob) != number
    assert safety_number("+15550000001", alice, "+15550000002", bob) == number   # deterministic


def test_trust_store_notices_key_changes():
    trust = TrustStore()
    old, new = DeviceKey().public, DeviceKey().public
    assert trust.observe("+1555", old) is None                  # first use
    trust.mark_verified("+1555", old)
    assert trust.observe("+1555", old) is None and trust.is_verified("+1555")
    assert trust.observe("+1555", new) == KeyChange("+1555", old, new)
    assert trust.identity("+1555") == new and not trust.is_verified("+1555")
    with pytest.raises(ValueError):
        trust.mark_verified("+1555", old)
    again = TrustStore.from_bytes(trust.to_bytes())
    assert again.to_bytes() == trust.to_bytes() and again.identity("+1555") == new


# --- envelopes ------------------------------------------------------------------------------------

MEDIA_KEY = MediaKey(b"k" * 32, b"h" * 32, 123_456)
ENVELOPES = [
    Text(""), Text("hello"), Text("héllo wörld 👋" * 100),
    Media(MEDIA_KEY, "image/jpeg"), Media(MEDIA_KEY, "video/mp4", "clip.mp4", "look!"),
    SenderKeyMessage(SenderKey.create("family").distribution_message()),
    SenderKeyRequest("family"),
]


@pytest.mark.parametrize("envelope", ENVELOPES, ids=lambda e: type(e).__name__)
def test_envelope_round_trip_padded(envelope):
    raw = envelope.encode()
    assert len(raw) % PAD == 0
    assert Envelope.decode(raw) == envelope


def test_envelope_decode_is_strict():
    raw = Media(MEDIA_KEY, "image/png", "a.png", "caption").encode()
    for cut in range(len(raw)):             # every strict prefix fails
        with pytest.raises(FormatError):
            Envelope.decode(raw[:cut])
    bad = {
        "version": b"\x02" + raw[1:],
        "kind": raw[:1] + b"\x09" + raw[2:],
        "padding": raw[:-1] + b"\x01",
        "padding block": raw + bytes(PAD),
        "utf-8": Text("ab").encode()[:6] + b"\xff\xfe" + Text("ab").encode()[8:],
        "not bytes": "text",
    }
    for name, data in bad.items():
        with pytest.raises(FormatError):
            Envelope.decode(data)
    assert SenderKeyMessage(SenderKey.create("g").distribution_message()).group == "g"


def test_envelope_encode_checks_fields():
    with pytest.raises(TypeError):
        Text(b"bytes").encode()
    with pytest.raises(ValueError):
        Text("x" * 60_001).encode()
    with pytest.raises(TypeError):
        Media("not a key", "image/png").encode()


@SETTINGS
@given(st.text(max_size=500), st.text(max_size=50), st.text(max_size=50))
def test_envelope_text_and_media_properties(text, mime, name):
    assert Envelope.decode(Text(text).encode()) == Text(text)
    media = Media(MEDIA_KEY, mime, name, text)
    assert Envelope.decode(media.encode()) == media


@SETTINGS
@given(st.binary(max_size=200))
def test_envelope_decode_raises_only_format_error(data):
    try:
        Envelope.decode(data)
    except FormatError:
        pass


# --- persistence of everything stateful -----------------------------------------------------------

def _conversation():
    _, _, a, b = established()
    a.encrypt(b"skip me")
    b.decrypt(a.encrypt(b"so b holds a skipped key"))
    return a, b


def _group_cipher():
    group = make_group(MEMBERS[:2])
    group[MEMBERS[0]].decrypt(MEMBERS[1], group[MEMBERS[1]].encrypt(b"x"))
    return group[MEMBERS[0]]


def _retiring_cipher():
    cipher = _group_cipher()
    cipher.process(MEMBERS[2], GroupCipher("family").distribution_message())
    cipher.retire(MEMBERS[1], now=1_000_000)
    cipher.retire(MEMBERS[2], now=1_000_000)
    cipher.process(MEMBERS[2], GroupCipher("family").distribution_message())   # retires those
    assert cipher.retirement.retiring and cipher.retirement.retired
    return cipher


def _trust():
    trust = TrustStore()
    trust.observe("+1555", DeviceKey().public)
    return trust


PERSISTENT = {            # built inside the test, not at collection
    "LocalKeys": lambda: LocalKeys.generate(one_time=3),
    "KeyBundle": lambda: LocalKeys.generate(one_time=3).bundle(),
    "Session(initiator)": lambda: _conversation()[0],
    "Session(responder)": lambda: _conversation()[1],
    "SessionRecord": lambda: SessionRecord(list(_conversation())),
    "GroupCipher": _group_cipher,
    "GroupCipher(retiring)": _retiring_cipher,
    "SenderKey(own)": lambda: _group_cipher().own,
    "SenderKey(received)": lambda: _group_cipher().keys[MEMBERS[1]][0],
    "TrustStore": _trust,
    "MediaKey": lambda: encrypt_media(b"abc")[1],
}


@pytest.mark.parametrize("name", PERSISTENT)
def test_every_persistent_object_round_trips_and_checks_its_bytes(name):
    obj = PERSISTENT[name]()
    cls = type(obj)
    raw = obj.to_bytes()
    assert cls.from_bytes(raw).to_bytes() == raw
    for bad in (raw[:-1], raw + b"\x00", bytes((raw[0] ^ 0x80,)) + raw[1:]):
        with pytest.raises(FormatError):
            cls.from_bytes(bad)


@settings(SETTINGS, max_examples=60)
@given(name=st.sampled_from(sorted(PERSISTENT)), data=st.data())
def test_corrupt_persistent_bytes_raise_only_format_error(name, data):
    raw = bytearray(PERSISTENT[name]().to_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    obj = type(PERSISTENT[name]())
    try:
        obj.from_bytes(bytes(raw[:cut]))
    except FormatError:
        pass


@settings(SETTINGS, max_examples=80)
@given(data=st.data())
def test_any_input_to_decrypt_raises_only_decrypt_error(data):
    alice, bob, a, b = established()
    group = make_group(MEMBERS[:2])
    media, key = encrypt_media(b"m" * 3000, CHUNK)
    valid = {"first": Session.initiate(alice, served(bob)).encrypt(b"f"), "normal": a.encrypt(b"n"),
             "group": group[MEMBERS[0]].encrypt(b"g"), "media": media}
    kind = data.draw(st.sampled_from(sorted(valid)))
    raw = bytearray(valid[kind])
    for _ in range(data.draw(st.integers(0, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    raw = bytes(raw[:data.draw(st.integers(0, len(raw)))]) + data.draw(st.binary(max_size=8))
    attempts = [lambda: b.decrypt(raw), lambda: Session.respond(bob, raw),
                lambda: SessionRecord([b]).decrypt(bob, raw),
                lambda: group[MEMBERS[1]].decrypt(MEMBERS[0], raw), lambda: decrypt_media(raw, key)]
    for attempt in attempts:
        try:
            attempt()
        except DecryptError:
            pass
