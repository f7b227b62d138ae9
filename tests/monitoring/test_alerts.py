"""Alert rules: promtool checks and unit-tests them (source and the chart's rendered
PrometheusRule), every alert fires and stays quiet in a test, and has a runbook."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards.metrics_doc import ALERT_RULES, alert_rules
from voicefleet_testbed.binaries import Binaries

from .chart import ALL_MODES, REPO, by_kind, template

TESTS = sorted(Path(__file__).parent.glob("*_test.yaml"))
OPERATIONS = REPO / "docs" / "operations.md"
# docs/operations.md where the chart says the project lives (Chart.yaml `home`).
RUNBOOKS = "https://github.com/voicefleet/voicefleet/blob/main/docs/operations.md"


def promtool() -> str:
    path = Binaries.locate().promtool
    if path is None:
        pytest.fail("promtool is missing: run `make binaries` (Debian's prometheus)")
    return str(path)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def rendered_rules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The PrometheusRule's groups as `helm template` renders them, as a rules file."""
    (rule,) = by_kind(template(ALL_MODES), "PrometheusRule")
    path = tmp_path_factory.mktemp("rendered") / "voicefleet.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    return path


@pytest.mark.parametrize("which", ["source", "rendered"])
def test_promtool_check_rules(which: str, rendered_rules: Path) -> None:
    path = ALERT_RULES if which == "source" else rendered_rules
    out = run("check", "rules", str(path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in out.stdout


@pytest.mark.parametrize("which", ["source", "rendered"])
@pytest.mark.parametrize("test_file", TESTS, ids=lambda p: p.name)
def test_promtool_test_rules(
    which: str, test_file: Path, rendered_rules: Path, tmp_path: Path
) -> None:
    if which == "source":
        target = test_file
    else:
        doc = yaml.safe_load(test_file.read_text())
        doc["rule_files"] = [str(rendered_rules)]
        target = tmp_path / test_file.name
        target.write_text(yaml.safe_dump(doc, sort_keys=False))
    out = run("test", "rules", str(target))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def _cases() -> dict[str, dict[str, int]]:
    seen: dict[str, dict[str, int]] = {}
    for f in TESTS:
        for test in yaml.safe_load(f.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                kind = "fires" if case.get("exp_alerts") else "quiet"
                seen.setdefault(case["alertname"], {"fires": 0, "quiet": 0})[kind] += 1
    return seen


@pytest.mark.parametrize("alert", [r["alert"] for r in alert_rules()])
def test_every_alert_is_tested_firing_and_not_firing(alert: str) -> None:
    cases = _cases().get(alert, {})
    assert cases.get("fires", 0) >= 1, f"no promtool test where {alert} fires"
    assert cases.get("quiet", 0) >= 1, f"no promtool test where {alert} stays quiet"


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors."""
    out = set()
    for heading in re.findall(r"^#+ (.+)$", markdown, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_every_alert_has_a_runbook_section(rule: dict[str, Any]) -> None:
    assert rule["alert"].startswith("VoiceFleet")
    assert rule["labels"]["severity"] in {"warning", "critical"}
    ann = rule["annotations"]
    assert ann["summary"] and ann["description"]
    url = ann["runbook_url"]
    assert url == f"{RUNBOOKS}#{rule['alert'].lower()}"
    anchor = url.split("#", 1)[1]
    text = OPERATIONS.read_text()
    assert anchor in _anchors(text), f"docs/operations.md has no section {rule['alert']}"
    section = text.split(f"### {rule['alert']}\n", 1)[1].split("\n### ", 1)[0]
    assert len(section.strip()) > 100, f"the runbook for {rule['alert']} is a stub"


def test_operations_doc_covers_upgrades_draining_failover_alerts() -> None:
    headings = set(re.findall(r"^## (.+)$", OPERATIONS.read_text(), re.M))
    assert {"Upgrades", "Draining", "Failover", "Alerts"} <= headings


def test_promtool_available_where_the_testbed_expects_it() -> None:
    assert shutil.which("promtool") or Binaries.locate().promtool


def test_the_chart_sets_the_latency_threshold_and_where_runbooks_live() -> None:
    values = {**ALL_MODES, "monitoring.prometheusRule.turnLatencyThresholdSeconds": "0.8",
              "monitoring.prometheusRule.runbookBaseUrl": "https://runbooks.example.com/vf"}  # fmt: skip
    (rule,) = by_kind(template(values), "PrometheusRule")
    rules = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    latency = rules["VoiceFleetTurnLatencyHigh"]
    assert latency["expr"].rstrip().endswith(") > 0.8"), latency["expr"]
    assert "over 0.8 s" in latency["annotations"]["summary"]
    assert "(threshold 0.8 s)" in latency["annotations"]["description"]
    for name, r in rules.items():
        assert r["annotations"]["runbook_url"] == f"https://runbooks.example.com/vf#{name.lower()}"
    # By default, the rules file as it is.
    (rule,) = by_kind(template(ALL_MODES), "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(ALERT_RULES.read_text())["groups"]
