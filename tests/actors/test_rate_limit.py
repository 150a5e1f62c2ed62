"""Token buckets (``actors.rate_limit.TokenBuckets``) with the clock passed
in, and the flow limits read from the node config."""

from __future__ import annotations

import pytest

from actors.rate_limit import TokenBuckets, take_all
from transport.flow import FlowConfig, Limits


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_rate():
    clock = Clock()
    buckets = TokenBuckets(rate=10, burst=3, clock=clock)
    for _ in range(3):                              # the burst
        assert buckets.wait("a") == 0.0
        buckets.take("a")
    assert buckets.wait("a") == pytest.approx(0.1)  # empty: one token per 0.1 s
    clock.now += 0.05
    assert buckets.wait("a") == pytest.approx(0.05)
    clock.now += 0.05
    assert buckets.wait("a") == 0.0
    assert buckets.wait("b") == 0.0                 # keys are independent


def test_refilled_buckets_are_swept():
    clock = Clock()
    buckets = TokenBuckets(rate=10, burst=2, clock=clock)
    buckets.take("a")
    buckets.take("b")
    buckets.take("b")
    clock.now += 0.1                                # a is full again, b is not
    buckets.sweep()
    assert len(buckets) == 1 and buckets.wait("b") == 0.0


def test_a_pair_is_limited_apart_from_the_user():
    clock = Clock()
    limits = Limits(FlowConfig(send_rate=100, send_burst=10, pair_rate=1, pair_burst=2), clock)
    assert limits.admit_send("u", "x") == (0.0, "") and limits.admit_send("u", "x") == (0.0, "")
    wait, why = limits.admit_send("u", "x")
    assert wait == pytest.approx(1.0) and "from u to x" in why
    assert limits.admit_send("u", "y") == (0.0, "")     # another recipient: fine
    for _ in range(7):
        limits.admit_send("u", f"z{_}")
    wait, why = limits.admit_send("u", "w")               # the user's 10 are used up
    assert wait > 0 and "for u" in why


def test_take_all_takes_from_every_bucket_or_from_none():
    clock = Clock()
    users = TokenBuckets(rate=10, burst=3, clock=clock)
    pairs = TokenBuckets(rate=1, burst=1, clock=clock)
    assert take_all(((users, "u"), (pairs, ("u", "x"))), clock.now) == (-1, 0.0)
    assert users.wait("u") == 0.0 and pairs.wait(("u", "x")) == pytest.approx(1.0)
    refused, wait = take_all(((users, "u"), (pairs, ("u", "x"))), clock.now)
    assert refused == 1 and wait == pytest.approx(1.0)
    assert take_all(((users, "u"), (pairs, ("u", "y"))), clock.now) == (-1, 0.0)
    assert take_all(((users, "u"), (pairs, ("u", "z"))), clock.now) == (-1, 0.0)   # u's 3rd:
    refused, wait = take_all(((users, "u"), (pairs, ("u", "w"))), clock.now)    # the refused
    assert refused == 0 and wait == pytest.approx(0.1)      # claim on x did not spend one
    assert len(pairs) == 3                  # w was not reached: no bucket made for it
    assert pairs.wait(("u", "w")) == 0.0
    clock.now += 1.0
    pairs.sweep()
    assert len(pairs) == 0                  # all refilled: swept


def test_the_bucket_a_sweep_comes_with_is_charged():
    # Every 1,024th new key sweeps full buckets: the new key's own bucket,
    # full until its token is taken, must not be swept away with them.
    clock = Clock()
    buckets = TokenBuckets(rate=1, burst=1, clock=clock)
    for key in range(2 * 1024 + 1):
        assert take_all(((buckets, key),), clock.now) == (-1, 0.0)
    assert len(buckets) == 2 * 1024 + 1
    assert all(buckets.wait(key) == pytest.approx(1.0) for key in range(2 * 1024 + 1))


def test_a_send_refused_for_its_pair_costs_the_user_nothing():
    clock = Clock()
    limits = Limits(FlowConfig(send_rate=1, send_burst=2, pair_rate=1, pair_burst=1), clock)
    assert limits.admit_send("u", "x") == (0.0, "")
    for _ in range(5):                      # refused for the pair, again and again
        assert "from u to x" in limits.admit_send("u", "x")[1]
    assert limits.admit_send("u", "y") == (0.0, "")      # the user's second token is intact
    wait, why = limits.admit_send("u", "z")
    assert wait == pytest.approx(1.0) and "for u" in why


def test_flow_config_from_the_node_config():
    cfg = FlowConfig.from_config({"send_rate": "50", "max_in_flight": 7.0, "port": 1,
                                  "pair_rate": None})
    assert cfg.send_rate == 50.0 and cfg.max_in_flight == 7 and cfg.pair_rate == FlowConfig.pair_rate
    assert Limits(FlowConfig(frame_rate=0, send_rate=0, pair_rate=0)).admit_send("u", "x") == (0.0, "")
