"""The Helm chart, rendered by the real helm: lint, Kubernetes schemas (offline, the
API server's own OpenAPI through kubernetes-validate), the values schema, the version,
Pod Security `restricted`, each mode, and the packaged chart being self-contained."""

from __future__ import annotations

import json
import tarfile
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from voicefleet_contract import APP_NAME, LABEL_OPERATOR_ACTIVE, METRICS_PORT_NAME
from voicefleet_operator.cmd import parse as parse_flags
from voicefleet_operator.render import Owner, render_network_policy
from voicefleet_operator.spec import parse_spec

from ..operator.util import minimal_spec
from ..pod_security import restricted_violations
from .chart import ALL_MODES, CALL_PAGE, CHART, REPO, by_kind, run_helm, template

K8S_VERSION = "1.36.0"  # the testbed's kube-apiserver minor
MODES: dict[str, dict[str, str]] = {
    "defaults": {},
    "all-modes": ALL_MODES,
    "webhook-off": {"webhook.enabled": "false"},
    "call-page": {**ALL_MODES, **CALL_PAGE},
    "custom-metrics": {**ALL_MODES, "customMetrics.enabled": "true"},
}
CRD_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}  # monitoring.coreos.com
PEERING_KINDS = {"KopfPeering", "ClusterKopfPeering"}  # kopf.dev, crds/kopf-peering.yaml


def test_chart_version_follows_the_project() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["version"] == project
    assert chart["appVersion"] == project


