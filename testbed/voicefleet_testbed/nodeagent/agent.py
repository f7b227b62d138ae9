"""The node agent: registers a Ready, tainted Node (the hollow node), keeps its Lease and
runs the containers of each pod kube-scheduler binds to it as local processes (see
docs/testbed.md). Pods reach it by tolerating its taint and selecting its label
(realnode/scheduling.py)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import ipaddress
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from ..procs import start_time
from ..prometheus import scrape_targets, write_targets
from ..realnode.config import NODE_ROLE_LABEL
from ..realnode.scheduling import HOLLOW_TAINT
from .container import Backoff
from .kubeapi import ApiError, Credentials, KubeApi, WatchExpired
from .pod import NodeContext, PodWorker
from .podspec import ImageRule, parse_image_table

log = logging.getLogger("nodeagent")
JSON = dict[str, Any]
LEASE_SECONDS = 40


def _micro_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ImageTable:
    """The image table, re-read when one of its files changes, so tests can remap images."""

    def __init__(self, paths: list[Path], python: str) -> None:
        self.paths = paths
        self.python = python
        self._stamp: tuple[float, ...] = ()
        self._rules: list[ImageRule] = []

    def __call__(self) -> list[ImageRule]:
        stamp = tuple(p.stat().st_mtime if p.exists() else 0.0 for p in self.paths)
        if stamp != self._stamp:
            raw: list[JSON] = []
            # Later files (overrides) win: their rules go first.
            for p in reversed(self.paths):
                if p.exists():
                    raw += yaml.safe_load(p.read_text()) or []
            self._rules = parse_image_table(raw, self.python)
            self._stamp = stamp
        return self._rules


class IpPool:
    """One loopback address per pod, from the stack's own /16 (so two stacks never clash)."""

    def __init__(self, cidr: str) -> None:
        self.net = ipaddress.ip_network(cidr)
        self._used: set[str] = set()
        self._next = 1

    def claim(self, ip: str) -> None:
        self._used.add(ip)

    def allocate(self) -> str:
        hosts = self.net.num_addresses - 2
        for _ in range(hosts):
            ip = str(self.net.network_address + self._next)
            self._next = self._next % hosts + 1
            if ip not in self._used and not ip.endswith(".0") and not ip.endswith(".255"):
                self._used.add(ip)
                return ip
        raise RuntimeError("pod address pool exhausted")

    def release(self, ip: str) -> None:
        self._used.discard(ip)


