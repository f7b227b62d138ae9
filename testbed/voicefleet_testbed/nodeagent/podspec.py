"""Pure functions from a pod spec to what the node agent runs: argv, env, paths, probes.

No I/O here: Secrets and ConfigMaps are passed in as plain dicts, so every rule (env
resolution, `$(VAR)` expansion, the image table, path translation) is tested without a
cluster.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]


class ConfigError(RuntimeError):
    """A container cannot start yet: `reason` as the kubelet would say it."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class ImageRule:
    pattern: str  # fnmatch glob on the image reference
    entrypoint: tuple[
        str, ...
    ] = ()  # the image's ENTRYPOINT+CMD; a container `command` replaces it
    env: Mapping[str, str] = field(default_factory=dict)
    # Served by the node agent itself instead of a process (e.g. "fake-worker").
    inprocess: str = ""


def match_image(image: str, table: Sequence[ImageRule]) -> ImageRule:
    for rule in table:
        if fnmatch.fnmatchcase(image, rule.pattern):
            return rule
    raise ConfigError("ErrImagePull", f"image {image!r} is not in the testbed's image table")


def parse_image_table(raw: Sequence[Mapping[str, Any]], python: str) -> list[ImageRule]:
    """The table's entries, with `{python}` replaced by the interpreter that runs pods."""
    rules = []
    for i, entry in enumerate(raw):
        if "image" not in entry:
            raise ValueError(f"image table entry {i}: 'image' is required")
        rules.append(
            ImageRule(
                pattern=str(entry["image"]),
                entrypoint=tuple(
                    str(a).replace("{python}", python) for a in entry.get("entrypoint", [])
                ),
                env={str(k): str(v) for k, v in (entry.get("env") or {}).items()},
                inprocess=str(entry.get("inprocess") or ""),
            )
        )
    return rules


_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: known names are replaced, `$$` escapes, others stay."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return _VAR_REF.sub(sub, value)


@dataclass(frozen=True)
class PodFacts:
    """What fieldRefs can read: the pod's own metadata and status."""

    name: str
    namespace: str
    uid: str
    pod_ip: str
    node_name: str
    service_account: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]

    @classmethod
    def of(cls, pod: JSON, pod_ip: str) -> PodFacts:
        meta, spec = pod["metadata"], pod["spec"]
        return cls(
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta["uid"],
            pod_ip=pod_ip,
            node_name=spec.get("nodeName", ""),
            service_account=spec.get("serviceAccountName", "default"),
            labels=meta.get("labels") or {},
            annotations=meta.get("annotations") or {},
        )


def field_ref(path: str, facts: PodFacts) -> str:
    simple = {
        "metadata.name": facts.name,
        "metadata.namespace": facts.namespace,
        "metadata.uid": facts.uid,
        "status.podIP": facts.pod_ip,
        "status.podIPs": facts.pod_ip,
        "status.hostIP": "127.0.0.1",
        "status.hostIPs": "127.0.0.1",
        "spec.nodeName": facts.node_name,
        "spec.serviceAccountName": facts.service_account,
    }
    if path in simple:
        return simple[path]
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        source = facts.labels if m.group(1) == "labels" else facts.annotations
        return source.get(m.group(2), "")
    if path in ("metadata.labels", "metadata.annotations"):
        source = facts.labels if path == "metadata.labels" else facts.annotations
        return "\n".join(f'{k}="{v}"' for k, v in sorted(source.items()))
    raise ConfigError("CreateContainerConfigError", f"unsupported fieldRef {path!r}")


def _resource(container: JSON, resource: str) -> str:
    kind, _, name = resource.partition(".")
    value = ((container.get("resources") or {}).get(kind) or {}).get(name)
    if value is None:  # the kubelet reports node allocatable when no limit is set
        value = {"cpu": "64", "memory": str(256 * 2**30)}.get(name, "0")
    return str(value)


