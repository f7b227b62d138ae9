"""Operator -> worker: the rendered pod template and ConfigMap are what the worker can load.

A tiny env resolver plays the kubelet (value, fieldRef, secretKeyRef, the ConfigMap mount);
the resolved config file goes through the worker side's loader.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from voicefleet_contract import CONFIG_FILE_KEY, CONFIG_MOUNT_PATH, SECRET_ENV, Env
from voicefleet_contract.config import parse_config
from voicefleet_operator.render import WORKER_KEYS, Owner, render_children, render_worker_keys
from voicefleet_operator.settings import Settings
from voicefleet_operator.spec import parse_spec
from voicefleet_worker.resume import parse_key

from .util import full_spec, minimal_spec

SECRETS = {
    "livekit": {"apiKey": "k", "key": "k2", "apiSecret": "s"},
    "openai": {"apiKey": "sk", "token": "sk2"},
}


def _worker_keys() -> dict[str, str]:
    """The worker-keys Secret as the operator creates it, decoded as the kubelet does."""
    spec = parse_spec("support", "voice", minimal_spec())
    body = render_worker_keys(spec, Owner("support", "voice", "u"), WORKER_KEYS)
    return {k: base64.b64decode(v).decode() for k, v in body["data"].items()}


SECRETS["support-worker-keys"] = _worker_keys()
POD = {
    "metadata.name": "support-7d9-abcde",
    "metadata.namespace": "voice",
    "status.podIP": "127.1.0.5",
}


def resolve_env(env: list[dict[str, Any]], configmaps: dict[str, dict[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for e in env:
        if "value" in e:
            out[e["name"]] = e["value"]
            continue
        src = e["valueFrom"]
        if "fieldRef" in src:
            out[e["name"]] = POD[src["fieldRef"]["fieldPath"]]
        elif "secretKeyRef" in src:
            ref = src["secretKeyRef"]
            out[e["name"]] = SECRETS[ref["name"]][ref["key"]]
        elif "configMapKeyRef" in src:
            ref = src["configMapKeyRef"]
            out[e["name"]] = configmaps[ref["name"]][ref["key"]]
        else:
            raise AssertionError(f"unresolvable env {e}")
    return out


def mounted_files(pod: dict[str, Any], configmaps: dict[str, dict[str, str]]) -> dict[str, str]:
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    files: dict[str, str] = {}
    for mount in pod["spec"]["containers"][0]["volumeMounts"]:
        cm = volumes[mount["name"]]["configMap"]["name"]
        for key, text in configmaps[cm].items():
            files[f"{mount['mountPath']}/{key}"] = text
    return files


def test_worker_loads_what_the_operator_renders() -> None:
    for raw in (minimal_spec(), full_spec()):
        spec = parse_spec("support", "voice", raw)
        c = render_children(spec, Owner("support", "voice", "u"), Settings())
        configmaps = {c.configmap["metadata"]["name"]: c.configmap["data"]}
        pod = c.deployment["spec"]["template"]
        env = resolve_env(pod["spec"]["containers"][0]["env"], configmaps)
        files = mounted_files(pod, configmaps)

        assert env[Env.CONFIG_FILE] == f"{CONFIG_MOUNT_PATH}/{CONFIG_FILE_KEY}"
        config = parse_config(json.loads(files[env[Env.CONFIG_FILE]]))
        assert config == spec.config
        assert config.namespace == env[Env.POD_NAMESPACE]
        assert env[Env.LIVEKIT_URL] == config.livekitURL
        assert env[Env.POD_IP] == "127.1.0.5"
        assert int(env[Env.METRICS_PORT]) and int(env[Env.HEALTH_PORT])
        assert env.keys() >= SECRET_ENV
        # the worker's loader takes the resume key and the token as the operator made them
        assert len(parse_key(env[Env.RESUME_KEY])) == 32
        assert env[Env.SESSIONS_TOKEN] == SECRETS["support-worker-keys"]["sessionsToken"]
        # Secrets reach the worker through env only, never through agent.json.
        for value in ("sk", "sk2", "s"):
            assert f'"{value}"' not in files[env[Env.CONFIG_FILE]]
