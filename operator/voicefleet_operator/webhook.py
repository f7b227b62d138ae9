"""LiveKit webhooks: verify every request, then hand accepted events to failover.

LiveKit POSTs each webhook with `Authorization: <JWT>`, signed (HS256) with the API secret
of the key named in the token's `iss`, carrying the SHA-256 of the body. A request is
accepted only when:

- the key is one the operator knows (a VoiceAgent with failover on uses it): else
  `unknown_key` (401);
- livekit-api's `WebhookReceiver` verifies the signature with that key's secret (any of
  them, when VoiceAgents on different LiveKit deployments share a key name) and the body
  hash: else `bad_signature` (401; also for a missing or unparseable token);
- the token has not expired and the event's `createdAt` is within `window` seconds of now,
  and its `id` was not seen before in that window: else `stale` (401), which refuses a
  captured request replayed later;
- the body is a WebhookEvent with an id and a creation time: else `malformed` (400).

A standby replica (HA) verifies nothing: it knows no keys and acts on nothing, so it
answers `standby` (503, `Retry-After`), which LiveKit retries (it retries 5xx, not 4xx)
until the request reaches the replica that acts, instead of a 401 that loses the event and
fires the signature alert.

Nothing is acted on unless accepted; every request is counted by result. Secrets are never
logged: credentials are identified by key and a short hash of the secret.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Final, Literal

import jwt
from aiohttp import web
from google.protobuf.json_format import ParseError
from livekit.api import TokenVerifier, WebhookReceiver
from livekit.protocol.webhook import WebhookEvent

log = logging.getLogger(__name__)

WEBHOOK_PATH: Final = "/livekit/webhook"
MAX_BODY: Final = 1 << 20  # LiveKit's events are a few KB
Result = Literal["accepted", "bad_signature", "unknown_key", "stale", "malformed", "standby"]
RESULTS: Final[tuple[Result, ...]] = (
    "accepted",
    "bad_signature",
    "unknown_key",
    "stale",
    "malformed",
    "standby",
)
HTTP_STATUS: Final[Mapping[Result, int]] = {
    "accepted": 200,
    "bad_signature": 401,
    "unknown_key": 401,
    "stale": 401,
    "malformed": 400,
    "standby": 503,
}
RETRY_AFTER_S: Final = 1  # a handover labels the new active replica within seconds


def secret_id(api_key: str, api_secret: str) -> str:
    """A name for one key/secret pair that reveals nothing of the secret."""
    return f"{api_key}/{hashlib.sha256(api_secret.encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class Verdict:
    result: Result
    why: str = ""
    event: WebhookEvent | None = None
    credentials: str = ""  # secret_id() of the pair that verified it

    @property
    def status(self) -> int:
        return HTTP_STATUS[self.result]


class ReplayGuard:
    """Event ids seen in the last `window` seconds (a replay inside the window is refused;
    one outside it is refused for its age)."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._seen: dict[str, float] = {}

    def seen(self, key: str, now: float) -> bool:
        """True if `key` was seen before; records it otherwise."""
        if len(self._seen) > 1000:
            self._seen = {k: t for k, t in self._seen.items() if now - t <= self.window}
        t = self._seen.get(key)
        if t is not None and now - t <= self.window:
            return True
        self._seen[key] = now
        return False


class WebhookVerifier:
    def __init__(
        self,
        credentials: Callable[[], Mapping[str, Collection[str]]],
        window: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`credentials()` returns the known API keys, each with its possible secrets."""
        self.credentials = credentials
        self.window = window
        self.clock = clock
        self.replays = ReplayGuard(window + 60)

    def verify(self, body: bytes, authorization: str | None) -> Verdict:
        token = (authorization or "").strip()
        if token.lower().startswith("bearer "):
            token = token[7:].strip()
        if not token:
            return Verdict("bad_signature", "no Authorization token")
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return Verdict("bad_signature", "the token is not a JWT")
        key = unverified.get("iss")
        if not isinstance(key, str):
            return Verdict("unknown_key", "the token names no API key")
        secrets = self.credentials().get(key)
        if not secrets:
            return Verdict("unknown_key", "the token's API key is not one of ours")
        try:
            text = body.decode()
        except UnicodeDecodeError:
            return Verdict("malformed", "the body is not UTF-8")
        why = "bad signature"
        for secret in secrets:
            receiver = WebhookReceiver(TokenVerifier(key, secret))
            try:
                event = receiver.receive(text, token)
            except (jwt.ExpiredSignatureError, jwt.ImmatureSignatureError):
                return Verdict("stale", "the token has expired")
            except jwt.PyJWTError as e:
                why = f"token: {type(e).__name__}"
                continue  # maybe another deployment's secret for the same key
            except ParseError:
                return Verdict("malformed", "the body is not a WebhookEvent")
            except Exception as e:  # the receiver raises bare Exception for hash problems
                return Verdict("bad_signature", f"body does not match the token: {e}")
            return self._check_event(event, secret_id(key, secret))
        return Verdict("bad_signature", why)

    def _check_event(self, event: WebhookEvent, credentials: str) -> Verdict:
        if not event.event or not event.id or not event.created_at:
            return Verdict("malformed", "the event lacks a type, an id or createdAt")
        now = self.clock()
        if abs(now - event.created_at) > self.window:
            return Verdict("stale", f"created {now - event.created_at:.0f}s ago")
        if self.replays.seen(f"{credentials}/{event.id}", now):
            return Verdict("stale", "event id seen before (replayed)")
        return Verdict("accepted", "", event, credentials)


OnEvent = Callable[[WebhookEvent, str], Awaitable[None]]


class WebhookServer:
    """`POST /livekit/webhook` on the operator's bind address. Accepted events go to
    `on_event(event, credentials)` in the background; LiveKit gets its answer at once."""

    def __init__(
        self,
        verifier: WebhookVerifier,
        on_event: OnEvent,
        count: Callable[[Result], None] = lambda _: None,
        standing_by: Callable[[], bool] = lambda: False,
    ) -> None:
        self.verifier = verifier
        self.on_event = on_event
        self.count = count
        self.standing_by = standing_by
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post(WEBHOOK_PATH, self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self.count("malformed")
            return web.Response(status=413, text="too large\n")
        if self.standing_by():
            self.count("standby")
            return web.Response(
                status=HTTP_STATUS["standby"],
                text="standby\n",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        verdict = self.verifier.verify(body, request.headers.get("Authorization"))
        self.count(verdict.result)
        if verdict.event is None:
            log.warning("webhook refused (%s): %s", verdict.result, verdict.why)
            return web.Response(status=verdict.status, text=f"{verdict.result}\n")
        task = asyncio.create_task(self._deliver(verdict.event, verdict.credentials))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return web.Response(status=200, text="ok\n")

    async def _deliver(self, event: WebhookEvent, credentials: str) -> None:
        try:
            await self.on_event(event, credentials)
        except Exception:
            log.exception("handling webhook %s (%s) failed", event.event, event.id)

    async def start(self, host: str, port: int) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        log.info("LiveKit webhooks on http://%s:%d%s", host, port, WEBHOOK_PATH)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