def _key_ref(
    ref: JSON, objects: Mapping[str, Mapping[str, str]], kind: str, reason_missing: str
) -> str | None:
    name, key, optional = ref.get("name", ""), ref["key"], bool(ref.get("optional", False))
    data = objects.get(name)
    if data is None:
        if optional:
            return None
        raise ConfigError(reason_missing, f'{kind} "{name}" not found')
    if key not in data:
        if optional:
            return None
        raise ConfigError(reason_missing, f"couldn't find key {key} in {kind} {name}")
    return data[key]


def resolve_env(
    container: JSON,
    facts: PodFacts,
    secrets: Mapping[str, Mapping[str, str]],
    configmaps: Mapping[str, Mapping[str, str]],
    base: Mapping[str, str] = {},
) -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom, then env in order,
    each `value` expanded against what came before."""
    env: dict[str, str] = dict(base)
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            ref, objs, kind = source["configMapRef"], configmaps, "configmap"
        elif "secretRef" in source:
            ref, objs, kind = source["secretRef"], secrets, "secret"
        else:
            continue
        data = objs.get(ref.get("name", ""))
        if data is None:
            if ref.get("optional"):
                continue
            raise ConfigError("CreateContainerConfigError", f'{kind} "{ref.get("name")}" not found')
        env.update({prefix + k: v for k, v in data.items()})
    for var in container.get("env") or []:
        name = var["name"]
        if "valueFrom" not in var:
            env[name] = expand(var.get("value", ""), env)
            continue
        src = var["valueFrom"]
        value: str | None
        if "fieldRef" in src:
            value = field_ref(src["fieldRef"]["fieldPath"], facts)
        elif "secretKeyRef" in src:
            value = _key_ref(src["secretKeyRef"], secrets, "secret", "CreateContainerConfigError")
        elif "configMapKeyRef" in src:
            value = _key_ref(
                src["configMapKeyRef"], configmaps, "configmap", "CreateContainerConfigError"
            )
        elif "resourceFieldRef" in src:
            r = src["resourceFieldRef"]
            value = _resource(container, r["resource"])
        else:
            raise ConfigError("CreateContainerConfigError", f"env {name}: unsupported valueFrom")
        if value is not None:
            env[name] = value
    return env


def referenced_objects(pod: JSON) -> tuple[set[str], set[str]]:
    """Names of the Secrets and ConfigMaps the pod's env and volumes read."""
    secrets: set[str] = set()
    configmaps: set[str] = set()
    spec = pod["spec"]
    for c in (spec.get("initContainers") or []) + spec.get("containers", []):
        for source in c.get("envFrom") or []:
            if "secretRef" in source:
                secrets.add(source["secretRef"].get("name", ""))
            if "configMapRef" in source:
                configmaps.add(source["configMapRef"].get("name", ""))
        for var in c.get("env") or []:
            src = var.get("valueFrom") or {}
            if "secretKeyRef" in src:
                secrets.add(src["secretKeyRef"].get("name", ""))
            if "configMapKeyRef" in src:
                configmaps.add(src["configMapKeyRef"].get("name", ""))
    for vol in spec.get("volumes") or []:
        if "secret" in vol:
            secrets.add(vol["secret"].get("secretName", ""))
        if "configMap" in vol:
            configmaps.add(vol["configMap"].get("name", ""))
        for src in (vol.get("projected") or {}).get("sources") or []:
            if "secret" in src:
                secrets.add(src["secret"].get("name", ""))
            if "configMap" in src:
                configmaps.add(src["configMap"].get("name", ""))
    return secrets, configmaps


def mount_map(container: JSON, volume_dirs: Mapping[str, str]) -> list[tuple[str, str]]:
    """(mountPath, host path) pairs, longest mountPath first, so the most specific wins."""
    pairs = []
    for m in container.get("volumeMounts") or []:
        host = volume_dirs.get(m["name"])
        if host is None:
            raise ConfigError("CreateContainerConfigError", f"volume {m['name']!r} not found")
        if m.get("subPath"):
            host = f"{host}/{m['subPath']}"
        pairs.append((m["mountPath"].rstrip("/") or "/", host))
    return sorted(pairs, key=lambda p: len(p[0]), reverse=True)


