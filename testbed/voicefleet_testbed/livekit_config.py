"""The testbed LiveKit's configuration: where it listens and what it tells clients.

Everything here keeps media on the addresses the stack allows (docs/testbed.md, "What the
testbed's LiveKit is told"). What livekit-server v1.13.5 does with each setting, read from
its source (pkg/service/roommanager.go, mediatransportutil's rtcconfig and transport):

- `rtc.stun_servers`: when empty (and no TURN is configured) every client's JoinResponse
  gets LiveKit's public defaults (global.stun.twilio.com, stun.l.google.com). LiveKit
  cannot be told to name none, so it names its own signalling address (host and port)
  over UDP, where nothing answers: clients contact nothing else and gather no
  server-reflexive candidates. Not the media port: libwebrtc takes every packet from a
  STUN server's address for a STUN response, so ICE through that port never connects.
- `rtc.interfaces.includes` / `rtc.ips.includes`: the UDP mux binds one socket per address
  of the included interfaces that passes the IP filter; without them it binds every
  external address of the host. `enable_loopback_candidate` is needed for `lo` at all.
- `rtc.node_ip` (with `use_external_ip: false`): every host candidate is advertised as this
  address, and LiveKit itself then uses no STUN server (it would otherwise ask the public
  ones for its own address).
- `rtc.tcp_port`: ICE/TCP listens on every address of the host (no IP in its listen
  address) whatever the filters say, so it is off (0; LiveKit's default is 7881).

With Redis (`redis=`), livekit-server runs multi-node (pkg/service/wire.go: a Redis router,
room store and psrpc bus): every node registers in Redis, any node takes signalling and
API calls and relays them over the bus to the node that hosts the room, and agent jobs
are offered over the bus to whichever node holds workers for the agent. Each node needs
its own signalling, UDP media and metrics ports; `node_ip` may be shared (nodes talk
through Redis, never to each other's address). Which node hosts a new room is the node
selector's choice (pkg/routing/selector): here `regionaware` with one region per node, so
a room lands on the node that first hears of it (a join, CreateRoom or CreateDispatch
through that node's URL), and `CreateRoom(node_id=...)` places it on a named node.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

LIVEKIT_KEY = "devkey"  # the testbed's LiveKit API key (the secret: stack.LIVEKIT_SECRET)


@dataclass(frozen=True)
class MediaAddress:
    """An address LiveKit may listen on (signalling and media) and gather ICE candidates
    on: a network interface and one IPv4 address of it."""

    interface: str
    ip: str


LOOPBACK = MediaAddress("lo", "127.0.0.1")
# The region-aware selector ranks regions by distance from the node's own, so any distinct
# coordinates make "my own region" the nearest; region i sits at longitude i.
REGION_SPACING_DEGREES = 1.0
# Every node runs on this one machine and so reports the same load average: the selector's
# load filter (default 0.9 per CPU) would say nothing about them, and at its edge might
# keep one node's slightly older figure and drop the other's. Never filter on it.
NO_SYSLOAD_LIMIT = 1000.0


@dataclass(frozen=True)
class Cluster:
    """A node's place in a multi-node LiveKit: the shared Redis, this node's region (its
    name, e.g. "node-2", which the JoinResponse's ServerInfo.region reports) and every
    node's region, in order."""

    redis_address: str  # "IPv4:port"
    redis_password: str
    region: str
    regions: tuple[str, ...]


def livekit_config(
    *,
    port: int,
    udp_port: int,
    keys: Mapping[str, str],
    webhook_api_key: str,
    webhook_urls: Sequence[str],
    addresses: Sequence[MediaAddress] = (LOOPBACK,),
    log_level: str = "info",
    cluster: Cluster | None = None,
    prometheus_port: int = 0,
) -> dict[str, Any]:
    """livekit-server's config (as a JSON-able dict; YAML is a superset of JSON).

    `addresses`: where LiveKit listens and gathers candidates, nothing else. The first is
    its node IP: every candidate it sends names that address, so every client must reach
    it (127.0.0.1 on the host; a pod bridge's gateway address is reachable from the host
    and from the pods alike, so it goes first once the stack has one).

    `cluster`: Redis and the node selector for a multi-node LiveKit (or for one node whose
    SIP API is wanted: LiveKit keeps SIP trunks and rules in Redis only).
    `prometheus_port`: serve LiveKit's metrics there (on the same addresses); its
    `livekit_*` series carry the node's id as the `node_id` label.
    """
    _check_port("port", port)
    _check_port("udp_port", udp_port)
    if prometheus_port:
        _check_port("prometheus_port", prometheus_port)
    if not addresses:
        raise ValueError("addresses: at least one (interface, IPv4 address) is needed")
    loopback = False
    for i, a in enumerate(addresses):
        if not a.interface:
            raise ValueError(f"addresses[{i}].interface: empty")
        try:
            ip = ipaddress.ip_address(a.ip)
        except ValueError:
            raise ValueError(f"addresses[{i}].ip: {a.ip!r} is not an IP address") from None
        if not isinstance(ip, ipaddress.IPv4Address) or ip.is_unspecified:
            raise ValueError(f"addresses[{i}].ip: {a.ip!r} is not a specific IPv4 address")
        loopback = loopback or ip.is_loopback
    ips = list(dict.fromkeys(a.ip for a in addresses))
    interfaces = list(dict.fromkeys(a.interface for a in addresses))
    node_ip = addresses[0].ip
    config: dict[str, Any] = {
        "port": port,
        "bind_addresses": ips,
        "rtc": {
            "udp_port": udp_port,
            "tcp_port": 0,
            "use_external_ip": False,
            "node_ip": node_ip,
            "stun_servers": [f"{node_ip}:{port}"],
            "enable_loopback_candidate": loopback,
            "interfaces": {"includes": interfaces},
            "ips": {"includes": [f"{ip}/32" for ip in ips]},
        },
        "keys": dict(keys),
        # Signed with the key's secret; LiveKit drops the ones nobody receives.
        "webhook": {"api_key": webhook_api_key, "urls": list(webhook_urls)},
        "logging": {"level": log_level},
    }
    if prometheus_port:
        config["prometheus"] = {"port": prometheus_port}
    if cluster is not None:
        config |= _cluster_config(cluster)
    return config


def _cluster_config(c: Cluster) -> dict[str, Any]:
    host, _, port = c.redis_address.rpartition(":")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"cluster.redis_address: {c.redis_address!r} is not IPv4:port") from None
    if not isinstance(ip, ipaddress.IPv4Address) or not port.isdigit():
        raise ValueError(f"cluster.redis_address: {c.redis_address!r} is not IPv4:port")
    _check_port("cluster.redis_address", int(port))
    if not c.region:
        raise ValueError("cluster.region: empty")
    if len(set(c.regions)) != len(c.regions):
        raise ValueError(f"cluster.regions: {list(c.regions)} names a region twice")
    if c.region not in c.regions:
        raise ValueError(f"cluster.region: {c.region!r} is not one of {list(c.regions)}")
    redis: dict[str, Any] = {"address": c.redis_address}
    if c.redis_password:
        redis["password"] = c.redis_password
    return {
        "redis": redis,
        "region": c.region,
        "node_selector": {
            "kind": "regionaware",
            "sysload_limit": NO_SYSLOAD_LIMIT,
            "regions": [
                {"name": r, "lat": 0.0, "lon": i * REGION_SPACING_DEGREES}
                for i, r in enumerate(c.regions)
            ],
        },
    }


def _check_port(name: str, port: int) -> None:
    if not 0 < port < 65536:
        raise ValueError(f"{name}: {port} is not a port number (1-65535)")
