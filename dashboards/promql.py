"""PromQL helpers shared by the generators and tests: which metric names an expression
reads (a real parser, `promql-parser`), and which contract metric a series name is."""

from __future__ import annotations

import re
from collections.abc import Iterable

import promql_parser

from voicefleet_contract.metrics import ALL_METRICS, MetricSpec

# Grafana's variables, replaced by a value of the right kind before parsing or querying.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
}
STANDARD_METRICS = frozenset({"up"})  # Prometheus' own, allowed in dashboards and alerts
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def substitute(expr: str, variables: dict[str, str] | None = None) -> str:
    """Replace Grafana's variables: built-ins with durations, the rest with `variables`."""
    out = expr
    for name, value in GRAFANA_VARIABLES.items():
        out = out.replace(name, value)
    for name, value in (variables or {}).items():
        out = re.sub(r"\$\{?" + re.escape(name) + r"\}?(?![A-Za-z0-9_])", value, out)
    return out


def metric_names(expr: str) -> set[str]:
    """Every metric name a PromQL expression selects (parsed, not pattern-matched)."""
    names: set[str] = set()

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            name = node.name
            if not name:
                for matcher in node.matchers.matchers:
                    if matcher.name == "__name__":
                        name = matcher.value
            if name:
                names.add(name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def spec_for(series: str, specs: Iterable[MetricSpec] = ALL_METRICS) -> MetricSpec | None:
    """The contract metric a series name belongs to (histograms through their suffixes)."""
    for spec in specs:
        if spec.kind == "histogram":
            if series in {spec.name + s for s in HISTOGRAM_SUFFIXES}:
                return spec
        elif series == spec.name:
            return spec
    return None