def translate_path(value: str, mounts: Sequence[tuple[str, str]]) -> str:
    """Rewrite an absolute in-container path under a mountPath to the pod directory.

    There are no mount namespaces here: a process sees the host's filesystem, so a
    `/etc/voicefleet/agent.json` in env or args must become the materialised volume's path.
    """
    for mount_path, host in mounts:
        if value == mount_path or value.startswith(mount_path + "/"):
            return host + value[len(mount_path) :]
    return value


@dataclass(frozen=True)
class ProcessPlan:
    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: str


def plan_process(
    container: JSON,
    rule: ImageRule,
    env: Mapping[str, str],
    mounts: Sequence[tuple[str, str]],
    default_cwd: str,
    host_paths: frozenset[str] = frozenset(),
) -> ProcessPlan:
    """argv as the runtime builds it: `command` replaces the image entrypoint, `args` follow;
    `$(VAR)` expanded; paths under mounts translated in what the pod spec says, never in the
    image table's entrypoint (host paths, such as the checkout's interpreter, which lie under
    a mountPath like /tmp when the checkout does), nor in the env vars `host_paths` (the node
    agent's own HOME, TMPDIR, KUBECONFIG)."""
    command = container.get("command")
    args = container.get("args") or []
    ours = [translate_path(expand(a, env), mounts) for a in [*(command or []), *args]]
    argv = ours if command else [*rule.entrypoint, *ours]
    if not argv and not rule.inprocess:
        raise ConfigError(
            "CreateContainerError",
            f"container {container['name']!r}: no command and the image table gives no entrypoint",
        )
    full_env = {k: v if k in host_paths else translate_path(v, mounts) for k, v in env.items()}
    cwd = container.get("workingDir")
    return ProcessPlan(tuple(argv), full_env, translate_path(cwd, mounts) if cwd else default_cwd)


@dataclass(frozen=True)
class Probe:
    kind: str  # httpGet | tcpSocket | exec | grpc
    initial_delay: float
    period: float
    timeout: float
    success_threshold: int
    failure_threshold: int
    http_path: str = "/"
    port: int = 0
    host: str = ""
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()
    command: tuple[str, ...] = ()


def _port(value: Any, container: JSON) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    for p in container.get("ports") or []:
        if p.get("name") == value:
            return int(p["containerPort"])
    raise ConfigError("CreateContainerConfigError", f"probe port {value!r} is not a container port")


def parse_probe(raw: JSON | None, container: JSON, pod_ip: str) -> Probe | None:
    if not raw:
        return None
    common = {
        "initial_delay": float(raw.get("initialDelaySeconds", 0)),
        "period": float(raw.get("periodSeconds", 10)),
        "timeout": float(raw.get("timeoutSeconds", 1)),
        "success_threshold": int(raw.get("successThreshold", 1)),
        "failure_threshold": int(raw.get("failureThreshold", 3)),
    }
    if "httpGet" in raw:
        h = raw["httpGet"]
        return Probe(
            "httpGet",
            http_path=h.get("path", "/"),
            port=_port(h["port"], container),
            host=h.get("host") or pod_ip,
            scheme=h.get("scheme", "HTTP"),
            headers=tuple((x["name"], x["value"]) for x in h.get("httpHeaders") or []),
            **common,  # type: ignore[arg-type]
        )
    if "tcpSocket" in raw:
        t = raw["tcpSocket"]
        return Probe(
            "tcpSocket",
            port=_port(t["port"], container),
            host=t.get("host") or pod_ip,
            **common,  # type: ignore[arg-type]
        )
    if "exec" in raw:
        return Probe("exec", command=tuple(raw["exec"].get("command") or ()), **common)  # type: ignore[arg-type]
    if "grpc" in raw:
        return Probe("grpc", port=int(raw["grpc"]["port"]), host=pod_ip, **common)  # type: ignore[arg-type]
    return None


def restart_backoff(failures: int, base: float, cap: float) -> float:
    """CrashLoopBackOff: doubling from `base` up to `cap` (the kubelet: 10 s to 300 s)."""
    if failures <= 0:
        return 0.0
    return float(min(cap, base * 2 ** (failures - 1)))


def should_restart(policy: str, exit_code: int) -> bool:
    return policy == "Always" or (policy == "OnFailure" and exit_code != 0)
