"""spec.telephony: parsing (the field named on bad input) and the sync's plan, as tables."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from voicefleet_operator import telephony as tel
from voicefleet_operator.spec import SpecError, parse_spec
from voicefleet_operator.status import telephony_condition

from .util import minimal_spec

OWNER = "voice/support"


def spec_with(telephony: dict[str, Any]) -> dict[str, Any]:
    return {**minimal_spec(), "telephony": telephony}


def parsed(telephony: dict[str, Any]) -> Any:
    return parse_spec("support", "voice", spec_with(telephony)).telephony


def test_no_telephony_by_default() -> None:
    assert parse_spec("support", "voice", minimal_spec()).telephony is None


def test_defaults_and_secrets() -> None:
    t = parsed(
        {
            "inbound": {"numbers": ["+15550100"], "authSecret": {"name": "sip"}},
            "outbound": {"address": "sip.example.com", "numbers": ["+15550100"]},
        }
    )
    assert t.inbound.numbers == ("+15550100",)
    assert (t.inbound.auth.secret, t.inbound.auth.usernameKey, t.inbound.auth.passwordKey) == (
        "sip", "username", "password",
    )  # fmt: skip
    assert (t.dispatch.type, t.dispatch.roomPrefix, t.dispatch.pin) == (
        "individual",
        "call-support",
        "",
    )
    assert t.outbound.transport == "auto" and t.outbound.auth is None
    assert t.adopt is False


@pytest.mark.parametrize(
    ("telephony", "field"),
    [
        ({}, "spec.telephony.inbound"),
        ({"inbound": {"numbers": []}}, "spec.telephony.inbound.numbers"),
        ({"inbound": {"numbers": ["555-0100"]}}, "spec.telephony.inbound.numbers[0]"),
        ({"inbound": {"numbers": ["+1555", "1555"]}}, "spec.telephony.inbound.numbers"),
        ({"inbound": {"numbers": ["+15550100"], "allowedAddresses": ["a b"]}},
         "spec.telephony.inbound.allowedAddresses[0]"),
        ({"inbound": {"numbers": ["+15550100"], "authSecret": {}}},
         "spec.telephony.inbound.authSecret.name"),
        ({"inbound": {"numbers": ["+15550100"]}, "dispatch": {"type": "callee"}},
         "spec.telephony.dispatch.type"),
        ({"inbound": {"numbers": ["+15550100"]}, "dispatch": {"type": "direct"}},
         "spec.telephony.dispatch.roomName"),
        ({"inbound": {"numbers": ["+15550100"]}, "dispatch": {"roomName": "r"}},
         "spec.telephony.dispatch.roomName"),
        ({"inbound": {"numbers": ["+15550100"]}, "dispatch": {"pin": "12"}},
         "spec.telephony.dispatch.pin"),
        ({"inbound": {"numbers": ["+15550100"]}, "outbound": {"numbers": ["+15550100"]}},
         "spec.telephony.outbound.address"),
        ({"inbound": {"numbers": ["+15550100"]},
          "outbound": {"address": "sip.example.com", "numbers": ["+15550100"], "transport": "ws"}},
         "spec.telephony.outbound.transport"),
        ({"inbound": {"numbers": ["+15550100"]}, "adopt": "yes"}, "spec.telephony.adopt"),
    ],
)  # fmt: skip
def test_bad_input_names_the_field(telephony: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as e:
        parsed(telephony)
    assert e.value.field == field


# --- the plan ------------------------------------------------------------------------------


def want(**telephony: Any) -> tel.Desired:
    t = parsed({"inbound": {"numbers": ["+15550100"]}, **telephony})
    return tel.desired(OWNER, "support", t, tel.Credentials(("u", "p")))


def live_ours(w: tel.Desired, trunk: str = "ST_1", rule: str = "SDR_1") -> tel.Live:
    """What LiveKit lists once `w` has been applied."""
    return tel.Live(
        inbound=(replace(w.inbound, id=trunk),),
        rules=(replace(w.rule, id=rule, trunk_ids=(trunk,)),),
    )


def foreign_trunk(numbers: tuple[str, ...] = ("15550100",), **kw: Any) -> tel.InboundTrunk:
    return tel.InboundTrunk("ST_other", "pbx", "", numbers, **kw)


def ops(p: tel.Plan) -> list[str]:
    return [s.describe() for s in p.steps]


def test_first_sync_creates_the_trunk_then_the_rule() -> None:
    p = tel.plan(want(), OWNER, tel.Live())
    assert ops(p) == ["create inbound", "create rule"] and not p.conflict
    assert p.steps[1].rule is not None and p.steps[1].rule.agent_name == "support"
    assert tel.owner_of(p.steps[0].inbound.metadata) == OWNER  # type: ignore[union-attr]


def test_in_step_nothing_to_do() -> None:
    w = want()
    p = tel.plan(w, OWNER, live_ours(w))
    assert p.steps == () and p.kept == {"inbound": "ST_1", "rule": "SDR_1"}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"inbound": {"numbers": ["+15550100", "+15550101"]}}, ["update inbound ST_1"]),
        ({"dispatch": {"pin": "1234"}}, ["update rule SDR_1"]),
        ({"dispatch": {"metadata": "{\"lang\": \"de\"}"}}, ["update rule SDR_1"]),
        ({"dispatch": {"type": "direct", "roomName": "hotline"}}, ["update rule SDR_1"]),
        ({"outbound": {"address": "sip.example.com", "numbers": ["+15550100"]}},
         ["create outbound"]),
    ],
)  # fmt: skip
def test_a_spec_change_is_an_update_in_place(change: dict[str, Any], expected: list[str]) -> None:
    before = want()
    p = tel.plan(want(**change), OWNER, live_ours(before))
    assert ops(p) == expected and not p.conflict


def test_a_rotated_password_updates_the_trunk() -> None:
    w = want()
    rotated = replace(w, inbound=replace(w.inbound, auth_password="new"))
    assert ops(tel.plan(rotated, OWNER, live_ours(w))) == ["update inbound ST_1"]


def test_telephony_removed_deletes_ours_only() -> None:
    w = want(outbound={"address": "sip.example.com", "numbers": ["+15550100"]})
    assert w.outbound is not None
    live = replace(
        live_ours(w),
        outbound=(replace(w.outbound, id="ST_out"),),
        rules=(*live_ours(w).rules, tel.DispatchRule("SDR_x", "x", "", (), "direct", "r")),
    )
    assert ops(tel.plan(None, OWNER, live)) == [
        "delete rule SDR_1", "delete inbound ST_1", "delete outbound ST_out",
    ]  # fmt: skip


def test_a_trunk_with_the_same_numbers_is_refused_naming_it() -> None:
    p = tel.plan(want(), OWNER, tel.Live(inbound=(foreign_trunk(),)))
    assert p.steps == ()
    assert "inbound trunk ST_other ('pbx') already routes 15550100" in p.conflict
    assert "spec.telephony.adopt" in p.conflict


def test_trunks_that_narrow_callers_differently_do_not_clash() -> None:
    w = want(inbound={"numbers": ["+15550100"], "allowedNumbers": ["+15559999"]})
    other = foreign_trunk(allowed_numbers=("+15558888",))
    assert ops(tel.plan(w, OWNER, tel.Live(inbound=(other,)))) == ["create inbound", "create rule"]


def test_adopt_takes_the_other_trunk_and_its_rule_over() -> None:
    rule = tel.DispatchRule("SDR_other", "old", "", ("ST_other",), "individual", "pbx-")
    live = tel.Live(inbound=(foreign_trunk(),), rules=(rule,))
    p = tel.plan(want(adopt=True), OWNER, live)
    assert ops(p) == ["update inbound ST_other", "update rule SDR_other"] and not p.conflict
    assert tel.owner_of(p.steps[1].rule.metadata) == OWNER  # type: ignore[union-attr]


def test_a_rule_routing_these_numbers_is_refused_then_adopted() -> None:
    rule = tel.DispatchRule("SDR_9", "sales", "", (), "individual", "sales-",
                            inbound_numbers=("+15550100",))  # fmt: skip
    w = want()
    p = tel.plan(w, OWNER, tel.Live(rules=(rule,)))
    assert p.steps == () and "dispatch rule SDR_9 ('sales') already routes +15550100" in p.conflict
    adopted = tel.plan(want(adopt=True), OWNER, tel.Live(rules=(rule,)))
    assert ops(adopted) == ["create inbound", "update rule SDR_9"]


def test_two_to_adopt_is_still_a_conflict() -> None:
    live = tel.Live(inbound=(foreign_trunk(), replace(foreign_trunk(), id="ST_third")))
    p = tel.plan(want(adopt=True), OWNER, live)
    assert p.steps == () and "ST_third" in p.conflict and "only one can be adopted" in p.conflict


def test_duplicates_of_ours_are_deleted_last() -> None:
    w = want()
    live = live_ours(w)
    live = replace(live, inbound=(*live.inbound, replace(w.inbound, id="ST_2")),
                   rules=(*live.rules, replace(w.rule, id="SDR_2", trunk_ids=("ST_2",))))  # fmt: skip
    assert ops(tel.plan(w, OWNER, live)) == ["delete rule SDR_2", "delete inbound ST_2"]


def test_another_voiceagents_objects_are_not_ours() -> None:
    w = want()
    theirs = tel.desired("voice/sales", "sales", parsed({"inbound": {"numbers": ["+15550200"]}}))
    live = tel.Live(
        inbound=(replace(theirs.inbound, id="ST_s"),),
        rules=(replace(theirs.rule, id="SDR_s", trunk_ids=("ST_s",)),),
    )
    assert ops(tel.plan(w, OWNER, live)) == ["create inbound", "create rule"]
    assert ops(tel.plan(None, OWNER, live)) == []


def test_passwords_never_print() -> None:
    assert "secret-pw" not in repr(tel.desired(OWNER, "a", parsed(
        {"inbound": {"numbers": ["+15550100"]}}), tel.Credentials(("u", "secret-pw"))))  # fmt: skip


@pytest.mark.parametrize(
    ("status", "condition"),
    [
        (None, None),
        ({"state": "Removed"}, None),
        ({"state": "Synced", "message": "ok"}, ("TelephonyReady", "True", "Synced", "ok")),
        ({"state": "Conflict", "message": "rule SDR_9"},
         ("TelephonyReady", "False", "Conflict", "rule SDR_9")),
    ],
)  # fmt: skip
def test_the_condition_follows_status_telephony(status: Any, condition: Any) -> None:
    assert telephony_condition(status) == condition
