"""Who may use an agent name on a LiveKit server: one VoiceAgent per (LiveKit URL, name).

LiveKit dispatches a job to any worker registered under the job's agent name, whoever
runs it. Two VoiceAgents with one `agentName` on one LiveKit server (`support` in
`staging` and in `prod`, both defaulting to their resource name) would take each other's
calls, and both failover loops would re-dispatch the same lost call. So a name is held
by one VoiceAgent; any other that claims it gets `Ready=False` reason `AgentNameConflict`
naming the holder, renders nothing new and leaves what it already runs as it is.

Who wins (`winner`), in this order:

1. one whose workers already run under the name (its agent ConfigMap says so, `holds`):
   a fleet serving calls is never displaced by a newcomer, also when the newcomer's
   VoiceAgent object is older (it was renamed, or pointed at this server, later);
2. the oldest by `metadata.creationTimestamp`;
3. the first by namespace/name (same second).

When both already run under the name (an upgrade from an operator that did not check,
or two that were applied in the same instant) the newer one loses by rule 2: it is told
so, and its running workers are left as they are, never deleted without a word.

Everything here is pure: plain data in, a decision out. The shell (`AgentNames`) reads
the operator's kopf indexes of VoiceAgents and agent ConfigMaps.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final
from urllib.parse import urlsplit

from voicefleet_contract import CONFIG_FILE_KEY

from .status import Problem, Reason

DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_SCHEMES: Final = {"ws": "http", "wss": "https", "http": "http", "https": "https"}
_AGENT_NAME_RE: Final = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$")
# Sorts after every RFC 3339 timestamp: an object without one is taken as the newest.
_NO_TIMESTAMP: Final = "~"

ClaimKey = tuple[str, str]  # (normalised LiveKit URL, agent name)


def normalise_url(url: str, namespace: str) -> str:
    """One spelling per LiveKit server, as seen from a pod in `namespace`. Pure.

    ws/http and wss/https are the same server (the API and the signalling share a port);
    scheme and host are case-insensitive; the default port is implied; a trailing slash
    says nothing. Cluster DNS: a one-label host is a Service in the pod's own namespace
    (`livekit` in `prod` is `livekit.prod.svc`), `<svc>.<ns>` and anything under
    `<svc>.<ns>.svc.<cluster domain>` are `<svc>.<ns>.svc`. Two spellings this cannot
    see through (an IP and a name for it) are taken as two servers."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return url.strip()
    scheme = _SCHEMES.get(parts.scheme.lower(), parts.scheme.lower())
    host = (parts.hostname or "").rstrip(".")
    labels = host.split(".") if host else []
    if ":" in host:  # IPv6
        host = f"[{host}]"
    elif len(labels) == 1 and not host.isdigit():
        host = f"{host}.{namespace}.svc"
    elif len(labels) == 2 and not all(x.isdigit() for x in labels):
        host = f"{host}.svc"
    elif len(labels) > 3 and labels[2] == "svc":
        host = ".".join(labels[:3])
    port = port if port is not None else DEFAULT_PORTS.get(scheme)
    netloc = host if port is None or DEFAULT_PORTS.get(scheme) == port else f"{host}:{port}"
    path = parts.path.rstrip("/")
    return f"{scheme}://{netloc}{path}"


@dataclass(frozen=True)
class Claim:
    """One VoiceAgent's use of an agent name on a LiveKit server."""

    namespace: str
    name: str
    url: str  # normalised (`normalise_url`)
    agent_name: str
    created: str  # metadata.creationTimestamp, RFC 3339 (UTC, "Z"): sorts as text
    holds: bool = False  # its workers already run under this claim (its ConfigMap)

    @property
    def key(self) -> ClaimKey:
        return (self.url, self.agent_name)

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


def _rank(c: Claim) -> tuple[bool, str, str, str]:
    return (not c.holds, c.created or _NO_TIMESTAMP, c.namespace, c.name)


def winner(claims: Iterable[Claim]) -> Claim | None:
    """The VoiceAgent that may use the name among claimants of one key (module doc)."""
    return min(claims, key=_rank, default=None)


def rival(me: Claim, others: Iterable[Claim]) -> Claim | None:
    """The VoiceAgent `me` must yield the name to, or None when `me` may use it. `others`
    may hold anyone (also `me`, also other keys): only other claimants of `me.key`
    count."""
    rivals = [
        c for c in others if c.key == me.key and (c.namespace, c.name) != (me.namespace, me.name)
    ]
    if not rivals:
        return None
    w = winner([me, *rivals])
    return None if w is me else w


def conflict_problem(me: Claim, holder: Claim, running: bool) -> Problem:
    """The condition a VoiceAgent that must yield shows; `running`: it has workers from
    before (left as they are, and still registered under the name)."""
    why = (
        "its workers already run under this name"
        if holder.holds
        else f"it is older (created {holder.created})"
    )
    msg = (
        f"agent name {me.agent_name!r} on LiveKit {me.url} is already used by VoiceAgent "
        f"{holder.ref} ({why}); two fleets under one name take each other's calls. Set "
        "spec.agentName to another name, or delete or rename the other VoiceAgent; "
        "nothing new is rendered until then"
    )
    if running:
        msg += (
            ". The workers this VoiceAgent already runs are left as they are and still "
            "register under the name: calls can reach either fleet, and failover of this "
            "one is off"
        )
    return Problem(Reason.AGENT_NAME_CONFLICT, msg)


