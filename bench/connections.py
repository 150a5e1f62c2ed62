"""``run.py bench connections [N]``: N logged-in, idle, heartbeating users
held by one node (default 100,000; ``--quick``: 2,000).

The open-file limit is 20,000 per process here and cannot be raised, so:

- the node runs ``--workers`` W processes sharing the port (SO_REUSEPORT;
  default: one per 15,000 users);
- the load generator runs ``--clients`` C processes (default: one per
  15,000 users), each connecting from its own loopback source address
  (127.0.0.2, 127.0.0.3, ...: bind before connect), so no (source, server)
  pair runs out of ephemeral ports (28,232 here);
- every process raises its soft open-file limit to the hard one.

Registration (``--register``): ``protocol`` registers every user through
REGISTER / CONFIRM (the code from the node's code file); ``direct`` writes
the accounts straight into the node's LMDB with the storage API
(``register_device``) before the node starts; ``auto`` (the default) first
registers a sample (``--sample``, 2,000) through the protocol on a node of
its own to measure the rate, and provisions the rest directly when N is
larger than the sample. The output says which was done and how long the
protocol would have taken for all N.

Then the C client processes log every user in (HELLO, LOGIN with the
device's Ed25519 signature, then one PING: the LOGIN ack comes before the
session is open, the PING's ack comes from the session), at most
``--concurrency`` logins in flight each (a failed one is retried twice on a
new connection), and keep the connections idle, each PINGing once per
heartbeat (``--heartbeat``, 30 s; the first after 0.8-1.0 of it, then every
0.9). Reported: logins/s (first connect to the last first-PING ack) and
the CPU per login; server memory per connected user (the sum over the
workers and their LMDB writers of PSS, after all N are connected minus
before, / N; again after ``--hold`` s of heartbeats; PSS, not RSS, because
every worker and writer maps the same LMDB pages and RSS counts them in
each: VmRSS and RssAnon are printed beside it) and the workers' CPU
while they hold them; the kernel's TCP buffer memory and slab growth per
connection from /proc (both ends of each loopback connection are on this
machine); the total time.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import socket
import time
from typing import Any

from bench.host import cpu_seconds, machine_cpu, raise_nofile, sockstat
from bench.loadgen import (BenchError, LaunchedNode, WireClient, phone, provision, recv_report,
                           run_client_process, start_client_processes, stop_client_processes)
from transport import wire

__all__ = ["add_arguments", "main"]

PREFIX = "+1777"
PER_PROCESS = 12_500          # users per worker / client process by default (limit 20,000 fds)
TARGET_BYTES = 10 * 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("n", nargs="?", type=int, default=None,
                        help="users to hold (default 100,000; --quick: 2,000)")
    if "--quick" not in parser._option_string_actions:
        parser.add_argument("--quick", action="store_true", help="2,000 users")
    parser.add_argument("--workers", type=int, default=0,
                        help=f"node worker processes (default: one per {PER_PROCESS:,} users)")
    parser.add_argument("--clients", type=int, default=0,
                        help=f"load-generator processes (default: one per {PER_PROCESS:,} users)")
    parser.add_argument("--register", choices=["auto", "protocol", "direct"], default="auto",
                        help="how accounts are created (default auto: a protocol sample, the rest direct)")
    parser.add_argument("--sample", type=int, default=2000,
                        help="users registered through the protocol to measure its rate (default 2,000)")
    parser.add_argument("--concurrency", type=int, default=50,
                        help="logins in flight per client process (default 50)")
    parser.add_argument("--heartbeat", type=float, default=30.0, help="heartbeat asked in HELLO, s (default 30)")
    parser.add_argument("--hold", type=float, default=10.0,
                        help="seconds to hold the users once all are in (default 10)")


# -- a client process -------------------------------------------------------------------
class Idle(WireClient):
    """A logged-in user doing nothing but PINGing."""

    errors: dict | None = None

    def on_frames(self, frames: list) -> None:
        for f in frames:
            if type(f) is wire.Error:
                if self.errors is None:
                    self.errors = {}
                self.errors[f.code.name] = self.errors.get(f.code.name, 0) + 1
                if f.ref == 0:                  # about the connection: fail what waits
                    for fut in self.waiting.values():
                        if not fut.done():
                            fut.set_exception(BenchError(f"{f.code.name}: {f.message}"))
                    self.waiting.clear()


_IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)   # Linux


async def _connect(loop: Any, source: str, port: int) -> tuple[Any, Idle]:
    """Connect from ``source``. IP_BIND_ADDRESS_NO_PORT defers the choice of
    the source port to ``connect``: a plain ``bind((source, 0))`` searches
    for a port no other socket holds, which slows down past ~half the
    ephemeral range."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((source, 0))
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return await loop.create_connection(Idle, sock=sock)


