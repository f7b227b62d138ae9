"""Webhook verification with real signed tokens (livekit-api's AccessToken, as LiveKit signs
them: HS256 with the API secret, the body's SHA-256 in the claims)."""

from __future__ import annotations

import base64
import datetime
import hashlib
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from google.protobuf.json_format import MessageToJson
from livekit.api import AccessToken
from livekit.protocol.models import ParticipantInfo, Room
from livekit.protocol.webhook import WebhookEvent

from voicefleet_operator.webhook import (
    MAX_BODY,
    WEBHOOK_PATH,
    Verdict,
    WebhookServer,
    WebhookVerifier,
    secret_id,
)
from voicefleet_testbed.ports import free_port

KEY, SECRET = "devkey", "s" * 32
OTHER_SECRET = "t" * 32  # another LiveKit deployment that also calls its key "devkey"
NOW = 1_800_000_000.0


def event_body(
    event_id: str = "EV_1", created_at: float = NOW, kind: str = "participant_left"
) -> bytes:
    ev = WebhookEvent(
        event=kind,
        id=event_id,
        created_at=int(created_at),
        room=Room(name="r1"),
        participant=ParticipantInfo(identity="agent-1", kind=ParticipantInfo.Kind.AGENT),
    )
    return MessageToJson(ev).encode()


def sign(body: bytes, key: str = KEY, secret: str = SECRET, ttl: float = 300) -> str:
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    token = AccessToken(key, secret).with_sha256(digest)
    return token.with_ttl(datetime.timedelta(seconds=ttl)).to_jwt()


def verifier(clock: float = NOW) -> WebhookVerifier:
    # The token's exp is checked against the real clock; createdAt against `clock`.
    return WebhookVerifier(lambda: {KEY: [OTHER_SECRET, SECRET]}, window=300, clock=lambda: clock)


def test_valid_webhook_is_accepted_with_its_credentials() -> None:
    body = event_body()
    v = verifier().verify(body, sign(body))
    assert v.result == "accepted", v.why
    assert v.event is not None and v.event.participant.identity == "agent-1"
    assert v.credentials == secret_id(KEY, SECRET) != secret_id(KEY, OTHER_SECRET)
    assert SECRET not in v.credentials
    # A fresh verifier (no replay memory) also takes the token with a Bearer prefix.
    assert verifier().verify(body, "Bearer " + sign(body)).result == "accepted"
    assert verifier().verify(event_body("EV_2"), "Bearer " + sign(event_body("EV_2"))).status == 200


@pytest.mark.parametrize(
    ("auth", "result"),
    [
        (None, "bad_signature"),  # unsigned
        ("", "bad_signature"),
        ("not-a-jwt", "bad_signature"),
        ("WRONG_SECRET", "bad_signature"),  # forged: signed with a secret we do not know
        ("UNKNOWN_KEY", "unknown_key"),
        ("TAMPERED", "bad_signature"),  # signed for another body
        ("EXPIRED", "stale"),
    ],
)
def test_refused(auth: str | None, result: str) -> None:
    body = event_body()
    token = {
        "WRONG_SECRET": sign(body, secret="x" * 32),
        "UNKNOWN_KEY": sign(body, key="otherkey"),
        "TAMPERED": sign(event_body("EV_other")),
        "EXPIRED": sign(body, ttl=-120),
    }.get(auth or "", auth)
    v = verifier().verify(body, token)
    assert (v.result, v.event) == (result, None)
    assert v.status == (400 if result == "malformed" else 401)


def test_replays_are_refused() -> None:
    body = event_body()
    v = verifier()
    assert v.verify(body, sign(body)).result == "accepted"
    # The same request again (a captured one, replayed): refused though validly signed.
    assert v.verify(body, sign(body)).result == "stale"
    # An old event re-signed with a fresh token is refused for its age.
    old = event_body("EV_old", created_at=NOW - 3600)
    assert v.verify(old, sign(old)).result == "stale"
    future = event_body("EV_future", created_at=NOW + 3600)
    assert v.verify(future, sign(future)).result == "stale"


def test_malformed_but_signed() -> None:
    for body in (b"{not json", b'{"event": "participant_left"}', "\xff".encode("latin-1")):
        v = verifier().verify(body, sign(body))
        assert (v.result, v.status) == ("malformed", 400), body


