"""``storage.groups`` against every backend: one op per batch of a group's
requests, the membership rules, fan-out and system events in the same
transaction as the change, refusals that write nothing, idempotent
resends, the oldest member promoted, and the ``missed`` marker of a full
inbox (messages and events past the caps folded into it, replaced so each
new count is pushed; joins refused past the event cap); inbox counts stay
exact throughout."""

from __future__ import annotations

from storage import (DuplicateId, EventsFull, GroupFull, InvalidArgument, NotAdmin, NotMember,
                     OfflineFull, UnknownGroup, UnknownUser)
from storage.groups import ADD, ADMIN, CREATE, LEAVE, REMOVE, RENAME, SEND
from storage.mailbox import recount_inbox

from storage_testkit import OTHER, RECEIVER, SENDER

T = 1_700_000_000_000
GID = f"{SENDER}/g"


def audit(backend, *phones: str) -> None:
    for phone in phones:
        assert backend.storage.inbox_meta(phone) == backend.store.read(
            lambda txn: recount_inbox(txn, phone)), phone


def kinds(backend, phone: str) -> list:
    return [(i.kind, getattr(i.payload, "event", None) or i.payload.id)
            for i in backend.storage.inbox_after(phone)]


async def run(backend, *requests, cap=1000, group_cap=1024, group=GID):
    results, record = await backend.storage.group_batch(group, requests, T, cap, group_cap)
    return results, record


async def test_create_fan_out_and_events_in_one_op(users):
    before = users.store.stats().ops
    results, record = await run(users, (CREATE, SENDER, "Team", [RECEIVER, OTHER]),
                                (SEND, SENDER, "m1", b"hi"), (RENAME, SENDER, "Team 2"))
    assert users.store.stats().ops - before == 1
    assert [ok for ok, _ in results] == [True, True, True]
    assert results[0][1].value == GID and results[1][1].value == T and results[2][1].value == 2
    assert (record.name, record.admins, record.members, record.version) == (
        "Team 2", (SENDER,), (SENDER, RECEIVER, OTHER), 2)
    for member in (RECEIVER, OTHER):
        assert kinds(users, member) == [("group", "created"), ("message", "m1"),
                                        ("group", "renamed")]
        message = users.storage.inbox_after(member)[1].payload
        assert (message.sender, message.group, message.body) == (SENDER, GID, b"hi")
    assert kinds(users, SENDER) == [("group", "created"), ("group", "renamed")]   # no own copy
    nudged = [(u, i.seq) for u, i in results[1][1].appended]
    assert nudged == [(RECEIVER, 2), (OTHER, 2)]
    assert users.storage.groups_of(OTHER) == [GID]
    audit(users, SENDER, RECEIVER, OTHER)


async def test_refusals_write_nothing(users):
    await run(users, (CREATE, SENDER, "Team", [RECEIVER]))
    inboxes = {p: users.storage.inbox_meta(p) for p in (SENDER, RECEIVER, OTHER)}
    results, record = await run(
        users, (SEND, OTHER, "x1", b"no"), (ADD, RECEIVER, [OTHER]), (ADD, SENDER, ["+15559999999"]),
        (ADMIN, SENDER, OTHER, True), (RENAME, RECEIVER, "Mine"), (ADMIN, SENDER, SENDER, False),
        (CREATE, RECEIVER, "x", []), (REMOVE, SENDER, [OTHER]))
    errors = [type(v) for ok, v in results if not ok]
    assert errors == [NotMember, NotAdmin, UnknownUser, NotMember, NotAdmin, InvalidArgument,
                      InvalidArgument]
    assert results[-1][0] and results[-1][1].appended == ()     # removing a non-member: no-op
    full, record = await run(users, (ADD, SENDER, [OTHER]), group_cap=2)
    assert isinstance(full[0][1], GroupFull)
    assert record.version == 1 and record.members == (SENDER, RECEIVER)
    assert {p: users.storage.inbox_meta(p) for p in (SENDER, RECEIVER, OTHER)} == inboxes
    results, _ = await run(users, (SEND, SENDER, "m1", b"x"), group=f"{SENDER}/nope")
    assert isinstance(results[0][1], UnknownGroup)


async def test_resends_are_idempotent(users):
    first, _ = await run(users, (CREATE, SENDER, "Team", [RECEIVER]), (SEND, SENDER, "m1", b"x"))
    again, record = await run(users, (CREATE, SENDER, "Team", [RECEIVER, OTHER]),
                              (SEND, SENDER, "m1", b"x"), (ADD, SENDER, [RECEIVER]),
                              (LEAVE, OTHER), (RENAME, SENDER, "Team"))
    assert again[0][1].duplicate and again[1][1].duplicate and again[1][1].value == T
    assert all(ok and not v.appended for ok, v in again)
    assert record.version == 1 and kinds(users, RECEIVER) == [("group", "created"), ("message", "m1")]
    # the same id to another destination is refused, as for 1:1 messages
    await users.storage.store_message(SENDER, "d1", RECEIVER, b"1:1", T, 1000)
    clash, _ = await run(users, (SEND, SENDER, "d1", b"x"))
    assert isinstance(clash[0][1], DuplicateId)