@pytest.mark.parametrize("mode", ["defaults", "all-modes", "call-page", "custom-metrics"])
def test_lint_strict(mode: str) -> None:
    sets = [f"--set={k}={v}" for k, v in MODES[mode].items()]
    out = run_helm("lint", "--strict", str(CHART), *sets, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 chart(s) failed" in out.stdout


@pytest.mark.parametrize("mode", MODES)
def test_manifests_validate_against_kubernetes_schemas(mode: str) -> None:
    docs = template(MODES[mode])
    assert docs
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            assert doc["apiVersion"] == "monitoring.coreos.com/v1"
            continue  # their shape is checked below
        if doc["kind"] in PEERING_KINDS:
            assert doc["apiVersion"] == "kopf.dev/v1" and set(doc) == {
                "apiVersion",
                "kind",
                "metadata",
            }
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {e.message} at {list(e.path)}")


def test_default_render_has_no_monitoring_objects_and_a_webhook_service() -> None:
    docs = template()
    kinds = {d["kind"] for d in docs}
    assert not kinds & CRD_KINDS
    assert "ConfigMap" not in kinds and "PodDisruptionBudget" not in kinds
    assert {d["metadata"]["name"] for d in by_kind(docs, "ClusterRoleBinding")} == {"voicefleet"}
    (hook,) = [s for s in by_kind(docs, "Service") if s["metadata"]["name"] == "voicefleet-webhook"]
    assert hook["spec"]["ports"] == [{"name": "webhook", "port": 8090, "targetPort": "webhook"}]
    (dep,) = by_kind(docs, "Deployment")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert {"name": "webhook", "containerPort": 8090} in c["ports"]
    assert {"name": "VOICEFLEET_OPERATOR_WEBHOOK_PORT", "value": "8090"} in c["env"]


def test_webhook_port_from_values() -> None:
    docs = template({"webhook.port": "9443", "webhook.service.port": "443"})
    (hook,) = [s for s in by_kind(docs, "Service") if s["metadata"]["name"] == "voicefleet-webhook"]
    assert hook["spec"]["ports"][0]["port"] == 443
    (dep,) = by_kind(docs, "Deployment")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert {"name": "webhook", "containerPort": 9443} in c["ports"]
    assert {"name": "VOICEFLEET_OPERATOR_WEBHOOK_PORT", "value": "9443"} in c["env"]


def test_webhook_node_port_for_a_livekit_outside_the_cluster() -> None:
    """A LiveKit server outside the cluster cannot resolve the Service's name: a NodePort
    (fixed when asked, so its webhook.urls can name it) reaches the operator instead."""

    def hook(values: dict[str, str]) -> dict[str, Any]:
        docs = template(values)
        return next(
            s for s in by_kind(docs, "Service") if s["metadata"]["name"].endswith("-webhook")
        )

    fixed = hook({"webhook.service.type": "NodePort", "webhook.service.nodePort": "30790"})
    assert fixed["spec"]["type"] == "NodePort"
    assert fixed["spec"]["ports"][0]["nodePort"] == 30790
    picked = hook({"webhook.service.type": "NodePort"})
    assert "nodePort" not in picked["spec"]["ports"][0]
    # A ClusterIP Service has no node port, whatever the value says.
    assert "nodePort" not in hook({"webhook.service.nodePort": "30790"})["spec"]["ports"][0]


@pytest.mark.parametrize(
    ("key", "kind"),
    [("serviceMonitor", "ServiceMonitor"), ("podMonitor", "PodMonitor"),
     ("prometheusRule", "PrometheusRule")],
)  # fmt: skip
def test_a_monitoring_object_asked_for_without_its_crd_fails_saying_so(key: str, kind: str) -> None:
    args = ["template", "voicefleet", str(CHART), f"--set=monitoring.{key}.enabled=true"]
    out = run_helm(*args, check=False)
    assert out.returncode != 0
    assert f"monitoring.{key}.enabled is true" in out.stderr, out.stderr
    assert f"monitoring.coreos.com/v1 {kind}" in out.stderr, out.stderr


def test_dashboards_need_no_crd() -> None:
    docs = template({"monitoring.dashboards.enabled": "true"}, apis=False)
    assert not {d["kind"] for d in docs} & CRD_KINDS
    assert by_kind(docs, "ConfigMap")


def test_names_overrides_keep_the_job_label() -> None:
    """nameOverride and fullnameOverride rename the objects; app.kubernetes.io/name (the
    job label the dashboards and alerts select on) stays."""
    plain = {d["kind"]: d["metadata"]["name"] for d in template() if d["kind"] == "Deployment"}
    assert plain == {"Deployment": "voicefleet"}
    named = template({"nameOverride": "vf"})
    (dep,) = by_kind(named, "Deployment")
    assert dep["metadata"]["name"] == "voicefleet-vf"
    full = template({"fullnameOverride": "voice-operator"})
    names = {d["metadata"]["name"] for d in full if d["kind"] in ("Deployment", "Service")}
    assert names == {"voice-operator", "voice-operator-webhook"}, names
    for docs in (named, full):
        (dep,) = by_kind(docs, "Deployment")
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "voicefleet-operator"


def test_digests_pin_both_images() -> None:
    digest = "sha256:" + "ab" * 32
    (dep,) = by_kind(
        template({"image.digest": digest, "worker.image.digest": digest}), "Deployment"
    )
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["image"] == f"ghcr.io/voicefleet/operator@{digest}"
    assert f"--default-image=ghcr.io/voicefleet/worker@{digest}" in c["args"]
    bad = run_helm("template", "x", str(CHART), "--set=image.digest=latest", check=False)
    assert bad.returncode != 0 and "digest" in bad.stderr


def test_extra_env_volumes_spread_and_prometheus_url(tmp_path: Path) -> None:
    """What a private CA for LiveKit's API needs on the operator (a ConfigMap volume, its
    mount, SSL_CERT_FILE), a spread over zones, and keda mode's Prometheus."""
    values = {
        "extraEnv": [{"name": "SSL_CERT_FILE", "value": "/etc/livekit-ca/bundle.crt"}],
        "extraVolumes": [{"name": "livekit-ca", "configMap": {"name": "livekit-ca"}}],
        "extraVolumeMounts": [{"name": "livekit-ca", "mountPath": "/etc/livekit-ca"}],
        "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
             "whenUnsatisfiable": "ScheduleAnyway"}
        ],
        "operator": {"prometheusUrl": "http://prometheus.monitoring.svc:9090"},
    }  # fmt: skip
    f = tmp_path / "values.yaml"
    f.write_text(json.dumps(values))
    out = run_helm("template", "voicefleet", str(CHART), "-f", str(f)).stdout
    (dep,) = by_kind([d for d in yaml.safe_load_all(out) if d], "Deployment")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert {"name": "SSL_CERT_FILE", "value": "/etc/livekit-ca/bundle.crt"} in c["env"]
    assert {"name": "livekit-ca", "mountPath": "/etc/livekit-ca"} in c["volumeMounts"]
    assert {"name": "livekit-ca", "configMap": {"name": "livekit-ca"}} in pod["volumes"]
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
    assert "--prometheus-url=http://prometheus.monitoring.svc:9090" in c["args"]
    kubernetes_validate.validate(dep, K8S_VERSION, strict=True)


