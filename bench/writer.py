"""``run.py bench writer``: the relay's storage ops, replayed straight into
the LMDB writer's ``run_batch`` (no sockets, no worker, no clients).

P sender/receiver pairs against a fresh, fsync'd environment. Every commit
holds, per pair, the sender's ``UserBatch`` of M/P SENDs plus its RECEIVED
of the delivered receipts that reached it in the commit before, and the
receiver's RECEIVED of the messages stored in the commit before: the ops
the writer process gets at a steady ``M`` messages per commit in
``bench relay``. ``--ids`` is how senders choose message ids: ``sdk``
(``client.ids``: time-ordered), ``random`` (what the SDK did before
2026-12-07) or ``counter`` (a per-sender zero-padded counter).

Prints, per round and as the median of rounds: wall and CPU time of
``run_batch`` per message (fsync included), and the median commit's wall
and CPU time (``txn.commit``: the page writes and the fsyncs), over the
last 80% of the commits (the first fill the tables).
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import statistics
import tempfile
import time

from bench.loadgen import BenchError
from client.ids import new_message_id
from storage.accounts import RegisterDevice
from storage.batch import ACK, SEND, UserBatch
from storage.kv import CommitClock
from storage.kv_lmdb import open_env, run_batch

__all__ = ["add_arguments", "main"]

T0 = 1_700_000_000_000
CAP = 10_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pairs", type=int, default=100, help="sender/receiver pairs (100)")
    parser.add_argument("--per-commit", type=int, default=300,
                        help="messages per commit, spread over the pairs (300)")
    parser.add_argument("--commits", type=int, default=400, help="commits per round (400)")
    parser.add_argument("--ids", choices=("sdk", "random", "counter"), default="sdk",
                        help="how senders make message ids (sdk: time-ordered)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each on a fresh LMDB (3)")


def _ids(kind: str, sender: int):
    """An endless source of one sender's ids; ``now`` is the replay's clock."""
    if kind == "sdk":
        return lambda n, now: new_message_id(now)
    if kind == "random":
        return lambda n, now: secrets.token_urlsafe(12)
    return lambda n, now: f"c{sender:04d}{n:012d}"


def _round(args: argparse.Namespace) -> dict[str, float]:
    root = tempfile.mkdtemp(prefix="sb-bench-writer-")
    env, dbs = open_env(root, 64 << 30, 126, True)
    commits: list[tuple[float, float]] = []

    def commit(txn) -> None:
        w, c = time.perf_counter(), time.process_time()
        txn.commit()
        commits.append((time.perf_counter() - w, time.process_time() - c))

    try:
        clock = CommitClock()
        senders = [f"+1555{i:07d}" for i in range(args.pairs)]
        receivers = [f"+1666{i:07d}" for i in range(args.pairs)]
        run_batch(env, dbs, [RegisterDevice(p, bytes(32), T0) for p in senders + receivers],
                  clock, commit)
        commits.clear()
        make = [_ids(args.ids, i) for i in range(args.pairs)]
        sent = [0] * args.pairs
        stored = [[] for _ in range(args.pairs)]       # acked by the receiver next commit
        receipts = [[] for _ in range(args.pairs)]     # acked by the sender next commit
        each = args.per_commit // args.pairs
        body = b"x" * 100
        walls, cpus = [], []
        for b in range(args.commits):
            now = T0 + 5 * b                            # a commit every 5 ms
            ops, shape = [], []
            for i in range(args.pairs):
                requests = [(ACK, tuple(receipts[i]))] if receipts[i] else []
                first = len(requests)                   # where the SENDs' results start
                for _ in range(each):
                    requests.append((SEND, make[i](sent[i], now), receivers[i], body))
                    sent[i] += 1
                ops.append(UserBatch(senders[i], tuple(requests), now, CAP))
                if stored[i]:
                    ops.append(UserBatch(receivers[i], ((ACK, tuple(stored[i])),), now, CAP))
                shape.append((first, bool(stored[i])))
            w, c = time.perf_counter(), time.process_time()
            results = run_batch(env, dbs, ops, clock, commit)
            walls.append(time.perf_counter() - w)
            cpus.append(time.process_time() - c)
            if not all(ok for ok, _ in results):
                raise BenchError(f"an op failed: {next(v for ok, v in results if not ok)!r}")
            j = 0
            for i, (first, acked) in enumerate(shape):
                sends = results[j][1][first:]            # (ok, Stored) per SEND
                if not all(ok for ok, _ in sends):
                    raise BenchError(f"a SEND was refused: {sends!r}")
                stored[i] = [v.seq for _, v in sends]
                j += 1
                receipts[i] = [r.seq for r in results[j][1][0][1]] if acked else []
                j += acked
        skip = args.commits // 5
        per_msg = 1e6 / (each * args.pairs)
        return {"wall_us": statistics.mean(walls[skip:]) * per_msg,
                "cpu_us": statistics.mean(cpus[skip:]) * per_msg,
                "commit_ms": statistics.median(w for w, _ in commits[skip:]) * 1e3,
                "commit_cpu_ms": statistics.median(c for _, c in commits[skip:]) * 1e3}
    finally:
        env.close()
        shutil.rmtree(root, ignore_errors=True)


def main(args: argparse.Namespace) -> int:
    if args.pairs < 1 or args.per_commit < args.pairs or args.commits < 5 or args.rounds < 1:
        raise SystemExit("bench writer: --pairs >= 1, --per-commit >= --pairs, "
                         "--commits >= 5, --rounds >= 1")
    print(f"bench writer: {args.pairs} pairs, {args.per_commit} messages a commit, "
          f"{args.commits} commits, ids {args.ids}, fsync on")
    print("round  wall us/msg  cpu us/msg  commit ms  commit cpu ms")
    rounds = []
    for r in range(1, args.rounds + 1):
        fig = _round(args)
        rounds.append(fig)
        print(f"{r:>5}  {fig['wall_us']:11.1f}  {fig['cpu_us']:10.1f}  {fig['commit_ms']:9.2f}  "
              f"{fig['commit_cpu_ms']:13.2f}")
    med = {k: statistics.median(f[k] for f in rounds) for k in rounds[0]}
    print(f"median {med['wall_us']:11.1f}  {med['cpu_us']:10.1f}  {med['commit_ms']:9.2f}  "
          f"{med['commit_cpu_ms']:13.2f}")
    return 0
