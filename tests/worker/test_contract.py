"""Operator -> worker: the pod template the operator renders, resolved the way the kubelet
does it (env, secretKeyRefs, the ConfigMap mount), is what the worker's loader accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from voicefleet_contract import HEALTH_PORT_NAME, METRICS_PORT_NAME, READY_PATH, Env
from voicefleet_operator.render import Owner, render_children
from voicefleet_operator.settings import Settings as OperatorSettings
from voicefleet_operator.spec import parse_spec
from voicefleet_worker.config import default_job_executor, load_settings

from ..operator.test_contract import SECRETS, mounted_files, resolve_env
from ..operator.util import full_spec, minimal_spec


def _own_agent() -> dict[str, Any]:
    """A VoiceAgent running a livekit-agents module of one's own, with no OpenAI model."""
    raw = {**minimal_spec(), "agent": {"module": "my_agent:server", "jobExecutor": "thread"}}
    del raw["model"]
    return raw


def test_worker_loads_the_rendered_pod(tmp_path: Path) -> None:
    for i, raw in enumerate((minimal_spec(), full_spec(), _own_agent())):
        spec = parse_spec("support", "voice", raw)
        c = render_children(spec, Owner("support", "voice", "u"), OperatorSettings())
        configmaps = {c.configmap["metadata"]["name"]: c.configmap["data"]}
        pod = c.deployment["spec"]["template"]
        container = pod["spec"]["containers"][0]
        env = resolve_env(container["env"], configmaps)
        # the pod's filesystem: mounted files under a per-test root (as the node agent does)
        root = tmp_path / str(i)
        for path, text in mounted_files(pod, configmaps).items():
            target = root / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        env[Env.CONFIG_FILE] = str(root / env[Env.CONFIG_FILE].lstrip("/"))

        s = load_settings(env)
        assert s.config == spec.config
        assert s.pod_ip == "127.1.0.5"
        # probes reach the pod IP, port-forward 127.0.0.1: the servers bind every address
        assert s.bind_address == "0.0.0.0"
        assert s.livekit_url == spec.config.livekitURL
        if spec.apiKeySecret:
            assert s.secrets.openai_api_key in {v for d in SECRETS.values() for v in d.values()}
        else:
            assert Env.OPENAI_API_KEY not in env and s.secrets.openai_api_key == ""
        # spec.agent is what the worker runs, and where its jobs run
        assert s.agent_module == spec.agent.module
        assert s.job_executor == (spec.agent.jobExecutor or default_job_executor(s.agent_module))
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert s.metrics_port == ports[METRICS_PORT_NAME]
        assert s.health_port == ports[HEALTH_PORT_NAME]
        # liveness and startup hit the health server the worker binds (livekit-agents'
        # GET /); readiness hits the worker's own /ready on the metrics port it serves
        for probe in ("startupProbe", "livenessProbe"):
            assert container[probe]["httpGet"] == {"path": "/", "port": HEALTH_PORT_NAME}
        ready = container["readinessProbe"]["httpGet"]
        assert ready == {"path": READY_PATH, "port": METRICS_PORT_NAME}
        assert s.metrics_port == ports[METRICS_PORT_NAME]
        # the grace period covers the worker's drain
        assert pod["spec"]["terminationGracePeriodSeconds"] > s.config.sessions.drainTimeoutSeconds
        if spec.config.model.baseURL:
            assert s.openai_base_url == spec.config.model.baseURL