def test_service_monitor_shape() -> None:
    docs = template(ALL_MODES)
    (sm,) = by_kind(docs, "ServiceMonitor")
    spec = sm["spec"]
    assert spec["jobLabel"] == "app.kubernetes.io/name"
    assert spec["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "voicefleet-operator",
        "app.kubernetes.io/instance": "voicefleet",
        "app.kubernetes.io/component": "operator",
    }
    (ep,) = spec["endpoints"]
    assert ep == {"port": "metrics", "interval": "15s", "honorLabels": True}
    # It selects exactly the metrics Service, which has the named port.
    selected = [
        s
        for s in by_kind(docs, "Service")
        if spec["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]
    assert [s["metadata"]["name"] for s in selected] == ["voicefleet"]
    assert "metrics" in {p["name"] for p in selected[0]["spec"]["ports"]}
    assert selected[0]["metadata"]["labels"]["app.kubernetes.io/name"] == "voicefleet-operator"


def test_pod_monitor_shape_matches_what_the_operator_renders() -> None:
    from voicefleet_contract import APP_NAME, LABEL_INSTANCE, LABEL_NAME, METRICS_PORT_NAME

    (pm,) = by_kind(template(ALL_MODES), "PodMonitor")
    spec = pm["spec"]
    assert spec["selector"] == {"matchLabels": {LABEL_NAME: APP_NAME}}
    assert spec["jobLabel"] == LABEL_NAME  # job="voicefleet-worker"
    assert spec["namespaceSelector"] == {"matchNames": ["voice", "voice-staging"]}
    (ep,) = spec["podMetricsEndpoints"]
    assert ep["port"] == METRICS_PORT_NAME
    relabel = {r["targetLabel"]: r["sourceLabels"] for r in ep["relabelings"]}
    meta = "__meta_kubernetes_pod_label_" + LABEL_INSTANCE.replace(".", "_").replace("/", "_")
    assert relabel == {
        "voiceagent": [meta],
        "namespace": ["__meta_kubernetes_namespace"],
        "pod": ["__meta_kubernetes_pod_name"],
    }
    assert "honorLabels" not in ep  # workers label nothing themselves
    default = by_kind(template({"monitoring.podMonitor.enabled": "true"}), "PodMonitor")
    assert default[0]["spec"]["namespaceSelector"] == {"any": True}


def test_prometheus_rule_is_the_alerts_file() -> None:
    (rule,) = by_kind(template(ALL_MODES), "PrometheusRule")
    source = yaml.safe_load((REPO / "alerts" / "voicefleet.rules.yaml").read_text())
    assert rule["spec"]["groups"] == source["groups"]
    assert all(g["rules"] for g in rule["spec"]["groups"])


def test_dashboard_configmaps_for_the_grafana_sidecar() -> None:
    cms = by_kind(template(ALL_MODES), "ConfigMap")
    files = sorted((REPO / "dashboards").glob("*.json"))
    assert len(cms) == len(files) == 3
    for cm in cms:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((key, text),) = cm["data"].items()
        assert json.loads(text) == json.loads((REPO / "dashboards" / key).read_text())
    other = by_kind(
        template(
            {
                "monitoring.dashboards.enabled": "true",
                "monitoring.dashboards.namespace": "grafana",
                "monitoring.dashboards.label": "grafana_dashboard",
                "monitoring.dashboards.labelValue": "voicefleet",
            }
        ),
        "ConfigMap",
    )
    assert {c["metadata"]["namespace"] for c in other} == {"grafana"}
    assert {c["metadata"]["labels"]["grafana_dashboard"] for c in other} == {"voicefleet"}


def test_namespace_scoped_rbac_mode() -> None:
    docs = template(ALL_MODES)
    assert not by_kind(docs, "ClusterRoleBinding")
    bindings = [b for b in by_kind(docs, "RoleBinding") if b["roleRef"]["kind"] == "ClusterRole"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["voice", "voice-staging"]
    for b in bindings:
        assert b["subjects"] == [
            {"kind": "ServiceAccount", "name": "voicefleet", "namespace": "voicefleet-system"}
        ]
    (dep,) = by_kind(docs, "Deployment")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert "--namespaces=voice,voice-staging" in c["args"]
    # The rules are operator/rbac's, the one source.
    (role,) = by_kind(docs, "ClusterRole")
    source = yaml.safe_load((REPO / "operator" / "rbac" / "clusterrole.yaml").read_text())
    assert role["rules"] == source["rules"]


def test_ha_mode() -> None:
    docs = template(ALL_MODES)
    (dep,) = by_kind(docs, "Deployment")
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    anti = dep["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert anti["preferredDuringSchedulingIgnoredDuringExecution"]
    (pdb,) = by_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"] == dep["spec"]["selector"]
    # kopf peering: the operator's --peering (env) names the objects the chart creates,
    # one per watched namespace (or one cluster-wide); the CRDs come with the chart.
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert {"name": "VOICEFLEET_OPERATOR_PEERING", "value": "voicefleet"} in c["env"]
    peerings = by_kind(docs, "KopfPeering")
    assert sorted((p["metadata"]["namespace"], p["metadata"]["name"]) for p in peerings) == [
        ("voice", "voicefleet"),
        ("voice-staging", "voicefleet"),
    ]
    crds = {d["metadata"]["name"] for d in by_kind(docs, "CustomResourceDefinition")}
    assert {"kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"} <= crds
    (role,) = by_kind(docs, "ClusterRole")
    assert any("kopfpeerings" in r["resources"] for r in role["rules"])
    cluster = template({"replicaCount": "3"})
    assert [p["metadata"]["name"] for p in by_kind(cluster, "ClusterKopfPeering")] == ["voicefleet"]
    assert not by_kind(template(), "ClusterKopfPeering")


def test_ha_webhooks_go_to_the_active_replica_only() -> None:
    """The webhook Service selects the label the active operator sets on its pod (the
    operator's constant), which a Role in the release namespace lets it patch."""
    docs = template(ALL_MODES)
    hook = next(s for s in by_kind(docs, "Service") if s["metadata"]["name"].endswith("-webhook"))
    assert hook["spec"]["selector"][LABEL_OPERATOR_ACTIVE] == "true"
    (role,) = (r for r in by_kind(docs, "Role") if r["metadata"]["name"].endswith("-active"))
    assert role["metadata"]["namespace"] == "voicefleet-system"
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"]}]
    (binding,) = (b for b in by_kind(docs, "RoleBinding") if b["roleRef"]["kind"] == "Role")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    (dep,) = by_kind(docs, "Deployment")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("valueFrom") for e in c["env"]}
    assert env["POD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}  # kopf's identity
    assert env["POD_NAME"] == env["POD_ID"] and "POD_NAMESPACE" in env  # the operator's pod
    # One replica: every operator pod (the one) takes webhooks, no Role.
    single = template()
    hook = next(s for s in by_kind(single, "Service") if s["metadata"]["name"].endswith("-webhook"))
    assert LABEL_OPERATOR_ACTIVE not in hook["spec"]["selector"]
    assert not [r for r in by_kind(single, "Role") if r["metadata"]["name"].endswith("-active")]


def test_one_replica_never_overlaps_two_active_operators_on_upgrade() -> None:
    """Without peering a RollingUpdate surge pod would act beside the old one."""
    (dep,) = by_kind(template(), "Deployment")
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}


@pytest.mark.parametrize("mode", MODES)
def test_pods_pass_pod_security_restricted(mode: str) -> None:
    docs = template(MODES[mode])
    deps = by_kind(docs, "Deployment")
    assert len(deps) == (2 if mode == "call-page" else 1)
    for dep in deps:
        assert restricted_violations(dep["spec"]["template"]["spec"]) == []
        sc = dep["spec"]["template"]["spec"]["containers"][0]["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
    for pod in by_kind(docs, "Pod"):  # the helm test pod
        assert restricted_violations(pod["spec"]) == []


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": "0"}, "at '/replicaCount': minimum: got 0, want 1"),
        ({"webhook.port": "80"}, "at '/webhook/port': minimum: got 80, want 1,024"),
        ({"webhook.port": "http"}, "at '/webhook/port': got string, want integer"),
        ({"image.pullPolicy": "Sometimes"}, "at '/image/pullPolicy'"),
        ({"monitoring.podMonitor.interval": "5 seconds"}, "at '/monitoring/podMonitor/interval'"),
        ({"watchNamespaces[0]": "Voice_NS"}, "at '/watchNamespaces/0'"),
        ({"operator.logFormat": "xml"}, "at '/operator/logFormat'"),
        ({"replicas": "3"}, "additional properties 'replicas' not allowed"),
        ({"callPage.enabled": "true"}, "at '/callPage/livekitUrl': minLength: got 0, want 1"),
        ({**CALL_PAGE, "callPage.livekitUrl": "livekit:7880"}, "at '/callPage/livekitUrl'"),
        ({"customMetrics.port": "443"}, "at '/customMetrics/port': minimum: got 443"),
        ({"customMetrics.readers[0].kind": "Robot"}, "at '/customMetrics/readers/0"),
    ],
)
def test_values_schema_rejects_wrong_values(values: dict[str, str], message: str) -> None:
    args = ["template", "voicefleet", str(CHART)]
    for k, v in values.items():
        args += ["--set" if k != "webhook.port" or v != "http" else "--set-string", f"{k}={v}"]
    out = run_helm(*args, check=False)
    assert out.returncode != 0
    assert "values don't meet the specifications of the schema" in out.stderr, out.stderr
    assert message in out.stderr, out.stderr


def test_packaged_chart_is_self_contained(tmp_path: Path) -> None:
    """files/ links to alerts/, dashboards/ and operator/rbac/ (one source each); the
    packaged chart carries their contents as regular files."""
    run_helm("package", str(CHART), "--destination", str(tmp_path))
    (tgz,) = tmp_path.glob("voicefleet-*.tgz")
    with tarfile.open(tgz) as t:
        members = {m.name: m for m in t.getmembers()}
        for name in (
            "voicefleet/files/alerts/voicefleet.rules.yaml",
            "voicefleet/files/dashboards/fleet.json",
            "voicefleet/files/dashboards/voiceagent.json",
            "voicefleet/files/dashboards/operator.json",
            "voicefleet/files/rbac/clusterrole.yaml",
            "voicefleet/files/crds/voiceagent.yaml",
        ):
            assert name in members and members[name].isfile(), name
        f = t.extractfile("voicefleet/files/dashboards/fleet.json")
        assert f is not None
        assert f.read() == (REPO / "dashboards" / "fleet.json").read_bytes()
        # .helmignore: the Python that generates the dashboards stays out of the package.
        assert not [n for n in members if n.endswith((".py", ".pyc"))], sorted(members)
    # The packaged chart renders the same as the directory.
    out = run_helm("template", "voicefleet", str(tgz), "--namespace", "voicefleet-system")
    assert out.returncode == 0


def test_installs_as_a_subchart_of_an_umbrella_chart(tmp_path: Path) -> None:
    """A parent chart that depends on this one (from its package) renders it, with the
    parent's `global` values and the subchart's values under its name."""
    run_helm("package", str(CHART), "--destination", str(tmp_path))
    (tgz,) = tmp_path.glob("voicefleet-*.tgz")
    umbrella = tmp_path / "platform"
    (umbrella / "charts").mkdir(parents=True)
    tgz.rename(umbrella / "charts" / tgz.name)
    version = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
    (umbrella / "Chart.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v2",
                "name": "platform",
                "version": "1.0.0",
                "dependencies": [{"name": "voicefleet", "version": version}],
            }
        )
    )
    (umbrella / "values.yaml").write_text(
        yaml.safe_dump(
            {"global": {"imageRegistry": "registry.example"}, "voicefleet": {"replicaCount": 2}}
        )
    )
    out = run_helm("template", "platform", str(umbrella), "--namespace", "platform", check=False)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    (dep,) = by_kind(docs, "Deployment")
    assert dep["spec"]["replicas"] == 2
    # A wrong value under the subchart's name is still refused by its schema.
    (umbrella / "values.yaml").write_text(yaml.safe_dump({"voicefleet": {"replicaCount": 0}}))
    bad = run_helm("template", "platform", str(umbrella), check=False)
    assert bad.returncode != 0 and "replicaCount" in bad.stderr, bad.stderr


