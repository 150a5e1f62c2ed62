"""``run.py client``: a line-based terminal chat client, built on the SDK.

    python run.py client --phone +15550001 [--host 127.0.0.1] [--port 5222]
                         [--media-port PORT] [--data-dir ./data] [--profile DIR]

The first run registers the phone number: REGISTER, then the one-time code
is read from the node's code file (``<data-dir>/codes/<phone>.txt``, written
by the node's FileCodeSender) or, failing that, asked for; CONFIRM installs
a new device key. The key, the device id, the outbox and the end-to-end
encryption state (keys, trusted identities, sessions: docs/e2e.md) live in
the profile directory (default ``~/.switchboard/<phone>``), so later runs
just log in, and messages written while the node was unreachable go out on
reconnect. Every message and file is end-to-end encrypted.

Commands (one per line on stdin; a pipe works too):

    /chat +1555...   talk to this number: your lines go to them, their
                     messages are marked read as they are shown
    /last +1555...   are they online, or when were they last seen?
    /typing          tell the current peer you are typing
    /send-file PATH  send a file to the current peer (encrypted, then uploaded)
    /get HASH [DEST] save a received file (HASH: its hex name, or a prefix)
    /safety [+1555]  the safety number with them (default: the current peer):
                     compare it with theirs, out of band, to rule out a
                     man in the middle
    /groups, /newgroup KEY NAME [+N ...], /group ID, /members, /add, /remove,
    /admin, /unadmin, /rename, /leave
                     group chats (client/cli_groups.py): in a group your
                     lines go to every member, and your messages show ticks
                     per member
    /block +N, /unblock +N, /blocked   (client/cli_blocking.py)
    /help, /quit     (end of input quits too)
    anything else    a message to the current peer

Output: incoming messages as ``[12:01] +15550002: hi``, your own as
``[12:01] you → +15550002: hello ✓`` printed again whenever a tick changes
(✓ sent, ✓✓ delivered, ✓✓ read, or ✗ not delivered when the recipient's
node refused it: their inbox is full), and ``--`` lines for presence, typing,
files, key changes ("security code changed"), messages that failed to
decrypt, and the connection.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
from typing import Callable

from transport import wire
from transport.code_sender import read_code_file
from transport.crypto import DeviceKey
from client import events as ev
from client.cli_blocking import BLOCK_HELP, BlockCommands
from client.cli_groups import GROUP_HELP, GroupCommands
from client.cli_secure import SecureCommands
from client.errors import ClientError, ServerError
from client.groups import is_group
from client.profile import Profile, default_dir
from client.sdk import Client, checked, new_message_id

__all__ = ["main", "build_parser"]

HELP = """commands: /chat +NUMBER   /last +NUMBER   /typing   /send-file PATH   /get HASH [DEST]
          /safety [+NUMBER]   /help   /quit
anything else is a message to the current chat (a person, or a group)
""" + GROUP_HELP + "\n" + BLOCK_HELP
BLUE, RED, RESET = "\033[34m", "\033[31m", "\033[0m"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run.py client", description="Switchboard terminal client")
    parser.add_argument("--phone", help="your number, E.164 (+15550001); asked for if missing")
    parser.add_argument("--host", default="127.0.0.1", help="node address (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5222, help="node port (default: 5222)")
    parser.add_argument("--media-port", type=int, default=None,
                        help="node's media HTTP port (default: the one the node announces)")
    parser.add_argument("--data-dir", default="data",
                        help="the node's data dir, to read the one-time code from (default: ./data)")
    parser.add_argument("--profile", help="where the device key and outbox live "
                                          "(default: ~/.switchboard/<phone>)")
    parser.add_argument("--code-wait", type=float, default=3.0, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130


class Lines:
    """Lines of stdin for the event loop, read by a daemon thread (works for
    ttys, pipes and files, and never leaves stdin non-blocking)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def pump() -> None:
            for line in sys.stdin:
                loop.call_soon_threadsafe(self.queue.put_nowait, line.rstrip("\r\n"))
            loop.call_soon_threadsafe(self.queue.put_nowait, None)
        threading.Thread(target=pump, name="stdin", daemon=True).start()

    async def readline(self) -> str | None:
        """The next line, or None at the end of input."""
        line = await self.queue.get()
        if line is None:
            self.queue.put_nowait(None)
        return line


def say(text: str) -> None:
    print(text, flush=True)


def clock(ms: int | None) -> str:
    return time.strftime("%H:%M", time.localtime((ms or time.time() * 1000) / 1000))


def last_seen(ms: int | None) -> str:
    if ms is None:
        return "never"
    day = "today" if time.localtime(ms / 1000)[:3] == time.localtime()[:3] else \
        time.strftime("%Y-%m-%d", time.localtime(ms / 1000))
    return f"{day} at {clock(ms)}"


