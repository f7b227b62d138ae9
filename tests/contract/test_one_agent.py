"""The one-agent-per-room rule: each agent decides alone, exactly one stays."""

from __future__ import annotations

import itertools

import pytest

from voicefleet_contract.one_agent import (
    ACCEPTED_AT_ATTRIBUTE,
    AgentMark,
    accept_attributes,
    mark_of,
    outranks,
    yields_to,
)

A = AgentMark(1_000, "agent-AJ_a")
B = AgentMark(2_000, "agent-AJ_b")
C = AgentMark(3_000, "agent-AJ_c")
TIE = AgentMark(1_000, "agent-AJ_0")  # accepted in the same millisecond as A


@pytest.mark.parametrize(
    ("me", "others", "leaves_for"),
    [
        (A, [], None),  # alone
        (C, [C], None),  # itself in the list (a participant map that includes it)
        (B, [A], None),  # the newer dispatch stays (A may be a dead agent not yet timed out)
        (A, [B], B),  # the earlier agent, alive, leaves for it
        (A, [B, C], C),  # yields to the last accepted, not the last seen
        (C, [A, B], None),
        (TIE, [A], A),  # a tie goes by identity
        (A, [TIE], None),
    ],
)
def test_who_leaves(me: AgentMark, others: list[AgentMark], leaves_for: AgentMark | None) -> None:
    assert yields_to(me, others) == leaves_for


@pytest.mark.parametrize("agents", [[A, B], [A, B, C], [C, TIE, A, B]])
def test_exactly_one_stays_whatever_each_sees(agents: list[AgentMark]) -> None:
    for order in itertools.permutations(agents):
        stay = [me for me in order if yields_to(me, [o for o in order if o != me]) is None]
        assert stay == [max(agents)]


@pytest.mark.parametrize(
    ("identity", "attributes", "mark"),
    [
        ("agent-AJ_a", {ACCEPTED_AT_ATTRIBUTE: "1000"}, A),
        ("agent-AJ_a", {}, None),  # not ours, or from before the rule: ignored
        ("agent-AJ_a", {ACCEPTED_AT_ATTRIBUTE: ""}, None),
        ("agent-AJ_a", {ACCEPTED_AT_ATTRIBUTE: "-5"}, None),
        ("agent-AJ_a", {ACCEPTED_AT_ATTRIBUTE: "1e3"}, None),
        ("", {ACCEPTED_AT_ATTRIBUTE: "1000"}, None),
    ],
)
def test_mark_of(identity: str, attributes: dict[str, str], mark: AgentMark | None) -> None:
    assert mark_of(identity, attributes) == mark


def test_accept_attributes_round_trip() -> None:
    got = mark_of("agent-AJ_x", accept_attributes(1_700_000_000.1234))
    assert got == AgentMark(1_700_000_000_123, "agent-AJ_x")


@pytest.mark.parametrize(
    ("me", "others", "removes"),
    [
        (A, [], []),
        (B, [A], [A]),  # the newer removes the earlier (alive and slow, or dead)
        (A, [B], []),  # the earlier leaves by itself, removes nobody
        (C, [B, A, C], [A, B]),
        (B, [A, C], []),  # in the middle: leaves for C, removes nobody
        (A, [TIE], [TIE]),
    ],
)
def test_who_removes_whom(me: AgentMark, others: list[AgentMark], removes: list[AgentMark]) -> None:
    assert outranks(me, others) == removes