def _worker_network_policy(docs: list[dict[str, Any]], namespace: str = "calls") -> Any:
    """The NetworkPolicy the operator renders for a VoiceAgent in `namespace`, from the
    --worker-ingress the chart passes it (parsed by the operator's own flag parser)."""
    (dep,) = by_kind(docs, "Deployment")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    args = [a for a in c["args"] if a.startswith("--worker-ingress=")]
    if not args:
        return None
    settings = parse_flags(args, env={})
    spec = parse_spec("support", namespace, minimal_spec())
    return render_network_policy(spec, Owner("support", namespace, "u"), settings)


def test_network_policy_is_on_by_default_and_sessions_auth_on() -> None:
    docs = template()
    assert _worker_network_policy(docs) is not None
    assert not by_kind(docs, "NetworkPolicy")  # the operator renders one per VoiceAgent
    assert _worker_network_policy(template({"networkPolicy.enabled": "false"})) is None
    (dep,) = by_kind(docs, "Deployment")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert "--sessions-auth=true" in c["args"]
    (dep,) = by_kind(template({"worker.sessionsAuth": "false"}), "Deployment")
    assert "--sessions-auth=false" in dep["spec"]["template"]["spec"]["containers"][0]["args"]


def test_network_policy_lets_only_the_operator_and_prometheus_reach_workers() -> None:
    docs = template()
    pol = _worker_network_policy(docs, "calls")
    kubernetes_validate.validate(pol, K8S_VERSION, strict=True)
    assert pol["metadata"]["namespace"] == "calls"  # wherever the VoiceAgent is
    spec = pol["spec"]
    assert spec["podSelector"] == {
        "matchLabels": {"app.kubernetes.io/instance": "support",
                        "app.kubernetes.io/name": "voicefleet-worker"}
    }  # fmt: skip
    assert spec["policyTypes"] == ["Ingress"]  # workers' own connections are not limited
    (rule,) = spec["ingress"]
    assert rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    operator, prometheus = rule["from"]
    assert operator["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "voicefleet-system"}
    }
    # the operator's pods, by the labels its Deployment's pods carry
    (dep,) = by_kind(docs, "Deployment")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert operator["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert prometheus == {
        "namespaceSelector": {},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    }
    # the workers' port named "metrics" and their label are the ones the operator renders
    assert METRICS_PORT_NAME == "metrics" and APP_NAME == "voicefleet-worker"


