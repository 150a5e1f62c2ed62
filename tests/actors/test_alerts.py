"""Alert hysteresis as pure functions: the clock is a number the test picks."""

import pytest

from actors.alerts import AlertBook, Thresholds, Watch, step

TH = Thresholds(high=100, low=10, sustain=5.0)


def test_a_value_below_high_leaves_nothing_to_remember():
    assert step(None, 99, 0.0, TH) == (None, None)


def test_raised_only_after_sustain_seconds_at_or_above_high():
    watch, t = step(None, 100, 0.0, TH)
    assert t is None and watch == Watch(since=0.0, value=100, peak=100)
    watch, t = step(watch, 150, 4.9, TH)
    assert t is None and not watch.raised and watch.peak == 150
    watch, t = step(watch, 120, 5.0, TH)
    assert t == "raised" and watch.raised and watch.raised_at == 5.0 and watch.peak == 150


def test_a_spike_shorter_than_sustain_is_not_an_alert():
    watch, _ = step(None, 500, 0.0, TH)
    assert step(watch, 99, 1.0, TH) == (None, None)


def test_hysteresis_keeps_it_raised_between_low_and_high_then_clears_at_low():
    watch, _ = step(None, 200, 0.0, TH)
    watch, t = step(watch, 200, 5.0, TH)
    assert t == "raised"
    for value in (99, 50, 11):                   # below high, above low: still raised
        watch, t = step(watch, value, 6.0, TH)
        assert t is None and watch.raised
    assert step(watch, 10, 7.0, TH) == (None, "cleared")


def test_zero_sustain_raises_on_the_first_sample():
    _, t = step(None, 100, 0.0, Thresholds(100, 10, sustain=0))
    assert t == "raised"


@pytest.mark.parametrize("high, low, sustain", [(10, 10, 1), (10, 20, 1), (10, -1, 1), (10, 1, -1)])
def test_bad_thresholds_are_refused(high, low, sustain):
    with pytest.raises(ValueError):
        Thresholds(high, low, sustain)


def test_book_raises_and_clears_per_subject_and_a_missing_subject_counts_as_zero():
    book = AlertBook("actor", Thresholds(100, 10, sustain=1.0))
    # Step 1: two actors back up; only the one that stays up past sustain is raised.
    assert book.observe({1: (150, "<A#1>"), 2: (300, "<B#2>")}, now=0.0) == []
    events = book.observe({1: (150, "<A#1>")}, now=1.0)          # 2 dropped back: no alert
    assert [(e.subject, e.state) for e in events] == [("<A#1>", "raised")]
    assert events[0].text == "actor <A#1> queue 150 >= 100 for >= 1 s"
    assert [a["subject"] for a in book.active()] == ["<A#1>"]
    # Step 2: actor 1 exits (absent from the sample): its alert clears.
    events = book.observe({}, now=2.0)
    assert [(e.subject, e.state, e.value, e.peak) for e in events] == [("<A#1>", "cleared", 0, 150)]
    assert "cleared (peak 150)" in events[0].text
    assert book.active() == [] and book.watches == {}
