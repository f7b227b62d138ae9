"""Structured logs: one JSON object a line with the record's fields; secrets masked."""

from __future__ import annotations

import json
import logging

from voicefleet_contract.logs import MASK, JsonFormatter, TextFormatter


def _record(msg: str, **extra: object) -> logging.LogRecord:
    r = logging.LogRecord("voicefleet.worker", logging.INFO, __file__, 1, msg, (), None)
    for k, v in extra.items():
        setattr(r, k, v)
    return r


def test_json_line_with_fields() -> None:
    line = JsonFormatter().format(_record("session starting", job_id="AJ_1", room="r1"))
    out = json.loads(line)
    assert out["msg"] == "session starting" and out["level"] == "info"
    assert (out["job_id"], out["room"]) == ("AJ_1", "r1")
    assert "\n" not in line


def test_secrets_are_masked_whoever_logs_them() -> None:
    secret = "super-secret-value-123"
    for fmt in (JsonFormatter([secret]), TextFormatter([secret])):
        line = fmt.format(_record(f"connecting with {secret}", token=secret))
        assert secret not in line and MASK in line
