"""`make demo`'s pieces that need no running stack: the example follows the stack's URLs
(the fixed ports 7880 and 7879 may be taken by another stack), moved ports are reported,
and a worker image mapped to the fake worker is caught before any call is made."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from voicefleet_testbed import demo
from voicefleet_testbed import stack as stack_mod
from voicefleet_testbed.caller import CallReport, Summary, TurnResult
from voicefleet_testbed.ports import port_is_free
from voicefleet_testbed.stack import LIVEKIT_DEFAULT_PORT, REALTIME_DEFAULT_PORT, Stack

FIXED_LK = f"ws://127.0.0.1:{LIVEKIT_DEFAULT_PORT}"
FIXED_RT = f"http://127.0.0.1:{REALTIME_DEFAULT_PORT}/v1"


@pytest.fixture
def checkout_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Stack:
    """A Stack that takes itself for the checkout's own (`.testbed/`), in a temp dir."""
    d = tmp_path / ".testbed"
    monkeypatch.setattr(stack_mod, "default_dir", lambda: d)
    return Stack(d, progress=lambda _: None)


@contextlib.contextmanager
def holding(*ports: int) -> Iterator[None]:
    """Listen on the ports that are free (the others are someone else's already)."""
    socks = []
    try:
        for p in ports:
            if port_is_free(p):
                s = socket.socket()
                s.bind(("127.0.0.1", p))
                s.listen()
                socks.append(s)
        yield
    finally:
        for s in socks:
            s.close()


def test_the_example_names_the_fixed_urls_and_is_applied_as_is_on_them(
    checkout_stack: Stack,
) -> None:
    text = demo.EXAMPLE.read_text()
    assert FIXED_LK in text and FIXED_RT in text
    checkout_stack.state.ports.update(livekit=LIVEKIT_DEFAULT_PORT, realtime=REALTIME_DEFAULT_PORT)
    ex = demo.load_example(checkout_stack)
    assert ex.text == text and ex.substituted == []
    assert (ex.name, ex.agent_name, ex.silence_ms) == ("support", "support", 500.0)
    assert checkout_stack.moved_ports() == []


def test_moved_ports_are_substituted_and_reported(checkout_stack: Stack) -> None:
    checkout_stack.state.ports.update(livekit=40001, realtime=40002)
    ex = demo.load_example(checkout_stack)
    assert FIXED_LK not in ex.text and FIXED_RT not in ex.text
    assert len(ex.substituted) == 2
    (va,) = [d for d in yaml.safe_load_all(ex.text) if d["kind"] == "VoiceAgent"]
    assert va["spec"]["livekit"]["url"] == "ws://127.0.0.1:40001"
    assert va["spec"]["model"]["baseURL"] == "http://127.0.0.1:40002/v1"
    moved = checkout_stack.moved_ports()
    assert len(moved) == 2 and "ws://127.0.0.1:40001" in moved[0]
    # A test stack is never "moved": it always takes free ports.
    assert Stack(checkout_stack.dir.parent / "other").moved_ports() == []


def test_the_checkouts_stack_falls_back_to_free_ports_when_the_fixed_ones_are_taken(
    checkout_stack: Stack,
) -> None:
    with holding(LIVEKIT_DEFAULT_PORT, REALTIME_DEFAULT_PORT):
        checkout_stack._prepare()
    ports = checkout_stack.state.ports
    assert ports["livekit"] != LIVEKIT_DEFAULT_PORT
    assert ports["realtime"] != REALTIME_DEFAULT_PORT
    assert len(set(ports.values())) == len(ports)
    assert len(checkout_stack.moved_ports()) == 2
    assert any(
        f"{ports['realtime']}/v1" in s for s in demo.load_example(checkout_stack).substituted
    )


def test_a_worker_image_mapped_elsewhere_is_caught(checkout_stack: Stack) -> None:
    assert demo.worker_image_override(checkout_stack) is None
    checkout_stack.dir.mkdir(parents=True)
    rules = [
        {"image": "voicefleet.dev/test/crash-agent*", "entrypoint": ["{python}", "-c", "x"]},
        {
            "image": "ghcr.io/voicefleet/worker*",
            "entrypoint": ["{python}", "-m", "voicefleet_testbed.fake_worker"],
        },
    ]
    checkout_stack.image_override.write_text(yaml.safe_dump(rules))
    found = demo.worker_image_override(checkout_stack)
    assert found is not None and "fake_worker" in found
    checkout_stack.image_override.write_text(yaml.safe_dump(rules[:1]))
    assert demo.worker_image_override(checkout_stack) is None


def test_a_call_no_agent_joined_is_not_ok() -> None:
    answered = CallReport("r1", "c1", "support", connected=True, dispatch_s=0.4)
    answered.turns.append(TurnResult(0, 1.0, latency_s=0.9))
    assert Summary([answered]).ok()
    lonely = CallReport("r2", "c2", "support", connected=True)
    lonely.errors.append("no agent joined within 30 s")
    assert not Summary([answered, lonely]).ok()
    unanswered = CallReport("r3", "c3", "support", connected=True, dispatch_s=0.4)
    unanswered.turns.append(TurnResult(0, 1.0))
    assert not Summary([unanswered]).ok()
