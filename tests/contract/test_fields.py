"""The agent configuration's field table (fields.py) is what the parser enforces and what
the typed config's defaults say: bounds, choices, lengths and defaults, field by field."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from voicefleet_contract.config import (
    ConfigError,
    Failover,
    Model,
    Observability,
    Sessions,
    Transcription,
    TurnDetection,
    parse_config,
)
from voicefleet_contract.fields import (
    FAILOVER,
    MODEL,
    OBSERVABILITY,
    SESSIONS,
    TRANSCRIPTION,
    TURN_DETECTION,
    Field,
)

# (where the fields sit in agent.json, their table, the typed config they fill)
SECTIONS: list[tuple[str, tuple[Field, ...], type]] = [
    ("sessions", SESSIONS, Sessions),
    ("failover", FAILOVER, Failover),
    ("observability", OBSERVABILITY, Observability),
    ("model", MODEL, Model),
    ("model.turnDetection", TURN_DETECTION, TurnDetection),
    ("model.inputAudioTranscription", TRANSCRIPTION, Transcription),
]
EVERY = [(path, f) for path, table, _ in SECTIONS for f in table]


def _config(path: str, value: dict[str, Any]) -> dict[str, Any]:
    """A valid agent.json with `value` at dotted `path`."""
    data: dict[str, Any] = {
        "namespace": "voice",
        "voiceAgent": "support",
        "agentName": "support",
        "livekitURL": "ws://127.0.0.1:7880",
    }
    node = data
    *parents, last = path.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return data


def _read(path: str, f: Field, value: Any) -> Any:
    config: Any = parse_config(_config(path, {f.name: value}))
    for p in path.split("."):
        config = getattr(config, p)
    return getattr(config, f.name)


@pytest.mark.parametrize(("path", "table", "cls"), SECTIONS, ids=[s[0] for s in SECTIONS])
def test_the_typed_configs_defaults_are_the_tables(path: str, table: Any, cls: type) -> None:
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    for f in table:
        assert f.name in defaults, f"{cls.__name__} has no field {f.name}"
        assert defaults[f.name] == f.default, f"{path}.{f.name}"


@pytest.mark.parametrize(("path", "f"), EVERY, ids=[f"{p}.{f.name}" for p, f in EVERY])
def test_the_parser_enforces_the_table(path: str, f: Field) -> None:
    bad: list[Any] = []
    if f.minimum is not None:
        bad.append(f.minimum - 1)
    if f.maximum is not None:
        bad.append(f.maximum + 1)
    if f.enum:
        bad.append("not-" + f.enum[0])
    if f.max_length is not None:
        bad.append("x" * (f.max_length + 1))
    if f.pattern is not None:
        bad.append("no spaces allowed")
    bad.append([] if f.kind != "boolean" else "yes")  # the wrong type
    for value in bad:
        with pytest.raises(ConfigError) as e:
            _read(path, f, value)
        assert e.value.field == f"{path}.{f.name}", (value, e.value)
    good: Any = {
        "boolean": not f.default,
        "integer": f.minimum if f.minimum is not None else 1,
        "number": f.maximum if f.maximum is not None else 1.5,
        "string": f.enum[-1] if f.enum else "en",
    }[f.kind]
    assert _read(path, f, good) == good


def test_absent_fields_take_the_tables_defaults() -> None:
    config = parse_config(_config("observability", {}))
    for path, table, _ in SECTIONS:
        node: Any = config
        for p in path.split("."):
            node = getattr(node, p)
        if node is None:  # an optional object (inputAudioTranscription) absent as a whole
            continue
        for f in table:
            assert getattr(node, f.name) == f.default, f"{path}.{f.name}"
