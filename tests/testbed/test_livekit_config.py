"""The testbed LiveKit's config builder (pure): what it restricts, and bad input named."""

from __future__ import annotations

import re
from typing import Any

import pytest

from voicefleet_testbed.livekit_config import LOOPBACK, MediaAddress, livekit_config

BRIDGE = MediaAddress("vfbr0", "10.88.0.1")


def build(**kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "port": 7880,
        "udp_port": 40000,
        "keys": {"devkey": "s" * 32},
        "webhook_api_key": "devkey",
        "webhook_urls": ["http://127.0.0.1:9/livekit/webhook"],
    }
    return livekit_config(**(args | kw))


@pytest.mark.parametrize(
    ("addresses", "bind", "node_ip", "stun", "loopback", "interfaces", "ips"),
    [
        (
            (LOOPBACK,),
            ["127.0.0.1"],
            "127.0.0.1",
            ["127.0.0.1:7880"],
            True,
            ["lo"],
            ["127.0.0.1/32"],
        ),
        # the real node's pod bridge first: its address is what every candidate names
        (
            (BRIDGE, LOOPBACK),
            ["10.88.0.1", "127.0.0.1"],
            "10.88.0.1",
            ["10.88.0.1:7880"],
            True,
            ["vfbr0", "lo"],
            ["10.88.0.1/32", "127.0.0.1/32"],
        ),
        # a bridge alone: loopback candidates stay off
        (
            (BRIDGE,),
            ["10.88.0.1"],
            "10.88.0.1",
            ["10.88.0.1:7880"],
            False,
            ["vfbr0"],
            ["10.88.0.1/32"],
        ),
        # two addresses on one interface: the interface once, each address exactly
        (
            (LOOPBACK, MediaAddress("lo", "127.0.0.2")),
            ["127.0.0.1", "127.0.0.2"],
            "127.0.0.1",
            ["127.0.0.1:7880"],
            True,
            ["lo"],
            ["127.0.0.1/32", "127.0.0.2/32"],
        ),
    ],
)
def test_media_stays_on_the_allowed_addresses(
    addresses: tuple[MediaAddress, ...],
    bind: list[str],
    node_ip: str,
    stun: list[str],
    loopback: bool,
    interfaces: list[str],
    ips: list[str],
) -> None:
    c = build(addresses=addresses)
    rtc = c["rtc"]
    assert c["bind_addresses"] == bind
    assert rtc["node_ip"] == node_ip
    assert rtc["stun_servers"] == stun  # never empty: empty means LiveKit's public defaults
    assert rtc["enable_loopback_candidate"] is loopback
    assert rtc["interfaces"] == {"includes": interfaces}
    assert rtc["ips"] == {"includes": ips}
    assert rtc["use_external_ip"] is False
    assert rtc["tcp_port"] == 0  # ICE/TCP would listen on every address
    assert rtc["udp_port"] == 40000 and "port_range_start" not in rtc


def test_keys_webhook_and_ports_pass_through() -> None:
    c = build(log_level="debug")
    assert c["port"] == 7880
    assert c["keys"] == {"devkey": "s" * 32}
    assert c["webhook"] == {"api_key": "devkey", "urls": ["http://127.0.0.1:9/livekit/webhook"]}
    assert c["logging"] == {"level": "debug"}


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"addresses": ()}, "addresses"),
        ({"addresses": (MediaAddress("", "127.0.0.1"),)}, "addresses[0].interface"),
        ({"addresses": (LOOPBACK, MediaAddress("eth0", "eth0"))}, "addresses[1].ip"),
        ({"addresses": (MediaAddress("eth0", "0.0.0.0"),)}, "addresses[0].ip"),
        ({"addresses": (MediaAddress("lo", "::1"),)}, "addresses[0].ip"),
        ({"port": 0}, "port"),
        ({"udp_port": 70000}, "udp_port"),
    ],
)
def test_bad_input_names_the_field(kw: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(f"{field}: ")):
        build(**kw)