class NodeAgent:
    def __init__(
        self,
        api: KubeApi,
        node_name: str,
        pods_dir: Path,
        images: ImageTable,
        backoff: Backoff,
        pod_cidr: str,
        scrape_targets: Path | None = None,
    ) -> None:
        self.api = api
        self.scrape_targets = scrape_targets
        self._targets_dirty = asyncio.Event()
        self.node_name = node_name
        self.pods_dir = pods_dir
        self.images = images
        self.backoff = backoff
        self.workers: dict[str, PodWorker] = {}  # uid -> worker
        # Pods other nodes run (the real node's), with their IPs: Prometheus scrapes them
        # through the same target file, the stack's only pod discovery.
        self.elsewhere: dict[str, JSON] = {}  # uid -> pod
        self.ips = IpPool(pod_cidr)
        self.http: aiohttp.ClientSession | None = None
        self.ctx: NodeContext | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        # Keep a reference: the loop holds tasks only weakly.
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- node ------------------------------------------------------------------------
    def _node_status(self) -> JSON:
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

        def cond(kind: str, status: str, reason: str, message: str) -> JSON:
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            }

        # A hollow node stands in for a cluster's worth of nodes: the benchmarks place
        # thousands of worker pods on it, each requesting the product's default (600m,
        # 256Mi). A 64-core node capped the reconcile benchmark at 106 Ready of 1,000
        # VoiceAgents (the scheduler's Insufficient cpu), which is the stage, not the
        # operator. The real node (realnode/) reports what the machine has.
        resources = {"cpu": "4000", "memory": "8Ti", "pods": "20000", "ephemeral-storage": "1Ti"}
        return {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                cond("Ready", "True", "KubeletReady", "testbed node agent is posting ready status"),
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", ""),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", ""),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", ""),
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.node_name},
            ],
            "nodeInfo": {
                "machineID": "testbed",
                "systemUUID": "testbed",
                "bootID": str(os.getpid()),
                "kernelVersion": os.uname().release,
                "osImage": "voicefleet testbed",
                "containerRuntimeVersion": "testbed://processes",
                "kubeletVersion": "testbed",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        }

    async def register(self) -> None:
        labels = {
            "kubernetes.io/hostname": self.node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": "testbed",
            NODE_ROLE_LABEL: "hollow",
        }
        # Only pods meant for processes come here; user workloads go to the real node.
        spec: JSON = {"taints": [HOLLOW_TAINT]}
        body: JSON = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.node_name, "labels": labels},
            "spec": spec,
        }
        try:
            await self.api.post("/api/v1/nodes", body)
        except ApiError as e:
            if e.status != 409:
                raise
            await self.api.merge_patch(
                f"/api/v1/nodes/{self.node_name}",
                {"metadata": {"labels": labels}, "spec": spec},
            )
        await self._post_node_status()
        log.info("node %s registered and Ready", self.node_name)

    async def _post_node_status(self) -> None:
        await self.api.merge_patch(
            f"/api/v1/nodes/{self.node_name}/status", {"status": self._node_status()}
        )

    async def heartbeat(self) -> None:
        """Renew the node Lease every 10 s and post node status every minute."""
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node_name}"
        n = 0
        while True:
            try:
                lease = {
                    "holderIdentity": self.node_name,
                    "leaseDurationSeconds": LEASE_SECONDS,
                    "renewTime": _micro_now(),
                }
                if await self.api.get_or_none(path) is None:
                    await self.api.post(
                        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                        {
                            "metadata": {"name": self.node_name, "namespace": "kube-node-lease"},
                            "spec": lease,
                        },
                    )
                else:
                    await self.api.merge_patch(path, {"spec": lease})
                if n % 6 == 0:
                    await self._post_node_status()
            except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as e:
                log.warning("heartbeat: %s", e)
            n += 1
            await asyncio.sleep(10)

    # --- pods ------------------------------------------------------------------------
    async def token_source(self, ns: str, sa: str, seconds: int, audience: str) -> str:
        spec: JSON = {"expirationSeconds": max(600, seconds)}
        if audience:
            spec["audiences"] = [audience]
        resp = await self.api.post(
            f"/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
        )
        return str(resp["status"]["token"])

    async def publish_targets(self) -> None:
        """Keep Prometheus's file_sd target file in step with the pods (at most 1/s)."""
        if self.scrape_targets is None:
            return
        write_targets(self.scrape_targets, [])
        while True:
            await self._targets_dirty.wait()
            self._targets_dirty.clear()
            pods = [(w.pod, w.pod_ip) for w in self.workers.values()]
            pods += [(p, p["status"]["podIP"]) for p in self.elsewhere.values()]
            write_targets(self.scrape_targets, scrape_targets(pods))
            await asyncio.sleep(1.0)

    def _on_pod(self, kind: str, pod: JSON) -> None:
        self._targets_dirty.set()
        meta, spec = pod["metadata"], pod["spec"]
        uid = meta["uid"]
        worker = self.workers.get(uid)
        self.elsewhere.pop(uid, None)
        if kind == "DELETED":
            if worker is not None:
                worker.deleted()
                self._forget(uid)
            return
        node = spec.get("nodeName")
        if not node:
            return  # kube-scheduler binds it (here or to the real node)
        if node != self.node_name:
            if (pod.get("status") or {}).get("podIP"):
                self.elsewhere[uid] = pod
            return
        if worker is not None:
            worker.update(pod)
            return
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed") and not meta.get("deletionTimestamp"):
            return  # finished pods stay finished across node agent restarts
        assert self.ctx is not None
        pod_ip = (pod.get("status") or {}).get("podIP") or ""
        if pod_ip:
            self.ips.claim(pod_ip)
        else:
            pod_ip = self.ips.allocate()
        worker = PodWorker(self.ctx, pod, pod_ip)
        self.workers[uid] = worker
        worker.start()
        worker.update(pod)  # a pod already being deleted goes straight to termination
        self._spawn(self._reap(uid, worker))

    async def _reap(self, uid: str, worker: PodWorker) -> None:
        await worker.gone.wait()
        self._forget(uid)

    def _forget(self, uid: str) -> None:
        worker = self.workers.pop(uid, None)
        if worker is not None:
            self.ips.release(worker.pod_ip)

    async def watch_pods(self) -> None:
        while True:
            try:
                listing = await self.api.list("/api/v1/pods")
                seen = set()
                for pod in listing.get("items", []):
                    seen.add(pod["metadata"]["uid"])
                    self._on_pod("ADDED", pod)
                for uid in set(self.elsewhere) - seen:
                    del self.elsewhere[uid]
                for uid in list(self.workers):
                    if uid not in seen:  # deleted while we were not watching
                        self.workers[uid].deleted()
                        self._forget(uid)
                rv = listing["metadata"]["resourceVersion"]
                while True:
                    async for kind, obj in self.api.watch("/api/v1/pods", rv):
                        rv = obj["metadata"].get("resourceVersion", rv)
                        if kind != "BOOKMARK":
                            self._on_pod(kind, obj)
            except WatchExpired:
                log.info("pod watch expired; re-listing")
            except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as e:
                log.warning("pod watch: %s; retrying", e)
                await asyncio.sleep(1)

    async def stop_all(self, grace: float = 5.0) -> None:
        """On shutdown: stop every container (short grace), so nothing is left behind."""
        await asyncio.gather(
            *(r.stop(grace) for w in self.workers.values() for r in w.runners.values()),
            return_exceptions=True,
        )

    async def run(self, api_server: str, ca_file: str) -> None:
        self.http = aiohttp.ClientSession()
        self.ctx = NodeContext(
            api=self.api,
            node_name=self.node_name,
            pods_dir=self.pods_dir,
            python_bin_dir=str(Path(sys.executable).parent),
            api_server=api_server,
            ca_file=ca_file,
            backoff=self.backoff,
            http=self.http,
            image_table=self.images,
            token_source=self.token_source,
        )
        await self.register()
        try:
            await asyncio.gather(self.heartbeat(), self.watch_pods(), self.publish_targets())
        finally:
            await self.stop_all()
            await self.http.close()


