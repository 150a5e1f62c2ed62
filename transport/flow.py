"""Flow control for client connections: the limits a ``Connection`` applies
so that no client can take the worker down for the others.

- **Window**: at most ``max_in_flight`` requests of one connection handed
  on (to its session, to the registrar) and not yet answered. Past it the
  connection stops reading its socket (``transport.pause_reading``) and
  keeps what it already read, in order, until answers come back; TCP then
  pushes back on the client. One connection can therefore never overflow its
  session's mailbox, however many frames it pipelines. While reading is
  paused the heartbeat does not judge the client's silence (its PINGs wait
  unread in the kernel), and resuming counts as hearing from it.
- **Output**: inbox pushes stop while the socket's write buffer is above
  ``push_high`` (asyncio's ``pause_writing``) and resume from the last item
  taken when it drains below ``push_low`` (``ResumePushes``): the inbox in
  LMDB is the queue, not the process's memory (typing events, being
  ephemeral, are dropped meanwhile; answers and presence always go out). A
  client backed up for ``slow_consumer_timeout`` seconds, or whose buffered
  output passes ``max_output`` anyway, is closed with SLOW_CONSUMER; its
  messages stay in its inbox until it reconnects.
- **Rates** (token buckets, ``actors.rate_limit.TokenBuckets``): frames per
  connection, SENDs per user, SENDs per (sender, recipient), group changes
  per user (``CHANGES``: each writes a system event into every member's
  inbox, so they are budgeted like messages, only tighter; leaving a group
  is never limited). An over-rate frame gets ERROR RATE_LIMITED with
  ``retry_after`` (ms) and has no effect; the connection stays open. After
  a refused SEND the connection refuses every other SEND until that one
  comes again, so a pipelining client cannot have a later message overtake
  the refused one; so too after a SEND the session lost in a restart
  (``Connection.bind``, answered INTERNAL), and after one sealed for a
  device its recipient has replaced (STALE_DEVICE, ``transport.device_check``;
  the client seals it again). A client that cannot seal such a SEND again
  gives it up by sending it once more as it was (naming the same device):
  refused STALE_DEVICE again, it does not set the gate again
  (``gate_stale``: the device the refused SEND named). Sealed again for a
  device that was replaced too meanwhile, it sets it again.

``FlowConfig`` holds the limits and their defaults (docs/operations.md);
``Limits`` the buckets, shared by a listener's connections. The defaults
leave room for the benchmarks (100 pairs at ~25k msgs/s) and the tests:
they stop abuse, not traffic.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, fields
from typing import Any, Callable

from actors.messages import ResumePushes
from actors.rate_limit import TokenBuckets, take_all
from transport import wire
from transport.device_check import stale_text

__all__ = ["FlowConfig", "Limits", "FlowControl", "SENDS", "CHANGES", "RATED", "retry_ms"]

SENDS = (wire.Send, wire.GroupSend)     # share one id space, one budget and one gate
CHANGES = (wire.GroupCreate, wire.GroupAdd, wire.GroupRemove, wire.GroupRename, wire.GroupAdmin)
RATED = frozenset(SENDS + CHANGES)      # what ``FlowControl.admit`` budgets per user


@dataclass(frozen=True)
class FlowConfig:
    max_in_flight: int = 1_000              # unanswered requests per connection, then pause reading
    push_high: int = 256 * 1024             # write-buffer bytes: stop inbox pushes above this
    push_low: int = 64 * 1024               # ... and resume below this
    max_output: int = 1024 * 1024           # buffered output bytes: past this, SLOW_CONSUMER
    slow_consumer_timeout: float = 10.0     # seconds backed up without catching up: SLOW_CONSUMER
    frame_rate: float = 10_000.0            # frames/s per connection (0: no limit) ...
    frame_burst: int = 20_000               # ... saved up to this many
    send_rate: float = 2_000.0              # SENDs/s per user (0: no limit) ...
    send_burst: int = 20_000
    pair_rate: float = 1_000.0              # SENDs/s from one sender to one recipient (0: no limit) ...
    pair_burst: int = 10_000
    change_rate: float = 10.0               # group changes/s per user (0: no limit) ...
    change_burst: int = 100

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "FlowConfig":
        """The node config's keys of the same names (``run.py node --set``)."""
        kinds = {f.name: type(f.default) for f in fields(cls)}
        return cls(**{k: kinds[k](config[k]) for k in kinds if config.get(k) is not None})


def retry_ms(wait: float) -> int:
    return max(1, math.ceil(wait * 1000))


