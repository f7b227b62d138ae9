"""Operator -> worker: the rendered pod template and ConfigMap are what the worker can load.

A tiny env resolver plays the kubelet (value, fieldRef, secretKeyRef, the ConfigMap mount);
the resolved config file goes through the worker side's loader.
"""

from __future__ import annotations

import json
from typing import Any

from voicefleet_contract import CONFIG_FILE_KEY, CONFIG_MOUNT_PATH, SECRET_ENV, Env
from voicefleet_contract.config import parse_config
from voicefleet_operator.render import Owner, render_children
from voicefleet_operator.settings import Settings
from voicefleet_operator.spec import parse_spec

from .util import full_spec, minimal_spec

SECRETS = {
    "livekit": {"apiKey": "k", "key": "k2", "apiSecret": "s"},
    "openai": {"apiKey": "sk", "token": "sk2"},
}
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
        # Secrets reach the worker through env only, never through agent.json.
        for value in ("sk", "sk2", "s"):
            assert f'"{value}"' not in files[env[Env.CONFIG_FILE]]
