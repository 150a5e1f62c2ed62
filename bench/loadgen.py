"""What the load benchmarks (``bench relay``, ``bench connections``) share:

- ``LaunchedNode``: ``run.py node`` as a subprocess on a free port and a temp
  data directory (LMDB fsync'd, as in production). Every process of the node
  carries a tag in its environment, so whatever outlives the stop is found
  and killed. ``worker_pids`` come from the launcher's "node up" line.
- ``percentile``: nearest rank, of a sorted list.
- ``phone(prefix, i)`` and ``device_key(phone)``: bench users and their
  Ed25519 keys, derived from the phone, so every client process can rebuild
  any user's credential without being handed it.
- ``provision(data_dir, phones)``: accounts written straight into the node's
  LMDB with the storage API (before the node starts).
- ``WireClient``: a raw-frame asyncio protocol (``transport.wire`` encode and
  ``FrameDecoder``, chunked reads, one ``write`` per read or loop turn) with
  ``request(frame)`` for the handshake and ``on_frames`` for pushed traffic;
  ``hello``, ``register`` (REGISTER, the code from the node's code file,
  CONFIRM) and ``login`` on top.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.host import children, cpu_seconds, memory_kb, tagged_pids
from transport import wire
from transport.crypto import DeviceKey

__all__ = ["LaunchedNode", "add_round_arguments", "phone", "device_key", "provision", "WireClient",
           "BenchError", "percentile", "start_client_processes", "stop_client_processes",
           "run_client_process", "recv_report"]

ROOT = Path(__file__).resolve().parents[1]


class BenchError(RuntimeError):
    """The benchmark could not run (node did not start, a request failed...)."""


# -- options ------------------------------------------------------------------
def add_round_arguments(parser: Any, duration: float, warmup: float) -> None:
    """The options every closed-loop chat bench shares: measured rounds,
    warm-up, load-generator processes, body size."""
    parser.add_argument("--duration", type=float, default=duration,
                        help=f"seconds per measured round (default {duration:g})")
    parser.add_argument("--warmup", type=float, default=warmup,
                        help=f"seconds of traffic before measuring (default {warmup:g})")
    parser.add_argument("--rounds", type=int, default=3,
                        help="measured rounds; the median is reported (default 3)")
    parser.add_argument("--clients", type=int, default=2, help="load-generator processes (default 2)")
    parser.add_argument("--body", type=int, default=100, help="message body bytes (default 100)")


# -- statistics -----------------------------------------------------------------
def percentile(sorted_values: list, q: float) -> float:
    """The ``q``-th percentile (0..100) of an already sorted list (nearest rank)."""
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(q / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


# -- users ----------------------------------------------------------------------
def phone(prefix: str, i: int) -> str:
    """The ``i``-th bench user: ``prefix`` then 8 digits (E.164)."""
    return f"{prefix}{i:08d}"


def device_key(user: str) -> DeviceKey:
    """The bench's device key of ``user`` (deterministic: a hash of the phone)."""
    return DeviceKey(hashlib.sha256(b"switchboard-bench\x00" + user.encode()).digest())


def provision(data_dir: str | os.PathLike, phones: list[str]) -> float:
    """Register ``phones`` (device 1, the bench key) directly into the node's
    LMDB with the storage API, in group commits; returns the seconds taken.
    Run it before the node starts."""
    from storage import open_storage

    started = time.perf_counter()
    storage = open_storage("lmdb", os.path.join(data_dir, "lmdb"))
    try:
        async def run() -> None:
            now = int(time.time() * 1000)
            for i in range(0, len(phones), 5000):
                futures = [storage.register_device(p, device_key(p).public, now)
                           for p in phones[i:i + 5000]]
                for device in await asyncio.gather(*futures):
                    if device != 1:
                        raise BenchError(f"provisioned device id {device}, expected 1")
        asyncio.run(run())
    finally:
        storage.close()
    return time.perf_counter() - started


