"""One pod on the node: prepare its directory and volumes, run its containers, report status,
and stop it gracefully when the API server says it is being deleted."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from voicefleet_contract import Env

from .container import Backoff, ContainerRunner, InProcessFactory, Probes, now_iso
from .inprocess import INPROCESS
from .kubeapi import ApiError, KubeApi
from .podspec import (
    ConfigError,
    ImageRule,
    PodFacts,
    match_image,
    mount_map,
    parse_probe,
    plan_process,
    referenced_objects,
    resolve_env,
)
from .status import ContainerView, pod_status
from .volumes import decode_secret, materialise

# `--bind-address` of voicefleet_operator (cmd.py: VOICEFLEET_OPERATOR_<FLAG>).
OPERATOR_BIND_ADDRESS = "VOICEFLEET_OPERATOR_BIND_ADDRESS"
log = logging.getLogger("nodeagent.pod")
JSON = dict[str, Any]
SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


@dataclass(frozen=True)
class NodeContext:
    """What every pod on this node shares."""

    api: KubeApi
    node_name: str
    pods_dir: Path
    python_bin_dir: str
    api_server: str  # https://127.0.0.1:PORT
    ca_file: str
    backoff: Backoff
    http: aiohttp.ClientSession
    image_table: Callable[[], list[ImageRule]]
    token_source: Callable[[str, str, int, str], Awaitable[str]]


class PodWorker:
    def __init__(self, ctx: NodeContext, pod: JSON, pod_ip: str) -> None:
        self.ctx = ctx
        self.pod = pod
        self.pod_ip = pod_ip
        meta = pod["metadata"]
        self.ns, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.dir: Path = ctx.pods_dir / self.ns / self.name
        # A container's /tmp is short in a cluster; the pod directory here is deep, and a
        # unix socket's path is limited to 107 bytes (Python's multiprocessing forkserver
        # and the worker's job link bind theirs in TMPDIR). TMPDIR is a short link in /tmp
        # to the pod's own tmp, removed with the pod.
        self.tmp_link = Path("/tmp") / f"vfpod-{self.uid.replace('-', '')[:16]}"
        spec = pod["spec"]
        self.restart_policy: str = spec.get("restartPolicy", "Always")
        prior = {c["name"]: c for c in (pod.get("status") or {}).get("containerStatuses") or []}
        self.views = {
            c["name"]: ContainerView(
                c["name"],
                c["image"],
                restart_count=int(prior.get(c["name"], {}).get("restartCount", 0)),
            )
            for c in spec["containers"]
        }
        self.init_views = [
            ContainerView(c["name"], c["image"]) for c in spec.get("initContainers") or []
        ]
        self.runners: dict[str, ContainerRunner] = {}
        self.start_time = (pod.get("status") or {}).get("startTime") or now_iso()
        self._since: dict[str, tuple[bool, str]] = {}
        self._changed = asyncio.Event()
        self._last_reported: JSON | None = None
        self._terminating: asyncio.Task[None] | None = None
        self._main: asyncio.Task[None] | None = None
        self._reporter: asyncio.Task[None] | None = None
        self.gone = asyncio.Event()

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        self._reporter = asyncio.create_task(self._report_loop())
        self._main = asyncio.create_task(self._run())
        self.changed()

    def update(self, pod: JSON) -> None:
        self.pod = pod
        meta = pod["metadata"]
        if meta.get("deletionTimestamp") and self._terminating is None:
            grace = float(meta.get("deletionGracePeriodSeconds", 30))
            self._terminating = asyncio.create_task(self._terminate(grace))

    def deleted(self) -> None:
        """The pod object is gone (a forced deletion): kill at once."""
        for r in self.runners.values():
            r.kill_now()
        if self._main:
            self._main.cancel()
        self._finish()

    def changed(self) -> None:
        self._changed.set()

    def _finish(self) -> None:
        if self._reporter:
            self._reporter.cancel()
        with contextlib.suppress(OSError):
            self.tmp_link.unlink()
        self.gone.set()

    # --- running -------------------------------------------------------------------------
    async def _fetch_refs(self) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
        secret_names, cm_names = referenced_objects(self.pod)
        secrets: dict[str, dict[str, str]] = {}
        configmaps: dict[str, dict[str, str]] = {}
        for n in secret_names:
            obj = await self.ctx.api.get_or_none(f"/api/v1/namespaces/{self.ns}/secrets/{n}")
            if obj is not None:
                secrets[n] = decode_secret(obj)
        for n in cm_names:
            obj = await self.ctx.api.get_or_none(f"/api/v1/namespaces/{self.ns}/configmaps/{n}")
            if obj is not None:
                configmaps[n] = dict(obj.get("data") or {})
        return secrets, configmaps

    def _base_env(
        self, rule: ImageRule, volume_dirs: dict[str, str], container: JSON
    ) -> dict[str, str]:
        host, _, port = self.ctx.api_server.removeprefix("https://").partition(":")
        env = {
            "PATH": f"{self.ctx.python_bin_dir}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.dir / "home"),
            "TMPDIR": str(self.tmp_link),
            "LANG": "C.UTF-8",
            "HOSTNAME": self.name,
            "KUBERNETES_SERVICE_HOST": host,
            "KUBERNETES_SERVICE_PORT": port,
            # Every pod shares the host's network here (a cluster gives each its own
            # namespace): the worker's servers must bind the pod's own 127.x address, not
            # the 0.0.0.0 it binds in a real pod. The container's env may still override.
            Env.BIND_ADDRESS: self.pod_ip,
            OPERATOR_BIND_ADDRESS: self.pod_ip,  # the operator's, from the Helm chart
            **rule.env,
        }
        # No fixed /var/run/secrets path on a shared host: point clients at a kubeconfig.
        for m in container.get("volumeMounts") or []:
            if m["mountPath"].rstrip("/") == SA_MOUNT and m["name"] in volume_dirs:
                env["KUBECONFIG"] = str(self._write_kubeconfig(str(volume_dirs[m["name"]])))
        return env

    def _write_kubeconfig(self, sa_dir: str) -> Path:
        path = self.dir / "kubeconfig"
        path.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters: [{{name: testbed, cluster: {{server: '{self.ctx.api_server}', "
            f"certificate-authority: '{self.ctx.ca_file}'}}}}]\n"
            f"users: [{{name: sa, user: {{tokenFile: '{sa_dir}/token'}}}}]\n"
            f"contexts: [{{name: sa, context: {{cluster: testbed, user: sa, namespace: {self.ns}}}}}]\n"
            "current-context: sa\n"
        )
        return path

    def _make_runner(
        self,
        container: JSON,
        view: ContainerView,
        facts: PodFacts,
        secrets: dict[str, dict[str, str]],
        configmaps: dict[str, dict[str, str]],
        volume_dirs: dict[str, str],
    ) -> ContainerRunner:
        rule = match_image(container["image"], self.ctx.image_table())
        inprocess: InProcessFactory | None = None
        if rule.inprocess:
            if rule.inprocess not in INPROCESS:
                raise ConfigError(
                    "CreateContainerError", f"image table: unknown inprocess {rule.inprocess!r}"
                )
            inprocess = INPROCESS[rule.inprocess]
        base = self._base_env(rule, volume_dirs, container)
        env = resolve_env(container, facts, secrets, configmaps, base)
        host_paths = frozenset(
            k for k in ("HOME", "TMPDIR", "KUBECONFIG") if env.get(k) == base.get(k)
        )
        plan = plan_process(
            container, rule, env, mount_map(container, volume_dirs), str(self.dir), host_paths
        )
        probes = Probes(
            startup=parse_probe(container.get("startupProbe"), container, self.pod_ip),
            readiness=parse_probe(container.get("readinessProbe"), container, self.pod_ip),
            liveness=parse_probe(container.get("livenessProbe"), container, self.pod_ip),
        )
        return ContainerRunner(
            view,
            plan,
            probes,
            self.dir / f"{container['name']}.log",
            self.dir / f"{container['name']}.pid",
            self.restart_policy,
            self.ctx.backoff,
            self.ctx.http,
            self.changed,
            kill_grace=float(self.pod["spec"].get("terminationGracePeriodSeconds", 30)),
            inprocess=inprocess,
        )

    async def _prepare(
        self,
    ) -> tuple[PodFacts, dict[str, dict[str, str]], dict[str, dict[str, str]], dict[str, str]]:
        """Fetch referenced objects and write volumes, retrying while they are missing
        (a kubelet keeps such a container in CreateContainerConfigError)."""
        delay = 1.0
        while True:
            try:
                facts = PodFacts.of(self.pod, self.pod_ip)
                secrets, configmaps = await self._fetch_refs()
                volume_dirs = await materialise(
                    self.pod,
                    self.dir / "volumes",
                    facts,
                    secrets,
                    configmaps,
                    self.ctx.token_source,
                )
                # Validate every container's config now, so a missing key shows before start.
                for c in self.pod["spec"]["containers"]:
                    rule = match_image(c["image"], self.ctx.image_table())
                    resolve_env(c, facts, secrets, configmaps, self._base_env(rule, volume_dirs, c))
                return facts, secrets, configmaps, volume_dirs
            except (ConfigError, ApiError, TimeoutError, aiohttp.ClientError) as e:
                # An API server too busy to answer (thousands of pods starting at once) is
                # retried like a missing object; a task that died here left its pod
                # Pending forever.
                reason = e.reason if isinstance(e, ConfigError) else "CreateContainerConfigError"
                for v in self.views.values():
                    v.state, v.reason, v.message = "waiting", reason, str(e) or type(e).__name__
                self.changed()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _run(self) -> None:
        for sub in ("home", "tmp"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # a restarted node agent finds it
            self.tmp_link.symlink_to(self.dir / "tmp", target_is_directory=True)
        facts, secrets, configmaps, volume_dirs = await self._prepare()
        spec = self.pod["spec"]
        for container, view in zip(spec.get("initContainers") or [], self.init_views, strict=True):
            while True:
                runner = self._make_runner(container, view, facts, secrets, configmaps, volume_dirs)
                self.runners[f"init:{container['name']}"] = runner
                code = await runner.run_once()
                if code == 0 or self.restart_policy == "Never" or self._terminating:
                    break
                view.restart_count += 1
                await asyncio.sleep(self.ctx.backoff.base)
            if view.exit_code != 0:
                return
        if self._terminating:
            return
        tasks = []
        for container in spec["containers"]:
            try:
                runner = self._make_runner(
                    container,
                    self.views[container["name"]],
                    facts,
                    secrets,
                    configmaps,
                    volume_dirs,
                )
            except ConfigError as e:
                v = self.views[container["name"]]
                v.state, v.reason, v.message = "waiting", e.reason, e.message
                self.changed()
                continue
            self.runners[container["name"]] = runner
            tasks.append(asyncio.create_task(runner.run()))
        await asyncio.gather(*tasks)

    async def _terminate(self, grace: float) -> None:
        """Graceful deletion: preStop, SIGTERM, SIGKILL after the grace period, then remove
        the pod object (the kubelet's final delete with grace 0)."""
        log.info("terminating %s/%s (grace %.0fs)", self.ns, self.name, grace)
        containers = {c["name"]: c for c in self.pod["spec"]["containers"]}
        stops = []
        for name, runner in list(self.runners.items()):
            hook = ((containers.get(name) or {}).get("lifecycle") or {}).get("preStop")
            stops.append(runner.stop(grace, self._pre_stop(hook, runner) if hook else None))
        await asyncio.gather(*stops)
        if self._main:
            self._main.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._main
        self.changed()
        await self._flush_status()
        with contextlib.suppress(ApiError):
            await self.ctx.api.delete(
                f"/api/v1/namespaces/{self.ns}/pods/{self.name}",
                {"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}},
            )
        self._finish()

    def _pre_stop(self, hook: JSON, runner: ContainerRunner) -> Callable[[], asyncio.Future[None]]:
        async def run() -> None:
            if "exec" in hook:
                proc = await asyncio.create_subprocess_exec(
                    *hook["exec"]["command"], env=runner.plan.env, cwd=runner.plan.cwd
                )
                await proc.wait()
            elif "httpGet" in hook:
                h = hook["httpGet"]
                url = f"http://{h.get('host') or self.pod_ip}:{h['port']}{h.get('path', '/')}"
                with contextlib.suppress(aiohttp.ClientError):
                    async with self.ctx.http.get(url) as resp:
                        await resp.read()
            elif "sleep" in hook:
                await asyncio.sleep(float(hook["sleep"]["seconds"]))

        return lambda: asyncio.ensure_future(run())

    # --- status --------------------------------------------------------------------------
    def status(self) -> JSON:
        return pod_status(
            restart_policy=self.restart_policy,
            init=self.init_views,
            main=list(self.views.values()),
            pod_ip=self.pod_ip,
            start_time=self.start_time,
            now=now_iso(),
            since=self._since,
        )

    async def _flush_status(self) -> bool:
        """Patch the status if it changed; False when the patch failed (retry later)."""
        status = self.status()
        if status == self._last_reported:
            return True
        try:
            await self.ctx.api.merge_patch(
                f"/api/v1/namespaces/{self.ns}/pods/{self.name}/status", {"status": status}
            )
            self._last_reported = status
            return True
        except ApiError as e:
            if e.status == 404:
                self._finish()
                return True
            log.warning("status of %s/%s: %s", self.ns, self.name, e)
        except (OSError, aiohttp.ClientError, TimeoutError) as e:
            log.warning("status of %s/%s: %s", self.ns, self.name, e)
        return False

    async def _report_loop(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            if not await self._flush_status():
                await asyncio.sleep(1.0)
                self._changed.set()
            await asyncio.sleep(0.05)  # coalesce bursts of changes into one patch
