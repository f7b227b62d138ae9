"""A small async client for the Kubernetes API: just what the node agent needs.

The node agent watches every pod and patches many statuses; a thin aiohttp client keeps
that cheap and its behaviour obvious (list+watch with resourceVersion, re-list on 410).
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

JSON = dict[str, Any]


class ApiError(RuntimeError):
    def __init__(self, status: int, body: str, what: str) -> None:
        super().__init__(f"{what}: HTTP {status}: {body[:300]}")
        self.status = status
        self.body = body


class WatchExpired(RuntimeError):
    """The watch's resourceVersion is too old (HTTP 410): re-list."""


@dataclass(frozen=True)
class Credentials:
    server: str
    token: str
    ca_file: str


class KubeApi:
    def __init__(self, creds: Credentials) -> None:
        self.creds = creds
        ctx = ssl.create_default_context(cafile=creds.ca_file)
        self._session = aiohttp.ClientSession(
            base_url=creds.server,
            headers={"Authorization": f"Bearer {creds.token}"},
            connector=aiohttp.TCPConnector(ssl=ctx, limit=64),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )

    async def close(self) -> None:
        await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float = 30,
    ) -> JSON:
        data = None if body is None else json.dumps(body)
        async with self._session.request(
            method,
            path,
            data=data,
            params=params,
            headers={"Content-Type": content_type},
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            text = await resp.text()
            if resp.status >= 400:
                raise ApiError(resp.status, text, f"{method} {path}")
            return json.loads(text) if text else {}

    async def get(self, path: str) -> JSON:
        return await self.request("GET", path)

    async def get_or_none(self, path: str) -> JSON | None:
        try:
            return await self.get(path)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    async def merge_patch(self, path: str, body: Any) -> JSON:
        return await self.request(
            "PATCH", path, body=body, content_type="application/merge-patch+json"
        )

    async def post(self, path: str, body: Any) -> JSON:
        return await self.request("POST", path, body=body)

    async def delete(self, path: str, body: Any = None) -> JSON:
        return await self.request("DELETE", path, body=body)

    async def list(self, path: str, params: Mapping[str, str] | None = None) -> JSON:
        return await self.request("GET", path, params=params, timeout=120)

    async def watch(
        self, path: str, resource_version: str, params: Mapping[str, str] | None = None
    ) -> AsyncIterator[tuple[str, JSON]]:
        """Yield (type, object) events; raise WatchExpired when the server says 410."""
        q = {
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": "300",
            **(params or {}),
        }
        async with self._session.get(
            path, params=q, timeout=aiohttp.ClientTimeout(total=None, sock_read=330)
        ) as resp:
            if resp.status == 410:
                raise WatchExpired(path)
            if resp.status >= 400:
                raise ApiError(resp.status, await resp.text(), f"WATCH {path}")
            async for line in resp.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event["type"], event["object"]
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise WatchExpired(path)
                    raise ApiError(int(obj.get("code", 500)), json.dumps(obj), f"WATCH {path}")
                yield kind, obj
