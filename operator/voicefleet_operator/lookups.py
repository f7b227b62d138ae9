"""Short-lived answers shared by every reconcile: which keys a Secret has, whether KEDA's API
is served. 1,000 VoiceAgents naming the same Secret read it once per few seconds, not once
each.

Only what the reconciler checks is kept (a Secret's key names, and a SHA-256 of each value
so that a rotation can roll the workers; never the values), and an absence only briefly: a VoiceAgent waiting for a Secret or for KEDA sees it soon after it
appears. Errors are never kept. Thread-safe (reconciles run in a thread pool), and one
read per key at a time: the threads that miss the same key together wait for one answer.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

from .kube import KubeApi, path
from .render_autoscaler import KEDA_GROUP_PATH

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

SECRET_TTL: Final = 5.0  # a Secret seen; its key names
SECRET_ABSENT_TTL: Final = 2.0  # a Secret not found
KEDA_TTL: Final = 60.0  # KEDA's API served
KEDA_ABSENT_TTL: Final = 10.0  # not served
PURGE_EVERY: Final = 1000  # fetches between sweeps of expired answers


class TtlCache(Generic[K, V]):
    """fetch() answers kept for `ttl` seconds, or `absent_ttl` when the answer is None.
    A TTL of 0 keeps nothing."""

    def __init__(
        self, ttl: float, absent_ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.absent_ttl = absent_ttl
        self.clock = clock
        self._entries: dict[K, tuple[float, V | None]] = {}  # key -> (expiry, value)
        self._lock = threading.Lock()
        self._fetching: dict[K, threading.Lock] = {}
        self._fetches = 0

    def get(self, key: K, fetch: Callable[[], V | None], *, fresh: bool = False) -> V | None:
        """The kept answer for `key` if still valid (and not `fresh`), else fetch()'s.
        fetch() raising keeps nothing and raises to the caller."""
        started = self.clock()
        if not fresh:
            hit = self._valid(key, started)
            if hit is not None:
                return hit[1]
        with self._lock:
            one = self._fetching.setdefault(key, threading.Lock())
        with one:
            if not fresh:
                # Another thread may have fetched it while this one waited.
                hit = self._valid(key, started)
                if hit is not None:
                    return hit[1]
            value = fetch()
            ttl = self.ttl if value is not None else self.absent_ttl
            with self._lock:
                if ttl > 0:
                    # Valid from when the read started: never longer than `ttl` after it.
                    self._entries[key] = (started + ttl, value)
                else:
                    self._entries.pop(key, None)
                self._fetches += 1
                if self._fetches % PURGE_EVERY == 0:
                    self._purge(self.clock())
            return value

    def _purge(self, now: float) -> None:
        """Drop expired answers and idle per-key locks (Secrets of deleted namespaces)."""
        for k in [k for k, (expiry, _) in self._entries.items() if expiry <= now]:
            del self._entries[k]
        for k in [k for k, lock in self._fetching.items() if not lock.locked()]:
            del self._fetching[k]

    def _valid(self, key: K, now: float) -> tuple[float, V | None] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= now:
                del self._entries[key]
                return None
            return entry


@dataclass(frozen=True)
class SecretInfo:
    """What the reconciler keeps of a Secret: its key names, and per key a SHA-256 of the
    value (to tell a rotation; the values themselves are dropped at once)."""

    keys: frozenset[str]
    digests: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, secret: Mapping[str, object]) -> SecretInfo:
        data = secret.get("data") or {}
        assert isinstance(data, Mapping)
        digests = {k: hashlib.sha256(str(v).encode()).hexdigest() for k, v in data.items()}
        string_data = secret.get("stringData") or {}
        assert isinstance(string_data, Mapping)
        return cls(frozenset(data) | frozenset(string_data), digests)


@dataclass
class Lookups:
    secrets: TtlCache[tuple[str, str], SecretInfo]
    keda: TtlCache[str, bool]

    @classmethod
    def cached(cls, clock: Callable[[], float] = time.monotonic) -> Lookups:
        return cls(
            secrets=TtlCache(SECRET_TTL, SECRET_ABSENT_TTL, clock),
            keda=TtlCache(KEDA_TTL, KEDA_ABSENT_TTL, clock),
        )

    @classmethod
    def uncached(cls) -> Lookups:
        """Every question goes to the API server (tests, one-off reconciles)."""
        return cls(secrets=TtlCache(0, 0), keda=TtlCache(0, 0))

    def secret_keys(
        self, kube: KubeApi, namespace: str, name: str, *, fresh: bool = False
    ) -> frozenset[str] | None:
        """The key names of a Secret (`data` and `stringData`), None when it does not exist.
        `fresh`: read it now (and keep that answer for the others)."""
        info = self.secret_info(kube, namespace, name, fresh=fresh)
        return None if info is None else info.keys

    def secret_info(
        self, kube: KubeApi, namespace: str, name: str, *, fresh: bool = False
    ) -> SecretInfo | None:
        """`secret_keys` with the digests of the values (None: no such Secret)."""

        def read() -> SecretInfo | None:
            secret = kube.get(path("v1", "Secret", namespace, name))
            return None if secret is None else SecretInfo.of(secret)

        return self.secrets.get((namespace, name), read, fresh=fresh)

    def keda_served(self, kube: KubeApi) -> bool:
        # The cache keeps None briefly; an absent API is None here, not False.
        served = self.keda.get(
            "keda", lambda: True if kube.get(KEDA_GROUP_PATH) is not None else None
        )
        return bool(served)
