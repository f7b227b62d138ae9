"""The custom metrics API (`custom.metrics.k8s.io` v1beta2 and v1beta1) for one metric,
`voicefleet_worker_active_sessions` of VoiceAgent worker pods, from the session counts the
operator already follows (the `SessionFeed`'s long polls). With it, autoscaling mode `hpa`
works on a cluster with no metrics adapter: the API server's aggregation layer proxies the
HPA controller's request here (`--custom-metrics-port`, the chart's `customMetrics`).

This module is the pure part: a request path, its query and the pods' current counts in,
a JSON answer (MetricValueList, discovery, or a Status naming the problem) out; the
front-proxy authentication settings the API server publishes, parsed; and the
SubjectAccessReview a request needs. `custom_metrics_server.py` is the HTTPS shell.

What is answered, and nothing else:
- `GET /apis/custom.metrics.k8s.io/{v1beta2,v1beta1}[/]`: the APIResourceList (discovery:
  one resource, `pods/voicefleet_worker_active_sessions`); `/apis/custom.metrics.k8s.io`:
  the APIGroup; `/openapi/v2`, `/openapi/v3`: empty specs;
- `GET .../namespaces/NS/pods/*/voicefleet_worker_active_sessions?labelSelector=...`: the
  worker pods of NS that match, each with its live sessions as its worker last reported
  them (what the HPA controller asks for a Pods metric);
- `GET .../namespaces/NS/pods/POD/voicefleet_worker_active_sessions`: one worker pod.
A pod the operator has no report from (not read yet, or its read failed) is left out: the
HPA then assumes, as it documents, 100 % of target when it would scale down and 0 % when
it would scale up, so a worker that does not answer cannot shrink the fleet.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import unquote

from voicefleet_contract.metrics import WORKER_ACTIVE_SESSIONS

GROUP: Final = "custom.metrics.k8s.io"
VERSIONS: Final = ("v1beta2", "v1beta1")  # preferred first
METRIC: Final = WORKER_ACTIVE_SESSIONS.name
RESOURCE: Final = f"pods/{METRIC}"  # as discovery names it (resource/subresource)
JSON = dict[str, Any]

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_NAME = re.compile(rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*$")  # a DNS-1123 subdomain
_METRIC_PATH = re.compile(
    rf"^/apis/{re.escape(GROUP)}/(?P<version>[^/]+)/namespaces/(?P<namespace>[^/]+)"
    r"/(?P<resource>[^/]+)/(?P<name>[^/]+)/(?P<metric>[^/]+)$"
)


@dataclass(frozen=True)
class PodValue:
    """One worker pod's live sessions as the operator last read them."""

    namespace: str
    name: str
    voiceagent: str
    labels: Mapping[str, str]
    sessions: int
    at: float  # wall-clock seconds (epoch) of the reading


@dataclass(frozen=True)
class Answer:
    status: int
    body: JSON

    def encode(self) -> bytes:
        return json.dumps(self.body, separators=(",", ":")).encode()


@dataclass(frozen=True)
class MetricRequest:
    """A metric read: the attributes the API server's authorizer sees for it, too."""

    version: str
    namespace: str
    pod: str  # "*": every pod the label selector matches

    def review_attributes(self) -> JSON:
        """The SubjectAccessReview's resourceAttributes, as the API server's request-info
        parser derives them from the path (an HPA controller's RBAC names these)."""
        return {
            "verb": "get",
            "group": GROUP,
            "version": self.version,
            "resource": "pods",
            "subresource": METRIC,
            "name": self.pod,
            "namespace": self.namespace,
        }


@dataclass(frozen=True)
class Discovery:
    answer: Answer


# --- answers --------------------------------------------------------------------------
def status(code: int, reason: str, message: str) -> Answer:
    """A `Status` failure, as the API server relays it to `kubectl get --raw`."""
    return Answer(
        code,
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        },
    )


def not_found(message: str) -> Answer:
    return status(404, "NotFound", message)


def bad_request(message: str) -> Answer:
    return status(400, "BadRequest", message)


def api_group() -> JSON:
    versions = [{"groupVersion": f"{GROUP}/{v}", "version": v} for v in VERSIONS]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": GROUP,
        "versions": versions,
        "preferredVersion": versions[0],
    }


def resource_list(version: str) -> JSON:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{GROUP}/{version}",
        "resources": [
            {
                "name": RESOURCE,
                "singularName": "",
                "namespaced": True,
                "kind": "MetricValueList",
                "verbs": ["get"],
            }
        ],
    }


# The API server's OpenAPI aggregation asks every APIService's server for its spec, and
# retries a 404 forever (log noise, work): an empty spec says there is nothing to merge.
OPENAPI: Final[dict[str, JSON]] = {
    "/openapi/v2": {
        "swagger": "2.0",
        "info": {"title": "voicefleet custom metrics", "version": VERSIONS[0]},
        "paths": {},
    },
    "/openapi/v3": {"paths": {}},
}


