"""Regenerate ``docs/dashboard.png``: the dashboard of a node under load.

    python -m bench.dashboard_screenshot [--out docs/dashboard.png] [--seconds 25]

Step by step: a worker tree starts in this process (real TCP and LMDB in a
temp dir, HTTP on a free port); ``bench.chat_load`` runs in a subprocess
(50 users, 2,000 messages/s); after a while an actor is made to back up past
the default high-water mark (1,500 messages against 1,000) and held there
past the 5 s sustain, so the alert is raised; headless Chromium loads the
dashboard and the screenshot is taken while load and alert are both live.
Then the actor drains, the load stops and the node shuts down.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from actors import Actor
from bench.browser import headless_driver, missing
from supervisor import tree

ROOT = Path(__file__).resolve().parent.parent


class Stuck(Actor):
    """A stand-in for a wedged user process: handles nothing until released."""

    def __init__(self, gate: asyncio.Event):
        self.gate = gate

    async def handle_int(self, msg: int) -> None:
        await self.gate.wait()


async def capture(out: Path, seconds: float, users: int, rate: float) -> None:
    systems: list = []

    class Recording(tree.System):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            systems.append(self)

    tree.System = Recording
    with tempfile.TemporaryDirectory(prefix="switchboard-shot-") as data_dir:
        config = {"data_dir": data_dir, "port": 0, "http_port": 0, "node_name": "demo",
                  "offline_scan": 2.0}
        stopping, started = asyncio.Event(), asyncio.Event()
        running = asyncio.ensure_future(tree.run_worker_tree(config, stopping, started))
        await asyncio.wait_for(started.wait(), 15)
        system = systems[0]
        port, http_port = system.env["tcp_port"], system.env["http_port"]
        print(f"node up: clients {port}, dashboard http://127.0.0.1:{http_port}/")
        load = subprocess.Popen(
            [sys.executable, "-m", "bench.chat_load", "--port", str(port), "--data-dir", data_dir,
             "--users", str(users), "--rate", str(rate), "--seconds", str(seconds + 10)],
            cwd=ROOT)
        gate = asyncio.Event()
        driver = None
        try:
            await asyncio.sleep(seconds * 0.4)
            stuck = await system.spawn(Stuck, gate)
            for i in range(1501):
                stuck.cast(i)
            driver = await asyncio.to_thread(headless_driver, 1400, 1750)
            await asyncio.to_thread(driver.get, f"http://127.0.0.1:{http_port}/")
            await asyncio.sleep(seconds * 0.6)
            alerts = system.env["board"].latest["alerts"]
            print(f"alerts at capture: {[a['text'] for a in alerts]}")
            await asyncio.to_thread(driver.save_screenshot, str(out))
            print(f"saved {out}")
        finally:
            gate.set()
            if driver is not None:
                await asyncio.to_thread(driver.quit)
            load.terminate()
            load.wait(timeout=10)
            stopping.set()
            await asyncio.wait_for(running, 15)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "dashboard.png"))
    parser.add_argument("--seconds", type=float, default=25.0)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--rate", type=float, default=2000.0)
    args = parser.parse_args(argv)
    if missing():
        print(f"cannot take a screenshot: {missing()}", file=sys.stderr)
        return 1
    started = time.monotonic()
    import uvloop
    uvloop.run(capture(Path(args.out), args.seconds, args.users, args.rate))
    print(f"done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
