from __future__ import annotations

import pytest

from voicefleet_operator import cmd


def test_flags_default_from_env() -> None:
    env = {
        "VOICEFLEET_OPERATOR_NAMESPACES": "a, b",
        "VOICEFLEET_OPERATOR_DEFAULT_IMAGE": "img:1",
        "VOICEFLEET_OPERATOR_METRICS_PORT": "9000",
        "VOICEFLEET_OPERATOR_LOG_FORMAT": "text",
    }
    s = cmd.parse([], env)
    assert s.namespaces == ("a", "b")
    assert s.default_image == "img:1" and s.metrics_port == 9000 and s.log_format == "text"
    assert cmd.parse(["--metrics-port", "9100"], env).metrics_port == 9100
    assert cmd.parse([], {}).namespaces == ()


def test_peering_from_the_charts_env() -> None:
    s = cmd.parse([], {"VOICEFLEET_OPERATOR_PEERING": "voicefleet"})
    assert s.peering == "voicefleet" and not s.standalone
    assert cmd.parse([], {}).standalone


def test_own_pod_from_the_downward_api() -> None:
    s = cmd.parse([], {"POD_NAMESPACE": "voicefleet-system", "POD_NAME": "op-0"})
    assert s.pod == ("voicefleet-system", "op-0")
    assert cmd.parse([], {"POD_NAME": "op-0"}).pod is None
    assert cmd.parse([], {}).pod is None


def test_failover_flags() -> None:
    s = cmd.parse([], {})
    assert (s.webhook_port, s.failover_sweep_seconds) == (8090, 10.0)
    env = {
        "VOICEFLEET_OPERATOR_WEBHOOK_PORT": "0",
        "VOICEFLEET_OPERATOR_FAILOVER_SWEEP_SECONDS": "15",
    }
    s = cmd.parse([], env)
    assert (s.webhook_port, s.failover_sweep_seconds) == (0, 15.0)
    assert cmd.parse(["--webhook-port=9443"], env).webhook_port == 9443


def test_resync_and_retry_flags() -> None:
    s = cmd.parse([], {})
    assert (s.resync_seconds, s.retry_seconds) == (600.0, 30.0)
    env = {"VOICEFLEET_OPERATOR_RESYNC_SECONDS": "300", "VOICEFLEET_OPERATOR_RETRY_SECONDS": "10"}
    s = cmd.parse([], env)
    assert (s.resync_seconds, s.retry_seconds) == (300.0, 10.0)
    assert cmd.parse(["--retry-seconds=5"], env).retry_seconds == 5.0


def test_sessions_auth_flag_and_env() -> None:
    assert cmd.parse([], env={}).sessions_auth is True
    assert cmd.parse(["--sessions-auth=false"], env={}).sessions_auth is False
    assert cmd.parse([], env={"VOICEFLEET_OPERATOR_SESSIONS_AUTH": "false"}).sessions_auth is False


def test_dry_run_flag_and_env() -> None:
    assert cmd.parse([], env={}).dry_run is False
    assert cmd.parse(["--dry-run=true"], env={}).dry_run is True
    assert cmd.parse([], env={"VOICEFLEET_OPERATOR_DRY_RUN": "true"}).dry_run is True


def test_worker_ingress_flag_and_env() -> None:
    rules = '[{"from": [{"podSelector": {}}], "ports": [{"port": "metrics"}]}]'
    assert cmd.parse([]).worker_ingress is None
    assert cmd.parse([f"--worker-ingress={rules}"]).worker_ingress == (
        {"from": [{"podSelector": {}}], "ports": [{"port": "metrics"}]},
    )
    env = {"VOICEFLEET_OPERATOR_WORKER_INGRESS": rules}
    assert cmd.parse([], env=env).worker_ingress is not None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{not json", "not JSON"),
        ('{"from": []}', "must be a JSON list"),
        ('[{"form": []}]', "--worker-ingress[0]: unknown fields ['form']"),
        ('[{"ports": {"port": 1}}]', "--worker-ingress[0].ports: must be a list"),
    ],
)
def test_a_bad_worker_ingress_names_the_flag(
    value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        cmd.parse([f"--worker-ingress={value}"], env={})
    assert message in capsys.readouterr().err


def test_custom_metrics_flags() -> None:
    s = cmd.parse([], {})
    assert s.custom_metrics_port == 0  # off: a cluster's own adapter may serve the group
    env = {
        "VOICEFLEET_OPERATOR_CUSTOM_METRICS_PORT": "6443",
        "VOICEFLEET_OPERATOR_CUSTOM_METRICS_CERT_DIR": "/tls",
    }
    s = cmd.parse([], env)
    assert (s.custom_metrics_port, s.custom_metrics_cert_dir) == (6443, "/tls")
    assert cmd.parse(["--custom-metrics-port=0"], env).custom_metrics_port == 0
