"""The clients: real users (register, login through HAProxy) each running streamed chats in
sessions of a few turns, ending each session, and resuming a cut stream per RESUME_CONTRACT.md.

Every chat, login and session end is recorded as seen from the client; nothing is judged here
(``chaos.checks`` classifies and compares).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from dataclasses import dataclass, field

import aiohttp

from bench.loadgen import prompt_for
from chaos.transcript import TranscriptParser

__all__ = ["Chat", "Client", "LoadSettings", "Op", "Recorder", "SessionRecord", "run_load"]

MAX_RESUMES = 8  # reconnects of one chat (each after RESUME_BACKOFF) within its timeout
RESUME_BACKOFF = 0.3


@dataclass(frozen=True, slots=True)
class LoadSettings:
    base_url: str
    clients: int = 24
    turns: int = 3
    chat_timeout: float = 30.0
    run_id: str = field(default_factory=lambda: secrets.token_hex(3))


@dataclass(slots=True)
class Chat:
    """One ``POST /chat`` (stream) as the client saw it; times are ``time.monotonic()``."""

    client: int
    session_id: str
    prompt: str
    started: float
    ended: float = 0.0
    last_activity: float = 0.0
    status: int | None = None  # of POST /chat; None: no HTTP answer at all
    refusal: str | None = None  # the error code of a non-200 answer
    request_id: str | None = None
    text: str = ""
    done: bool = False
    error: str | None = None  # the code of the final error event
    timed_out: bool = False
    cut: int = 0  # streams that ended without a final event
    resumes: int = 0
    resume_refused: int | None = None  # status of a resume the gateway would not serve
    anomalies: list[str] = field(default_factory=list)

    def note(self, parser: TranscriptParser) -> None:
        self.text, self.done, self.error = parser.text, parser.done, parser.error
        self.request_id = self.request_id or parser.request_id
        self.anomalies = list(parser.anomalies)


@dataclass(slots=True)
class Op:
    """A login (``ok`` when it gave a token)."""

    started: float
    ended: float
    ok: bool


@dataclass(slots=True)
class SessionRecord:
    """One session of one client, with the token of the user it belongs to (after a Redis
    restart the client is a new user: its old sessions stay the old user's)."""

    client: int
    session_id: str
    token: str
    started: float
    ended_at: float | None = None  # when POST /sessions/{id}/end succeeded

    @property
    def ended(self) -> bool:
        return self.ended_at is not None


@dataclass(slots=True)
class Recorder:
    chats: list[Chat] = field(default_factory=list)
    logins: list[Op] = field(default_factory=list)
    sessions: dict[str, SessionRecord] = field(default_factory=dict)
    first_chat: asyncio.Event = field(default_factory=asyncio.Event)


class Client:
    """One user; ``token`` is kept across failed logins (it stays valid for its TTL)."""

    def __init__(self, index: int, http: aiohttp.ClientSession, settings: LoadSettings) -> None:
        self.index = index
        self.http = http
        self.settings = settings
        self.base = settings.base_url.rstrip("/")
        self.username = f"chaos{settings.run_id}u{index}"
        self.password = f"pw-{settings.run_id}-{secrets.token_hex(6)}"
        self.token = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def register(self) -> bool:
        body = {
            "username": self.username,
            "password": self.password,
            "email": f"{self.username}@chaos.example.com",
            "organization": f"chaos{self.settings.run_id}o{self.index}",
        }
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with self.http.post(f"{self.base}/register", json=body, timeout=_short()) as response:
                return response.status in {201, 409}
        return False

    async def login(self) -> bool:
        """Log in; a user the auth service does not know (a 401) registers again once (accounts
        are PostgreSQL's, so no fault here should lose one: a second 401 is a failed login)."""
        for _ in range(2):
            body = {"username": self.username, "password": self.password}
            try:
                async with self.http.post(f"{self.base}/login", json=body, timeout=_short()) as response:
                    if response.status == 200:
                        self.token = str((await response.json())["access_token"])
                        return True
                    if response.status != 401:
                        return False
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError):
                return False
            if not await self.register():
                return False
        return False

    async def end_session(self, record: SessionRecord) -> None:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            url = f"{self.base}/sessions/{record.session_id}/end"
            headers = {"Authorization": f"Bearer {record.token}"}
            async with self.http.post(url, headers=headers, timeout=_short()) as response:
                if response.status in {200, 202}:
                    record.ended_at = time.monotonic()

    async def session(self, record: SessionRecord) -> tuple[int, dict[str, object] | None]:
        """``GET /sessions/{id}``: status and body (None when it is not JSON or no answer)."""
        try:
            url = f"{self.base}/sessions/{record.session_id}"
            headers = {"Authorization": f"Bearer {record.token}"}
            async with self.http.get(url, headers=headers, timeout=_short()) as response:
                body = await response.json(content_type=None)
                return response.status, body if isinstance(body, dict) else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return 0, None

    async def chat(self, session_id: str, prompt: str) -> Chat:
        chat = Chat(self.index, session_id, prompt, time.monotonic())
        chat.last_activity = chat.started
        parser = TranscriptParser()
        try:
            async with asyncio.timeout(self.settings.chat_timeout):
                await self._post(chat, parser)
                while chat.status == 200 and not parser.finished:
                    chat.cut += 1
                    if chat.request_id is None or chat.resumes >= MAX_RESUMES:
                        break
                    await asyncio.sleep(RESUME_BACKOFF)
                    chat.resumes += 1
                    if not await self._resume(chat, parser):
                        break
        except TimeoutError:
            chat.timed_out = True
        chat.ended = time.monotonic()
        chat.note(parser)
        return chat

    async def _post(self, chat: Chat, parser: TranscriptParser) -> None:
        body = {"session_id": chat.session_id, "prompt": chat.prompt, "stream": True}
        try:
            async with self.http.post(f"{self.base}/chat", json=body, headers=self.headers) as response:
                chat.status = response.status
                if response.status != 200:
                    chat.refusal = await _error_code(response)
                    return
                chat.request_id = response.headers.get("X-Chat-Request-Id")
                await _read(response, parser, chat)
        except aiohttp.ClientError:
            return  # no answer (status None), or a cut stream (the caller resumes)

    async def _resume(self, chat: Chat, parser: TranscriptParser) -> bool:
        """One ``GET /chat/{id}/events`` from the last event seen; False: give up (404 ...)."""
        headers = dict(self.headers)
        if parser.last_id is not None:
            headers["Last-Event-ID"] = str(parser.last_id)
        try:
            url = f"{self.base}/chat/{chat.request_id}/events"
            async with self.http.get(url, headers=headers) as response:
                if response.status != 200:
                    await response.read()
                    if response.status in {502, 503, 504}:
                        return True  # no gateway can answer yet: try again
                    chat.resume_refused = response.status
                    return False
                await _read(response, parser, chat)
        except aiohttp.ClientError:
            pass
        return True

    async def loop(self, stop: asyncio.Event, recorder: Recorder) -> None:
        """Sessions of ``turns`` chats until ``stop``; a login before each, an end after it."""
        n = 0
        while not stop.is_set():
            session_id = f"chaos-{self.settings.run_id}-c{self.index}-s{n}"
            started = time.monotonic()
            ok = await self.login()
            recorder.logins.append(Op(started, time.monotonic(), ok))
            record = SessionRecord(self.index, session_id, self.token, started)
            recorder.sessions[session_id] = record
            for turn in range(self.settings.turns):
                if stop.is_set():
                    break
                prompt = f"[{session_id} #{turn}] {prompt_for(self.index + n + turn)}"
                chat = await self.chat(session_id, prompt)
                recorder.chats.append(chat)
                recorder.first_chat.set()
                if chat.status != 200:
                    await asyncio.sleep(0.2)  # refused at the door: a client backs off a little
            await self.end_session(record)
            n += 1


async def _read(response: aiohttp.ClientResponse, parser: TranscriptParser, chat: Chat) -> None:
    async for data in response.content.iter_any():
        chat.last_activity = time.monotonic()
        parser.feed(data)
        if parser.finished:
            return


async def _error_code(response: aiohttp.ClientResponse) -> str:
    try:
        body = await response.json(content_type=None)
        return str(body.get("error", f"http_{response.status}"))
    except (ValueError, AttributeError, aiohttp.ClientError):
        return f"http_{response.status}"


def _short() -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=10)


async def run_load(
    http: aiohttp.ClientSession, settings: LoadSettings, stop: asyncio.Event, recorder: Recorder
) -> list[Client]:
    """Register every client, then run their loops until ``stop``; returns the clients (their
    tokens read the sessions back afterwards)."""
    clients = [Client(i, http, settings) for i in range(settings.clients)]
    registered = await asyncio.gather(*(client.register() for client in clients))
    if not all(registered) or not all(await asyncio.gather(*(c.login() for c in clients))):
        raise RuntimeError("the clients could not register and log in through HAProxy")
    async with asyncio.TaskGroup() as group:
        for client in clients:
            group.create_task(client.loop(stop, recorder))
    return clients