def parse_path(path: str) -> Discovery | MetricRequest | Answer:
    """What a GET of `path` asks for, or the 404 that says why it is not served."""
    p = path.rstrip("/") or "/"
    if p in OPENAPI:
        return Discovery(Answer(200, OPENAPI[p]))
    if p == f"/apis/{GROUP}":
        return Discovery(Answer(200, api_group()))
    for v in VERSIONS:
        if p == f"/apis/{GROUP}/{v}":
            return Discovery(Answer(200, resource_list(v)))
    m = _METRIC_PATH.match(p)
    if m is None:
        return not_found(
            f"{path}: not served here; this server answers only "
            f"/apis/{GROUP}/{{{','.join(VERSIONS)}}}/namespaces/NAMESPACE/pods/NAME|*/{METRIC}"
        )
    version, namespace, resource, name, metric = m.group(
        "version", "namespace", "resource", "name", "metric"
    )
    if version not in VERSIONS:
        return not_found(f"version {version} of {GROUP} is not served (only {', '.join(VERSIONS)})")
    if resource != "pods":
        return not_found(f"only metrics of pods are served, not of {resource}")
    if metric != METRIC:
        return not_found(f"metric {metric} is not served (only {METRIC}, of VoiceAgent workers)")
    if not _NAME.match(namespace) or (name != "*" and not _NAME.match(name)):
        return bad_request(f"not a valid namespace or pod name: {namespace}/{name}")
    return MetricRequest(version, namespace, name)


