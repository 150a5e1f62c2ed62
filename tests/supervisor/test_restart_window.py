"""``add_restart``: OTP's intensity/period bookkeeping, as a pure function of
explicit times. No clock and no sleeps: every time is written out."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisor.restart_window import add_restart


def replay(times, intensity, period):
    """Feed ``times`` one by one; return each verdict and the final window."""
    window, verdicts = (), []
    for now in times:
        ok, window = add_restart(window, now, intensity, period)
        verdicts.append(ok)
    return verdicts, window


def test_first_restart_is_within_intensity():
    assert add_restart((), now=100.0, intensity=1, period=5) == (True, (100.0,))


def test_one_more_than_intensity_in_period_is_too_many():
    assert replay([0, 1, 2, 3], intensity=3, period=10) == ([True, True, True, False], (3, 2, 1, 0))


def test_window_is_newest_first_and_trimmed_to_period():
    ok, window = add_restart((9.0, 7.0, 3.0), now=10.0, intensity=5, period=5)
    assert ok and window == (10.0, 9.0, 7.0)


def test_restarts_older_than_period_fall_out():
    # 3 in 10 s at t=0..2 is fine; by t=20 they have all fallen out
    verdicts, window = replay([0, 1, 2, 20, 21, 22], intensity=3, period=10)
    assert verdicts == [True] * 6 and window == (22, 21, 20)


def test_restart_exactly_period_old_stays():
    # As OTP's add_restart/3 (``R >= Threshold``): the window is [now - period, now].
    assert add_restart((0.0,), now=5.0, intensity=1, period=5) == (False, (5.0, 0.0))
    assert add_restart((0.0,), now=5.001, intensity=1, period=5) == (True, (5.001,))


def test_intensity_zero_allows_no_restart():
    assert add_restart((), now=0.0, intensity=0, period=5) == (False, (0.0,))
    assert replay([0, 100, 200], intensity=0, period=5)[0] == [False] * 3


def test_sliding_window():
    # intensity 2 in 10 s: a third restart is refused while the first is
    # still inside the window and allowed once it has slid out
    assert replay([0, 6, 9.5], intensity=2, period=10)[0] == [True, True, False]
    assert replay([0, 6, 10.5], intensity=2, period=10) == ([True, True, True], (10.5, 6))


def test_a_refused_restart_is_still_recorded():
    # as in OTP: the supervisor is shutting down anyway
    assert replay([0, 1, 2], intensity=1, period=10) == ([True, False, False], (2, 1, 0))


def test_input_is_not_changed():
    before = (4.0, 3.0)
    add_restart(before, now=5.0, intensity=1, period=5)
    assert before == (4.0, 3.0)


@given(                                 # integer seconds, as OTP's monotonic_time(1)
    st.lists(st.integers(0, 1000), max_size=30).map(sorted),
    st.integers(0, 10),
    st.integers(1, 100),
)
def test_agrees_with_counting_restarts_in_the_last_period(times, intensity, period):
    window = ()
    for i, now in enumerate(times):
        ok, window = add_restart(window, now, intensity, period)
        in_period = [t for t in times[: i + 1] if now - t <= period]
        assert ok == (len(in_period) <= intensity)
        assert window[0] == now and all(now - t <= period for t in window)
        assert list(window) == sorted(window, reverse=True)


@pytest.mark.parametrize("restarts, now", [((), 0.0), ((1.0,), 2.0)])
def test_returns_a_tuple(restarts, now):
    assert isinstance(add_restart(restarts, now, 1, 5)[1], tuple)
