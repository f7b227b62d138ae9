"""custom_metrics.py: the custom metrics API's answers, selectors and front-proxy settings,
table-tested without a cluster (tests/operator/test_hpa_cluster.py runs it for real)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from voicefleet_operator import custom_metrics as cm

BASE = "/apis/custom.metrics.k8s.io"
METRIC = "voicefleet_worker_active_sessions"
T0 = 1_796_000_000.0  # 2026-11-30T00:53:20Z
W = {"app.kubernetes.io/name": "voicefleet-worker", "app.kubernetes.io/instance": "support"}
PODS = {
    "voice": [
        cm.PodValue("voice", "support-b", "support", W, 3, T0),
        cm.PodValue("voice", "support-a", "support", W, 0, T0 + 1),
        cm.PodValue(
            "voice", "sales-a", "sales", {**W, "app.kubernetes.io/instance": "sales"}, 7, T0
        ),
    ]
}


def pods(ns: str) -> list[cm.PodValue]:
    return PODS.get(ns, [])


@pytest.mark.parametrize(
    ("path", "want"),
    [
        (BASE, "APIGroup"),
        (f"{BASE}/v1beta2", "APIResourceList"),
        (f"{BASE}/v1beta1/", "APIResourceList"),
        (f"{BASE}/v1beta2/namespaces/voice/pods/*/{METRIC}", ("v1beta2", "voice", "*")),
        (
            f"{BASE}/v1beta1/namespaces/voice/pods/support-a/{METRIC}",
            ("v1beta1", "voice", "support-a"),
        ),
        (f"{BASE}/v1/namespaces/voice/pods/*/{METRIC}", (404, "version v1")),
        (f"{BASE}/v1beta2/namespaces/voice/services/*/{METRIC}", (404, "not of services")),
        (f"{BASE}/v1beta2/namespaces/voice/pods/*/cpu_usage", (404, "cpu_usage is not served")),
        (f"{BASE}/v1beta2/namespaces/voice/metrics/{METRIC}", (404, "not served here")),
        (f"{BASE}/v1beta2/pods/*/{METRIC}", (404, "not served here")),  # cluster-wide
        (f"{BASE}/v1beta2/namespaces/Voice/pods/*/{METRIC}", (400, "not a valid")),
        ("/apis", (404, "not served here")),  # aggregated discovery: legacy fallback
        ("/openapi/v2", "openapi"),  # empty: the API server's aggregation stops asking
        ("/openapi/v3", "openapi"),
        ("/healthz", (404, "not served here")),
    ],
)
def test_parse_path(path: str, want: Any) -> None:
    got = cm.parse_path(path)
    if want == "openapi":
        assert isinstance(got, cm.Discovery) and got.answer.body["paths"] == {}
    elif isinstance(want, str):
        assert isinstance(got, cm.Discovery) and got.answer.body["kind"] == want
    elif isinstance(want[0], str):
        assert got == cm.MetricRequest(*want)
    else:
        assert isinstance(got, cm.Answer)
        assert got.status == want[0] and want[1] in got.body["message"], got.body
        assert got.body["kind"] == "Status" and got.body["code"] == want[0]


def test_discovery_names_one_namespaced_resource_per_version() -> None:
    for v in cm.VERSIONS:
        d = cm.parse_path(f"{BASE}/{v}")
        assert isinstance(d, cm.Discovery)
        assert d.answer.body["groupVersion"] == f"custom.metrics.k8s.io/{v}"
        assert d.answer.body["resources"] == [
            {"name": f"pods/{METRIC}", "singularName": "", "namespaced": True,
             "kind": "MetricValueList", "verbs": ["get"]}
        ]  # fmt: skip
    g = cm.api_group()
    assert g["preferredVersion"]["version"] == "v1beta2"


@pytest.mark.parametrize(
    ("selector", "labels", "match"),
    [
        ("", {}, True),
        ("a=b", {"a": "b"}, True),
        ("a==b", {"a": "b"}, True),
        ("a=b", {"a": "c"}, False),
        ("a=b", {}, False),
        ("a!=b", {}, True),  # absent keys match != and notin, as Kubernetes does
        ("a!=b", {"a": "b"}, False),
        ("a in (b, c)", {"a": "c"}, True),
        ("a in (b,c)", {"a": "d"}, False),
        ("a notin (b,c)", {"a": "d"}, True),
        ("a notin (b,c)", {}, True),
        ("a", {"a": ""}, True),
        ("!a", {"a": ""}, False),
        ("!a", {}, True),
        ("a=", {"a": ""}, True),
        (
            "app.kubernetes.io/instance=support,app.kubernetes.io/name=voicefleet-worker",
            W,
            True,
        ),
        ("app.kubernetes.io/instance in (sales), x", {**W, "x": "1"}, False),
    ],
)
def test_selectors(selector: str, labels: dict[str, str], match: bool) -> None:
    assert cm.matches(cm.parse_selector(selector), labels) is match


@pytest.mark.parametrize("bad", ["a=b=c", "a in b", "a in ()", "=b", "a,,b", "a=b,", "a b"])
def test_bad_selectors_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="labelSelector"):
        cm.parse_selector(bad)


def values(version: str, pod: str, query: dict[str, str]) -> cm.Answer:
    return cm.metric_values(cm.MetricRequest(version, "voice", pod), query, pods)


def test_every_matching_worker_with_its_sessions() -> None:
    sel = {
        "labelSelector": "app.kubernetes.io/instance=support,app.kubernetes.io/name=voicefleet-worker"
    }
    a = values("v1beta2", "*", sel)
    assert a.status == 200
    body = json.loads(a.encode())
    assert body["kind"] == "MetricValueList"
    assert body["apiVersion"] == "custom.metrics.k8s.io/v1beta2"
    assert [(i["describedObject"]["name"], i["value"]) for i in body["items"]] == [
        ("support-a", "0"),
        ("support-b", "3"),
    ]
    item = body["items"][1]
    assert item["describedObject"] == {"kind": "Pod", "namespace": "voice", "name": "support-b", "apiVersion": "v1"}  # fmt: skip
    assert item["metric"] == {"name": METRIC}
    assert item["timestamp"] == "2026-11-30T00:53:20Z"


def test_v1beta1_items_name_the_metric_flat() -> None:
    (item,) = values("v1beta1", "support-b", {}).body["items"]
    assert item["metricName"] == METRIC and "metric" not in item and item["value"] == "3"


@pytest.mark.parametrize(
    ("pod", "query", "status", "names"),
    [
        ("*", {}, 200, ["sales-a", "support-a", "support-b"]),  # no selector: all workers
        ("*", {"labelSelector": "app.kubernetes.io/instance=nobody"}, 200, []),
        ("sales-a", {}, 200, ["sales-a"]),
        ("sales-a", {"labelSelector": "app.kubernetes.io/instance=support"}, 404, []),
        ("some-other-pod", {}, 404, []),  # not a worker (or no report yet): not answered
        ("*", {"metricLabelSelector": "voiceagent=sales"}, 200, ["sales-a"]),
        ("*", {"labelSelector": "a in b"}, 400, []),
    ],
)
def test_which_pods(pod: str, query: dict[str, str], status: int, names: list[str]) -> None:
    a = values("v1beta2", pod, query)
    assert a.status == status, a.body
    if status == 200:
        assert [i["describedObject"]["name"] for i in a.body["items"]] == names


def test_another_namespace_has_no_workers_here() -> None:
    a = cm.metric_values(cm.MetricRequest("v1beta2", "other", "*"), {}, pods)
    assert a.status == 200 and a.body["items"] == []


def test_review_attributes_are_the_api_servers() -> None:
    req = cm.MetricRequest("v1beta2", "voice", "*")
    assert req.review_attributes() == {
        "verb": "get", "group": "custom.metrics.k8s.io", "version": "v1beta2",
        "resource": "pods", "subresource": METRIC, "name": "*", "namespace": "voice",
    }  # fmt: skip


CONFIGMAP = {
    "data": {
        "client-ca-file": "CLUSTER-CA",
        "requestheader-client-ca-file": "FRONT-PROXY-CA\n",
        "requestheader-allowed-names": '["front-proxy-client"]',
        "requestheader-username-headers": '["X-Remote-User"]',
        "requestheader-group-headers": '["X-Remote-Group"]',
        "requestheader-extra-headers-prefix": '["X-Remote-Extra-"]',
    }
}


def test_front_proxy_settings() -> None:
    fp = cm.front_proxy(CONFIGMAP)
    assert fp.client_ca == "FRONT-PROXY-CA"  # never the cluster CA: any client has one of those
    assert fp.allows("front-proxy-client")
    assert not fp.allows("system:admin") and not fp.allows(None)
    anyone = cm.front_proxy({"data": {**CONFIGMAP["data"], "requestheader-allowed-names": "[]"}})
    assert anyone.allows("whoever")  # empty: any certificate the front-proxy CA signed


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({}, "no requestheader-client-ca-file"),
        ({"client-ca-file": "X"}, "no requestheader-client-ca-file"),
        (
            {**CONFIGMAP["data"], "requestheader-username-headers": "[]"},
            "username-headers is empty",
        ),
        ({**CONFIGMAP["data"], "requestheader-allowed-names": "front"}, "not a JSON list"),
    ],
)
def test_front_proxy_settings_that_cannot_work(data: dict[str, str], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        cm.front_proxy({"data": data})


def test_the_user_the_front_proxy_names() -> None:
    fp = cm.front_proxy(CONFIGMAP)
    headers = [
        ("x-remote-user", "system:serviceaccount:kube-system:horizontal-pod-autoscaler"),
        ("X-Remote-Group", "system:serviceaccounts"),
        ("X-Remote-Group", "system:authenticated"),
        ("X-Remote-Extra-Authentication.kubernetes.io%2fpod-Name", "kcm-0"),
        ("X-Other", "ignored"),
    ]
    user = cm.user_of(fp, headers)
    assert user == cm.User(
        "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
        ("system:serviceaccounts", "system:authenticated"),
        (("authentication.kubernetes.io/pod-name", ("kcm-0",)),),
    )
    assert cm.user_of(fp, [("X-Remote-Group", "g")]) is None
    review = cm.access_review(user, {"verb": "get"})
    assert review["kind"] == "SubjectAccessReview"
    assert review["spec"]["extra"] == {"authentication.kubernetes.io/pod-name": ["kcm-0"]}
    assert review["spec"]["resourceAttributes"] == {"verb": "get"}


@pytest.mark.parametrize(
    ("status", "ok"),
    [
        ({"allowed": True, "reason": "RBAC"}, True),
        ({"allowed": False, "reason": "no rule"}, False),
        ({"allowed": True, "denied": True}, False),
        ({}, False),
    ],
)
def test_allowed(status: dict[str, Any], ok: bool) -> None:
    assert cm.allowed({"status": status})[0] is ok