async def test_server_counts_and_delivers_only_accepted() -> None:
    port = free_port()
    got: list[tuple[str, str]] = []
    counts: dict[str, int] = {}

    async def on_event(event: WebhookEvent, credentials: str) -> None:
        got.append((event.id, credentials))

    def count(result: str) -> None:
        counts[result] = counts.get(result, 0) + 1

    server = WebhookServer(
        WebhookVerifier(lambda: {KEY: [SECRET]}, clock=time.time), on_event, count
    )
    await server.start("127.0.0.1", port)
    url = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
    try:
        async with aiohttp.ClientSession() as http:
            good = event_body("EV_live", created_at=time.time())
            forged = event_body("EV_forged", created_at=time.time())
            for body, token, status in (
                (good, sign(good), 200),
                (good, sign(good), 401),  # replay
                (forged, sign(forged, secret="x" * 32), 401),
                (forged, None, 401),
                (b"junk", sign(b"junk"), 400),
            ):
                headers = {"Content-Type": "application/webhook+json"}
                if token:
                    headers["Authorization"] = token
                async with http.post(url, data=body, headers=headers) as resp:
                    assert resp.status == status, await resp.text()
            async with http.get(url) as resp:
                assert resp.status == 405
    finally:
        await server.stop()
    assert got == [("EV_live", secret_id(KEY, SECRET))]
    assert counts == {"accepted": 1, "stale": 1, "bad_signature": 2, "malformed": 1}


async def test_a_standby_answers_503_for_livekit_to_retry_and_verifies_nothing() -> None:
    """HA: a replica that is not acting knows no keys; a 401 would lose the event (LiveKit
    retries 5xx only) and fire the signature alert. It answers 503 with Retry-After,
    counted as `standby`; once it acts, the same request is accepted."""
    port = free_port()
    got: list[str] = []
    counts: dict[str, int] = {}
    acting = False

    async def on_event(event: WebhookEvent, credentials: str) -> None:
        got.append(event.id)

    def count(result: str) -> None:
        counts[result] = counts.get(result, 0) + 1

    server = WebhookServer(
        WebhookVerifier(lambda: {KEY: [SECRET]}, clock=time.time),
        on_event,
        count,
        standing_by=lambda: not acting,
    )
    await server.start("127.0.0.1", port)
    url = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
    body = event_body("EV_handover", created_at=time.time())
    headers = {"Content-Type": "application/webhook+json", "Authorization": sign(body)}
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(url, data=body, headers=headers) as resp:
                assert resp.status == 503, await resp.text()
                assert resp.headers["Retry-After"] == "1"
            acting = True  # the handover: this replica acts now; LiveKit's retry lands
            async with http.post(url, data=body, headers=headers) as resp:
                assert resp.status == 200, await resp.text()
    finally:
        await server.stop()
    assert got == ["EV_handover"]
    assert counts == {"standby": 1, "accepted": 1}


async def test_oversized_webhook_is_refused_with_413_before_verification() -> None:
    """A body over MAX_BODY (with a Content-Length, or chunked without one) is answered
    413 and counted as malformed without being verified or delivered; one at the limit is
    read, and the server keeps serving."""
    port = free_port()
    got: list[str] = []
    counts: dict[str, int] = {}
    verified: list[int] = []

    class Counting(WebhookVerifier):
        def verify(self, body: bytes, authorization: str | None) -> Verdict:
            verified.append(len(body))
            return super().verify(body, authorization)

    async def on_event(event: WebhookEvent, credentials: str) -> None:
        got.append(event.id)

    def count(result: str) -> None:
        counts[result] = counts.get(result, 0) + 1

    server = WebhookServer(Counting(lambda: {KEY: [SECRET]}, clock=time.time), on_event, count)
    await server.start("127.0.0.1", port)
    url = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
    big = b"x" * (MAX_BODY + 1)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 64 * 1024):
            yield big[i : i + 64 * 1024]

    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(url, data=big, headers={"Authorization": sign(big)}) as resp:
                assert resp.status == 413, await resp.text()
            async with http.post(url, data=chunks(), headers={"Authorization": sign(big)}) as resp:
                assert resp.status == 413, await resp.text()
                assert resp.request_info.headers.get("Transfer-Encoding") == "chunked"
            at_limit = b" " * MAX_BODY
            async with http.post(
                url, data=at_limit, headers={"Authorization": sign(at_limit)}
            ) as resp:
                assert resp.status == 400  # read and verified: signed, but not an event
            good = event_body("EV_after", created_at=time.time())
            async with http.post(url, data=good, headers={"Authorization": sign(good)}) as resp:
                assert resp.status == 200
    finally:
        await server.stop()
    assert verified == [MAX_BODY, len(good)]  # the oversized ones never reached it
    assert counts == {"malformed": 3, "accepted": 1} and got == ["EV_after"]
