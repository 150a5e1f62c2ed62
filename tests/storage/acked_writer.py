"""A child process for the LMDB durability tests (not a test module):

    python acked_writer.py PATH SENDER TO COUNT CONCURRENCY

Opens the LMDB store at PATH, registers TO unless it exists, and stores
COUNT messages from SENDER to TO with CONCURRENCY submitters, printing
``seq client_id`` (flushed) after each message's future resolves, i.e.
only once it is committed. The tests SIGKILL it, or run it beside another
writer on the same environment.
"""

from __future__ import annotations

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from storage import open_storage  # noqa: E402


async def main(path: str, sender: str, to: str, count: int, concurrency: int) -> None:
    storage = open_storage("lmdb", path)
    if storage.get_account(to) is None:
        await storage.register_device(to, bytes(32), 0)
    ids = iter(range(count))

    async def submitter() -> None:
        for i in ids:
            cid = f"{sender[-4:]}-{i}"
            stored = await storage.store_message(sender, cid, to, b"x" * 64, i, 1 << 30)
            sys.stdout.write(f"{stored.seq} {cid}\n")
            sys.stdout.flush()

    await asyncio.gather(*(submitter() for _ in range(concurrency)))
    storage.close()


if __name__ == "__main__":
    path, sender, to, count, concurrency = sys.argv[1:6]
    asyncio.run(main(path, sender, to, int(count), int(concurrency)))