# -- the node -------------------------------------------------------------------
class LaunchedNode:
    """``run.py node --workers N`` on a free port, data in a temp directory.

    Use as a context manager; ``start()`` returns once the node logged that
    it is up. ``data_dir`` may be given (and provisioned) before ``start``."""

    def __init__(self, workers: int = 1, keep: bool = False, args: tuple[str, ...] = ()):
        self.workers = workers
        self.keep = keep
        self.args = tuple(args)             # more ``run.py node`` arguments
        self.tmp = Path(tempfile.mkdtemp(prefix="switchboard-bench-"))
        self.data_dir = self.tmp / "data"
        self.data_dir.mkdir()
        self.log_path = self.tmp / "node.log"
        self.tag = f"SWITCHBOARD_BENCH_TAG={uuid.uuid4().hex}"
        self.launcher: subprocess.Popen | None = None
        self.port = 0
        self.worker_pids: list[int] = []

    def start(self, timeout: float = 120.0) -> "LaunchedNode":
        from supervisor.launcher import free_port
        env = {k: v for k, v in os.environ.items()
               if k not in ("THESPIAN_BASE_IPADDR", "SWITCHBOARD_THESPIAN_BIND")}
        env["SWITCHBOARD_BENCH_TAG"] = self.tag.split("=")[1]
        extra = []
        if "--http-port" in (ROOT / "run.py").read_text():     # the dashboard: free ports
            extra = ["--http-port", "0"]
        with open(self.log_path, "wb") as log_file:
            self.launcher = subprocess.Popen(
                [sys.executable, "run.py", "node", "--data-dir", str(self.data_dir),
                 "--workers", str(self.workers), "--admin-port", str(free_port()),
                 "--port", "0", *extra, *self.args],
                cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            up = re.search(r"node up: clients [\d.]+:(\d+),.*\(pids ([\d ]+)\)",
                           self.log_path.read_text(errors="replace"))
            if up:
                self.port = int(up.group(1))
                self.worker_pids = [int(p) for p in up.group(2).split()]
                return self
            if self.launcher.poll() is not None:
                break
            time.sleep(0.05)
        raise BenchError(f"the node did not come up; see {self.log_path}:\n"
                         + self.log_path.read_text(errors="replace")[-2000:])

    def worker_cpu(self) -> float:
        """CPU seconds of the worker processes and their children (each
        worker's LMDB writer process, when it has one)."""
        return self._cpu_of([one for pid in self.worker_pids for one in (pid, *children(pid))])

    def writer_cpu(self) -> float:
        """CPU seconds of the workers' children alone: their LMDB writers."""
        return self._cpu_of([one for pid in self.worker_pids for one in children(pid)])

    @staticmethod
    def _cpu_of(pids: list[int]) -> float:
        total = 0.0
        for pid in pids:
            try:
                total += cpu_seconds(pid)
            except OSError:                     # ended since the scan
                continue
        return total

    def process_cpu(self) -> float:
        """CPU seconds of every live process of the node (launcher, Admin,
        supervisor, workers, and the cluster directory on a leader)."""
        total = 0.0
        for pid in tagged_pids(self.tag.encode()):
            try:
                total += cpu_seconds(pid)
            except OSError:                     # ended since the scan
                continue
        return total

    def worker_memory_kb(self) -> dict[str, int]:
        """Memory of the worker processes and their children (the LMDB
        writers), summed per /proc status field."""
        total: dict[str, int] = {}
        for pid in self.worker_pids:
            for one in (pid, *children(pid)):
                try:
                    held = memory_kb(one)
                except OSError:                 # ended since the scan
                    continue
                for key, value in held.items():
                    total[key] = total.get(key, 0) + value
        return total

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        """Stop the node and remove its directory (unless ``keep``)."""
        self.stop_processes()
        if not self.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def stop_processes(self) -> None:
        """Stop the node (SIGTERM, then SIGKILL of whatever is left); its
        data stays, and ``start`` may run it again."""
        if self.launcher is not None and self.launcher.poll() is None:
            self.launcher.send_signal(signal.SIGTERM)
            try:
                self.launcher.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.launcher.kill()
                self.launcher.wait(timeout=10)
        for pid in tagged_pids(self.tag.encode()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.launcher, self.port, self.worker_pids = None, 0, []

    def __enter__(self) -> "LaunchedNode":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- a raw wire client ----------------------------------------------------------------
class WireClient(asyncio.Protocol):
    """One connection speaking raw frames. Subclasses override ``on_frames``
    (called with every frame not claimed by a pending ``request``) and write
    with ``out.append(bytes)``; ``data_received`` flushes once per read."""

    def __init__(self) -> None:
        self.decoder = wire.FrameDecoder(wire.Side.SERVER)
        self.transport: asyncio.Transport | None = None
        self.out: list[bytes] = []
        self.waiting: dict[int, asyncio.Future] = {}
        self.next_ref = 1
        self.closed: asyncio.Future = asyncio.get_running_loop().create_future()
        self.nonce = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport          # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)
        for fut in self.waiting.values():
            if not fut.done():
                fut.set_exception(ConnectionError("connection closed"))
        self.waiting.clear()

    def data_received(self, data: bytes) -> None:
        frames = self.decoder.feed(data)
        if self.waiting:
            rest = []
            for frame in frames:
                fut = self.waiting.pop(frame.ref, None) if frame.TYPE in (64, 65, 66) else None
                if fut is None:
                    rest.append(frame)
                elif not fut.done():
                    fut.set_result(frame)
            frames = rest
        if frames:
            self.on_frames(frames)
        self.flush()

    def on_frames(self, frames: list) -> None:
        pass

    def flush(self) -> None:
        if self.out:
            data = b"".join(self.out)
            self.out.clear()
            if not self.transport.is_closing():
                self.transport.write(data)

    def ref(self) -> int:
        ref = self.next_ref
        self.next_ref = ref + 1
        return ref

    async def request(self, frame: wire.Frame, timeout: float = 30.0) -> wire.Frame:
        """Send ``frame`` and return its ACK or ERROR frame."""
        fut = asyncio.get_running_loop().create_future()
        self.waiting[frame.ref] = fut
        self.transport.write(wire.encode(frame))
        return await asyncio.wait_for(fut, timeout)

    async def expect_ack(self, frame: wire.Frame, what: str) -> Any:
        reply = await self.request(frame)
        if not isinstance(reply, wire.Ack):
            raise BenchError(f"{what} refused: {reply}")
        return reply.value

    async def hello(self, heartbeat: float = 30.0) -> wire.HelloOk:
        reply = await self.request(wire.Hello(wire.PROTOCOL_VERSION, heartbeat,
                                              "switchboard-bench", ref=self.ref()))
        if not isinstance(reply, wire.HelloOk):
            raise BenchError(f"HELLO refused: {reply}")
        self.nonce = reply.nonce
        return reply

    async def register(self, user: str, data_dir: str | os.PathLike) -> int:
        """REGISTER, read the code the node wrote, CONFIRM: the device id."""
        from transport.code_sender import read_code_file
        await self.expect_ack(wire.Register(user, ref=self.ref()), f"REGISTER {user}")
        code = read_code_file(os.fspath(data_dir), user)
        if code is None:
            raise BenchError(f"no code file for {user}")
        return await self.expect_ack(
            wire.Confirm(user, code, device_key(user).public, ref=self.ref()), f"CONFIRM {user}")

    async def login(self, user: str, device: int = 1) -> Any:
        key = device_key(user)
        signature = key.sign(wire.login_challenge(self.nonce, user, device))
        return await self.expect_ack(wire.Login(user, device, signature, ref=self.ref()),
                                     f"LOGIN {user}")


def run_client_process(main: Any, spec: dict, conn: Any) -> None:
    """The body of a load-generator process: run ``main(spec, conn)`` on a
    fresh uvloop and send ``("done", result)`` or ``("failed", error)`` back
    on ``conn``, so the parent never hangs on a child that died."""
    import uvloop
    loop = uvloop.new_event_loop()
    try:
        conn.send(("done", loop.run_until_complete(main(spec, conn))))
    except BaseException as error:                      # report, never hang the parent
        conn.send(("failed", repr(error)))
    finally:
        loop.close()


def start_client_processes(target: Any, specs: list[dict]) -> tuple[list, list]:
    """Fork one load-generator process per spec, running ``target(spec,
    conn)``; returns the processes and the parent's ends of their pipes."""
    import multiprocessing
    ctx = multiprocessing.get_context("fork")
    procs, conns = [], []
    for spec in specs:
        mine, theirs = ctx.Pipe()
        proc = ctx.Process(target=target, args=(spec, theirs), daemon=True)
        proc.start()
        procs.append(proc)
        conns.append(mine)
    return procs, conns


def stop_client_processes(procs: list, timeout: float) -> None:
    """Wait up to ``timeout`` s for each process to end; kill what hangs."""
    for proc in procs:
        proc.join(timeout=timeout)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)


def recv_report(conn: Any, timeout: float, what: str) -> Any:
    """What a client process sent back with ``run_client_process``;
    ``BenchError`` if it failed or did not report within ``timeout``."""
    if not conn.poll(timeout):
        raise BenchError(f"a client process did not report {what} within {timeout:.0f} s")
    kind, value = conn.recv()
    if kind == "failed":
        raise BenchError(f"a client process failed: {value}")
    return value
