"""LiveKit's server API URL from its signalling URL (one function for operator, worker and
testbed)."""

from __future__ import annotations

import pytest

from voicefleet_contract.livekit_url import http_url


@pytest.mark.parametrize(
    ("url", "api"),
    [
        ("ws://127.0.0.1:7880", "http://127.0.0.1:7880"),
        ("wss://lk.example", "https://lk.example"),
        ("wss://lk.example/ws://x", "https://lk.example/ws://x"),  # only the scheme
        ("http://x", "http://x"),
        ("https://x", "https://x"),
    ],
)
def test_http_url(url: str, api: str) -> None:
    assert http_url(url) == api
