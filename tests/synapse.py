"""A real Synapse Matrix homeserver on loopback for tests, and a nio client that acts as a human.

`Synapse(tmp_dir).start()` writes homeserver.yaml, a signing key and a logging config into
tmp_dir, runs `python -m synapse.app.homeserver` on a free 127.0.0.1 port (client API only, no
federation, SQLite, rate limits raised) and waits for /_matrix/client/versions.
Accounts are made with the shared-secret admin API. `Human.login(...)` syncs in the background
and records every timeline event and typing notice of every joined room.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import hmac
import html
import json
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import nio
from ports import PortTaken, free_port, start_retrying
from processes import stop_process
from signedjson.key import generate_signing_key, write_signing_keys

_RUNNING: set[Synapse] = set()  # stopped at exit if a test forgot to
_FAST = {"per_second": 1000, "burst_count": 1000}
T = TypeVar("T")


class Synapse:
    """One Synapse process with its config, SQLite database, media, key and log in tmp_dir."""

    def __init__(self, tmp_dir: Path, *, server_name: str = "localhost") -> None:
        self.dir = Path(tmp_dir)
        self.server_name = server_name
        self.config = self.dir / "homeserver.yaml"
        self.log = self.dir / "homeserver.log"
        self.console = self.dir / "synapse.console.log"
        self.port = free_port()
        self._served = False  # once up, its port stays (clients and restart() rely on it)
        self.shared_secret = secrets.token_hex(16)
        self._secrets = (secrets.token_hex(16), secrets.token_hex(16))  # macaroon, form
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_seconds = 0.0  # how long the last start() took

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def user_id(self, name: str) -> str:
        return f"@{name}:{self.server_name}"

    def log_tail(self, n: int = 40) -> str:
        """The last n lines of Synapse's console output and of its log file."""
        out: list[bytes] = []
        for f in (self.console, self.log):
            out += f.read_bytes().splitlines()[-n:] if f.exists() else []
        return b"\n".join(out).decode(errors="replace")

    def _render(self) -> None:
        """Write the logging config, signing key (once) and homeserver.yaml (JSON is YAML)."""
        key = self.dir / "signing.key"
        if not key.exists():  # ~1 ms here, vs ~1 s for `--generate-keys` (a second process)
            with key.open("w") as f:
                write_signing_keys(f, [generate_signing_key("a_test")])
        log_config = self.dir / "log.yaml"
        log_config.write_text(
            json.dumps(
                {
                    "version": 1,
                    "formatters": {
                        "precise": {
                            "format": "%(asctime)s %(name)s %(levelname)s %(request)s %(message)s"
                        }
                    },
                    "handlers": {
                        "file": {
                            "class": "logging.FileHandler",
                            "formatter": "precise",
                            "filename": str(self.log),
                        }
                    },
                    "loggers": {"synapse.storage.SQL": {"level": "WARNING"}},
                    "root": {"level": "INFO", "handlers": ["file"]},
                    "disable_existing_loggers": False,
                },
                indent=1,
            )
        )
        listener = {
            "port": self.port,
            "bind_addresses": ["127.0.0.1"],
            "type": "http",
            "tls": False,
            "x_forwarded": False,
            "resources": [{"names": ["client"], "compress": False}],
        }
        config: dict[str, Any] = {
            "server_name": self.server_name,
            "listeners": [listener],
            "pid_file": str(self.dir / "homeserver.pid"),  # only written with --daemonize
            "database": {"name": "sqlite3", "args": {"database": str(self.dir / "homeserver.db")}},
            "log_config": str(log_config),
            "media_store_path": str(self.dir / "media"),
            "signing_key_path": str(key),
            "report_stats": False,
            "enable_metrics": False,
            "enable_registration": True,
            "enable_registration_without_verification": True,
            "registration_shared_secret": self.shared_secret,
            "bcrypt_rounds": 4,
            "macaroon_secret_key": self._secrets[0],
            "form_secret": self._secrets[1],
            # No federation and no key servers: nothing ever leaves the machine.
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "federation_domain_whitelist": [],
            "presence": {"enabled": False},
            "url_preview_enabled": False,
            "rc_message": _FAST,
            "rc_registration": _FAST,
            "rc_joins_per_room": _FAST,
            "rc_login": {"address": _FAST, "account": _FAST, "failed_attempts": _FAST},
            "rc_joins": {"local": _FAST, "remote": _FAST},
            "rc_invites": {"per_room": _FAST, "per_user": _FAST, "per_issuer": _FAST},
            "rc_room_creation": _FAST,  # the default burst is 10 rooms
        }
        self.config.write_text(json.dumps(config, indent=1))

    def _versions_ok(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/_matrix/client/versions", timeout=1) as r:
                return bool(r.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def start(self, timeout: float = 30.0, attempts: int = 3) -> None:
        """Write the config and run Synapse until the client API answers (about 1 s here).

        On the first start a port taken since it was picked is picked again (up to
        `attempts` tries); later starts keep the port."""
        tries = 1 if self._served else attempts
        start_retrying(lambda: self._start(timeout), self._pick_port, tries)
        self._served = True

    def _pick_port(self) -> None:
        self.port = free_port()

    def _start(self, timeout: float) -> None:
        if self.proc is not None:
            raise RuntimeError("Synapse is already running")
        self.dir.mkdir(parents=True, exist_ok=True)
        self._render()
        log_start = self.log.stat().st_size if self.log.exists() else 0
        with self.console.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "synapse.app.homeserver", "-c", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.dir,
            )
        _RUNNING.add(self)
        # Our own log line too: /versions alone would also answer if another server held the port.
        wanted = f"Synapse now listening on TCP port {self.port}\n".encode()
        began = time.monotonic()
        while True:
            new_log = self.log.read_bytes()[log_start:] if self.log.exists() else b""
            if wanted in new_log and self._versions_ok():
                self.start_seconds = time.monotonic() - began
                return
            code = self.proc.poll()
            if code is not None or time.monotonic() > began + timeout:
                self.stop()
                why = f"exited with {code}" if code is not None else f"not up in {timeout}s"
                taken = b"Address already in use" in new_log
                error = PortTaken if taken else RuntimeError
                raise error(f"Synapse {why} (port {self.port}):\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM the process, SIGKILL it after 10 s, and reap it."""
        proc, self.proc = self.proc, None
        _RUNNING.discard(self)
        if proc is None:
            return
        stop_process(proc, grace=10)

    def restart(self) -> None:
        """Stop and start on the same port, database and key: accounts and rooms stay."""
        self.stop()
        self.start()

    def register(
        self, name: str, password: str, admin: bool = False, displayname: str | None = None
    ) -> str:
        """Create an account with the shared-secret admin API; return its access token."""
        api = f"{self.url}/_synapse/admin/v1/register"
        with urllib.request.urlopen(api, timeout=10) as r:
            nonce = json.load(r)["nonce"]
        mac = hmac.new(self.shared_secret.encode(), digestmod=hashlib.sha1)
        mac.update(f"{nonce}\0{name}\0{password}\0{'admin' if admin else 'notadmin'}".encode())
        body: dict[str, Any] = {
            "nonce": nonce,
            "username": name,
            "password": password,
            "admin": admin,
            "mac": mac.hexdigest(),
        }
        if displayname is not None:
            body["displayname"] = displayname
        req = urllib.request.Request(
            api,
            json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return str(json.load(r)["access_token"])
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"register {name}: {exc.code} {exc.read().decode()}") from exc


@atexit.register
def _kill_leftovers() -> None:
    for server in list(_RUNNING):
        server.stop()


@dataclass(frozen=True)
class Seen:
    """One timeline event; kind is nio's class name (RoomMessageText, MegolmEvent, ...)."""

    room_id: str
    sender: str
    kind: str
    type: str
    event_id: str
    body: str
    formatted_body: str
    msgtype: str
    source: dict[str, Any]


@dataclass(frozen=True)
class Typing:
    room_id: str
    user_ids: tuple[str, ...]


def _ok(resp: object, cls: type[T]) -> T:
    if not isinstance(resp, cls):
        raise RuntimeError(f"expected {cls.__name__}, got {resp!r}")
    return resp


@contextlib.contextmanager
def running(directory: Path, users: tuple[str, ...] = (), password: str = "") -> Iterator[Synapse]:
    """A started Synapse in `directory` with `users` registered, stopped on leaving (also
    when a registration fails)."""
    server = Synapse(directory)
    server.start()
    try:
        for name in users:
            server.register(name, password)
        yield server
    finally:
        server.stop()


class Human:
    """A matrix-nio client (no E2EE: nio's olm extra is not installed) standing in for a human."""

    def __init__(self, client: nio.AsyncClient) -> None:
        self.client = client
        self.events: list[Seen] = []
        self.typing: list[Typing] = []
        self.invites: set[str] = set()  # room ids we were invited to
        self._claimed: set[tuple[int, int]] = set()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def user_id(self) -> str:
        return str(self.client.user_id)

    @classmethod
    async def login(cls, synapse: Synapse, name: str, password: str) -> Human:
        """Log in with a password (a new device each time) and start syncing."""
        return await cls._connect(synapse, name, password=password)

    @classmethod
    async def from_token(cls, synapse: Synapse, name: str, token: str) -> Human:
        """Use the access token Synapse.register returned and start syncing."""
        return await cls._connect(synapse, name, token=token)

    @classmethod
    async def _connect(
        cls, synapse: Synapse, name: str, *, password: str = "", token: str = ""
    ) -> Human:
        # nio retries failed connections forever, backing off up to 60 s by default: cap the
        # wait so a sync loop is back within ~1 s of a Synapse restart.
        config = nio.AsyncClientConfig(max_timeout_retry_wait_time=1.0, request_timeout=30)
        client = nio.AsyncClient(synapse.url, synapse.user_id(name), config=config)
        human = cls(client)
        try:
            if token:
                client.access_token = token
                who = _ok(await client.whoami(), nio.WhoamiResponse)
                client.restore_login(who.user_id, who.device_id or "", token)
            else:
                _ok(await client.login(password, device_name="test"), nio.LoginResponse)
            first = await asyncio.wait_for(client.sync(timeout=0), 30)  # no long polling
            human._record(_ok(first, nio.SyncResponse))
        except BaseException:
            await client.close()
            raise
        human._task = asyncio.create_task(human._sync_loop(), name=f"sync {human.user_id}")
        return human

    async def _sync_loop(self) -> None:
        while True:
            resp = await self.client.sync(timeout=1000)  # ms of long polling
            if isinstance(resp, nio.SyncResponse):
                self._record(resp)
            else:
                await asyncio.sleep(0.2)

    def _record(self, resp: nio.SyncResponse) -> None:
        self.invites.update(resp.rooms.invite)
        for room_id, room in resp.rooms.join.items():
            for ev in room.timeline.events:
                src: dict[str, Any] = ev.source
                content = src.get("content") or {}
                self.events.append(
                    Seen(
                        room_id=room_id,
                        sender=src.get("sender", ""),
                        kind=type(ev).__name__,
                        type=src.get("type", ""),
                        event_id=src.get("event_id", ""),
                        body=str(content.get("body", "")),
                        formatted_body=str(content.get("formatted_body", "")),
                        msgtype=str(content.get("msgtype", "")),
                        source=src,
                    )
                )
            for eph in room.ephemeral:
                if isinstance(eph, nio.TypingNoticeEvent):
                    self.typing.append(Typing(room_id, tuple(eph.users)))
        self._changed.set()

    async def _wait(self, items: list[T], pred: Callable[[T], bool], timeout: float) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for i, item in enumerate(items):
                if (id(items), i) not in self._claimed and pred(item):
                    self._claimed.add((id(items), i))
                    return item
            self._changed.clear()
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"{self.user_id}: nothing matched in {timeout}s: {items}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def wait_event(self, predicate: Callable[[Seen], bool], timeout: float = 20.0) -> Seen:
        """The first event (seen before or after the call) that matches and that no earlier
        wait_event returned."""
        return await self._wait(self.events, predicate, timeout)

    async def wait_typing(self, pred: Callable[[Typing], bool], timeout: float = 20.0) -> Typing:
        """Like wait_event, for typing notices (user_ids is who types now; () when none)."""
        return await self._wait(self.typing, pred, timeout)

    async def create_room(
        self,
        name: str | None = None,
        invite: list[str] | None = None,
        *,
        encrypted: bool = False,
        is_direct: bool = False,
    ) -> str:
        """Create a private room (preset private_chat); encrypted adds m.room.encryption."""
        megolm = {"algorithm": "m.megolm.v1.aes-sha2"}
        state = [{"type": "m.room.encryption", "state_key": "", "content": megolm}]
        resp = await self.client.room_create(
            name=name,
            invite=invite or [],
            is_direct=is_direct,
            initial_state=state if encrypted else [],
        )
        return str(_ok(resp, nio.RoomCreateResponse).room_id)

    async def room_with(self, member: str, name: str, timeout: float = 30) -> str:
        """A room this human made and `member` (the bot, which joins invites) has joined."""
        room = await self.create_room(name=name, invite=[member])
        await self.wait_event(
            lambda e: (
                e.room_id == room
                and e.type == "m.room.member"
                and e.source.get("state_key") == member
                and e.source["content"].get("membership") == "join"
            ),
            timeout=timeout,
        )
        return room

    async def invite(self, room_id: str, user_id: str) -> None:
        _ok(await self.client.room_invite(room_id, user_id), nio.RoomInviteResponse)

    async def join(self, room_id: str) -> None:
        _ok(await self.client.join(room_id), nio.JoinResponse)

    async def set_typing(self, room_id: str, typing: bool = True) -> None:
        _ok(await self.client.room_typing(room_id, typing), nio.RoomTypingResponse)

    async def send(self, room_id: str, event_type: str, content: dict[str, Any]) -> str:
        """Send any event; return its event id."""
        resp = await self.client.room_send(
            room_id, event_type, content, tx_id=uuid.uuid4().hex, ignore_unverified_devices=True
        )
        return str(_ok(resp, nio.RoomSendResponse).event_id)

    async def send_text(
        self,
        room_id: str,
        body: str,
        *,
        mentions_user: str | None = None,
        mention_name: str | None = None,
        reply_to_event_id: str | None = None,
        formatted_body: str | None = None,
        msgtype: str = "m.text",
    ) -> str:
        """Send a message; return its event id.

        mentions_user adds `m.mentions` and, unless formatted_body is given, an HTML body where
        the first mention_name (default: the localpart) in body becomes a matrix.to pill.
        """
        content: dict[str, Any] = {"msgtype": msgtype, "body": body}
        if mentions_user:
            content["m.mentions"] = {"user_ids": [mentions_user]}
            if formatted_body is None:
                shown = mention_name or mentions_user[1:].split(":")[0]
                pill = f'<a href="https://matrix.to/#/{mentions_user}">{html.escape(shown)}</a>'
                before, found, after = body.partition(shown)
                formatted_body = (
                    f"{html.escape(before)}{pill}{html.escape(after)}"
                    if found
                    else f"{pill} {html.escape(body)}"
                )
        if formatted_body is not None:
            content.update(format="org.matrix.custom.html", formatted_body=formatted_body)
        if reply_to_event_id:
            content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_to_event_id}}
        return await self.send(room_id, "m.room.message", content)

    async def send_encrypted_like(self, room_id: str) -> str:
        """Send an m.room.encrypted event with fake megolm ciphertext (nobody can decrypt it)."""
        content = {
            "algorithm": "m.megolm.v1.aes-sha2",
            "ciphertext": "x",
            "device_id": "X",
            "sender_key": "y",
            "session_id": "z",
        }
        return await self.send(room_id, "m.room.encrypted", content)

    async def close(self) -> None:
        """Stop the sync loop and close the HTTP session."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.client.close()