async def test_last_admin_leaving_promotes_the_oldest_member(users):
    await run(users, (CREATE, SENDER, "Team", [RECEIVER, OTHER]))
    results, record = await run(users, (LEAVE, SENDER))
    assert record.admins == (RECEIVER,) and record.members == (RECEIVER, OTHER)
    assert [(u, i.payload.event) for u, i in results[0][1].appended] == [
        (SENDER, "left"), (RECEIVER, "left"), (OTHER, "left"), (RECEIVER, "promoted"),
        (OTHER, "promoted")]
    assert users.storage.groups_of(SENDER) == []
    results, record = await run(users, (REMOVE, RECEIVER, [RECEIVER]))
    assert record.admins == (OTHER,) and record.members == (OTHER,)
    audit(users, SENDER, RECEIVER, OTHER)


async def test_a_full_inbox_gets_one_missed_event_that_counts(users):
    await run(users, (CREATE, SENDER, "Team", [RECEIVER, OTHER]))
    # RECEIVER holds one message: at cap 1 the group goes on without it.
    await users.storage.store_message(OTHER, "d1", RECEIVER, b"1:1", T, 1)
    results, _ = await run(users, *[(SEND, SENDER, f"m{i}", b"x") for i in range(3)], cap=1)
    assert all(ok for ok, _ in results)
    assert kinds(users, OTHER) == [("group", "created"), ("message", "m0"), ("group", "missed")]
    missed = [i for i in users.storage.inbox_after(RECEIVER) if i.kind == "group"][-1]
    assert (missed.payload.event, missed.payload.count, missed.payload.by) == ("missed", 3, SENDER)
    # once it is acked, the next miss starts a new event
    await users.storage.ack_inbox(RECEIVER, [missed.seq])
    await run(users, (SEND, SENDER, "m9", b"x"), cap=1)
    again = users.storage.inbox_after(RECEIVER)[-1]
    assert again.seq > missed.seq and (again.payload.event, again.payload.count) == ("missed", 1)
    audit(users, SENDER, RECEIVER, OTHER)


async def test_group_receipts_name_the_member_and_the_group(users):
    await run(users, (CREATE, SENDER, "Team", [RECEIVER]))
    await run(users, (SEND, SENDER, "m1", b"x"))
    seq = users.storage.inbox_after(RECEIVER)[-1].seq
    delivered = await users.storage.ack_inbox(RECEIVER, [seq])
    assert [(r.to, r.receipt.kind, r.receipt.by, r.receipt.group) for r in delivered] == [
        (SENDER, "delivered", RECEIVER, GID)]
    # A READ must name the group its message went to; OTHER, not a member, reads nothing.
    assert await users.storage.store_read(RECEIVER, SENDER, ["m1"]) == []
    assert await users.storage.store_read(OTHER, SENDER, ["m1"], group=GID) == []
    read = await users.storage.store_read(RECEIVER, SENDER, ["m1"], group=GID)
    assert [(r.to, r.receipt.kind, r.receipt.group) for r in read] == [(SENDER, "read", GID)]
    assert [i.payload.kind for i in users.storage.inbox_after(SENDER)[-2:]] == ["delivered", "read"]


async def test_a_group_message_is_read_only_by_members_it_reached_and_once_each(users):
    """A READ of a group message counts only from a member the message
    reached: not one who joined after it was sent, not one whose full
    inbox got a ``missed`` marker instead, not its own sender; and once
    per member, however often it is named."""
    s = users.storage
    await run(users, (CREATE, SENDER, "Team", [RECEIVER]))
    await s.store_message(OTHER, "d1", RECEIVER, b"1:1", T, 1)      # RECEIVER's inbox: full at 1
    await run(users, (SEND, SENDER, "m1", b"x"), cap=1)              # RECEIVER gets a marker
    await run(users, (ADD, SENDER, [OTHER]))
    await run(users, (SEND, SENDER, "m2", b"x"))                     # reaches RECEIVER and OTHER
    assert await s.store_read(RECEIVER, SENDER, ["m1"], group=GID) == []    # got a marker
    assert await s.store_read(OTHER, SENDER, ["m1"], group=GID) == []       # joined after it
    assert await s.store_read(SENDER, SENDER, ["m2"], group=GID) == []      # its own message
    read = await s.store_read(OTHER, SENDER, ["m2", "m2"], group=GID)
    assert [(r.receipt.id, r.receipt.by) for r in read] == [("m2", OTHER)]
    assert await s.store_read(OTHER, SENDER, ["m2"], group=GID) == []       # read once
    read = await s.store_read(RECEIVER, SENDER, ["m2"], group=GID)
    assert [(r.receipt.id, r.receipt.by) for r in read] == [("m2", RECEIVER)]
    # Removed and added again: joined anew, so m2 (sent before) is not read again.
    await run(users, (REMOVE, SENDER, [OTHER]), (ADD, SENDER, [OTHER]))
    await run(users, (SEND, SENDER, "m3", b"x"))
    read = await s.store_read(OTHER, SENDER, ["m2", "m3"], group=GID)
    assert [r.receipt.id for r in read] == ["m3"]
    audit(users, SENDER, RECEIVER, OTHER)


