"""The overload killer (off by default), after ejabberd's ``ejabberd_system_monitor``.

When the worker's resident memory passes a watermark, the actors with the
longest queues are the likeliest cause (a mailbox of 100,000 messages is
tens of MB) and the cheapest to lose: a session's state is in LMDB and its
supervisor restarts it, so killing it turns "the worker dies of memory" into
"a few users reconnect". ``victims`` picks whom to kill and
``OverloadPolicy.due`` decides when; both are pure. The ``QueueMonitor``
reads the RSS and sends the exit signals (``ref.exit("kill")``).

Caveat, measured on CPython: freed objects go back to pymalloc's arenas and
RSS falls only when whole arenas empty, so RSS can stay above the watermark
after a kill; ``cooldown`` keeps the killer from firing on every sample, and
each round only kills actors whose queue is still at least ``min_queue``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable

__all__ = ["OverloadPolicy", "rss_bytes", "victims", "PROTECTED_KINDS"]

_PAGE = os.sysconf("SC_PAGE_SIZE")

# Singletons whose loss costs more than their queue: supervisors (their
# children would go down with them), the monitor and listeners, the tables
# every session uses. Group actors too: their mailbox refuses past its bound
# (``overflow = "reject"``), so it cannot grow without limit, and a KILL skips
# the ``terminate`` that tells their members' clients to resend. A kind not
# listed here may be killed.
PROTECTED_KINDS = ("Supervisor", "QueueMonitor", "HttpListener", "Listener",
                   "SessionRegistry", "PresenceHub", "Registrar", "Group")


def rss_bytes(statm: str = "/proc/self/statm") -> int:
    """This process's resident set size (second field of ``statm``, in pages)."""
    try:
        with open(statm) as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


@dataclass(frozen=True)
class OverloadPolicy:
    """``rss_mb``: the watermark (None: the killer is off); each round kills
    at most ``kill`` actors whose queue is ``>= min_queue``, of kinds not in
    ``protect``; rounds are at least ``cooldown`` s apart."""
    rss_mb: float | None = None
    kill: int = 10
    min_queue: int = 100
    cooldown: float = 10.0
    protect: tuple[str, ...] = PROTECTED_KINDS

    @property
    def enabled(self) -> bool:
        return self.rss_mb is not None

    def due(self, rss: int, now: float, last_round: float | None) -> bool:
        """True when a round should run now."""
        if self.rss_mb is None or rss < self.rss_mb * 1024 * 1024:
            return False
        return last_round is None or now - last_round >= self.cooldown


def victims(backlogged: Iterable[Any], policy: OverloadPolicy) -> list[Any]:
    """The actors to kill: the ``policy.kill`` longest queues of at least
    ``min_queue``, protected kinds excepted. ``backlogged`` holds actor refs
    (anything with ``kind`` and ``mailbox_len``)."""
    candidates = [(ref.mailbox_len, i, ref) for i, ref in enumerate(backlogged)
                  if ref.kind not in policy.protect and ref.mailbox_len >= policy.min_queue]
    candidates.sort(key=lambda c: (-c[0], c[1]))
    return [ref for _, _, ref in candidates[:policy.kill]]