# --- reading the claims out of objects (pure) -------------------------------------------


def claim_of_voiceagent(namespace: str, name: str, body: Mapping[str, Any]) -> Claim | None:
    """The claim a VoiceAgent's spec makes; None without a usable LiveKit URL or agent
    name (such a spec is refused by its own reconcile and renders nothing) or while it is
    being deleted (its workers go with it)."""
    meta = body.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return None
    spec = body.get("spec") or {}
    livekit = spec.get("livekit") if isinstance(spec, Mapping) else None
    url = livekit.get("url") if isinstance(livekit, Mapping) else None
    agent_name = spec.get("agentName") or name
    if not isinstance(url, str) or not url or not isinstance(agent_name, str):
        return None
    if not _AGENT_NAME_RE.match(agent_name):
        return None
    created = meta.get("creationTimestamp")
    return Claim(
        namespace,
        name,
        normalise_url(url, namespace),
        agent_name,
        created if isinstance(created, str) else "",
    )


def claim_of_configmap(namespace: str, data: Mapping[str, Any] | None) -> ClaimKey | None:
    """The claim an agent ConfigMap's agent.json was rendered for (what its workers
    register under); None when it has none."""
    text = (data or {}).get(CONFIG_FILE_KEY)
    if not isinstance(text, str):
        return None
    try:
        config = json.loads(text)
    except ValueError:
        return None
    url, agent_name = config.get("livekitURL"), config.get("agentName")
    if not isinstance(url, str) or not isinstance(agent_name, str):
        return None
    return (normalise_url(url, namespace), agent_name)


# --- the shell: kopf's indexes -----------------------------------------------------------


class AgentNames:
    """Answers "must this VoiceAgent yield its agent name, and to whom?" from two kopf
    indexes the operator keeps (handlers.register): VoiceAgents by claim, and agent
    ConfigMaps by owner (what each fleet runs under). kopf fills both from its watches
    before any handler runs, so a restarted operator never renders a loser before it has
    seen the holder.

    The indexes live on the event loop: `rival` is called there; reconciles, which run in
    threads, call `rival_from_thread`, which asks the loop."""

    def __init__(self) -> None:
        self._claims: Mapping[ClaimKey, Iterable[Claim]] | None = None
        self._held: Mapping[tuple[str, str], Iterable[ClaimKey]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._keys: dict[tuple[str, str], ClaimKey] = {}  # for `changed`

    def attach(
        self,
        claims: Mapping[ClaimKey, Iterable[Claim]],
        held: Mapping[tuple[str, str], Iterable[ClaimKey]],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._claims, self._held, self._loop = claims, held, loop

    def _holds(self, namespace: str, name: str, key: ClaimKey) -> bool:
        if self._held is None or (namespace, name) not in self._held:
            return False
        return key in self._held[(namespace, name)]

    def rival(self, me: Claim) -> Claim | None:
        """On the event loop: the VoiceAgent `me` must yield to (see `names.rival`)."""
        if self._claims is None or me.key not in self._claims:
            return None  # nobody else (kopf's view of `me` may lag its spec: not needed)
        me = replace(me, holds=self._holds(me.namespace, me.name, me.key))
        others = [
            replace(c, holds=self._holds(c.namespace, c.name, c.key)) for c in self._claims[me.key]
        ]
        return rival(me, others)

    def rival_of(self, namespace: str, name: str, url: str, agent_name: str) -> Claim | None:
        """On the event loop: `rival` for a VoiceAgent's spec as kopf shows it (its
        creation time from the index, where kopf put its latest view)."""
        key = (normalise_url(url, namespace), agent_name)
        if self._claims is None or key not in self._claims:
            return None
        created = next(
            (c.created for c in self._claims[key] if (c.namespace, c.name) == (namespace, name)),
            "",
        )
        return self.rival(Claim(namespace, name, key[0], agent_name, created))

    def rival_from_thread(self, me: Claim) -> tuple[Claim | None, bool]:
        """From a worker thread: (the rival, whether `me` holds its claim)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return None, False

        async def ask() -> tuple[Claim | None, bool]:
            return self.rival(me), self._holds(me.namespace, me.name, me.key)

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:  # a synchronous reconcile on the loop itself (tests)
            return self.rival(me), self._holds(me.namespace, me.name, me.key)
        future: concurrent.futures.Future[tuple[Claim | None, bool]]
        future = asyncio.run_coroutine_threadsafe(ask(), loop)
        return future.result(timeout=30)

    def changed(self, namespace: str, name: str, claim: Claim | None) -> list[tuple[str, str]]:
        """On the event loop, for each VoiceAgent event: when the claim of namespace/name
        changed or went away, the other claimants of its previous claim (one of them may
        use the name now, and should know within seconds, not at its next retry)."""
        key = (namespace, name)
        before = self._keys.get(key)
        if claim is None:
            self._keys.pop(key, None)
        else:
            self._keys[key] = claim.key
        if before is None or (claim is not None and claim.key == before):
            return []
        if self._claims is None or before not in self._claims:
            return []
        return [(c.namespace, c.name) for c in self._claims[before] if (c.namespace, c.name) != key]
