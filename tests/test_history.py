"""The history checker finds what it claims to find (it is the judge of every
chaos scenario, so it is tested first)."""

from tests.history import History

A, B = "+15550000051", "+15550000052"


def history(sends=(), acks=(), deliveries=(), ticks=True):
    """A run of A sending to B; with ``ticks``, A got the delivered receipt
    of every message B got."""
    h = History()
    for msg_id, body in sends:
        h.send(msg_id, A, B, body)
    for msg_id in acks:
        h.ack(msg_id)
    for msg_id, body in deliveries:
        h.deliver(msg_id, A, B, body)
        if ticks:
            h.receipt(msg_id, "delivered", B, A)
    return h


def test_a_clean_run_is_ok():
    v = history([("1", b"a"), ("2", b"b")], ["1", "2"], [("1", b"a"), ("2", b"b")]).check()
    assert v.ok and (v.sent, v.acked, v.delivered) == (2, 2, 2)


def test_lost_is_acked_but_never_delivered():
    v = history([("1", b"a"), ("2", b"b")], ["1", "2"], [("1", b"a")]).check()
    assert v.lost == ["2"] and not v.ok


def test_unacked_and_undelivered_is_not_lost():
    v = history([("1", b"a"), ("2", b"b")], ["1"], [("1", b"a")]).check()
    assert v.ok and v.lost == []


def test_unacked_but_delivered_is_fine_and_counted():
    v = history([("1", b"a")], [], [("1", b"a")]).check()
    assert v.ok and v.unacked_delivered == 1


def test_duplicated():
    v = history([("1", b"a")], ["1"], [("1", b"a"), ("1", b"a")]).check()
    assert v.duplicated == ["1"] and not v.ok


def test_unexpected_never_sent_or_altered():
    v = history([("1", b"a")], ["1"], [("1", b"X"), ("9", b"?")]).check()
    assert v.unexpected == ["1", "9"]


def test_reordered_within_a_conversation():
    v = history([("1", b"a"), ("2", b"b"), ("3", b"c")], ["1", "2", "3"],
                [("2", b"b"), ("1", b"a"), ("3", b"c")]).check()
    assert v.reordered == [("1", "2")] and not v.ok


def test_other_conversations_do_not_count_as_reordering():
    h = History()
    h.send("1", A, B, b"a")
    h.send("2", B, A, b"b")
    h.ack("1")
    h.ack("2")
    h.deliver("2", B, A, b"b")
    h.deliver("1", A, B, b"a")
    h.receipt("2", "delivered", A, B)
    h.receipt("1", "delivered", B, A)
    assert h.check().ok


def test_a_resend_keeps_its_first_place_in_the_order():
    h = history([("1", b"a"), ("2", b"b")], ["1", "2"])
    h.send("1", A, B, b"a")                       # resent after a reconnect
    h.deliver("1", A, B, b"a")
    h.deliver("2", A, B, b"b")
    assert h.check().reordered == []


def test_a_delivered_message_without_its_delivered_receipt_is_unticked():
    h = history([("1", b"a"), ("2", b"b")], ["1", "2"], [("1", b"a"), ("2", b"b")], ticks=False)
    h.receipt("1", "delivered", B, A)
    assert h.due() == 1
    v = h.check()
    assert v.unticked == ["delivered 2"] and not v.ok


def test_a_read_message_without_its_read_receipt_is_unticked():
    h = history([("1", b"a"), ("2", b"b")], ["1", "2"], [("1", b"a"), ("2", b"b")])
    h.read("1")
    h.read("2")
    h.receipt("2", "read", B, A)
    assert h.due() == 1
    v = h.check()
    assert v.unticked == ["read 1"] and v.read == 2 and not v.ok
    h.receipt("1", "read", B, A)
    assert h.check().ok and h.due() == 0


def test_a_receipt_twice_or_to_the_wrong_user_or_from_the_wrong_user_is_stray():
    for receipt in [("1", "delivered", B, A), ("1", "delivered", B, B),
                    ("1", "read", A, A), ("9", "read", B, A)]:
        h = history([("1", b"a")], ["1"], [("1", b"a")])
        h.receipt(*receipt)
        v = h.check()
        assert len(v.stray_receipts) == 1 and not v.ok, receipt


C, D = "+15550000053", "+15550000054"
GROUP = f"{A}/team"


def group_history(deliveries, receipts=None):
    """A sends "g1" and "g2" to GROUP (A, B, C): both acked; ``deliveries``
    are (id, member); receipts default to one per delivery."""
    h = History()
    for msg_id in ("g1", "g2"):
        h.send(msg_id, A, GROUP, msg_id.encode(), members=frozenset({A, B, C}))
        h.ack(msg_id)
    for msg_id, at in deliveries:
        h.deliver(msg_id, A, GROUP, msg_id.encode(), at=at)
    for msg_id, at in (deliveries if receipts is None else receipts):
        h.receipt(msg_id, "delivered", at, A)
    return h


def test_a_group_message_is_due_to_each_member_but_its_sender():
    every = [("g1", B), ("g1", C), ("g2", B), ("g2", C)]
    assert group_history(every).check().ok and group_history(every).due() == 0
    v = group_history(every[:3]).check()
    assert v.lost == [f"g2 to {C}"] and not v.ok
    assert group_history(every[:3]).due() == 1


def test_a_group_message_twice_to_one_member_or_to_a_non_member_is_caught():
    v = group_history([("g1", B), ("g1", C), ("g2", B), ("g2", C), ("g1", C)]).check()
    assert v.duplicated == [f"g1 to {C}"]
    v = group_history([("g1", B), ("g1", C), ("g2", B), ("g2", C), ("g1", D)]).check()
    assert v.unexpected == ["g1"]


def test_group_order_and_ticks_are_per_member():
    v = group_history([("g1", B), ("g2", B), ("g2", C), ("g1", C)]).check()
    assert v.reordered == [("g1", "g2")]
    v = group_history([("g1", B), ("g1", C), ("g2", B), ("g2", C)],
                      receipts=[("g1", B), ("g1", C), ("g2", B)]).check()
    assert v.unticked == [f"delivered g2 to {C}"]
    h = group_history([("g1", B), ("g1", C), ("g2", B), ("g2", C)])
    h.read("g1", by=C)
    assert h.check().unticked == [f"read g1 to {C}"]
    h.receipt("g1", "read", C, A)
    assert h.check().ok
    h.receipt("g1", "read", D, A)                 # D is not in the group
    assert h.check().stray_receipts == [f"read g1 from {D} to {A}"]
