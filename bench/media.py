"""``run.py bench media``: upload and download speed of one big file over
the media HTTP API, with and without the client's end-to-end encryption.

A real node (``run.py node``, one worker, its media port on loopback) and
the SDK's ``MediaClient`` in this process. Per round, a fresh file of
``--size`` MiB (random bytes, so nothing is deduplicated):

- ``raw upload`` / ``raw download``: the bytes as they are (``POST
  /media``, ``GET /media/<sha256>`` to a file): the server and HTTP alone;
- ``e2e upload``: what ``Client.send_file`` does: hash the plaintext,
  encrypt it with a fresh key to a temporary file (XChaCha20-Poly1305,
  64 KiB chunks), ``HEAD`` the ciphertext's hash, upload it;
- ``e2e download``: what ``Client.download`` does: fetch the ciphertext
  to a file, decrypt it chunk by chunk, checking its SHA-256.

Figures are MiB/s of plaintext, medians of ``--rounds`` rounds. Client and
node share the machine's two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import tempfile
import time

from bench.loadgen import BenchError, LaunchedNode, device_key, phone, provision
from client.events import MediaInfo
from client.media import MediaClient, file_sha256

__all__ = ["add_arguments", "main", "run"]

USER = phone("+1777", 1)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=int, default=50, help="file size in MiB (default 50)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; medians are reported (default 3)")


def _media_port(node: LaunchedNode, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"media: http://[^:]+:(\d+)/media", node.log_tail(100_000))
        if found:
            return int(found.group(1))
        time.sleep(0.05)
    raise BenchError("the node did not report its media port")


async def _round(base: str, size: int, work: str) -> dict[str, float]:
    key = device_key(USER)
    media = MediaClient(base, lambda: (USER, 1, key.sign))
    path, out = os.path.join(work, "file"), os.path.join(work, "out")
    mib = size / (1 << 20)
    figures = {}
    try:
        with open(path, "wb") as f:
            f.write(os.urandom(size))
        # raw: the bytes as they are (the hash the upload signs is computed untimed)
        sha256 = file_sha256(path).hex()
        started = time.perf_counter()
        blob = await media.upload(path, sha256)
        figures["raw upload"] = mib / (time.perf_counter() - started)
        started = time.perf_counter()
        await media.download(blob["sha256"], out)
        figures["raw download"] = mib / (time.perf_counter() - started)
        if os.path.getsize(out) != size:
            raise BenchError("raw download: wrong size")
        os.unlink(out)
        # end to end: what send_file and download do
        with open(path, "r+b") as f:            # a different file, not deduplicated
            f.write(os.urandom(64))
        started = time.perf_counter()
        media_key, uploaded = await media.put_file(path)
        figures["e2e upload"] = mib / (time.perf_counter() - started)
        if not uploaded:
            raise BenchError("e2e upload was skipped")
        started = time.perf_counter()
        await media.get_file(MediaInfo(media_key, "application/octet-stream"), out)
        figures["e2e download"] = mib / (time.perf_counter() - started)
        if os.path.getsize(out) != size:
            raise BenchError("e2e download: wrong size")
        os.unlink(out)
    finally:
        await media.close()
    return figures


def run(args: argparse.Namespace) -> list[dict[str, float]]:
    if args.size < 1 or args.rounds < 1:
        raise BenchError("--size and --rounds must be >= 1")
    work = tempfile.mkdtemp(prefix="switchboard-media-")
    try:
        with LaunchedNode(1, args=("--media-port", "0")) as node:
            provision(node.data_dir, [USER])
            node.start()
            base = f"http://127.0.0.1:{_media_port(node)}"
            rounds = []
            for r in range(args.rounds):
                figures = asyncio.run(_round(base, args.size << 20, work))
                print(f"round {r + 1}: " + "   ".join(f"{k} {v:7.1f} MiB/s" for k, v in figures.items()),
                      flush=True)
                rounds.append(figures)
            return rounds
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(args: argparse.Namespace) -> int:
    print(f"media: {args.size} MiB file, {args.rounds} rounds, one node worker on loopback")
    rounds = run(args)
    print("median: " + "   ".join(f"{k} {statistics.median(r[k] for r in rounds):7.1f} MiB/s"
                                  for k in rounds[0]))
    return 0
