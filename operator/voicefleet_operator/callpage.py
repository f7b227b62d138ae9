"""The call page: a browser page to talk to a VoiceAgent, and the endpoint minting its tokens.

    python -m voicefleet_operator.callpage --livekit-url wss://livekit.example.com \
        --web-dir web/dist [--namespaces a,b] [--bind 0.0.0.0] [--port 8088]

Serves the page built from `web/` (static files, no CDN), `GET api/agents` (the
VoiceAgents it may call) and `POST api/token` (a join token for a new room that
dispatches the chosen VoiceAgent's agent; `calltoken.py` decides). LiveKit's API key and
secret come from LIVEKIT_API_KEY / LIVEKIT_API_SECRET (the chart fills them from a
Secret). Anyone who reaches it can start calls to the listed agents: keep it internal
(a ClusterIP Service and `kubectl port-forward`) or behind your own authentication.

A thin shell: one thread per request (the standard library's server), the Kubernetes
client's sync calls. It logs method, path and status, never a token or a body.
"""

from __future__ import annotations

import argparse
import json
import logging
import mimetypes
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from voicefleet_contract import API_VERSION, KIND

from . import calltoken
from .kube import Kube, KubeError, path

log = logging.getLogger("voicefleet.callpage")
DEFAULT_PORT: Final = 8088
DEFAULT_WEB_DIR: Final = "/opt/voicefleet/web"  # where the operator image holds the page


@dataclass(frozen=True)
class Config:
    livekit_url: str  # the URL the browser connects to (not necessarily the workers')
    api_key: str
    api_secret: str
    web_dir: Path
    namespaces: tuple[str, ...]  # empty: every namespace


def content_security_policy(livekit_url: str) -> str:
    """Scripts and styles from the page itself only; connections to it and to LiveKit
    (signalling over ws(s), and its http(s) endpoints livekit-client also asks)."""
    u = urlsplit(livekit_url)
    http = {"ws": "http", "wss": "https"}.get(u.scheme, u.scheme)
    origins = f"{u.scheme}://{u.netloc} {http}://{u.netloc}"
    return (
        "default-src 'self'; "
        f"connect-src 'self' {origins}; "
        "media-src 'self' blob: mediastream:; "
        "img-src 'self' data:; style-src 'self' 'unsafe-inline'; worker-src 'self' blob:"
    )


