"""lookups.py: answers shared by reconciles for a few seconds, with an injected clock."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from voicefleet_operator.kube import KubeError
from voicefleet_operator.lookups import (
    SECRET_ABSENT_TTL,
    SECRET_TTL,
    Lookups,
    TtlCache,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Counter:
    def __init__(self, value: Any) -> None:
        self.value = value
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        return self.value


def test_an_answer_is_kept_for_its_ttl() -> None:
    clock = Clock()
    cache: TtlCache[str, int] = TtlCache(5, 1, clock)
    fetch = Counter(7)
    assert cache.get("k", fetch) == 7
    clock.now += 4.9
    assert cache.get("k", fetch) == 7 and fetch.calls == 1
    clock.now += 0.1  # 5 s after the read started
    assert cache.get("k", fetch) == 7 and fetch.calls == 2


def test_an_absence_is_kept_only_briefly() -> None:
    clock = Clock()
    cache: TtlCache[str, int] = TtlCache(5, 1, clock)
    fetch = Counter(None)
    assert cache.get("k", fetch) is None
    clock.now += 0.5
    assert cache.get("k", fetch) is None and fetch.calls == 1
    clock.now += 0.5
    fetch.value = 3  # it appeared
    assert cache.get("k", fetch) == 3 and fetch.calls == 2


def test_fresh_reads_now_and_updates_the_answer_for_others() -> None:
    clock = Clock()
    cache: TtlCache[str, int] = TtlCache(5, 1, clock)
    fetch = Counter(1)
    cache.get("k", fetch)
    fetch.value = 2
    assert cache.get("k", fetch) == 1  # still the kept answer
    assert cache.get("k", fetch, fresh=True) == 2
    assert cache.get("k", Counter(99)) == 2


def test_errors_are_not_kept() -> None:
    cache: TtlCache[str, int] = TtlCache(5, 1, Clock())

    def fail() -> int:
        raise KubeError(403, "Forbidden", "no")

    with pytest.raises(KubeError):
        cache.get("k", fail)
    assert cache.get("k", Counter(4)) == 4


def test_zero_ttl_keeps_nothing() -> None:
    cache: TtlCache[str, int] = TtlCache(0, 0, Clock())
    fetch = Counter(1)
    cache.get("k", fetch)
    cache.get("k", fetch)
    assert fetch.calls == 2


def test_threads_missing_together_wait_for_one_read() -> None:
    cache: TtlCache[str, int] = TtlCache(5, 1)
    calls = 0
    gate = threading.Event()

    def slow() -> int:
        nonlocal calls
        calls += 1
        gate.wait(5)
        return 1

    results: list[int | None] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get("k", slow))) for _ in range(8)
    ]
    for t in threads:
        t.start()
    time.sleep(0.1)
    gate.set()
    for t in threads:
        t.join()
    assert results == [1] * 8 and calls == 1


def test_expired_answers_are_purged() -> None:
    clock = Clock()
    cache: TtlCache[int, int] = TtlCache(5, 1, clock)
    for i in range(999):
        cache.get(i, lambda: 1)
    clock.now += 10
    cache.get(-1, lambda: 1)  # the 1,000th read sweeps
    assert len(cache._entries) == 1 and len(cache._fetching) <= 1


class SecretsApi:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.gets = 0

    def get(self, path: str) -> dict[str, Any] | None:
        self.gets += 1
        return self.objects.get(path)


def test_secret_keys_are_names_only_and_shared() -> None:
    clock = Clock()
    kube = SecretsApi()
    kube.objects["/api/v1/namespaces/ns/secrets/s"] = {
        "data": {"apiKey": "c2VjcmV0"},
        "stringData": {"apiSecret": "plain"},
    }
    lookups = Lookups.cached(clock)
    keys = lookups.secret_keys(kube, "ns", "s")  # type: ignore[arg-type]
    assert keys == frozenset({"apiKey", "apiSecret"})
    assert lookups.secret_keys(kube, "ns", "s") == keys  # type: ignore[arg-type]
    assert kube.gets == 1
    clock.now += SECRET_TTL
    lookups.secret_keys(kube, "ns", "s")  # type: ignore[arg-type]
    assert kube.gets == 2
    # A missing Secret is asked for again within seconds.
    assert lookups.secret_keys(kube, "ns", "missing") is None  # type: ignore[arg-type]
    clock.now += SECRET_ABSENT_TTL
    kube.objects["/api/v1/namespaces/ns/secrets/missing"] = {"data": {"k": ""}}
    assert lookups.secret_keys(kube, "ns", "missing") == frozenset({"k"})  # type: ignore[arg-type]