def kill_leftovers(pods_dir: Path) -> int:
    """Kill container processes a previous node agent left running (it was SIGKILLed)."""
    killed = 0
    for pid_file in pods_dir.glob("*/*/*.pid"):
        try:
            pid_s, started_s = pid_file.read_text().split()
            pid, started = int(pid_s), int(started_s)
        except (OSError, ValueError):
            continue
        if start_time(pid) == started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
                killed += 1
        pid_file.unlink(missing_ok=True)
    return killed


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="testbed node agent: runs pods as local processes")
    p.add_argument("--server", required=True)
    p.add_argument("--token-file", required=True)
    p.add_argument("--ca-file", required=True)
    p.add_argument("--node-name", default="testbed-node")
    p.add_argument("--pods-dir", required=True, type=Path)
    p.add_argument("--image-table", action="append", type=Path, default=[])
    p.add_argument("--pod-cidr", default="127.1.0.0/16", help="a loopback range for pod IPs")
    p.add_argument("--scrape-targets", type=Path, help="write Prometheus file_sd targets here")
    p.add_argument("--backoff-base", type=float, default=1.0)
    p.add_argument("--backoff-cap", type=float, default=30.0)
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args.pods_dir.mkdir(parents=True, exist_ok=True)
    n = kill_leftovers(args.pods_dir)
    if n:
        log.info("killed %d container processes left by a previous node agent", n)

    async def amain() -> None:
        api = KubeApi(
            Credentials(args.server, Path(args.token_file).read_text().strip(), args.ca_file)
        )
        agent = NodeAgent(
            api,
            args.node_name,
            args.pods_dir,
            ImageTable(args.image_table, sys.executable),
            Backoff(base=args.backoff_base, cap=args.backoff_cap),
            args.pod_cidr,
            args.scrape_targets,
        )
        task = asyncio.create_task(agent.run(args.server, args.ca_file))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await api.close()

    asyncio.run(amain())


if __name__ == "__main__":
    main()