def test_network_policy_prometheus_and_extra_rules_from_values() -> None:
    docs = template(
        {
            "networkPolicy.prometheus.namespaceSelector.matchLabels.team": "obs",
            "networkPolicy.prometheus.podSelector.matchLabels.app": "prom",
            "networkPolicy.extraIngress[0].from[0].podSelector.matchLabels.role": "debug",
        }
    )
    pol = _worker_network_policy(docs)
    kubernetes_validate.validate(pol, K8S_VERSION, strict=True)
    first, extra = pol["spec"]["ingress"]
    # (Helm merges maps with the defaults: set a default label to null to drop it)
    assert first["from"][1] == {
        "namespaceSelector": {"matchLabels": {"team": "obs"}},
        "podSelector": {"matchLabels": {"app": "prom", "app.kubernetes.io/name": "prometheus"}},
    }
    assert extra == {"from": [{"podSelector": {"matchLabels": {"role": "debug"}}}]}


def test_crds_are_templates_kept_on_uninstall_and_the_repositorys_own() -> None:
    """Helm never upgrades a chart's crds/ folder: the CRDs are templates (upgraded with
    the chart), each exactly the repository's crds/ file plus the chart's labels and
    helm.sh/resource-policy keep (uninstall must not delete every VoiceAgent)."""
    docs = template()
    rendered = {d["metadata"]["name"]: d for d in by_kind(docs, "CustomResourceDefinition")}
    on_disk = {
        d["metadata"]["name"]: d
        for f in sorted((REPO / "crds").glob("*.yaml"))
        for d in yaml.safe_load_all(f.read_text())
        if d
    }
    assert set(rendered) == set(on_disk) == {
        "voiceagents.voicefleet.dev", "kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"
    }  # fmt: skip
    for name, crd in rendered.items():
        assert crd["spec"] == on_disk[name]["spec"], name
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    assert not by_kind(template({"crds.install": "false"}), "CustomResourceDefinition")
    unkept = by_kind(template({"crds.keep": "false"}), "CustomResourceDefinition")
    assert all("annotations" not in c["metadata"] for c in unkept)
    assert not (CHART / "crds").exists()  # Helm would install those once, never upgrade


