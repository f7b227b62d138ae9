"""Addresses a tool call must never reach: link-local ones and cloud metadata services.

A worker pod can reach its node's metadata service (169.254.169.254 and friends), which
hands out the node's cloud credentials; a tool URL is written by whoever may edit a
VoiceAgent and called with the model's arguments, so it must not be a way there. The
operator refuses such URLs in the spec (a clear error naming the field), and the worker
refuses them again when it calls, after DNS (a name may resolve to such an address) and
for every redirect (never followed to another host anyway).

Only link-local and metadata addresses are refused: cluster Services (private
addresses) and loopback are what tools legitimately call.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Final

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Names of metadata services (GCP, AWS, Azure's is the link-local IP, Alibaba, Tencent,
# OpenStack, DigitalOcean, Oracle, Hetzner use 169.254.169.254 too).
METADATA_HOSTS: Final = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
        "metadata.platformequinix.com",
    }
)
METADATA_ADDRESSES: Final = frozenset(
    {
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
        ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
        ipaddress.ip_address("192.0.0.192"),  # Oracle Cloud (classic)
    }
)
NAT64: Final = ipaddress.ip_network("64:ff9b::/96")
# What inet_aton (and so getaddrinfo) reads as an IPv4 address besides the dotted quad:
# 2852039166, 0xa9fea9fe, 0251.0376.0251.0376, 169.254.43518.
_LOOSE_IPV4: Final = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}$", re.I)


def forbidden_address(ip: IPAddress) -> str | None:
    """Why a tool must not reach `ip`, or None."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or (
            ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in NAT64 else None
        )
        if embedded is not None:
            why = forbidden_address(embedded)
            return f"{why} (as {ip})" if why else None
    if ip in METADATA_ADDRESSES:
        return f"{ip} is a cloud metadata service"
    if ip.is_link_local:
        return f"{ip} is link-local (where cloud metadata services and node credentials live)"
    return None


def parse_host_ip(host: str) -> IPAddress | None:
    """`host` as the address a resolver would take it for, when it is one."""
    h = host.strip().strip("[]").rstrip(".")
    try:
        return ipaddress.ip_address(h.split("%", 1)[0])  # fe80::1%eth0: the zone is no help
    except ValueError:
        pass
    if _LOOSE_IPV4.match(h):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(h))
        except OSError:
            return None
    return None


def forbidden_host(host: str) -> str | None:
    """Why a tool URL's host must be refused as written (before DNS), or None."""
    name = host.strip().strip("[]").rstrip(".").lower()
    if name in METADATA_HOSTS:
        return f"{name} is a cloud metadata service"
    ip = parse_host_ip(name)
    return forbidden_address(ip) if ip is not None else None
