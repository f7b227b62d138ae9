"""names.py: one VoiceAgent per (LiveKit server, agent name), decided over plain data."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from voicefleet_operator.names import (
    AgentNames,
    Claim,
    claim_of_configmap,
    claim_of_voiceagent,
    conflict_problem,
    normalise_url,
    rival,
    winner,
)
from voicefleet_operator.status import Reason

URL = "http://livekit.livekit.svc:7880"
OLD, NEW = "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"


@pytest.mark.parametrize(
    ("url", "namespace", "want"),
    [
        ("ws://livekit.livekit.svc:7880", "prod", URL),
        ("WSS://LiveKit.Example.COM/", "prod", "https://livekit.example.com"),
        ("wss://livekit.example.com:443", "prod", "https://livekit.example.com"),
        ("https://livekit.example.com", "x", "https://livekit.example.com"),
        ("ws://livekit.example.com:80", "x", "http://livekit.example.com"),
        ("ws://livekit.example.com:7880", "x", "http://livekit.example.com:7880"),
        # Cluster DNS, as a pod in `namespace` resolves it.
        ("ws://livekit:7880", "livekit", URL),
        ("ws://livekit:7880", "prod", "http://livekit.prod.svc:7880"),
        ("ws://livekit.livekit:7880", "prod", URL),
        ("ws://livekit.livekit.svc.cluster.local:7880", "prod", URL),
        ("ws://livekit.livekit.svc.cluster.local.:7880", "prod", URL),
        ("ws://127.0.0.1:7880", "prod", "http://127.0.0.1:7880"),
        ("ws://[::1]:7880", "prod", "http://[::1]:7880"),
        ("ws://host/path/", "ns", "http://host.ns.svc/path"),
    ],
)
def test_normalise_url(url: str, namespace: str, want: str) -> None:
    assert normalise_url(url, namespace) == want


def c(
    ns: str,
    name: str = "support",
    created: str = OLD,
    holds: bool = False,
    agent: str = "support",
    url: str = URL,
) -> Claim:
    return Claim(ns, name, url, agent, created, holds)


@pytest.mark.parametrize(
    ("claims", "want"),
    [
        ([c("prod")], "prod"),
        # The older object wins when neither runs under the name yet ...
        ([c("staging", created=NEW), c("prod", created=OLD)], "prod"),
        # ... the same second: by namespace/name.
        ([c("staging"), c("prod")], "prod"),
        ([c("a", "y"), c("a", "x")], "a/x"),
        # A fleet already running under the name is never displaced by a newcomer,
        # whatever the newcomer's age (it was renamed or re-pointed later).
        ([c("staging", created=NEW, holds=True), c("prod", created=OLD)], "staging"),
        # Both running (an upgrade from an operator that did not check): the older.
        ([c("staging", created=NEW, holds=True), c("prod", created=OLD, holds=True)], "prod"),
        # No timestamp (never from the API server): taken as the newest.
        ([c("a", created=""), c("b", created=NEW)], "b"),
    ],
)
def test_winner(claims: list[Claim], want: str) -> None:
    got = winner(claims)
    assert got is not None
    assert (got.namespace if "/" not in want else got.ref) == want


def test_winner_of_nobody() -> None:
    assert winner([]) is None


@pytest.mark.parametrize(
    ("me", "others", "want"),
    [
        (c("prod"), [], None),
        (c("prod"), [c("prod")], None),  # itself
        (c("staging", created=NEW), [c("prod")], "prod/support"),
        (c("prod"), [c("staging", created=NEW)], None),
        # Another name, another server: no conflict.
        (c("staging", created=NEW), [c("prod", agent="sales")], None),
        (c("staging", created=NEW), [c("prod", url="http://other:7880")], None),
        # Several: the one it yields to is the winner.
        (
            c("c", created=NEW),
            [c("b", created=OLD), c("a", created=NEW, holds=True)],
            "a/support",
        ),
    ],
)
def test_rival(me: Claim, others: list[Claim], want: str | None) -> None:
    got = rival(me, others)
    assert (got.ref if got else None) == want


def test_conflict_problem_names_the_holder_and_the_field() -> None:
    p = conflict_problem(c("staging", created=NEW), c("prod", holds=True), running=False)
    assert p.reason == Reason.AGENT_NAME_CONFLICT == "AgentNameConflict"
    assert "prod/support" in p.message and "spec.agentName" in p.message
    assert "workers already run" in p.message and "failover" not in p.message
    running = conflict_problem(c("staging", holds=True, created=NEW), c("prod"), running=True)
    assert "left as they are" in running.message and "failover of this one is off" in (
        running.message
    )
    assert f"created {OLD}" in running.message


def va(name: str, ns: str, spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, **meta}, "spec": spec}


@pytest.mark.parametrize(
    ("body", "want"),
    [
        (
            va("support", "prod", {"livekit": {"url": "ws://livekit.livekit:7880"}},
               creationTimestamp=OLD),
            Claim("prod", "support", URL, "support", OLD),
        ),
        (
            va("support", "prod", {"agentName": "help", "livekit": {"url": URL}}),
            Claim("prod", "support", URL, "help", ""),
        ),
        (va("support", "prod", {"livekit": {}}), None),
        (va("support", "prod", {}), None),
        (va("support", "prod", {"agentName": "bad name", "livekit": {"url": URL}}), None),
        (
            va("support", "prod", {"livekit": {"url": URL}}, deletionTimestamp=NEW),
            None,
        ),
    ],
)  # fmt: skip
def test_claim_of_voiceagent(body: dict[str, Any], want: Claim | None) -> None:
    meta = body["metadata"]
    assert claim_of_voiceagent(meta["namespace"], meta["name"], body) == want


def test_claim_of_configmap() -> None:
    config = {"livekitURL": "ws://livekit:7880", "agentName": "support"}
    assert claim_of_configmap("livekit", {"agent.json": json.dumps(config)}) == (URL, "support")
    assert claim_of_configmap("prod", {"agent.json": "{"}) is None
    assert claim_of_configmap("prod", {}) is None
    assert claim_of_configmap("prod", None) is None


async def test_agent_names_from_indexes() -> None:
    """The shell over indexes shaped as kopf's (key -> the objects' values)."""
    prod, staging = c("prod", created=OLD), c("staging", created=NEW)
    claims: dict[tuple[str, str], list[Claim]] = {prod.key: [prod, staging]}
    held: dict[tuple[str, str], list[tuple[str, str]]] = {}
    names = AgentNames()
    assert names.rival(staging) is None  # not attached yet: nothing to say
    names.attach(claims, held, asyncio.get_running_loop())
    assert names.rival(staging) == prod
    assert names.rival(prod) is None
    assert names.rival_of("staging", "support", "ws://livekit.livekit:7880", "support") == prod
    assert names.rival_of("staging", "support", "ws://elsewhere:7880", "support") is None
    # staging runs under the name already (its ConfigMap): it keeps it.
    held[("staging", "support")] = [prod.key]
    assert names.rival(staging) is None
    holder = names.rival(prod)
    assert holder is not None and holder.ref == "staging/support" and holder.holds
    # From a reconcile's thread, through the loop.
    got = await asyncio.to_thread(names.rival_from_thread, prod)
    assert got[0] is not None and got[0].ref == "staging/support" and got[1] is False

    # Events: the first sight of each says nothing; when staging goes, prod is told.
    assert names.changed("prod", "support", prod) == []
    assert names.changed("staging", "support", staging) == []
    claims[prod.key] = [prod]
    del held[("staging", "support")]
    assert names.changed("staging", "support", None) == [("prod", "support")]
    assert names.changed("staging", "support", None) == []
    # A rename releases the old claim too.
    claims[prod.key] = [prod, staging]
    names.changed("staging", "support", staging)
    renamed = Claim("staging", "support", URL, "support-staging", NEW)
    claims[prod.key] = [prod]
    assert names.changed("staging", "support", renamed) == [("prod", "support")]
    assert names.changed("staging", "support", renamed) == []
