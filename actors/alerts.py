"""Queue-length alerts with hysteresis: pure functions, the clock passed in.

A *subject* (one actor, or one worker's total) is observed once per sample.
Its alert walks a three-state machine, ``step``:

- **ok** (no ``Watch``): a value ``>= high`` starts a pending watch;
- **pending** (``Watch(raised=False)``): still ``>= high`` once ``sustain``
  seconds have passed since the first such value: **raised**; a value
  ``< high`` before that drops the watch (a short spike is not an alert);
- **raised** (``Watch(raised=True)``): a value ``<= low`` **clears** it;
  anything above ``low`` keeps it raised (the gap between ``low`` and
  ``high`` is the hysteresis: a queue hovering near ``high`` does not flap).

``AlertBook`` applies ``step`` to every subject of one kind per sample and
returns the transitions as ``AlertEvent`` records; a subject missing from a
sample counts as 0 (an actor that exited clears its alert). Like
``supervisor/restart_window.py`` this is bookkeeping only: the
``QueueMonitor`` decides when to sample and where events go.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Hashable, Literal

__all__ = ["Thresholds", "Watch", "AlertEvent", "AlertBook", "step"]

Transition = Literal["raised", "cleared"]


@dataclass(frozen=True)
class Thresholds:
    """Raise at ``value >= high`` held for ``sustain`` s; clear at ``value <= low``."""
    high: int
    low: int
    sustain: float = 5.0

    def __post_init__(self) -> None:
        if not 0 <= self.low < self.high:
            raise ValueError(f"need 0 <= low < high, got low={self.low} high={self.high}")
        if self.sustain < 0:
            raise ValueError("sustain must be >= 0")


@dataclass(frozen=True)
class Watch:
    """A subject at or above ``high``: since when, whether raised, its peak."""
    since: float
    raised: bool = False
    value: int = 0
    peak: int = 0
    raised_at: float | None = None


def step(watch: Watch | None, value: int, now: float, th: Thresholds
         ) -> tuple[Watch | None, Transition | None]:
    """One observation of one subject: the new watch (None: nothing to
    remember) and the transition it made, if any."""
    if watch is None:
        if value < th.high:
            return None, None
        watch = Watch(since=now, value=value, peak=value)
    elif not watch.raised:
        if value < th.high:
            return None, None                  # fell back before sustain: no alert
        watch = replace(watch, value=value, peak=max(watch.peak, value))
    else:
        if value <= th.low:
            return None, "cleared"
        return replace(watch, value=value, peak=max(watch.peak, value)), None
    if now - watch.since >= th.sustain:
        return replace(watch, raised=True, raised_at=now), "raised"
    return watch, None


@dataclass(frozen=True)
class AlertEvent:
    """A transition, as logged, shown and sent to sinks."""
    kind: str                 # "actor" | "worker"
    subject: str              # e.g. "<Session#12 '+15550001'>" or "worker 0 (pid 4242)"
    state: Transition
    value: int
    peak: int
    since: float              # first sample at or above high (book's clock)
    at: float                 # when the transition happened (book's clock)
    text: str

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "subject": self.subject, "state": self.state,
                "value": self.value, "peak": self.peak, "since": self.since,
                "at": self.at, "text": self.text}


class AlertBook:
    """The watches of one kind of subject (``"actor"`` or ``"worker"``)."""

    def __init__(self, kind: str, thresholds: Thresholds, what: str = "queue"):
        self.kind, self.th, self.what = kind, thresholds, what
        self.watches: dict[Hashable, Watch] = {}
        self.subjects: dict[Hashable, str] = {}

    def observe(self, values: dict[Hashable, tuple[int, str]], now: float) -> list[AlertEvent]:
        """One sample: ``values`` maps a subject's key to ``(value, label)``;
        keys watched but absent count as 0. Returns the transitions."""
        events = []
        for key in list(self.watches) + [k for k in values if k not in self.watches]:
            value, label = values.get(key, (0, self.subjects.get(key, str(key))))
            old = self.watches.get(key)
            new, transition = step(old, value, now, self.th)
            if new is None:
                self.watches.pop(key, None)
                self.subjects.pop(key, None)
            else:
                self.watches[key] = new
                self.subjects[key] = label
            if transition is not None:
                events.append(self._event(label, transition, value, new or old, now))
        return events

    def active(self) -> list[dict[str, Any]]:
        """The raised alerts, longest queue first."""
        rows = [{"kind": self.kind, "subject": self.subjects[key], "value": w.value,
                 "peak": w.peak, "since": w.since, "raised_at": w.raised_at,
                 "text": self._raised_text(self.subjects[key], w.value)}
                for key, w in self.watches.items() if w.raised]
        rows.sort(key=lambda row: -row["value"])
        return rows

    def _event(self, label: str, transition: Transition, value: int, watch: Watch,
               now: float) -> AlertEvent:
        if transition == "raised":
            text = self._raised_text(label, value)
        else:
            text = (f"{self.kind} {label} {self.what} {value} <= {self.th.low}: cleared "
                    f"(peak {watch.peak})")
        return AlertEvent(self.kind, label, transition, value, watch.peak, watch.since, now, text)

    def _raised_text(self, label: str, value: int) -> str:
        return (f"{self.kind} {label} {self.what} {value} >= {self.th.high} "
                f"for >= {self.th.sustain:g} s")