class CallPage:
    """The page's three answers, over any way of listing VoiceAgents."""

    def __init__(self, config: Config, list_agents: Callable[[], list[dict[str, Any]]]) -> None:
        self.config = config
        self.list_agents = list_agents

    def agents(self) -> list[calltoken.Agent]:
        return calltoken.agents_from(self.list_agents())

    def token(self, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            ns, name = calltoken.parse_call(body)
            agent = calltoken.pick(self.agents(), ns, name)
        except calltoken.BadRequest as e:
            return HTTPStatus.BAD_REQUEST, {"error": str(e)}
        except LookupError as e:
            return HTTPStatus.NOT_FOUND, {"error": str(e)}
        g = calltoken.grant(agent, self.config.api_key, self.config.api_secret)
        return HTTPStatus.OK, {"url": self.config.livekit_url, "token": g.token, "room": g.room}

    def static(self, url_path: str) -> Path | None:
        """The file of web_dir a GET names, or None; nothing outside web_dir."""
        rel = url_path.split("?", 1)[0].lstrip("/") or "index.html"
        root = self.config.web_dir.resolve()
        target = (root / rel).resolve()
        if root not in target.parents or not target.is_file():
            return None
        return target


def kube_lister(kube: Kube, namespaces: Sequence[str]) -> Callable[[], list[dict[str, Any]]]:
    def list_agents() -> list[dict[str, Any]]:
        if not namespaces:
            return kube.list(path(API_VERSION, KIND, None), "")
        return [o for ns in namespaces for o in kube.list(path(API_VERSION, KIND, ns), "")]

    return list_agents


def handler_for(page: CallPage) -> type[BaseHTTPRequestHandler]:
    csp = content_security_policy(page.config.livekit_url)

    class Handler(BaseHTTPRequestHandler):
        server_version = "voicefleet-callpage"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # log_request below: method, path (no query) and status only

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            log.info("%s %s %s", self.command, urlsplit(self.path).path, code)

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Security-Policy", csp)
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, doc: dict[str, Any]) -> None:
            self._send(status, json.dumps(doc).encode(), "application/json")

        def _api_failed(self, e: KubeError) -> None:
            log.warning("listing VoiceAgents failed: %s %s", e.status, e.reason)
            self._json(HTTPStatus.BAD_GATEWAY, {"error": f"listing VoiceAgents: {e.reason}"})

        def do_GET(self) -> None:
            route = urlsplit(self.path).path
            if route.endswith("/api/agents"):
                try:
                    agents = page.agents()
                except KubeError as e:
                    return self._api_failed(e)
                return self._json(HTTPStatus.OK, {"agents": [a.as_json() for a in agents]})
            if route == "/healthz":
                return self._send(HTTPStatus.OK, b"ok\n", "text/plain")
            f = page.static(route)
            if f is None:
                return self._json(HTTPStatus.NOT_FOUND, {"error": f"{route}: not found"})
            ctype = mimetypes.guess_type(f.name)[0] or "application/octet-stream"
            self._send(HTTPStatus.OK, f.read_bytes(), ctype)

        def do_POST(self) -> None:
            if not urlsplit(self.path).path.endswith("/api/token"):
                return self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
            length = int(self.headers.get("Content-Length") or 0)
            if length > calltoken.MAX_BODY:
                return self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "body: too large"})
            try:
                status, doc = page.token(self.rfile.read(length))
            except KubeError as e:
                return self._api_failed(e)
            self._json(status, doc)

    return Handler


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m voicefleet_operator.callpage", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--livekit-url", required=True, help="LiveKit's URL as the browser reaches it")
    ap.add_argument("--web-dir", default=DEFAULT_WEB_DIR, help="the built page (web/dist)")
    ap.add_argument("--namespaces", default="", help="comma-separated; default every namespace")
    ap.add_argument("--bind", default="0.0.0.0", help="address to listen on")
    ap.add_argument("--port", type=int, default=DEFAULT_PORT)
    ap.add_argument("--kubeconfig", default=None, help="default: in-cluster, else $KUBECONFIG")
    return ap.parse_args(argv)


def config_from(args: argparse.Namespace, env: dict[str, str]) -> Config:
    """Flags and environment -> Config; a clear error naming what is missing."""
    missing = [k for k in ("LIVEKIT_API_KEY", "LIVEKIT_API_SECRET") if not env.get(k)]
    if missing:
        raise SystemExit(f"callpage: {' and '.join(missing)} must be set (LiveKit's API key)")
    if urlsplit(args.livekit_url).scheme not in ("ws", "wss", "http", "https"):
        raise SystemExit("callpage: --livekit-url must be a ws://, wss://, http:// or https:// URL")
    web = Path(args.web_dir)
    if not (web / "index.html").is_file():
        raise SystemExit(f"callpage: --web-dir {web} holds no index.html (build it: make web)")
    ns = tuple(n for n in args.namespaces.split(",") if n)
    return Config(args.livekit_url, env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"], web, ns)


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(sys.argv[1:] if argv is None else argv)
    config = config_from(args, dict(os.environ))
    page = CallPage(config, kube_lister(Kube.connect(args.kubeconfig), config.namespaces))
    server = ThreadingHTTPServer((args.bind, args.port), handler_for(page))
    log.info(
        "call page on http://%s:%d/ (LiveKit %s, namespaces: %s)",
        args.bind, server.server_port, config.livekit_url, ",".join(config.namespaces) or "all",
    )  # fmt: skip
    server.serve_forever()


if __name__ == "__main__":
    main()