async def test_group_reads_are_pruned_with_the_dedup_records(users):
    s = users.storage
    await run(users, (CREATE, SENDER, "Team", [RECEIVER]), (SEND, SENDER, "m1", b"x"))
    assert len(await s.store_read(RECEIVER, SENDER, ["m1"], group=GID)) == 1
    count = lambda: users.store.read(lambda txn: sum(1 for _ in txn.range("group_reads", b"")))  # noqa: E731
    assert count() == 1
    assert await s.prune_dedup(before_ms=T + 1) == 1
    assert count() == 0
    assert await s.store_read(RECEIVER, SENDER, ["m1"], group=GID) == []     # forgotten: not read


async def test_a_missed_marker_is_replaced_so_the_new_count_is_pushed(users):
    await run(users, (CREATE, SENDER, "Team", [RECEIVER]))
    await users.storage.store_message(OTHER, "d1", RECEIVER, b"1:1", T, 1)
    first, _ = await run(users, (SEND, SENDER, "m0", b"x"), cap=1)
    [(who, marker)] = first[0][1].appended
    assert (who, marker.payload.event, marker.payload.count) == (RECEIVER, "missed", 1)
    # two more in one op: each replaces the marker; only the last is nudged
    more, _ = await run(users, (SEND, SENDER, "m1", b"x"), (SEND, SENDER, "m2", b"x"), cap=1)
    nudged = [(u, i.seq, i.payload.count) for _, v in more for u, i in v.appended]
    assert nudged == [(RECEIVER, marker.seq + 2, 3)]
    held = [i for i in users.storage.inbox_after(RECEIVER) if i.kind == "group"]
    assert [(i.seq, i.payload.event, i.payload.count) for i in held] == [
        (1, "created", 0), (marker.seq + 2, "missed", 3)]
    audit(users, SENDER, RECEIVER)


async def test_events_past_the_cap_fold_into_the_marker(users):
    """A flood of renames cannot grow a member's inbox past its cap: the
    change commits for the group, the full member gets one marker."""
    await run(users, (CREATE, SENDER, "n0", [RECEIVER]), cap=2)
    for round_ in range(3):
        results, record = await run(
            users, *[(RENAME, SENDER, f"n{round_}-{j}") for j in range(50)], cap=2)
        assert all(ok for ok, _ in results)
    assert record.name == "n2-49" and record.version == 151
    held = users.storage.inbox_after(RECEIVER)
    assert [(i.payload.event, i.payload.count) for i in held] == [
        ("created", 0), ("renamed", 0), ("missed", 0)]     # count 0: events only
    assert (held[-1].payload.name, held[-1].payload.by) == ("n2-49", SENDER)
    assert users.storage.inbox_meta(RECEIVER).events == 3
    # messages missed later count in the same marker
    await users.storage.store_message(OTHER, "d1", RECEIVER, b"1:1", T, 1)
    await run(users, (SEND, SENDER, "m0", b"x"), cap=1)
    assert [(i.payload.event, i.payload.count) for i in users.storage.inbox_after(RECEIVER)
            if i.kind == "group"][-1] == ("missed", 1)
    audit(users, SENDER, RECEIVER)


async def test_a_join_is_refused_while_the_inbox_holds_cap_events(users):
    await run(users, (CREATE, SENDER, "Team", [RECEIVER]), cap=1)
    before = {p: users.storage.inbox_meta(p) for p in (SENDER, RECEIVER, OTHER)}
    results, record = await run(users, (CREATE, OTHER, "Mine", [RECEIVER]), cap=1,
                                group=f"{OTHER}/g")
    assert isinstance(results[0][1], EventsFull) and isinstance(results[0][1], OfflineFull)
    assert results[0][1].phone == RECEIVER and record is None
    await run(users, (CREATE, SENDER, "Two", []), group=f"{SENDER}/two", cap=5)
    results, _ = await run(users, (ADD, SENDER, [RECEIVER]), cap=1, group=f"{SENDER}/two")
    assert isinstance(results[0][1], EventsFull)
    assert users.storage.groups_of(RECEIVER) == [GID]
    assert users.storage.inbox_meta(RECEIVER) == before[RECEIVER]
    # once read, there is room again
    await users.storage.ack_inbox(RECEIVER, [i.seq for i in users.storage.inbox_after(RECEIVER)])
    results, _ = await run(users, (ADD, SENDER, [RECEIVER]), cap=1, group=f"{SENDER}/two")
    assert results[0][0] and users.storage.groups_of(RECEIVER) == [GID, f"{SENDER}/two"]
    audit(users, SENDER, RECEIVER, OTHER)
