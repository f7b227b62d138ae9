"""Materialise a pod's volumes as directories under the pod's own directory."""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from .podspec import ConfigError, PodFacts, field_ref

JSON = dict[str, Any]
TokenSource = Callable[[str, str, int, str], Awaitable[str]]  # ns, sa, seconds, audience


def _write_items(
    target: Path, data: Mapping[str, str], items: list[JSON] | None, mode: int
) -> None:
    chosen: dict[str, str] = (
        {i["key"]: i.get("path") or i["key"] for i in items} if items else {k: k for k in data}
    )
    for key, rel in chosen.items():
        if key not in data:
            raise ConfigError("CreateContainerConfigError", f"key {key!r} not found for volume")
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(data[key])
        path.chmod(mode)


def decode_secret(secret: JSON) -> dict[str, str]:
    out = {
        k: base64.b64decode(v).decode(errors="replace")
        for k, v in (secret.get("data") or {}).items()
    }
    out.update(secret.get("stringData") or {})
    return out


async def materialise(
    pod: JSON,
    volumes_dir: Path,
    facts: PodFacts,
    secrets: Mapping[str, Mapping[str, str]],
    configmaps: Mapping[str, Mapping[str, str]],
    token_source: TokenSource,
) -> dict[str, str]:
    """Write every volume; return volume name -> host directory."""
    out: dict[str, str] = {}
    if volumes_dir.exists():
        shutil.rmtree(volumes_dir)
    for vol in pod["spec"].get("volumes") or []:
        name = vol["name"]
        target = volumes_dir / name
        target.mkdir(parents=True, exist_ok=True)
        out[name] = str(target)
        if "emptyDir" in vol:
            continue
        if "configMap" in vol:
            cm = vol["configMap"]
            data = configmaps.get(cm.get("name", ""))
            if data is None:
                if cm.get("optional"):
                    continue
                raise ConfigError(
                    "CreateContainerConfigError", f'configmap "{cm.get("name")}" not found'
                )
            _write_items(target, data, cm.get("items"), cm.get("defaultMode", 0o644))
        elif "secret" in vol:
            sv = vol["secret"]
            data = secrets.get(sv.get("secretName", ""))
            if data is None:
                if sv.get("optional"):
                    continue
                raise ConfigError(
                    "CreateContainerConfigError", f'secret "{sv.get("secretName")}" not found'
                )
            _write_items(target, data, sv.get("items"), sv.get("defaultMode", 0o644))
        elif "downwardAPI" in vol:
            _downward(target, vol["downwardAPI"].get("items") or [], facts)
        elif "projected" in vol:
            for src in vol["projected"].get("sources") or []:
                await _projected(target, src, facts, secrets, configmaps, token_source)
        else:
            kinds = sorted(set(vol) - {"name"})
            raise ConfigError(
                "CreateContainerConfigError", f"volume {name}: unsupported type {kinds}"
            )
    return out


def _downward(target: Path, items: list[JSON], facts: PodFacts) -> None:
    for item in items:
        if "fieldRef" in item:
            (target / item["path"]).parent.mkdir(parents=True, exist_ok=True)
            (target / item["path"]).write_text(field_ref(item["fieldRef"]["fieldPath"], facts))


async def _projected(
    target: Path,
    src: JSON,
    facts: PodFacts,
    secrets: Mapping[str, Mapping[str, str]],
    configmaps: Mapping[str, Mapping[str, str]],
    token_source: TokenSource,
) -> None:
    if "serviceAccountToken" in src:
        sat = src["serviceAccountToken"]
        token = await token_source(
            facts.namespace,
            facts.service_account,
            int(sat.get("expirationSeconds", 3607)),
            sat.get("audience", ""),
        )
        path = target / sat.get("path", "token")
        path.write_text(token)
        os.chmod(path, 0o600)
    elif "configMap" in src:
        cm = src["configMap"]
        data = configmaps.get(cm.get("name", ""))
        if data is None:
            if cm.get("optional"):
                return
            raise ConfigError(
                "CreateContainerConfigError", f'configmap "{cm.get("name")}" not found'
            )
        # kube-root-ca.crt is published by the controller-manager; it is our CA anyway.
        _write_items(target, data, cm.get("items"), 0o644)
    elif "secret" in src:
        sv = src["secret"]
        data = secrets.get(sv.get("name", ""))
        if data is None:
            if sv.get("optional"):
                return
            raise ConfigError("CreateContainerConfigError", f'secret "{sv.get("name")}" not found')
        _write_items(target, data, sv.get("items"), 0o644)
    elif "downwardAPI" in src:
        _downward(target, src["downwardAPI"].get("items") or [], facts)