class Limits:
    """The token buckets of one listener: ``sends`` and ``changes`` keyed by
    user, ``pairs`` by (sender, recipient). ``admit_send`` and
    ``admit_change`` return 0.0 and count the frame, or the seconds to wait
    (nothing counted). (A connection's own frame bucket is two numbers on
    the connection: ``FlowControl.admit_frame``.)"""

    def __init__(self, cfg: FlowConfig, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.sends = _buckets(cfg.send_rate, cfg.send_burst, clock)
        self.pairs = _buckets(cfg.pair_rate, cfg.pair_burst, clock)
        self.changes = _buckets(cfg.change_rate, cfg.change_burst, clock)

    def admit_change(self, user: str) -> tuple[float, str]:
        """(0.0, "") if ``user`` may change a group now, else (wait, why)."""
        changes = self.changes
        if changes is None:
            return 0.0, ""
        refused, wait = take_all(((changes, user),), self.clock())
        if refused < 0:
            return 0.0, ""
        return wait, f"over {changes.rate:g} group changes/s for {user}"

    def admit_send(self, user: str, to: str) -> tuple[float, str]:
        """(0.0, "") if ``user`` may send to ``to`` now, else (wait, which limit)."""
        sends, pairs = self.sends, self.pairs
        if sends is not None and pairs is not None:     # the default: both
            claims: tuple = ((sends, user), (pairs, (user, to)))
        elif sends is not None:
            claims = ((sends, user),)
        elif pairs is not None:
            claims = ((pairs, (user, to)),)
        else:
            return 0.0, ""
        refused, wait = take_all(claims, self.clock())
        if refused < 0:
            return 0.0, ""
        buckets = claims[refused][0]
        if buckets is sends:
            return wait, f"over {sends.rate:g} messages/s for {user}"
        return wait, f"over {pairs.rate:g} messages/s from {user} to {to}"


def _buckets(rate: float, burst: int, clock: Callable[[], float]) -> TokenBuckets | None:
    return TokenBuckets(rate, burst, clock) if rate > 0 else None


class FlowControl:
    """The flow-control half of ``transport.tcp.Connection`` (a mixin: it
    uses the connection's ``transport``, ``session``, ``dispatch``, ``send``
    and ``fail``). See the module docstring."""

    __slots__ = ()                      # Connection's slots hold the state

    def init_flow(self, flow: FlowConfig, limits: Limits) -> None:
        self.flow, self.limits = flow, limits
        self.outstanding: dict[int, int] = {}   # ref -> commands handed to the session, unanswered
        self.sends_out: dict[int, str] = {}     # ref -> id of each SEND among them
        self.in_flight = 0                  # requests handed on, not yet answered (the window)
        self.held: deque[wire.Frame] | None = None  # frames read while the window was full
        self.held_error: wire.FrameError | None = None  # what ends them, if a frame was bad
        self.draining = False               # a drain of ``held`` is scheduled
        self.reading = True
        self.send_gate: str | None = None   # a SEND refused for rate: no other SEND until it returns
        self.gate_stale: int | None = None  # ... or refused STALE_DEVICE: the device it named
        self.out_bytes = 0                  # in ``out``, not yet written
        self.buffered = 0                   # in the transport, as last read (it only shrinks)
        self.write_paused = False           # the transport is above its high-water mark
        self.backed_up_since: float | None = None  # inbox pushes refused since (loop time)
        self.resuming = False               # ResumePushes cast, not yet handled
        self.pushed_seq = 0                 # last inbox item taken from the session
        self.slow = False                   # SLOW_CONSUMER sent
        self.tokens, self.tokens_at = float(flow.frame_burst), time.monotonic()  # frame bucket

    # -- the window of requests in flight ---------------------------------------------------
    def drain_held(self) -> None:
        """Dispatch held frames while the window has room; stop reading the
        socket while it is full (TCP pushes back on the client)."""
        self.draining = False
        held, window = self.held, self.flow.max_in_flight
        while held and not self.closed:
            if self.in_flight >= window:
                if self.reading and self.transport is not None:
                    self.reading = False
                    self.transport.pause_reading()
                return
            self.dispatch(held.popleft())
        self.held = None                    # drained (an idle connection keeps no deque), or
        if self.closed:                     # a fatal frame ended it: the rest is not handled
            return
        if self.held_error is not None:
            error, self.held_error = self.held_error, None
            self.fail(error.ref, error.code, error.message)
        elif not self.reading and not self.closed:
            self.reading = True
            self.last_heard = self.loop.time()  # silence while paused was ours, not the client's
            self.transport.resume_reading()

    def answered(self, ref: int) -> bool:
        """A request handed to the session got its answer; False when it
        has had one already (``bind`` failed it when the session restarted,
        and the group actor it was forwarded to answers it anyway)."""
        count = self.outstanding.get(ref)
        if count is None:
            return False
        sends = self.sends_out
        if sends and sends.pop(ref, None) is not None and not sends:
            self.sends_out = {}             # as ``outstanding``: no emptied table kept per user
        if count > 1:
            self.outstanding[ref] = count - 1
        elif len(self.outstanding) == 1:
            self.outstanding = {}           # an emptied dict keeps its table (~160 B a user)
        else:
            del self.outstanding[ref]
        self.window_freed()
        return True

    def window_freed(self, requests: int = 1) -> None:
        self.in_flight -= requests
        if self.held and not self.draining:
            self.draining = True
            self.loop.call_soon(self.drain_held)

    # -- output: hold inbox pushes back while the client is slow --------------------------
    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self.ask_resume()

    def over_high(self) -> bool:
        """Would what waits here and in the transport pass ``push_high``?
        (The transport's size is read again only when the cheap sum says so.)"""
        high = self.flow.push_high
        if self.out_bytes + self.buffered <= high:
            return False
        self.buffered = self.transport.get_write_buffer_size() if self.transport else 0
        return self.out_bytes + self.buffered > high

    def resume(self) -> None:
        """The session took our ``ResumePushes``: take its pushes again."""
        self.backed_up_since, self.resuming = None, False

    def ask_resume(self) -> None:
        """Backed up, and the socket drained: ask the session for the rest."""
        if self.backed_up_since is not None and not self.resuming and not self.write_paused \
                and self.session is not None and not self.closed:
            self.resuming = True
            self.session.cast(ResumePushes(self.pushed_seq, self))

    # -- rates --------------------------------------------------------------------------
    def admit_frame(self) -> float:
        """Take a token from this connection's frame bucket: 0.0, or the
        seconds until there is one (nothing taken)."""
        rate = self.flow.frame_rate
        if rate <= 0:
            return 0.0
        now = time.monotonic()
        tokens = min(self.flow.frame_burst, self.tokens + (now - self.tokens_at) * rate)
        self.tokens_at = now
        if tokens < 1.0 - 1e-9:
            self.tokens = tokens
            return (1.0 - tokens) / rate
        self.tokens = tokens - 1.0
        return 0.0

    def admit(self, frame: wire.Frame) -> bool:
        """A frame of ``RATED`` within its user's budgets? Else it is refused."""
        if type(frame) in CHANGES:
            wait, why = self.limits.admit_change(self.user)
            if wait:
                self.refuse(frame, wait, why)
                return False
            return True
        return self.admit_send(frame)

    def admit_send(self, frame: wire.Send | wire.GroupSend) -> bool:
        gate = self.send_gate
        if gate is not None and frame.id != gate:
            self.refuse(frame, 0.001, f"send {gate} again first (it was refused)")
            return False
        to = frame.to if type(frame) is wire.Send else frame.group     # a group is one recipient
        wait, why = self.limits.admit_send(self.user, to)
        if wait:
            self.refuse(frame, wait, why)
            return False
        self.send_gate = None
        if type(frame) is wire.Send and frame.device is not None:
            stale = stale_text(self.system, self.user, frame)
            if stale is not None:
                self.refuse_stale(frame, stale, gave_up=gate is not None
                                  and self.gate_stale == frame.device)
                return False
        return True

    def refuse_stale(self, frame: wire.Send, why: str, gave_up: bool = False) -> None:
        """ERROR STALE_DEVICE: nothing stored; the gate holds every other SEND
        back until this one comes again (``gave_up``: it is the gated SEND
        itself, as it was: nothing is gated)."""
        if not gave_up:
            self.send_gate, self.gate_stale = frame.id, frame.device
        self.send(wire.Error(wire.ErrorCode.STALE_DEVICE, why[:256], ref=frame.ref))

    def refuse(self, frame: wire.Frame, wait: float, why: str) -> None:
        """ERROR RATE_LIMITED: the frame had no effect; try again in ``wait`` s."""
        if type(frame) in SENDS and self.send_gate is None and self.state == "logged_in":
            self.send_gate, self.gate_stale = frame.id, None
        self.send(wire.Error(wire.ErrorCode.RATE_LIMITED, f"{why}; retry in {wait:.3f} s"[:256],
                             retry_ms(wait), ref=frame.ref))
