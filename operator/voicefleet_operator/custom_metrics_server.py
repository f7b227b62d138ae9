"""The custom metrics API's HTTPS shell (`--custom-metrics-port`), on the operator's event
loop: the answers come from custom_metrics.py, the numbers from the `SessionFeed`.

Who may ask, checked on every request as an extension API server does (docs/autoscaling.md):
- TLS with the serving certificate in `--custom-metrics-cert-dir` (tls.crt, tls.key; the
  APIService's caBundle vouches for it);
- the client must present a certificate of the API server's front-proxy CA whose CN is
  one of its allowed names: both published by the API server in
  kube-system/extension-apiserver-authentication, read at start and every
  `REFRESH_SECONDS` after (a CA added there is trusted from then on; one removed stays
  trusted until the operator restarts, as TLS contexts only ever add CAs). Nothing but the
  aggregation layer holds that key, so only it can name a user in X-Remote-* headers;
- the user it names must be allowed `get` on `pods/voicefleet_worker_active_sessions` in
  `custom.metrics.k8s.io` in that namespace: a SubjectAccessReview, cached
  `REVIEW_TTL_SECONDS` (the API server's own delegated authorizer caches 10 s too).
  Discovery (the group and version documents) needs the front proxy only: it is what
  every authenticated user may read through the API server's discovery role anyway.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Protocol

from aiohttp import web

from . import custom_metrics as cm
from .feed import SessionFeed

log = logging.getLogger(__name__)
REFRESH_SECONDS: Final = 60.0
RETRY_SECONDS: Final = 10.0  # a start that failed
REVIEW_TTL_SECONDS: Final = 10.0
REVIEW_CACHE_MAX: Final = 4096
SAR_PATH: Final = "/apis/authorization.k8s.io/v1/subjectaccessreviews"


class Api(Protocol):
    """The blocking API client calls this needs (Kube)."""

    def get(self, path: str) -> dict[str, Any] | None: ...

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Any = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> dict[str, Any]: ...


def pods_in(feed: SessionFeed, namespace: str) -> list[cm.PodValue]:
    """Every worker pod of `namespace` the feed has a report from, with its sessions."""
    wall, mono = time.time(), feed.clock()
    out = []
    for va in feed.voiceagents(namespace):
        readings = feed.readings(namespace, va)
        for pod in feed.pods(namespace, va):
            r = readings.get(pod.name)
            if r is None or r.report is None:
                continue
            out.append(
                cm.PodValue(
                    namespace,
                    pod.name,
                    va,
                    dict(pod.labels),
                    r.report.activeSessions,
                    wall - (mono - r.at),
                )
            )
    return out


def _common_name(peercert: Any) -> str | None:
    """The subject CN of a verified peer certificate (ssl's dict form)."""
    for rdn in (peercert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


class CustomMetricsServer:
    def __init__(
        self,
        kube: Api,
        feed: SessionFeed,
        cert_dir: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.feed = feed
        self.cert = Path(cert_dir) / "tls.crt"
        self.key = Path(cert_dir) / "tls.key"
        self.clock = clock
        self.front_proxy: cm.FrontProxy | None = None
        self._ctx: ssl.SSLContext | None = None
        self._cert_mtimes: tuple[float, float] = (0.0, 0.0)
        self._reviews: dict[tuple[cm.User, tuple[tuple[str, str], ...]], tuple[bool, float]] = {}
        self._runner: web.AppRunner | None = None
        self._refresher: asyncio.Task[None] | None = None

    # --- TLS and the front proxy's settings -----------------------------------------------
    async def _read_front_proxy(self) -> cm.FrontProxy:
        ns, name = cm.AUTH_CONFIGMAP
        got = await asyncio.to_thread(self.kube.get, f"/api/v1/namespaces/{ns}/configmaps/{name}")
        return cm.front_proxy(got)

    def _load_cert(self) -> None:
        assert self._ctx is not None
        mtimes = (os.stat(self.cert).st_mtime, os.stat(self.key).st_mtime)
        if mtimes != self._cert_mtimes:  # a renewed certificate (a Secret's new content)
            self._ctx.load_cert_chain(self.cert, self.key)
            self._cert_mtimes = mtimes

    async def refresh(self) -> None:
        """Read the front proxy's settings again and trust a CA it names now; reload the
        serving certificate if its files changed."""
        fp = await self._read_front_proxy()
        if self._ctx is None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.verify_mode = ssl.CERT_REQUIRED  # no front-proxy certificate, no handshake
            self._ctx = ctx
        self._ctx.load_verify_locations(cadata=fp.client_ca)
        self._load_cert()
        self.front_proxy = fp

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            try:
                await self.refresh()
            except Exception as e:  # keep serving with what was read before
                log.warning("custom metrics: cannot refresh TLS settings: %s", e)

    # --- requests ---------------------------------------------------------------------
    async def _authorized(self, user: cm.User, attributes: dict[str, Any]) -> bool:
        key = (user, tuple(sorted((k, str(v)) for k, v in attributes.items())))
        now = self.clock()
        cached = self._reviews.get(key)
        if cached is not None and cached[1] > now:
            return cached[0]
        answer = await asyncio.to_thread(
            self.kube.request, "POST", SAR_PATH, body=cm.access_review(user, attributes)
        )
        ok, reason = cm.allowed(answer)
        if not ok:
            log.info("custom metrics: %s may not read %s (%s)", user.name, attributes, reason)
        if len(self._reviews) >= REVIEW_CACHE_MAX:
            self._reviews.clear()
        self._reviews[key] = (ok, now + REVIEW_TTL_SECONDS)
        return ok

    async def answer(self, request: web.Request) -> cm.Answer:
        fp = self.front_proxy
        if fp is None:
            return cm.status(503, "ServiceUnavailable", "not ready")
        peercert = request.transport.get_extra_info("peercert") if request.transport else None
        cn = _common_name(peercert)
        if peercert is None or not fp.allows(cn):
            # Signed by the front-proxy CA (the handshake checked that) but not a name the
            # API server proxies as.
            return cm.status(401, "Unauthorized", f"client certificate {cn!r} is not allowed")
        if request.method != "GET":
            return cm.status(405, "MethodNotAllowed", "only GET is served")
        what = cm.parse_path(request.path)
        if isinstance(what, cm.Answer):
            return what
        if isinstance(what, cm.Discovery):
            return what.answer
        user = cm.user_of(fp, request.headers.items())
        if user is None:
            return cm.status(401, "Unauthorized", "the front proxy named no user")
        try:
            ok = await self._authorized(user, what.review_attributes())
        except Exception as e:
            log.warning("custom metrics: SubjectAccessReview failed: %s", e)
            return cm.status(503, "ServiceUnavailable", "cannot check authorization now")
        if not ok:
            return cm.status(
                403,
                "Forbidden",
                f'user "{user.name}" cannot get {cm.GROUP} {cm.RESOURCE} in namespace '
                f'"{what.namespace}"',
            )
        return cm.metric_values(what, request.query, lambda ns: pods_in(self.feed, ns))

    async def handle(self, request: web.Request) -> web.Response:
        a = await self.answer(request)
        return web.Response(status=a.status, body=a.encode(), content_type="application/json")

    # --- life -------------------------------------------------------------------------
    async def start(self, host: str, port: int) -> None:
        await self.refresh()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port, ssl_context=self._ctx).start()
        self._refresher = asyncio.create_task(self._refresh_forever(), name="custom metrics TLS")
        log.info("custom metrics API (%s) on https://%s:%d", cm.GROUP, host, port)

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            self._refresher = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def serve_retrying(server: CustomMetricsServer, host: str, port: int) -> None:
    """Serve for the operator's life. A failure to start is logged and retried, never
    fatal: the rest of the operator runs, and the APIService shows itself unavailable."""
    while True:
        try:
            await server.start(host, port)
            return
        except Exception as e:  # no ConfigMap yet, the API server away, a bad cert
            log.error("cannot serve the custom metrics API on %s:%d: %s", host, port, e)
            await server.stop()
            await asyncio.sleep(RETRY_SECONDS)
