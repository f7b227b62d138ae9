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


def livekit_config(
    *,
    port: int,
    udp_port: int,
    keys: Mapping[str, str],
    webhook_api_key: str,
    webhook_urls: Sequence[str],
    addresses: Sequence[MediaAddress] = (LOOPBACK,),
    log_level: str = "info",
) -> dict[str, Any]:
    """livekit-server's config (as a JSON-able dict; YAML is a superset of JSON).

    `addresses`: where LiveKit listens and gathers candidates, nothing else. The first is
    its node IP: every candidate it sends names that address, so every client must reach
    it (127.0.0.1 on the host; a pod bridge's gateway address is reachable from the host
    and from the pods alike, so it goes first once the stack has one).
    """
    _check_port("port", port)
    _check_port("udp_port", udp_port)
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
    return {
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


def _check_port(name: str, port: int) -> None:
    if not 0 < port < 65536:
        raise ValueError(f"{name}: {port} is not a port number (1-65535)")
