"""Chaos scenarios, judged by the history checker (``tests/history.py``).

Each scenario is seeded (the same seed makes the same choices), bounded in
time, and returns a ``ChaosResult``; the CI runs them in a short mode
(``tests/reliability/test_chaos.py``), ``run.py chaos`` in a long one with a
progress bar. The chat load is ``clients`` SDK clients, each sending to
random others at ``rate`` messages/s, recording every send, server ack and
delivery; after the chaos stops, every send is allowed to complete and every
acknowledged message to arrive (a final drain), then the history is checked.

- ``kill_sessions``: once per ``every`` seconds a random user's session
  actor is crashed; each must be running again (a new incarnation
  registered) within 1 s.
- ``escalation_storm``: sessions are crashed faster than the ``sessions``
  supervisor's intensity allows, so it gives up and ``chat`` restarts it
  (connections drop, clients reconnect); the root supervisor must stay up.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from actors.session_registry import session_of
from client import Backoff, Client, Message, Receipt, Sent, Status, Undecryptable
from client.groups import GroupMessage, GroupReceipt
from tests.history import History, Verdict
from transport.crypto import DeviceKey

FAST = dict(backoff=Backoff(initial=0.02, maximum=0.2), request_timeout=5.0, connect_timeout=3.0)


@dataclass
class ChaosResult:
    scenario: str
    seed: int
    verdict: Verdict
    kills: int = 0
    restart_ms: list[float] = field(default_factory=list)    # kill -> new incarnation
    slow_restarts: int = 0                                    # over restart_limit
    restart_limit: float = 1.0                                # seconds
    root_alive: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.verdict.ok and self.slow_restarts == 0 and self.root_alive

    def summary(self) -> str:
        restarts = (f", restart p50 {sorted(self.restart_ms)[len(self.restart_ms) // 2]:.1f} ms"
                    f" max {max(self.restart_ms):.1f} ms" if self.restart_ms else "")
        return (f"{self.scenario} seed {self.seed}: {self.verdict.summary()}; "
                f"{self.kills} kills{restarts}, {self.slow_restarts} over {self.restart_limit:g} s, "
                f"root {'up' if self.root_alive else 'DOWN'}"
                + "".join(f"; {note}" for note in self.notes))


_TICKS = {Status.DELIVERED: "delivered", Status.READ: "read"}
GROUP_SIZE = 5
GROUP_SHARE = 4


def phone(i: int) -> str:
    return f"+1555{7000000 + i:07d}"


class ChatLoad:
    """``clients`` SDK users chatting at random, recording a History. With
    several ``nodes`` (a cluster), user ``i`` registers on node ``i % n``.
    Users are also in groups of ``GROUP_SIZE`` (the first creates it), and
    one send in ``GROUP_SHARE`` goes to the sender's group."""

    def __init__(self, node: Any, clients: int, rate: float, rng: random.Random,
                 nodes: list[Any] | None = None):
        self.node, self.count, self.rate, self.rng = node, clients, rate, rng
        self.nodes = nodes or [node]
        self.history = History()
        self.clients: dict[str, Client] = {}
        self.tasks: list[asyncio.Future] = []
        self.pending: list[asyncio.Future] = []
        self.sending = True
        self.sequence = 0
        self.undecryptable: list[str] = []      # "id from sender: reason", for the notes
        self.failures: dict[str, int] = {}      # why sends (not a loss: never acked) or reads failed
        self.groups: dict[str, tuple[str, frozenset[str]]] = {}    # user -> (group, members)

    async def start(self) -> None:
        for i in range(self.count):
            user, key, node = phone(i), DeviceKey(), self.nodes[i % len(self.nodes)]
            client = await Client.connect(node.host, node.port, **FAST)
            await client.register(user)
            device = await client.confirm(user, node.codes[user], key)
            await client.login(user, device, key)
            self.clients[user] = client
        users = list(self.clients)
        for first in range(0, len(users) - 1, GROUP_SIZE):
            members = frozenset(users[first:first + GROUP_SIZE])
            group = await self.clients[users[first]].create_group(
                f"chaos{first}", f"chaos {first}", sorted(members - {users[first]}))
            self.groups.update((member, (group, members)) for member in members)
        for user, client in self.clients.items():
            self.tasks.append(asyncio.ensure_future(self._receive(user, client)))
            self.tasks.append(asyncio.ensure_future(self._send(user, client)))

    async def _send(self, user: str, client: Client) -> None:
        peers = [u for u in self.clients if u != user]
        while self.sending:
            to = self.rng.choice(peers)
            self.sequence += 1
            msg_id, body = f"c{self.sequence}", b"%d" % self.sequence
            if user in self.groups and self.sequence % GROUP_SHARE == 0:
                group, members = self.groups[user]
                self.history.send(msg_id, user, group, body, members)
                sending = client.send_group(group, body, id=msg_id)
            else:
                self.history.send(msg_id, user, to, body)
                sending = client.send(to, body, id=msg_id)
            self.pending.append(asyncio.ensure_future(self._acked(sending)))
            await asyncio.sleep(self.rng.expovariate(self.rate))

    async def _acked(self, sending: Any) -> None:
        try:
            sent: Sent = await sending
        except Exception as exc:
            self._failed("sends", exc)
            raise
        self.history.ack(sent.id)

    async def _receive(self, user: str, client: Client) -> None:
        async for event in client.events():
            if isinstance(event, Message):
                self.history.deliver(event.id, event.sender, user, event.body)
                if int(event.id[1:]) % 3 == 0:           # a third are read (blue ticks)
                    self.pending.append(asyncio.ensure_future(
                        self._read(client, event.sender, event.id)))
            elif isinstance(event, GroupMessage):
                self.history.deliver(event.id, event.sender, event.group, event.body, at=user)
                if int(event.id[1:]) % 3 == 0:
                    self.pending.append(asyncio.ensure_future(
                        self._read(client, event.sender, event.id, event.group)))
            elif isinstance(event, (Receipt, GroupReceipt)) and event.kind in _TICKS:
                self.history.receipt(event.id, _TICKS[event.kind], event.by, user)
            elif isinstance(event, Undecryptable):   # would show as "lost": say why
                self.undecryptable.append(f"{event.id} from {event.sender} to {user}: "
                                          f"{event.reason}")

    async def _read(self, client: Client, sender: str, msg_id: str,
                    group: str | None = None) -> None:
        """READ ``msg_id``, retried across reconnects (bounded); recorded
        once the server has acknowledged it."""
        for _ in range(20):
            try:
                if group is None:
                    await client.mark_read(sender, [msg_id])
                else:
                    await client.mark_group_read(group, sender, [msg_id])
            except Exception as exc:
                self._failed("reads", exc)
                await asyncio.sleep(0.1)
                continue
            self.history.read(msg_id, client.user)
            return

    def _failed(self, what: str, exc: BaseException) -> None:
        why = f"{what} failed: {type(exc).__name__}: {str(exc)[:80]}"
        self.failures[why] = self.failures.get(why, 0) + 1

    async def drain(self, timeout: float) -> None:
        """Stop sending; wait for every send to be acked, every acked
        message to be delivered, and every receipt due to arrive (bounded by
        ``timeout``)."""
        self.sending = False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pending = [f for f in self.pending if not f.done()]   # READs add to it
            if not self.pending and not self.history.due():
                return
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        for task in self.tasks + self.pending:
            task.cancel()
        await asyncio.gather(*self.tasks, *self.pending, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in self.clients.values()), return_exceptions=True)