async def run(args: argparse.Namespace) -> int:
    lines = Lines()
    phone = args.phone
    while not phone:
        say("your phone number (E.164, e.g. +15550001):")
        phone = await lines.readline()
        if phone is None:
            return 2
        phone = phone.strip()
    try:
        checked(wire.Register(phone))
    except ValueError as error:
        say(f"-- {error}")
        return 2
    directory = args.profile or default_dir(phone)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    try:
        client = await Client.connect(args.host, args.port, outbox_path=Profile.outbox_path(directory),
                                      e2e_dir=directory,
                                      media_url=None if args.media_port is None
                                      else f"http://{args.host}:{args.media_port}")
    except (OSError, ClientError, asyncio.TimeoutError) as error:
        say(f"-- cannot reach {args.host}:{args.port}: {error}")
        return 1
    try:
        if not await sign_in(client, phone, directory, args, lines):
            return 1
        say(f"-- logged in as {phone}" + (f" (last seen {last_seen(client.last_seen)})"
                                          if client.last_seen else ""))
        say(HELP)
        await Chat(client, phone).run(lines)
        return 0
    finally:
        await client.close()


async def sign_in(client: Client, phone: str, directory: str, args: argparse.Namespace,
                  lines: Lines) -> bool:
    """Log in with the profile's device, registering first if there is none
    (or the node no longer knows it)."""
    profile = Profile.load(directory)
    for attempt in range(2):
        if profile is None or profile.phone != phone:
            profile = await register(client, phone, args, lines)
            if profile is None:
                return False
            profile.save(directory)
        try:
            await client.login(phone, profile.device_id, profile.key)
            return True
        except ServerError as error:
            if error.code is not wire.ErrorCode.LOGIN_FAILED or attempt:
                say(f"-- login failed: {error}")
                return False
            say("-- this device is not registered with the node any more; registering again")
            profile = None
    return False


async def register(client: Client, phone: str, args: argparse.Namespace,
                   lines: Lines) -> Profile | None:
    say(f"-- registering {phone}")
    try:
        await client.register(phone)
    except ServerError as error:
        say(f"-- registration refused: {error}")
        return None
    key = DeviceKey()
    code = await code_from_file(args.data_dir, phone, args.code_wait)
    while True:
        if code is None:
            say(f"enter the code sent to {phone}:")
            code = await lines.readline()
            if code is None:
                return None
        try:
            device = await client.confirm(phone, code.strip(), key)
            say(f"-- registered: device {device}")
            return Profile(phone, device, key.seed)
        except (ValueError, ServerError) as error:
            say(f"-- that code did not work: {error}")
            if isinstance(error, ServerError) and error.code is wire.ErrorCode.RATE_LIMITED:
                return None
            code = None


async def code_from_file(data_dir: str, phone: str, wait: float) -> str | None:
    """The code the node wrote for ``phone`` (REGISTER's ACK follows the write)."""
    deadline = time.monotonic() + wait
    while True:
        code = read_code_file(data_dir, phone)
        if code or time.monotonic() >= deadline:
            return code
        await asyncio.sleep(0.1)