async def _hold_users(spec: dict, conn: Any) -> dict:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(spec["concurrency"])
    users: list[str] = spec["users"]
    source, port, hb = spec["source"], spec["port"], spec["heartbeat"]
    held: list[Idle] = []
    failures: list[str] = []

    def ping(client: Idle) -> None:
        if client.transport.is_closing():
            return
        client.transport.write(wire.encode(wire.Ping(ref=client.ref())))
        loop.call_later(hb * 0.9, ping, client)

    async def login(user: str) -> None:
        async with gate:
            client = None
            for attempt in range(3):
                try:
                    _, client = await asyncio.wait_for(_connect(loop, source, port), 30.0)
                    await client.hello(hb)
                    await client.login(user)
                    # The LOGIN ack comes before the session is open; a PING is
                    # answered by the session itself, so its ACK proves there is one.
                    await client.expect_ack(wire.Ping(ref=client.ref()), "the first PING")
                    held.append(client)
                    loop.call_later(hb * (0.8 + 0.2 * random.random()), ping, client)
                    return
                except (OSError, asyncio.TimeoutError, BenchError) as error:
                    if client is not None:
                        client.transport.close()
                        client = None
                    if attempt == 2:
                        failures.append(f"{user}: {error!r}")

    started, cpu = time.monotonic(), cpu_seconds()
    await asyncio.gather(*(login(u) for u in users))
    finished = time.monotonic()
    conn.send(("in", {"held": len(held), "started": started, "finished": finished,
                      "cpu": cpu_seconds() - cpu,
                      "failures": failures[:5], "failed": len(failures)}))
    await loop.run_in_executor(None, conn.recv)              # "close"
    closed = sum(1 for c in held if c.transport.is_closing())
    errors: dict[str, int] = {}
    for c in held:
        for code, count in (c.errors or {}).items():
            errors[code] = errors.get(code, 0) + count
    for c in held:
        c.transport.close()
    await asyncio.sleep(0.5)
    return {"closed_by_server": closed, "errors": errors}


def _client_process(spec: dict, conn: Any) -> None:
    raise_nofile()
    run_client_process(_hold_users, spec, conn)


# -- registration -----------------------------------------------------------------------
async def _register_all(port: int, data_dir: str, users: list[str], concurrency: int = 100) -> None:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(concurrency)

    async def one(user: str) -> None:
        async with gate:
            _, client = await loop.create_connection(WireClient, "127.0.0.1", port)
            try:
                await client.hello()
                device = await client.register(user, data_dir)
                if device != 1:
                    raise BenchError(f"{user} got device {device}, expected 1")
            finally:
                client.transport.close()

    await asyncio.gather(*(one(u) for u in users))


def _register_by_protocol(node: LaunchedNode, users: list[str]) -> float:
    """Register ``users`` through the protocol on a running node; seconds taken."""
    import uvloop
    started = time.perf_counter()
    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(_register_all(node.port, str(node.data_dir), users))
    finally:
        loop.close()
    return time.perf_counter() - started


# -- the driver -----------------------------------------------------------------------------
def _kernel() -> dict[str, int]:
    out = sockstat()
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Slab:"):
                out["slab_bytes"] = int(line.split()[1]) * 1024
    return out


def run(args: argparse.Namespace) -> dict:
    n = args.n or (2000 if args.quick else 100_000)
    workers = args.workers or max(1, math.ceil(n / PER_PROCESS))
    clients = args.clients or max(1, math.ceil(n / PER_PROCESS))
    if clients > 250:
        raise BenchError("at most 250 client processes (one loopback source address each)")
    hard = raise_nofile()
    out: dict[str, Any] = {"n": n, "workers": workers, "clients": clients, "nofile": hard}
    users = [phone(PREFIX, i) for i in range(n)]
    t_total = time.perf_counter()
    sample = n if args.register == "protocol" else 0 if args.register == "direct" else min(n, args.sample)
    # The node's code budget (1,000 codes per 10 min per worker, against SMS
    # pumping) would hold a sample of 2,000 sign-ups back: it is off here.
    with LaunchedNode(workers, args=("--set", "code_budget=0")) as node:
        # Step 1: registration (a protocol sample on a node of its own, the rest direct).
        if sample:
            node.start()
            took = _register_by_protocol(node, users[:sample])
            out["protocol_registered"], out["protocol_seconds"] = sample, took
            node.stop_processes()
        if sample < n:
            out["direct_registered"] = n - sample
            out["direct_seconds"] = provision(node.data_dir, users[sample:])
        # Step 2: a fresh node over those accounts; its memory before anyone connects.
        node.start()
        time.sleep(1.0)
        mem0, kern0 = node.worker_memory_kb(), _kernel()
        cpu0, machine0 = node.worker_cpu(), machine_cpu()
        # Step 3: C client processes log everyone in.
        procs, conns = start_client_processes(_client_process, [
            {"users": users[c::clients], "source": f"127.0.0.{2 + c}", "port": node.port,
             "heartbeat": args.heartbeat, "concurrency": args.concurrency}
            for c in range(clients)])
        try:
            reports = [recv_report(conn, 600.0, "its logins") for conn in conns]
            out["login_cpu_server"] = node.worker_cpu() - cpu0
            out["login_cpu_machine"] = machine_cpu() - machine0
            out["login_cpu_clients"] = sum(r["cpu"] for r in reports)
            out["held"] = sum(r["held"] for r in reports)
            out["failed"] = sum(r["failed"] for r in reports)
            out["failures"] = [f for r in reports for f in r["failures"]][:5]
            out["login_seconds"] = (max(r["finished"] for r in reports)
                                    - min(r["started"] for r in reports))
            # Step 4: memory with everyone in, then after holding them a while.
            time.sleep(2.0)
            out["mem_in"], out["kern_in"] = node.worker_memory_kb(), _kernel()
            cpu1 = node.worker_cpu()
            time.sleep(args.hold)
            out["mem_held"], out["kern_held"] = node.worker_memory_kb(), _kernel()
            out["hold_cpu"] = (node.worker_cpu() - cpu1) / args.hold
            for conn in conns:
                conn.send("close")
            finals = [recv_report(conn, 120.0, "its end") for conn in conns]
            out["closed_by_server"] = sum(f["closed_by_server"] for f in finals)
            out["errors"] = {}
            for f in finals:
                for code, count in f["errors"].items():
                    out["errors"][code] = out["errors"].get(code, 0) + count
        finally:
            stop_client_processes(procs, timeout=30)
        out["mem0"], out["kern0"] = mem0, kern0
    out["total_seconds"] = time.perf_counter() - t_total
    return out