def _timestamp(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _item(version: str, pod: PodValue) -> JSON:
    described = {"kind": "Pod", "namespace": pod.namespace, "name": pod.name, "apiVersion": "v1"}
    if version == "v1beta1":
        return {
            "describedObject": described,
            "metricName": METRIC,
            "timestamp": _timestamp(pod.at),
            "value": str(pod.sessions),
        }
    return {
        "describedObject": described,
        "metric": {"name": METRIC},
        "timestamp": _timestamp(pod.at),
        "value": str(pod.sessions),
    }


def metric_values(
    req: MetricRequest, query: Mapping[str, str], pods: Callable[[str], Iterable[PodValue]]
) -> Answer:
    """The MetricValueList for `req` from `pods(namespace)` (the namespace's worker pods
    that have a reading). A named pod must be one of them; `*` takes `labelSelector`.
    `metricLabelSelector` is matched against the metric's labels as Prometheus names them
    on the series (namespace, voiceagent)."""
    try:
        selector = parse_selector(query.get("labelSelector", ""))
        metric_selector = parse_selector(query.get("metricLabelSelector", ""))
    except ValueError as e:
        return bad_request(str(e))
    found = []
    for pod in pods(req.namespace):
        if req.pod != "*" and pod.name != req.pod:
            continue
        if not matches(selector, pod.labels):
            continue
        if not matches(metric_selector, {"namespace": pod.namespace, "voiceagent": pod.voiceagent}):
            continue
        found.append(pod)
    if req.pod != "*" and not found:
        return not_found(
            f"no {METRIC} for pod {req.namespace}/{req.pod}: not a VoiceAgent worker pod, "
            "or the operator has no report from it yet"
        )
    found.sort(key=lambda p: p.name)
    return Answer(
        200,
        {
            "kind": "MetricValueList",
            "apiVersion": f"{GROUP}/{req.version}",
            "metadata": {},
            "items": [_item(req.version, p) for p in found],
        },
    )


# --- label selectors ------------------------------------------------------------------
@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: frozenset[str] = field(default_factory=frozenset)

    def matches(self, labels: Mapping[str, str]) -> bool:
        has = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return has
        if self.op == "!":
            return not has
        if self.op in ("=", "in"):
            return has and value in self.values
        return not has or value not in self.values  # != and notin: absent keys match


_KEY = r"([a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?/)?[a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?"
_VALUE = r"([a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?)?"
_REQUIREMENT = re.compile(
    rf"\s*(?:(?P<not>!)\s*(?P<nkey>{_KEY})"
    rf"|(?P<skey>{_KEY})\s+(?P<setop>in|notin)\s*\((?P<set>[^)]*)\)"
    rf"|(?P<key>{_KEY})\s*(?P<op>==|=|!=)\s*(?P<value>{_VALUE})"
    rf"|(?P<ekey>{_KEY}))\s*(?:,|$)"
)


def parse_selector(text: str) -> tuple[Requirement, ...]:
    """A label selector in its string form (what `labelSelector=` carries: `a=b,c!=d,
    e in (f,g),h notin (i),j,!k`), as the API server accepts it; ValueError names the
    part it cannot read."""
    out: list[Requirement] = []
    pos, text = 0, text.strip()
    if text.endswith(","):
        raise ValueError(f"labelSelector: a requirement must follow the last ',' in {text!r}")
    while pos < len(text):
        m = _REQUIREMENT.match(text, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"labelSelector: cannot parse {text[pos:]!r} (in {text!r})")
        if m.group("not"):
            out.append(Requirement(m.group("nkey"), "!"))
        elif m.group("setop"):
            values = frozenset(v.strip() for v in m.group("set").split(",") if v.strip())
            if not values or not all(re.fullmatch(_VALUE, v) for v in values):
                raise ValueError(f"labelSelector: bad value set in {m.group(0).strip()!r}")
            out.append(Requirement(m.group("skey"), m.group("setop"), values))
        elif m.group("op"):
            op = "=" if m.group("op") == "==" else m.group("op")
            out.append(Requirement(m.group("key"), op, frozenset({m.group("value")})))
        else:
            out.append(Requirement(m.group("ekey"), "exists"))
        pos = m.end()
    return tuple(out)


def matches(selector: Iterable[Requirement], labels: Mapping[str, str]) -> bool:
    return all(r.matches(labels) for r in selector)


# --- front-proxy authentication -------------------------------------------------------
AUTH_CONFIGMAP: Final = ("kube-system", "extension-apiserver-authentication")


@dataclass(frozen=True)
class FrontProxy:
    """How the API server's aggregation layer proves itself and names the user, from the
    ConfigMap it publishes (kube-system/extension-apiserver-authentication)."""

    client_ca: str  # PEM: the front-proxy CA its proxy client certificate is signed by
    allowed_names: tuple[str, ...]  # that certificate's CN; empty: any the CA signed
    username_headers: tuple[str, ...]
    group_headers: tuple[str, ...]
    extra_prefixes: tuple[str, ...]

    def allows(self, common_name: str | None) -> bool:
        return not self.allowed_names or common_name in self.allowed_names


def _json_list(data: Mapping[str, str], key: str) -> tuple[str, ...]:
    raw = data.get(key, "")
    if not raw:
        return ()
    try:
        got = json.loads(raw)
    except ValueError:
        raise ValueError(f"{key}: not a JSON list") from None
    if not isinstance(got, list) or not all(isinstance(x, str) for x in got):
        raise ValueError(f"{key}: not a JSON list of strings")
    return tuple(got)


def front_proxy(configmap: Mapping[str, Any] | None) -> FrontProxy:
    """The front-proxy settings; ValueError when the API server publishes none (it runs
    without the aggregation layer's --requestheader-client-ca-file)."""
    data: Mapping[str, str] = (configmap or {}).get("data") or {}
    ca = data.get("requestheader-client-ca-file", "").strip()
    if not ca:
        raise ValueError(
            f"{'/'.join(AUTH_CONFIGMAP)} has no requestheader-client-ca-file: the API "
            "server runs without the aggregation layer (--requestheader-client-ca-file)"
        )
    users = _json_list(data, "requestheader-username-headers")
    if not users:
        raise ValueError("requestheader-username-headers is empty: no user could be named")
    return FrontProxy(
        client_ca=ca,
        allowed_names=_json_list(data, "requestheader-allowed-names"),
        username_headers=users,
        group_headers=_json_list(data, "requestheader-group-headers"),
        extra_prefixes=_json_list(data, "requestheader-extra-headers-prefix"),
    )


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()  # sorted, hashable (a cache key)


def user_of(fp: FrontProxy, headers: Iterable[tuple[str, str]]) -> User | None:
    """The user the front proxy names in `headers` (name, value pairs, repeats kept), or
    None when it names none. Header names compare case-insensitively; an extra's key is
    the rest of the header name, lower-cased and unescaped as the API server sends it."""
    pairs = [(k.lower(), v) for k, v in headers]
    name = next((v for h in fp.username_headers for k, v in pairs if k == h.lower() and v), None)
    if name is None:
        return None
    groups = tuple(v for h in fp.group_headers for k, v in pairs if k == h.lower())
    extra: dict[str, list[str]] = {}
    for prefix in (p.lower() for p in fp.extra_prefixes):
        for k, v in pairs:
            if k.startswith(prefix) and len(k) > len(prefix):
                extra.setdefault(_unescape(k[len(prefix) :]), []).append(v)
    return User(name, groups, tuple(sorted((k, tuple(v)) for k, v in extra.items())))


def _unescape(key: str) -> str:
    """An extra's key as the API server escapes it into a header name (%XX)."""
    return unquote(key)


def access_review(user: User, attributes: Mapping[str, Any]) -> JSON:
    """The SubjectAccessReview asking whether `user` may make this request."""
    spec: JSON = {
        "user": user.name,
        "groups": list(user.groups),
        "resourceAttributes": dict(attributes),
    }
    if user.extra:
        spec["extra"] = {k: list(v) for k, v in user.extra}
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}


def allowed(review: Mapping[str, Any]) -> tuple[bool, str]:
    """(allowed, the authorizer's reason) from a SubjectAccessReview's answer."""
    st = review.get("status") or {}
    return bool(st.get("allowed")) and not st.get("denied"), str(st.get("reason") or "")