class Chat(GroupCommands, BlockCommands, SecureCommands):
    """The chat loop: commands from stdin, events from the client (group
    commands and events: ``client.cli_groups``)."""

    def __init__(self, client: Client, me: str, out: Callable[[str], None] = say):
        self.client, self.me, self.out = client, me, out
        self.peer: str | None = None
        self.mine: dict[str, list] = {}             # id -> [to, text, ts, status shown]
        self.unread: dict[str, list[str]] = {}      # peer -> ids shown but not yet marked read
        self.files: dict[str, ev.MediaInfo] = {}    # hex sha256 -> a file received (cli_secure)
        self.tasks: set[asyncio.Task] = set()
        self.sends: dict[str, asyncio.Task] = {}    # id -> its send, until it ends
        self.blue = sys.stdout.isatty()
        for id, to, body in client.outbox:          # left over from an earlier run (encrypted)
            self.mine[id] = [to, "(a message from an earlier run)", None, ev.Status.QUEUED]

    async def run(self, lines: Lines) -> None:
        shown = asyncio.ensure_future(self.show_events())
        try:
            while (line := await lines.readline()) is not None:
                if not self.command(line.strip()):
                    break
            await self.finish(3.0)
        finally:
            shown.cancel()
            for task in self.tasks:
                task.cancel()
        self.out("-- bye")

    async def finish(self, limit: float) -> None:
        """Wait up to ``limit`` s for running sends (a first message fetches
        keys before it is queued), then for the outbox to empty; say what is left."""
        deadline = asyncio.get_running_loop().time() + limit
        if self.sends:
            await asyncio.wait(list(self.sends.values()), timeout=limit)
        if not await self.client.drain(max(0.0, deadline - asyncio.get_running_loop().time())):
            self.out(f"-- {len(self.client.outbox)} message(s) not sent yet; "
                     "they go out next time you start the client")
        queued = {id for id, _, _ in self.client.outbox}
        for id in [id for id, task in self.sends.items() if not task.done() and id not in queued]:
            to, text = self.mine.get(id, ("?", "?"))[:2]
            self.out(f'-- not sent yet and not kept (still being encrypted): to {to} "{text}"')

    def command(self, line: str) -> bool:
        """Handle one input line; False to quit. Never waits on the network."""
        word, _, rest = line.partition(" ")
        rest = rest.strip()
        if not line:
            return True
        if word == "/quit":
            return False
        if word == "/help":
            self.out(HELP)
        elif word == "/chat":
            self.open_chat(rest)
        elif word == "/last":
            self.spawn(self.request(self.client.subscribe([rest])))
        elif word == "/typing":
            if self.peer:
                self.spawn(self.request(self.client.typing(self.peer, True)))
        elif word == "/send-file":
            self.send_file(rest)
        elif word == "/get":
            self.get_file(*rest.split(maxsplit=1))
        elif word == "/safety":
            self.spawn(self.safety(rest or self.peer))
        elif self.group_command(word, rest) or self.block_command(word, rest):
            pass
        elif word.startswith("/"):
            self.out(f"-- unknown command {word}; /help lists them")
        elif self.peer is None:
            self.out("-- pick someone first: /chat +NUMBER")
        else:
            self.send(line)
        return True

    def open_chat(self, peer: str) -> None:
        try:
            checked(wire.Subscribe((peer,)))
        except ValueError:
            self.out("-- usage: /chat +NUMBER (E.164)")
            return
        self.peer = peer
        self.out(f"-- chatting with {peer}")
        self.spawn(self.request(self.client.subscribe([peer])))
        unread = self.unread.pop(peer, [])
        if unread:
            self.spawn(self.request(self.client.mark_read(peer, unread)))

    async def request(self, call) -> None:
        """Run one request in the background; report a failure (input never waits)."""
        try:
            await call
        except (ValueError, ClientError) as error:
            self.out(f"-- {error}")

    def send(self, text: str) -> None:
        id, to = new_message_id(), self.peer
        self.mine[id] = [to, text, None, ev.Status.QUEUED]
        if not self.client.connected:
            self.out(f"[{clock(None)}] you → {to}: {text} {ev.Status.QUEUED.ticks} (queued)")
        self.spawn(self.sending(id, to, text), id)

    async def sending(self, id: str, to: str, text: str) -> None:
        try:
            send = self.client.send_group if is_group(to) else self.client.send
            await send(to, text.encode(), id=id)
        except (ValueError, ClientError) as error:
            if self.client.status(id) is not None:
                return          # it reached the outbox: SendFailed or the receipt tells
            self.mine.pop(id, None)     # refused (bad input, NO_KEYS) or no answer
            self.out(f'-- not sent to {to} ("{text}"): {error}')   # (KEYS_FETCH gave up)

    def spawn(self, coro, send_id: str | None = None) -> None:
        """Run ``coro`` in the background (``send_id``: a send, waited for at /quit)."""
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        if send_id is not None:
            self.sends[send_id] = task
            task.add_done_callback(lambda _: self.sends.pop(send_id, None))

    async def show_events(self) -> None:
        async for event in self.client.events():
            kind = type(event)
            if kind is ev.Message:
                self.incoming(event)
            elif kind is ev.Sent:
                self.tick(event.id, ev.Status.SENT, event.ts)
            elif kind is ev.Receipt:
                self.tick(event.id, event.kind)
            elif kind is ev.SendFailed:
                self.out(f"-- not sent to {event.to}: {event.error}")
            elif kind is ev.Presence:
                state = "is online" if event.online else f"last seen {last_seen(event.last_seen)}"
                self.out(f"-- {event.user} {state}")
            elif kind is ev.Typing and event.typing:
                self.out(f"-- {event.sender} is typing…")
            elif kind is ev.Disconnected:
                self.out(f"-- disconnected ({event.reason})"
                         + ("; reconnecting…" if event.reconnecting else ""))
            elif kind is ev.Reconnected:
                self.out("-- reconnected")
            elif self.secure_event(event):
                pass
            else:
                self.group_event(event)

    def incoming(self, message: ev.Message) -> None:
        text = message.body.decode("utf-8", "replace")
        if message.sender == self.peer:
            self.out(f"[{clock(message.ts)}] {message.sender}: {text}")
            self.spawn(self.request(self.client.mark_read(message.sender, [message.id])))
        else:
            self.out(f"[{clock(message.ts)}] {message.sender}: {text}   (/chat {message.sender} to reply)")
            self.unread.setdefault(message.sender, []).append(message.id)

    def tick(self, id: str, status: ev.Status, ts: int | None = None) -> None:
        mine = self.mine.get(id)
        if mine is None:
            return                                  # a message from an earlier run, forgotten
        if ts is not None:
            mine[2] = ts
        if mine[3] is ev.Status.FAILED or status is ev.Status.FAILED and mine[3] >= ev.Status.DELIVERED:
            return                                  # FAILED is final; it cannot follow delivery
        if status > mine[3] or status is ev.Status.FAILED:
            mine[3] = status
            ticks = status.ticks
            if self.blue and status in (ev.Status.READ, ev.Status.FAILED):
                ticks = f"{BLUE if status is ev.Status.READ else RED}{ticks}{RESET}"
            self.out(f"[{clock(mine[2])}] you → {mine[0]}: {mine[1]} {ticks}")


if __name__ == "__main__":
    sys.exit(main())