async def _until(predicate: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        await asyncio.sleep(0.002)
    return None


async def _under_load(node: Any, name: str, seed: int, clients: int, rate: float,
                      chaos: Callable[[ChatLoad, ChaosResult, random.Random], Any],
                      alive: Callable[[], bool] | None = None,
                      nodes: list[Any] | None = None) -> ChaosResult:
    """Run ``chaos`` while ``clients`` chat; then drain, close and judge.
    ``alive`` says whether the node is still up (default: its root supervisor)."""
    rng = random.Random(seed)
    load = ChatLoad(node, clients, rate, rng, nodes)
    result = ChaosResult(name, seed, Verdict(0, 0, 0))
    await load.start()
    try:
        await chaos(load, result, rng)
        await load.drain(timeout=30.0)
    finally:
        await load.close()
    result.verdict = load.history.check()
    result.notes.extend(f"undecryptable: {u}" for u in load.undecryptable)
    result.notes.extend(f"{n} {why}" for why, n in load.failures.items())
    result.notes.extend(_whereabouts(node, load.history, lost) for lost in result.verdict.lost)
    result.root_alive = alive() if alive is not None else _root_alive(node)
    return result


def _whereabouts(node: Any, history: History, lost: str) -> str:
    """Where a lost message is, for the next look at a rare failure: still
    in the recipient's inbox (the server never got it to the client), or
    gone from it (acked: the client had it and did not report it)."""
    msg_id, _, member = lost.partition(" to ")          # "<id> to <member>": a group's
    sender, to = history.sends[msg_id][:2]
    if member:
        to = f"{member} (in {to})"
    system = getattr(node, "system", None)
    if system is None:
        return f"lost {msg_id} ({sender} -> {to})"
    items = system.env["mailbox"].inbox_after(member or to, 0, None)
    seqs = [i.seq for i in items if i.kind == "message" and i.payload.id == msg_id]
    where = f"still in the inbox at seq {seqs[0]}" if seqs else "not in the inbox (acked)"
    return f"lost {msg_id} ({sender} -> {to}): {where}, {len(items)} items held"


async def kill_sessions(node: Any, seed: int = 1, duration: float = 10.0, every: float = 1.0,
                        clients: int = 20, rate: float = 20.0,
                        progress: Callable[[float], None] | None = None) -> ChaosResult:
    async def chaos(load: ChatLoad, result: ChaosResult, rng: random.Random) -> None:
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < duration:
            await asyncio.sleep(every)
            user = rng.choice(list(load.clients))
            old = session_of(node.system, user)
            if old is None:
                continue
            killed = time.monotonic()
            old.exit(RuntimeError(f"chaos: killed {user}'s session"))
            result.kills += 1
            new = await _until(lambda: (s := session_of(node.system, user)) and s is not old, 1.0)
            if new is None:
                result.slow_restarts += 1
            else:
                result.restart_ms.append((time.monotonic() - killed) * 1000)
            if progress:
                progress(min(1.0, elapsed / duration))
    return await _under_load(node, "kill_sessions", seed, clients, rate, chaos)


async def escalation_storm(node: Any, seed: int = 1, duration: float = 6.0, clients: int = 10,
                           rate: float = 20.0, storms: int = 1,
                           progress: Callable[[float], None] | None = None) -> ChaosResult:
    async def chaos(load: ChatLoad, result: ChaosResult, rng: random.Random) -> None:
        sessions_sup = node.system.whereis("sessions")
        for storm in range(storms):
            await asyncio.sleep(duration / (storms + 1))
            # Crash sessions faster than 50 in 10 s: the sessions supervisor
            # gives up; ``chat`` (rest_for_one) restarts it and the listener.
            for _ in range(60):
                victim = session_of(node.system, rng.choice(list(load.clients)))
                if victim is not None:
                    victim.exit(RuntimeError("chaos: storm"))
                    result.kills += 1
                await asyncio.sleep(0.005)
            restarted = await _until(
                lambda: (s := node.system.whereis("sessions")) and s is not sessions_sup, 5.0)
            result.notes.append(f"storm {storm}: sessions supervisor "
                                f"{'restarted' if restarted else 'NOT restarted'}")
            if restarted is None:
                result.slow_restarts += 1
            sessions_sup = restarted or sessions_sup
            if progress:
                progress((storm + 1) / storms)
        await asyncio.sleep(duration / (storms + 1))
    return await _under_load(node, "escalation_storm", seed, clients, rate, chaos)


def _root_alive(node: Any) -> bool:
    root = node.system.whereis("root")
    return root is not None and root.is_alive


SCENARIOS = {"kill_sessions": kill_sessions, "escalation_storm": escalation_storm}
