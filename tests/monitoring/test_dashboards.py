"""Dashboards, alert rules and docs/metrics.md agree with the contract and each other:
committed JSON is the generator's output, every query parses and names only contract
metrics (with the labels those metrics really have), and the layout is sound."""

from __future__ import annotations

import json
import re
from typing import Any

import promql_parser
import pytest

from dashboards.generate import DASHBOARD_DIR, DASHBOARDS, TURN_TARGET_SECONDS, outputs
from dashboards.grafana import GRID_WIDTH, queries
from dashboards.metrics_doc import METRICS_DOC, TARGET_LABELS, alert_rules
from dashboards.promql import STANDARD_METRICS, metric_names, spec_for, substitute
from voicefleet_contract.metrics import ALL_METRICS, WORKER_METRICS, MetricSpec

VARIABLES = {"namespace": "voice", "voiceagent": "support"}


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((DASHBOARD_DIR / f"{name}.json").read_text())
    return doc


def all_exprs() -> list[tuple[str, str]]:
    """(where, PromQL) for every dashboard query and alert expression."""
    out = [
        (f"dashboard {name} / {title}", substitute(expr, VARIABLES))
        for name in DASHBOARDS
        for title, expr in queries(load(name))
    ]
    for name in DASHBOARDS:
        for var in load(name)["templating"]["list"]:
            if var["type"] == "query":
                q = var["definition"]
                m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", substitute(q, VARIABLES))
                assert m, q
                out.append((f"dashboard {name} / variable {var['name']}", m.group(1)))
    out += [(f"alert {r['alert']}", r["expr"]) for r in alert_rules()]
    return out


def test_committed_files_are_the_generators_output() -> None:
    stale = [str(p) for p, text in outputs().items() if not p.exists() or p.read_text() != text]
    assert stale == [], "run `python -m dashboards.generate`"
    assert sorted(p.stem for p in DASHBOARD_DIR.glob("*.json")) == sorted(DASHBOARDS)


@pytest.mark.parametrize(("where", "expr"), all_exprs())
def test_every_query_parses_and_names_only_contract_metrics(where: str, expr: str) -> None:
    names = metric_names(expr)  # raises on a PromQL syntax error
    assert names, f"{where}: selects no metric"
    for name in names:
        if name in STANDARD_METRICS:
            continue
        assert name.startswith("voicefleet_"), f"{where}: {name} is not a voicefleet metric"
        assert spec_for(name) is not None, f"{where}: {name} is not in the contract"


def _allowed_labels(spec: MetricSpec) -> set[str]:
    labels = set(spec.labels) | {"job", "instance"}
    if spec.kind == "histogram":
        labels.add("le")
    if spec in WORKER_METRICS:
        labels |= set(TARGET_LABELS)  # Prometheus target labels
    return labels


@pytest.mark.parametrize(("where", "expr"), all_exprs())
def test_label_matchers_name_labels_the_metric_has(where: str, expr: str) -> None:
    """A worker metric filtered by `reason`, or an operator metric by `pod`, would match
    nothing forever: check every matcher against the metric's own and target labels."""
    problems: list[str] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            spec = spec_for(node.name)
            if spec is None:
                return
            for m in node.matchers.matchers:
                if m.name not in _allowed_labels(spec):
                    problems.append(f"{node.name} has no label {m.name!r}")

    promql_parser.walk(promql_parser.parse(expr), visit)
    assert problems == [], where


def test_every_histogram_is_read_through_its_series_suffixes() -> None:
    for where, expr in all_exprs():
        for name in metric_names(expr):
            spec = spec_for(name)
            if spec is not None and spec.kind == "histogram":
                assert name != spec.name, f"{where}: use {name}_bucket/_sum/_count"


@pytest.mark.parametrize("name", DASHBOARDS)
def test_dashboard_structure(name: str) -> None:
    d = load(name)
    assert d["uid"] == f"voicefleet-{name}"
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in d["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= GRID_WIDTH, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps another panel"
                cells.add((x, y))
        if p["type"] != "row":
            assert p["targets"], p["title"]
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    variables = [v["name"] for v in d["templating"]["list"]]
    assert variables[0] == "datasource"


def test_drilldown_has_namespace_and_voiceagent_variables_used_by_every_query() -> None:
    d = load("voiceagent")
    assert [v["name"] for v in d["templating"]["list"]] == ["datasource", "namespace", "voiceagent"]
    for title, expr in queries(d):
        assert 'namespace="$namespace"' in expr and 'voiceagent="$voiceagent"' in expr, title


def test_fleet_overview_has_what_an_sre_looks_at_first() -> None:
    d = load("fleet")
    titles = {p["title"] for p in d["panels"]}
    for wanted in (
        "Sessions vs capacity per VoiceAgent",
        "Workers desired / current / registered",
        "Autoscaler decisions",
        "Dispatch latency",
        "Turn latency",
        "Failovers",
        "Reconnections",
        "Model errors",
        "Reconcile errors",
    ):
        assert wanted in titles
    for p in d["panels"]:
        if p["title"] in ("Dispatch latency", "Turn latency"):
            steps = p["fieldConfig"]["defaults"]["thresholds"]["steps"]
            assert steps[-1]["value"] == TURN_TARGET_SECONDS == 0.3
            assert p["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] == "line"
            assert [t["legendFormat"] for t in p["targets"]] == ["p50", "p95", "p99"]
            assert p["fieldConfig"]["defaults"]["unit"] == "s"


def test_operator_dashboard_covers_reconciles_webhooks_and_scrapes() -> None:
    exprs = " ".join(e for _, e in queries(load("operator")))
    for metric in (
        "voicefleet_operator_reconcile_duration_seconds_bucket",
        "voicefleet_operator_reconcile_errors_total",
        "voicefleet_webhook_requests_total",
        "voicefleet_autoscaler_scrape_failures_total",
    ):
        assert metric in exprs


def test_metrics_doc_documents_every_metric_and_nothing_else() -> None:
    text = METRICS_DOC.read_text()
    headings = re.findall(r"^### `(voicefleet_\w+)`$", text, re.M)
    assert headings == [s.name for s in ALL_METRICS]
    for name in set(re.findall(r"`(voicefleet_\w+)`", text)):  # every metric named in code
        assert spec_for(name) is not None or name in {s.name for s in ALL_METRICS}, name
    for spec in ALL_METRICS:
        section = text.split(f"### `{spec.name}`")[1].split("###")[0]
        assert f"**type**: {spec.kind}" in section
        assert spec.help in section
        for label in spec.labels:
            assert f"`{label}`" in section