def test_call_page_is_off_by_default_and_reads_only_voiceagents() -> None:
    """Off unless asked; on, its own ServiceAccount may get and list VoiceAgents and
    nothing else, LiveKit's key pair comes from the named Secret (never a literal), and
    it serves the namespaces the operator watches."""
    assert not [d for d in template({}) if "call" in d["metadata"]["name"]]
    docs = [d for d in template({**ALL_MODES, **CALL_PAGE}) if "-call" in d["metadata"]["name"]]
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ClusterRole", "Deployment", "RoleBinding", "RoleBinding",
                     "Service", "ServiceAccount"]  # fmt: skip
    (role,) = by_kind(docs, "ClusterRole")
    assert role["rules"] == [
        {"apiGroups": ["voicefleet.dev"], "resources": ["voiceagents"], "verbs": ["get", "list"]}
    ]
    (dep,) = by_kind(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "voicefleet-call"
    (c,) = pod["containers"]
    assert c["command"] == ["python", "-m", "voicefleet_operator.callpage"]
    assert "--livekit-url=wss://livekit.example.com" in c["args"]
    assert "--namespaces=voice,voice-staging" in c["args"]
    for e in c["env"]:
        assert "value" not in e and e["valueFrom"]["secretKeyRef"]["name"] == "livekit-credentials"
    (svc,) = by_kind(docs, "Service")
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["selector"]["app.kubernetes.io/name"] == "voicefleet-callpage"


def test_custom_metrics_api_is_off_by_default() -> None:
    docs = template()
    assert not by_kind(docs, "APIService")
    assert not [s for s in by_kind(docs, "Secret") if "custom-metrics" in s["metadata"]["name"]]
    (dep,) = by_kind(docs, "Deployment")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert not [e for e in c["env"] if "CUSTOM_METRICS" in e["name"]]


def test_custom_metrics_api_serves_the_hpa_through_the_aggregation_layer() -> None:
    """customMetrics.enabled: APIServices whose caBundle signs the operator's serving
    certificate for the Service's DNS name, that Service on the active operator, the port
    and certificate the operator's flags name, and the RBAC of an extension API server."""
    from cryptography import x509

    docs = template(MODES["custom-metrics"])
    services = {a["metadata"]["name"]: a["spec"] for a in by_kind(docs, "APIService")}
    assert set(services) == {"v1beta2.custom.metrics.k8s.io", "v1beta1.custom.metrics.k8s.io"}
    v2 = services["v1beta2.custom.metrics.k8s.io"]
    assert v2["versionPriority"] > services["v1beta1.custom.metrics.k8s.io"]["versionPriority"]
    assert v2["service"] == {"name": "voicefleet-custom-metrics", "namespace": "voicefleet-system", "port": 443}  # fmt: skip
    (secret,) = [s for s in by_kind(docs, "Secret") if s["metadata"]["name"] == "voicefleet-custom-metrics-tls"]  # fmt: skip
    import base64

    ca = x509.load_pem_x509_certificate(base64.b64decode(v2["caBundle"]))
    assert base64.b64decode(secret["data"]["ca.crt"]) == base64.b64decode(v2["caBundle"])
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "voicefleet-custom-metrics.voicefleet-system.svc" in names.get_values_for_type(
        x509.DNSName
    )
    svc = next(s for s in by_kind(docs, "Service") if s["metadata"]["name"] == "voicefleet-custom-metrics")  # fmt: skip
    assert svc["spec"]["ports"] == [{"name": "https", "port": 443, "targetPort": "custom-metrics"}]
    assert svc["spec"]["selector"][LABEL_OPERATOR_ACTIVE] == "true"  # HA: the active one
    (dep,) = by_kind(docs, "Deployment")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert {"name": "custom-metrics", "containerPort": 6443} in c["ports"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    flags = parse_flags(
        c["args"],
        env={k: v for k, v in env.items() if k.startswith("VOICEFLEET_OPERATOR_") and v},
    )
    assert flags.custom_metrics_port == 6443
    mount = next(m for m in c["volumeMounts"] if m["name"] == "custom-metrics-tls")
    assert mount["mountPath"] == flags.custom_metrics_cert_dir and mount["readOnly"] is True
    vol = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "custom-metrics-tls")  # fmt: skip
    assert vol["secret"]["secretName"] == "voicefleet-custom-metrics-tls"
    # RBAC: delegated authorization, the front proxy's ConfigMap, and the HPA controller's
    # read of the metric with operator/rbac/custom-metrics.yaml's rules.
    refs = {(b["kind"], b["metadata"].get("namespace"), b["roleRef"]["name"]): b["subjects"] for b in by_kind(docs, "ClusterRoleBinding") + by_kind(docs, "RoleBinding")}  # fmt: skip
    operator_sa = [
        {"kind": "ServiceAccount", "name": "voicefleet", "namespace": "voicefleet-system"}
    ]
    assert refs[("ClusterRoleBinding", None, "system:auth-delegator")] == operator_sa
    assert (
        refs[("RoleBinding", "kube-system", "extension-apiserver-authentication-reader")]
        == operator_sa
    )
    hpa = {
        "kind": "ServiceAccount",
        "name": "horizontal-pod-autoscaler",
        "namespace": "kube-system",
    }
    assert refs[("ClusterRoleBinding", None, "voicefleet:custom-metrics-reader")] == [hpa]
    (reader,) = [r for r in by_kind(docs, "ClusterRole") if r["metadata"]["name"] == "voicefleet:custom-metrics-reader"]  # fmt: skip
    source = list(yaml.safe_load_all((REPO / "operator/rbac/custom-metrics.yaml").read_text()))
    assert reader["rules"] == next(d for d in source if d["kind"] == "ClusterRole")["rules"]
    assert reader["rules"] == [{"apiGroups": ["custom.metrics.k8s.io"], "resources": ["pods/voicefleet_worker_active_sessions"], "verbs": ["get", "list"]}]  # fmt: skip
