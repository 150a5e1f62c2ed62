"""``ProcessStore``: the LMDB store with its writer in a child process.

The same contract as ``storage.kv_lmdb.LmdbStore`` (``storage.kv.Store``):
``submit(op)`` returns a future that settles after the batch holding the op
is committed (fsync'd), ``read(fn)`` runs a read-only transaction on the
caller's thread, and a batch's ops keep the order they were submitted in.
What differs is where the write transactions run: in
``storage.writer_process``, a child process started here, so they do not
take turns with the event loop on one GIL (docs/storage.md, "The writer
process"). Reads need no hand-off: LMDB readers in this process see every
commit made by the child once it is acknowledged.

The ops cross the process boundary pickled, so an op must be picklable:
the domain transactions are module-level frozen dataclasses (a lambda or a
closure is not; use ``LmdbStore`` for those).

The event loop that first submits drives the socket: submissions made in
one loop turn go out as one frame (``call_soon``), and the child's replies
are read by the loop itself (``add_reader``), so an answer costs no thread
hand-off. ``write(op)`` from another thread goes through that loop; before
any loop is bound it is a blocking round trip.

If the child dies, every op waiting for an answer fails with
``CommitFailed`` (it may or may not have been committed: the callers treat
it as not acknowledged, and clients resend, deduplicated by their ids),
later submits fail with ``StoreClosed``, and ``on_lost`` is called: the
node wires it to stop the worker, so that its supervisor restarts the
worker and with it a new writer (OTP: a link).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import pickle
import socket
import subprocess
import sys
import threading
from typing import Any, Callable, TypeVar

import lmdb

from storage.errors import CommitFailed, StoreClosed
from storage.kv import DBS, CommitClock, Op, Settles, StoreStats, resolve
from storage.kv_lmdb import LmdbTxn, read_in
from storage.writer_process import HEADER, _Frames

__all__ = ["ProcessStore"]

T = TypeVar("T")
log = logging.getLogger(__name__)
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ProcessStore:
    """A node's LMDB environment, written by a child process.

    Options are ``LmdbStore``'s (``map_size``, ``max_batch``, ``sync``,
    ``max_readers``, ``commit_interval``) and ``max_batch_requests``
    (``storage.writer_process``); ``on_lost`` is called (on the
    bound loop, once) if the child exits while the store is open.
    """

    def __init__(self, path: str | os.PathLike, *, on_lost: Callable[[], None] | None = None,
                 map_size: int = 64 << 30, max_readers: int = 1024, start_timeout: float = 30.0,
                 **options: Any):
        self.path = os.path.abspath(path)   # the child runs in the project's directory
        self.on_lost = on_lost
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        options.update(map_size=map_size, max_readers=max_readers)
        self._child = subprocess.Popen(
            [sys.executable, "-m", "storage.writer_process", "--fd", str(theirs.fileno()),
             self.path, json.dumps(options)],
            pass_fds=(theirs.fileno(),), cwd=_ROOT, stdin=subprocess.DEVNULL)
        theirs.close()
        self._sock = ours
        self._frames = _Frames()
        self._lock = threading.Lock()       # the socket, before a loop is bound
        ours.settimeout(start_timeout)
        try:
            ready = self._read_frame()
        except BaseException:
            self._child.kill()
            self._child.wait()
            ours.close()
            raise
        if ready != ("ready",):
            raise RuntimeError(f"LMDB writer process said {ready!r}")
        ours.settimeout(None)
        self._env = lmdb.open(self.path, map_size=map_size, max_dbs=len(DBS) + 4,
                              max_readers=max_readers, readahead=False)
        with self._env.begin(write=True) as txn:     # a handle opened by a read txn dies with it
            self._dbs = {name: self._env.open_db(name.encode(), txn=txn, create=False)
                         for name in DBS}
        self._clock = CommitClock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: dict[int, tuple[Any, asyncio.AbstractEventLoop | None, Any]] = {}
        self._next = 0
        self._outbox: list[tuple[int, Any]] = []
        self._flushing = False                  # a _flush is scheduled
        self._unsent = bytearray()
        self._closed = False
        self._lost = False

    @property
    def pid(self) -> int:
        return self._child.pid

    # -- API -----------------------------------------------------------------
    def submit(self, op: Op[T], into: Settles | None = None) -> asyncio.Future[T]:
        """Queue a write; the future (or ``into``) settles after its batch
        is committed. Call from a running event loop (the first one to call
        binds the store)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._bind(loop)
        fut = loop.create_future() if into is None else into
        self._queue(op, fut, loop)
        return fut

    def write(self, op: Op[T], timeout: float | None = None) -> T:
        """``submit`` for a thread without an event loop: blocks until the
        op is committed and returns its result (or raises its exception)."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        if self._loop is None:
            with self._lock:
                self._queue(op, fut, None)
                self._send_outbox_blocking()
                while not fut.done():
                    self._dispatch(self._read_frame())
        else:
            self._loop.call_soon_threadsafe(self._queue, op, fut, None)
        return fut.result(timeout)

    def replicate_homes(self, changes: dict[str, str], node: str | None = None) -> None:
        """Apply ``changes`` (and this node's name) to the writer process's
        replica of the home map (``storage.metas.WRITER_HOMES``), ahead of
        every op submitted after this call."""
        if self._closed or self._lost:
            return
        self._outbox.append((0, ("homes", node, changes)))
        self._schedule_flush()

    def read(self, fn: Callable[[LmdbTxn], T]) -> T:
        """Run ``fn`` in a read-only transaction on this thread."""
        if self._closed:
            raise StoreClosed("store is closed")
        return read_in(self._env, self._dbs, fn)

    def stats(self) -> StoreStats:
        return self._clock.snapshot(len(self._waiting))

    def close(self) -> None:
        """Send what is queued, let the child commit and answer it, stop
        the child, close the environment. Idempotent. Call from the bound
        loop's thread (or with no loop bound)."""
        if self._closed:
            return
        self._closed = True
        loop = self._loop
        if loop is not None and not self._lost:
            loop.remove_reader(self._sock.fileno())
            loop.remove_writer(self._sock.fileno())
        try:
            if not self._lost:
                self._sock.setblocking(True)
                self._send_outbox_blocking()
                self._sock.shutdown(socket.SHUT_WR)     # the child: commit, answer, exit
                while self._waiting:
                    self._dispatch(self._read_frame())
        except (OSError, EOFError) as exc:
            self._fail_waiting(CommitFailed(f"LMDB writer process lost at close: {exc!r}"))
        finally:
            self._sock.close()
            try:
                self._child.wait(10)
            except subprocess.TimeoutExpired:
                self._child.kill()
                self._child.wait()
            self._env.close()

    def __enter__(self) -> "ProcessStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sending ---------------------------------------------------------------
    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is not None:
            raise RuntimeError("a ProcessStore serves one event loop")
        with self._lock:
            self._loop = loop
            self._sock.setblocking(False)
            loop.add_reader(self._sock.fileno(), self._readable)
        self._schedule_flush()                # what was queued before (replicate_homes)

    def _queue(self, op: Any, fut: Any, loop: asyncio.AbstractEventLoop | None) -> None:
        if self._closed or self._lost:
            err = StoreClosed("store is closed" if self._closed else "LMDB writer process lost")
            if loop is None:
                fut.set_exception(err)
            else:
                loop.call_soon(resolve, [(fut, False, err)])
            return
        self._next += 1
        self._waiting[self._next] = (fut, loop, getattr(type(op), "from_wire", None))
        self._outbox.append((self._next, op))
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        """Send the outbox at the end of this loop turn (one frame)."""
        if not self._flushing and self._loop is not None:
            self._flushing = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flushing = False
        if not self._outbox or self._lost or self._closed:
            return
        batch, self._outbox = self._outbox, []
        self._unsent += _frame_or_fail(batch, self)
        self._send()

    def _send(self) -> None:
        try:
            sent = self._sock.send(self._unsent)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._on_lost(exc)
            return
        del self._unsent[:sent]
        if self._unsent:
            self._loop.add_writer(self._sock.fileno(), self._writable)

    def _writable(self) -> None:
        self._loop.remove_writer(self._sock.fileno())
        if self._unsent and not self._lost:
            self._send()

    def _send_outbox_blocking(self) -> None:
        if self._outbox:
            batch, self._outbox = self._outbox, []
            self._unsent += _frame_or_fail(batch, self)
        if self._unsent:
            self._sock.sendall(self._unsent)
            self._unsent.clear()

    # -- answers ---------------------------------------------------------------
    def _read_frame(self) -> Any:
        while True:
            ok, reply = self._frames.pop()
            if ok:
                return reply
            if not self._frames.fill(self._sock):
                raise EOFError("LMDB writer process closed the socket")

    def _readable(self) -> None:
        try:
            if not self._frames.fill(self._sock):
                self._on_lost(EOFError("end of stream"))
                return
        except BlockingIOError:
            return
        except OSError as exc:
            self._on_lost(exc)
            return
        for reply in self._frames.frames():
            self._dispatch(reply)

    def _dispatch(self, reply: tuple) -> None:
        size, failed, seconds, committed, answers = reply
        self._clock.record(size, failed, seconds, committed)
        entries, waiting = [], self._waiting
        for ident, ok, value in answers:
            fut, loop, from_wire = waiting.pop(ident)
            if ok and from_wire is not None:
                value = from_wire(value)
            if loop is None:
                if fut.set_running_or_notify_cancel():
                    fut.set_result(value) if ok else fut.set_exception(value)
            else:
                entries.append((fut, ok, value))
        if entries:
            resolve(entries)

    def _on_lost(self, exc: BaseException) -> None:
        if self._lost or self._closed:
            return
        self._lost = True
        self._loop.remove_reader(self._sock.fileno())
        self._loop.remove_writer(self._sock.fileno())
        code = self._child.poll()
        log.error("LMDB writer process %d lost (%r, exit code %s): failing %d waiting ops",
                  self._child.pid, exc, code, len(self._waiting))
        self._fail_waiting(CommitFailed(f"LMDB writer process lost: {exc!r}"))
        if self.on_lost is not None:
            self.on_lost()

    def _fail_waiting(self, err: BaseException) -> None:
        waiting, self._waiting = self._waiting, {}
        entries = []
        for fut, loop, _ in waiting.values():
            if loop is None:
                if fut.set_running_or_notify_cancel():
                    fut.set_exception(err)
            else:
                entries.append((fut, False, err))
        if entries:
            resolve(entries)


def _frame_or_fail(batch: list[tuple[int, Any]], store: ProcessStore) -> bytes:
    """The batch's frame; an op that cannot be pickled fails alone."""
    try:
        body = pickle.dumps(batch, pickle.HIGHEST_PROTOCOL)
    except Exception:
        kept = []
        for ident, op in batch:
            try:
                pickle.dumps(op, pickle.HIGHEST_PROTOCOL)
                kept.append((ident, op))
            except Exception as exc:
                fut, loop, _ = store._waiting.pop(ident)
                err = TypeError(f"an op for the writer process must be picklable: {exc!r}")
                if loop is None:
                    fut.set_exception(err)
                else:
                    loop.call_soon(resolve, [(fut, False, err)])
        if not kept:
            return b""
        body = pickle.dumps(kept, pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body

