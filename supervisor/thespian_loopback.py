"""Make every Thespian listener bind the address Switchboard was told to bind.

Thespian 4.0.1 binds each TCP listener (the Admin's, the logger's and every
actor's) to all interfaces: ``IPActorAddress.__init__`` in
``thespian/system/transport/IPBase.py`` sets ``bindname = ('', port)`` for
every "external" address, and ``THESPIAN_BASE_IPADDR`` only changes the
address a listener *advertises*, not the one it binds. Every ``bind()`` in
``TCPTransport.py`` (and ``UDPTransport.py``) goes through the one property
``IPActorAddress.bindArgs``, so that property is the smallest place to fix:
``confine_listeners(bind)`` replaces it with one that turns a wildcard host
(``''`` or ``'0.0.0.0'``) into ``bind``, and sets ``THESPIAN_BASE_IPADDR`` so
that the addresses actors hand each other are the same ``bind``.

Reach into child processes: multiprocTCPBase starts the Admin, the logger and
every actor with ``multiprocessing`` in its ``fork`` start method (the
default of ``get_multiproc_context``; the launcher asks for it explicitly
with the ``Process Startup Method`` capability), so a patch applied in the
launcher before the ActorSystem starts is inherited by every process of the
node. For a ``spawn`` start the address is also exported as
``SWITCHBOARD_THESPIAN_BIND`` and re-applied by ``apply_from_environment()``,
which the actor modules of ``supervisor/`` call when they are imported.

``confine_listeners("0.0.0.0")`` (an operator asking for all interfaces)
leaves Thespian's own behaviour alone.

This module also holds the transport tuning read from the environment when
Thespian's transport is first imported (``tune_transport_environment``).
"""

from __future__ import annotations

import os
import sys

__all__ = ["confine_listeners", "apply_from_environment", "bound_host",
           "tune_transport_environment", "BIND_ENV"]

BIND_ENV = "SWITCHBOARD_THESPIAN_BIND"
_WILDCARDS = ("", "0.0.0.0")
_bind_host: str | None = None

# THESPIAN_MAX_QUEUED_TRANSMITS: every send() scans the whole queue of pending
# transmits (asyncTransportBase._complete_expired_intents), so a short queue
# makes fan-out faster (measured 3x in DESIGN.md). The other two are derived
# from it in Thespian (unblock 780, drop = max + 100): keep them consistent,
# and keep the drop level at Thespian's stock 1050 so that a short queue means
# "drain before accepting more", never "silently drop sends past 150".
_TRANSPORT_DEFAULTS = {
    "THESPIAN_MAX_QUEUED_TRANSMITS": "50",
    "THESPIAN_QUEUED_TRANSMIT_UNBLOCK_THRESHOLD": "40",
    "THESPIAN_DROP_TRANSMITS_LEVEL": "1050",
    # A cluster member re-registers with the convention leader every 5 s
    # (Thespian's default is 7 min 22 s), so a restarted leader knows its
    # members again within seconds (docs/cluster.md); M:S format.
    "CONVENTION_REREGISTRATION_PERIOD": "0:05",
    "CONVENTION_RESTART_PERIOD": "0:03",
}


def tune_transport_environment() -> None:
    """Set Switchboard's Thespian transport tuning unless the operator set it.

    Thespian reads these once, when ``asyncTransportBase`` is imported; if it
    already is (in a test process, say), its constants are updated too."""
    for name, value in _TRANSPORT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    module = sys.modules.get("thespian.system.transport.asyncTransportBase")
    if module is not None:
        module.MAX_QUEUED_TRANSMITS = int(os.environ["THESPIAN_MAX_QUEUED_TRANSMITS"])
        module.QUEUE_TRANSMIT_UNBLOCK_THRESHOLD = int(
            os.environ["THESPIAN_QUEUED_TRANSMIT_UNBLOCK_THRESHOLD"])
        module.DROP_TRANSMITS_LEVEL = int(os.environ["THESPIAN_DROP_TRANSMITS_LEVEL"])


def _confined_bind_args(self):  # replaces IPActorAddress.bindArgs
    host, port, *rest = self.bindname
    if _bind_host is not None and host in _WILDCARDS:
        return ((_bind_host, port, *rest),)
    return (self.bindname,)


def confine_listeners(bind: str = "127.0.0.1") -> None:
    """Make every Thespian listener of this process, and of the processes it
    forks from now on, bind ``bind`` instead of all interfaces.

    Call it before the ActorSystem starts. Idempotent."""
    global _bind_host
    from thespian.system.transport import IPBase

    if bind in _WILDCARDS:                 # all interfaces: Thespian's own behaviour
        if _bind_host is not None and os.environ.get("THESPIAN_BASE_IPADDR") == _bind_host:
            del os.environ["THESPIAN_BASE_IPADDR"]
        os.environ.pop(BIND_ENV, None)
        _bind_host = None
        return
    _bind_host = bind
    os.environ["THESPIAN_BASE_IPADDR"] = bind
    os.environ[BIND_ENV] = bind
    # ThisSystem read THESPIAN_BASE_IPADDR when IPBase was imported, possibly
    # before it was set: make sure it treats ``bind`` as one of its own.
    IPBase.thisSystem.add_local_addr(bind)
    IPBase.IPActorAddress.bindArgs = property(_confined_bind_args)


def apply_from_environment() -> None:
    """Re-apply ``confine_listeners`` in a process started by ``spawn``."""
    bind = os.environ.get(BIND_ENV)
    if bind and _bind_host != bind:
        confine_listeners(bind)


def bound_host() -> str | None:
    """The host Thespian listeners are confined to here, or None."""
    return _bind_host
