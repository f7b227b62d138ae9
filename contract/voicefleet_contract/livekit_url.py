"""LiveKit's URLs: one server, a ws:// (or wss://) address for signalling and the same
address over http:// (or https://) for its server API (Twirp)."""

from __future__ import annotations


def http_url(url: str) -> str:
    """The server API's URL for a signalling URL; any other URL unchanged."""
    for ws, http in (("ws://", "http://"), ("wss://", "https://")):
        if url.startswith(ws):
            return http + url[len(ws) :]
    return url
