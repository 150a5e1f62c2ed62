"""Child specifications and supervisor flags, with OTP's defaults.

``ChildSpec`` and ``SupFlags`` are frozen dataclasses whose defaults are those
of ``supervisor.erl`` (``?default_child_spec``, ``?default_flags``):
``restart="permanent"``, ``type="worker"``, ``shutdown`` 5 s for a worker and
``"infinity"`` for a supervisor; ``one_for_one`` with intensity 1, period 5.

``start`` names what to run: an actor class, or a module-qualified name
(``"actors.echo.Echo"``) resolved when the child starts, which is what crosses
a process boundary (the Python counterpart of OTP's ``{M, F, A}``). ``args``
are passed to it. ``worker()`` and ``supervisor()`` keep ``tree.py`` one line
per child.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Literal, Union

__all__ = ["ChildSpec", "SupFlags", "worker", "supervisor", "resolve",
           "RESTART_TYPES", "STRATEGIES"]

RESTART_TYPES = ("permanent", "transient", "temporary")
STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one", "simple_one_for_one")

Shutdown = Union[float, Literal["brutal_kill", "infinity"]]


@dataclass(frozen=True)
class SupFlags:
    """How a supervisor restarts: ``strategy``, and at most ``intensity``
    restarts in any ``period`` seconds before it gives up and exits."""

    strategy: str = "one_for_one"
    intensity: int = 1
    period: float = 5.0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; one of {STRATEGIES}")
        if self.intensity < 0 or self.period <= 0:
            raise ValueError("intensity must be >= 0 and period > 0")


@dataclass(frozen=True)
class ChildSpec:
    """One child of a supervisor (OTP's child_spec() map)."""

    id: Any
    start: Any                       # actor class or "module.Class"
    args: tuple = ()
    restart: str = "permanent"
    shutdown: Shutdown | None = None  # None: 5.0 for a worker, "infinity" for a supervisor
    type: Literal["worker", "supervisor"] = "worker"
    options: dict = field(default_factory=dict, compare=False)  # spawn options, e.g. mailbox_size

    def __post_init__(self) -> None:
        if self.restart not in RESTART_TYPES:
            raise ValueError(f"unknown restart type {self.restart!r}; one of {RESTART_TYPES}")
        if self.type not in ("worker", "supervisor"):
            raise ValueError(f"unknown child type {self.type!r}")
        if self.shutdown is None:
            object.__setattr__(self, "shutdown", 5.0 if self.type == "worker" else "infinity")
        elif not (self.shutdown in ("brutal_kill", "infinity")
                  or (isinstance(self.shutdown, (int, float)) and self.shutdown >= 0)):
            raise ValueError(f"bad shutdown {self.shutdown!r}")


def _default_id(start: Any) -> str:
    return start if isinstance(start, str) else f"{start.__module__}.{start.__qualname__}"


def worker(start: Any, *args: Any, id: Any = None, restart: str = "permanent",
           shutdown: Shutdown | None = None, **options: Any) -> ChildSpec:
    """A worker child spec; ``id`` defaults to the start name."""
    return ChildSpec(id or _default_id(start), start, args, restart, shutdown, "worker", options)


def supervisor(start: Any, *args: Any, id: Any = None, restart: str = "permanent",
               shutdown: Shutdown | None = None, **options: Any) -> ChildSpec:
    """A supervisor child spec; shutdown defaults to ``"infinity"``."""
    return ChildSpec(id or _default_id(start), start, args, restart, shutdown, "supervisor", options)


def resolve(start: Any) -> Any:
    """Turn ``"package.module.Name"`` into the object it names."""
    if not isinstance(start, str):
        return start
    module, _, name = start.rpartition(".")
    if not module:
        raise ValueError(f"start name must be module-qualified: {start!r}")
    return getattr(importlib.import_module(module), name)