def _per_user(after: dict, before: dict, key: str, n: int, unit: int = 1024) -> float:
    return (after.get(key, 0) - before.get(key, 0)) * unit / max(1, n)


def main(args: argparse.Namespace) -> int:
    n = args.n or (2000 if args.quick else 100_000)
    print(f"bench connections: {n:,} idle users logged in to one node, heartbeat {args.heartbeat:g} s")
    try:
        out = run(args)
    except BenchError as error:
        print(f"bench connections failed: {error}")
        return 1
    n, held = out["n"], out["held"]
    print(f"node: {out['workers']} worker processes sharing the port (SO_REUSEPORT); load generator: "
          f"{out['clients']} processes, source addresses 127.0.0.2..127.0.0.{out['clients'] + 1}; "
          f"open files per process: {out['nofile']:,}")
    if "protocol_seconds" in out:
        rate = out["protocol_registered"] / out["protocol_seconds"]
        print(f"registration through the protocol (REGISTER + code file + CONFIRM, 100 in flight): "
              f"{out['protocol_registered']:,} users in {out['protocol_seconds']:.1f} s = {rate:,.0f}/s"
              f" (all {n:,} would take {n / rate:.0f} s)")
    if "direct_seconds" in out:
        print(f"pre-provisioned directly into LMDB (storage.register_device, before the node "
              f"started): {out['direct_registered']:,} users in {out['direct_seconds']:.1f} s")
    print(f"logins: {held:,} of {n:,} in {out['login_seconds']:.1f} s = "
          f"{held / out['login_seconds']:,.0f} logins/s; failed {out['failed']}"
          + (f" (e.g. {out['failures'][0]})" if out["failures"] else ""))
    print(f"CPU per login: server workers {1e3 * out['login_cpu_server'] / max(1, held):.2f} ms, "
          f"load generator {1e3 * out['login_cpu_clients'] / max(1, held):.2f} ms; the machine's "
          f"2 cores were {100 * out['login_cpu_machine'] / out['login_seconds'] / 2:.0f}% busy")
    for label, mem, kern in (("all connected", out["mem_in"], out["kern_in"]),
                             (f"after {args.hold:g} s held", out["mem_held"], out["kern_held"])):
        pss = _per_user(mem, out["mem0"], "Pss", held)
        rss = _per_user(mem, out["mem0"], "VmRSS", held)
        anon = _per_user(mem, out["mem0"], "RssAnon", held)
        tcp = _per_user(kern, out["kern0"], "tcp_mem_bytes", held, 1)
        slab = _per_user(kern, out["kern0"], "slab_bytes", held, 1)
        print(f"server memory per connected user, {label}: {pss:,.0f} B PSS ({rss:,.0f} B RSS, "
              f"{anon:,.0f} B anonymous); workers' PSS {out['mem0'].get('Pss', 0) / 1024:,.0f} -> "
              f"{mem.get('Pss', 0) / 1024:,.0f} MiB, RSS {out['mem0']['VmRSS'] / 1024:,.0f} -> "
              f"{mem['VmRSS'] / 1024:,.0f} MiB; "
              f"kernel, both ends of each connection: TCP buffers {tcp:,.0f} B, slab {slab:,.0f} B")
    print(f"server workers' CPU while holding them (heartbeats): {100 * out['hold_cpu']:.0f}% of one core")
    print(f"closed by the server during the hold: {out['closed_by_server']}, error frames: {out['errors'] or 'none'}")
    print(f"total time: {out['total_seconds']:.1f} s")
    pss = _per_user(out["mem_held"], out["mem0"], "Pss", held)
    met = held == n and pss <= TARGET_BYTES
    print(f"target: 100,000 users on this 24 GiB machine, <= 10 KB of server memory per connected "
          f"user: {'met' if met and n >= 100_000 else 'not met' if not met else 'met at this N'} "
          f"({held:,} users, {pss:,.0f} B each, PSS)")
    return 0 if held == n else 1
