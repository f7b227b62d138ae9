"""The local stack: real etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
LiveKit server, the node agent's hollow node, optionally a real node (kubelet, containerd,
kube-proxy, CoreDNS; realnode/), and the OpenAI Realtime API stand-in, started in the
background on free loopback ports (the real node's servers: on its bridge address).

State lives in one directory (`.testbed/` for `make up`, a temporary one per test run):
`state.json` (ports, PIDs), `env` (shell exports), `kubeconfig`, `logs/`, `pods/`.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import shutil
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import controlplane as cp
from . import hollow_nodes as hollow
from . import keda as keda_mod
from . import livekit_nodes as lkn
from . import realnode, user_install
from .binaries import REPO_DIR, TESTBED_DIR, Binaries, NodeBinaries, versions
from .livekit_config import LIVEKIT_KEY as LIVEKIT_KEY  # where the tests import it from
from .livekit_config import LOOPBACK, Cluster, MediaAddress, livekit_config
from .pki import Pki, ensure_pki
from .ports import free_port, pick_port
from .procs import Abort, ProcRef, Timeout, kill, spawn, stop, tail, wait_for
from .prometheus import prometheus_config
from .realnode import config as node_config
from .realnode import scheduling
from .realnode.teardown import Host
from .redis import ROOM_NODE_MAP, RedisClient, redis_config

Progress = Callable[[str], None]
# A fixed, published dev secret (like livekit-server --dev's devkey/secret): the stack
# stays on this machine, and a fixed one lets examples/voiceagent.yaml carry it as-is.
LIVEKIT_SECRET = "voicefleet-testbed-livekit-dev-secret"
# The checkout's own stack (`make up`) puts LiveKit on its usual port and the Realtime
# stand-in on the Service's when free (stable URLs on the host; the example names the
# Services, which follow either way); test stacks take free ports.
LIVEKIT_DEFAULT_PORT = 7880
REALTIME_DEFAULT_PORT = 7879
STANDIN_NICE = -5  # the Realtime stand-in's scheduling priority (see realtime() below)
OPERATOR = "voicefleet-operator"


@dataclass
class StackState:
    dir: Path
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, ProcRef] = field(default_factory=dict)
    livekit_secret: str = ""
    pod_net: int = 0  # pods get 127.<pod_net>.x.y
    extra_env: dict[str, str] = field(default_factory=dict)
    operator: bool = False  # runs the voicefleet operator from this checkout
    real_node: bool = False  # runs a real node (kubelet, containerd, ...)
    node_net: int = 0  # the real node's pod network: 10.244.<node_net>.0/24
    # The operator installed by the chart onto the real node, as a user installs it
    # (`make up`), not run as a process (user_install.py).
    chart: bool = False
    # Where LiveKit and the Realtime stand-in serve: loopback, or the real node's bridge
    # address for a stack started with one (`make up`: pods and the host reach it alike).
    host: str = "127.0.0.1"
    # LiveKit's shape: its number of nodes, and Redis (always with more than one node;
    # with one, for LiveKit's SIP API, which keeps its objects in Redis only).
    livekit_nodes: int = 1
    redis: bool = False
    redis_password: str = ""
    keda: bool = False  # runs KEDA's operator and metrics API server (keda.py)
    # The node agent's hollow nodes beyond the first (hollow_nodes.py): their pod networks
    # (127.<net>.x.y), one per node, in node order from node 2.
    hollow_pod_nets: list[int] = field(default_factory=list)

    @property
    def file(self) -> Path:
        return self.dir / "state.json"

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        data = {
            "ports": self.ports,
            "procs": {k: v.to_dict() for k, v in self.procs.items()},
            "livekit_secret": self.livekit_secret,
            "pod_net": self.pod_net,
            "extra_env": self.extra_env,
            "operator": self.operator,
            "real_node": self.real_node,
            "node_net": self.node_net,
            "chart": self.chart,
            "host": self.host,
            "livekit_nodes": self.livekit_nodes,
            "redis": self.redis,
            "redis_password": self.redis_password,
            "keda": self.keda,
            "hollow_pod_nets": self.hollow_pod_nets,
        }
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.chmod(0o600)  # holds the LiveKit secret
        tmp.replace(self.file)

    @classmethod
    def load(cls, directory: Path) -> StackState | None:
        f = directory / "state.json"
        if not f.exists():
            return None
        try:
            data = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return cls(
            dir=directory,
            ports={k: int(v) for k, v in data.get("ports", {}).items()},
            procs={k: ProcRef.from_dict(v) for k, v in data.get("procs", {}).items()},
            livekit_secret=data.get("livekit_secret", ""),
            pod_net=int(data.get("pod_net", 0)),
            hollow_pod_nets=[int(x) for x in data.get("hollow_pod_nets", [])],
            extra_env=dict(data.get("extra_env", {})),
            operator=bool(data.get("operator", False)),
            real_node=bool(data.get("real_node", False)),
            node_net=int(data.get("node_net", 0)),
            chart=bool(data.get("chart", False)),
            host=str(data.get("host", "127.0.0.1")),
            livekit_nodes=int(data.get("livekit_nodes", 1)),
            redis=bool(data.get("redis", False)),
            redis_password=str(data.get("redis_password", "")),
            keda=bool(data.get("keda", False)),
        )


@dataclass(frozen=True)
class Component:
    name: str
    start: Callable[[], ProcRef]
    ready: Callable[[], bool]
    timeout: float


class Stack:
    """Start, inspect and stop the local stack whose state is in `directory`."""

    def __init__(self, directory: Path, progress: Progress = print) -> None:
        self.dir = directory.resolve()
        self.progress = progress
        self.state = StackState.load(self.dir) or StackState(self.dir)

    # --- facts ---------------------------------------------------------------------------
    @property
    def is_default(self) -> bool:
        """The checkout's own stack (`.testbed/`, `make up`), not a test's."""
        return self.dir == default_dir().resolve()

    @property
    def pki(self) -> Pki:
        return Pki(self.dir / "pki")

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def real_node(self) -> realnode.RealNode | None:
        """The real node (kubelet + containerd), when this stack runs one: its `name`, its
        pod network `net`, `import_image(oci_archive)`, `crictl(...)`."""
        if not self.state.real_node or not self.state.node_net:
            return None
        return realnode.RealNode(
            stack_dir=self.dir,
            net=node_config.PodNet(self.state.node_net),
            bins=NodeBinaries.locate(),
            pki=self.pki,
            api_server=self.api_server,
            service_cidr=cp.SERVICE_CIDR,
        )

    def real_node_elsewhere(self) -> str | None:
        """The state directory of another stack that holds this machine's one real node
        (kube-proxy's iptables chains are global), else None."""
        holder = realnode.node.lock_holder()
        return holder if holder and Path(holder) != self.dir else None

    def import_image(self, oci_archive: Path) -> list[str]:
        """Import an OCI image archive into the real node's containerd (no registry)."""
        node = self.real_node
        if node is None:
            raise RuntimeError(f"the stack in {self.dir} runs no real node")
        return node.import_image(oci_archive)

    @property
    def keda(self) -> keda_mod.Keda | None:
        """KEDA's files, ports and processes, when this stack runs it."""
        if not self.state.keda or "keda-grpc" not in self.state.ports:
            return None
        return keda_mod.Keda(
            self.dir, self.api_server, self.pki, self.state.ports, keda_mod.KedaBinaries.locate()
        )

    @property
    def pods_dir(self) -> Path:
        return self.dir / "pods"

    @property
    def logs_dir(self) -> Path:
        return self.dir / "logs"

    @property
    def pod_targets(self) -> Path:
        """Prometheus file_sd targets, written by the node agent."""
        return self.dir / hollow.targets_file(1)

    @property
    def hollow_nodes(self) -> int:
        return 1 + len(self.state.hollow_pod_nets)

    def pods_dir_of(self, node: str) -> Path:
        """Where the node agent of hollow node `node` keeps its pods' files (pid, logs)."""
        n = hollow.number(node)
        if n is None or n > self.hollow_nodes:
            raise ValueError(f"{node!r} is not one of this stack's hollow nodes")
        return self.dir / hollow.pods_subdir(n)

    @property
    def image_override(self) -> Path:
        """Image-table overrides for this stack, read before testbed/images.yaml."""
        return self.dir / "images.yaml"

    @property
    def api_server(self) -> str:
        return f"https://127.0.0.1:{self.state.ports['apiserver']}"

    @property
    def livekit_url(self) -> str:
        """LiveKit node 1's URL (the only node unless the stack runs several)."""
        return self.livekit_urls[0]

    @property
    def livekit_urls(self) -> list[str]:
        """Every LiveKit node's URL, node 1 first. Any node takes signalling and API calls
        for any room (multi-node LiveKit relays them through Redis to the room's node)."""
        return [
            f"ws://{self.state.host}:{self.state.ports[lkn.port_key(n)]}"
            for n in range(1, self.state.livekit_nodes + 1)
        ]

    @property
    def livekit_metrics_urls(self) -> list[str]:
        """Each node's Prometheus endpoint (`livekit_*` series labelled with its `node_id`);
        served by stacks with Redis only, where there is more than one node to tell apart."""
        return [
            f"http://{self.state.host}:{self.state.ports[lkn.port_key(n, 'metrics')]}/metrics"
            for n in range(1, self.state.livekit_nodes + 1)
            if lkn.port_key(n, "metrics") in self.state.ports
        ]

    def livekit_node_id(self, n: int) -> str:
        """The id node n (1-based) registered under in Redis, new at each start: what
        `CreateRoomRequest.node_id` takes to put a room on that node."""
        urls = self.livekit_metrics_urls
        if not 1 <= n <= len(urls):
            raise ValueError(f"node {n}: the stack in {self.dir} serves metrics for {len(urls)}")
        return lkn.fetch_node_id(urls[n - 1])

    def room_nodes(self) -> dict[str, int]:
        """Which node (1-based) hosts each room LiveKit knows of, as LiveKit routes them
        (Redis' `room_node_map`); a room whose node is down (or was restarted: a new id)
        maps to 0. ListRooms does not say where a room is."""
        ids = {}
        for n in range(1, self.state.livekit_nodes + 1):
            try:
                ids[self.livekit_node_id(n)] = n
            except OSError:  # a node that is down hosts nothing
                continue
        rooms = self.redis_client().hgetall(ROOM_NODE_MAP)
        return {room: ids.get(node_id.decode(), 0) for room, node_id in rooms.items()}

    @property
    def redis_address(self) -> str | None:
        """The stack's Redis as host:port (loopback), None when it runs none."""
        return f"127.0.0.1:{self.state.ports['redis']}" if self.state.redis else None

    def redis_client(self) -> RedisClient:
        if not self.state.redis:
            raise RuntimeError(f"the stack in {self.dir} runs no Redis")
        return RedisClient("127.0.0.1", self.state.ports["redis"], self.state.redis_password)

    @property
    def livekit_addresses(self) -> tuple[MediaAddress, ...]:
        """The only addresses LiveKit listens on, gathers ICE candidates on and names to
        clients (docs/testbed.md, "What the testbed's LiveKit is told"); the first is the
        one its candidates name. A stack started with a real node serves on its bridge
        address only: the pods and the host both reach it, and with loopback too two sockets
        would share the node IP and a pod's ICE checks be answered from 127.0.0.1."""
        node = self.real_node
        if node is not None and self.state.host == node.net.gateway:
            return (MediaAddress(node.net.bridge, node.net.gateway),)
        return (LOOPBACK,)

    @property
    def webhook_port(self) -> int:
        """Where LiveKit sends its webhooks: the operator under test listens here
        (`--webhook-port`); 0 for a stack started before this existed."""
        return self.state.ports.get("operator-webhook", 0)

    @property
    def webhook_url(self) -> str:
        node = self.real_node
        if self.state.chart and node is not None:  # the chart's webhook Service, a NodePort
            return user_install.webhook_url(node.net.gateway)
        return f"http://127.0.0.1:{self.webhook_port}/livekit/webhook"

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.state.ports['prometheus']}"

    @property
    def realtime_url(self) -> str:
        """The Realtime API stand-in's control URL (`/control`, `/stats`, `/s/<scenario>/...`)."""
        if "realtime" not in self.state.ports:
            raise RuntimeError(
                f"the stack in {self.dir} predates the Realtime stand-in: make down && make up"
            )
        return f"http://{self.state.host}:{self.state.ports['realtime']}"

    def openai_base_url(self, scenario: str | None = None) -> str:
        """The OpenAI base URL of the stand-in; a scenario isolates a test's settings and stats."""
        return f"{self.realtime_url}/s/{scenario}/v1" if scenario else f"{self.realtime_url}/v1"

    @property
    def livekit_secret(self) -> str:
        return self.state.livekit_secret

    def env(self) -> dict[str, str]:
        b = Binaries.locate()
        env = {
            "KUBECONFIG": str(self.kubeconfig),
            "LIVEKIT_URL": self.livekit_url,
            **(
                {"LIVEKIT_URLS": ",".join(self.livekit_urls)}
                if self.state.livekit_nodes > 1
                else {}
            ),
            "LIVEKIT_API_KEY": LIVEKIT_KEY,
            "LIVEKIT_API_SECRET": self.livekit_secret,
            "PROMETHEUS_URL": self.prometheus_url,
            "VOICEFLEET_TESTBED": str(self.dir),
            "PATH": f"{b.kubectl.parent}:{b.helm.parent}:{Path(sys.executable).parent}:$PATH",
        }
        if "realtime" in self.state.ports:  # absent in a stack started by an older checkout
            env["OPENAI_BASE_URL"] = self.openai_base_url()
            env["VOICEFLEET_REALTIME_URL"] = self.realtime_url
        node = self.real_node
        if node is not None:  # crictl and ctr read these
            nb = node.bins
            sock = f"unix://{node.paths.containerd_socket}"
            env["CONTAINER_RUNTIME_ENDPOINT"] = env["IMAGE_SERVICE_ENDPOINT"] = sock
            env["CONTAINERD_ADDRESS"] = str(node.paths.containerd_socket)
            env["CONTAINERD_NAMESPACE"] = "k8s.io"
            env["PATH"] = f"{nb.crictl.parent}:{nb.ctr.parent}:{env['PATH']}"
        env.update(self.state.extra_env)
        return env

    def write_env_file(self) -> Path:
        path = self.dir / "env"
        lines = ["# source me: . " + str(path)]
        lines += [f'export {k}="{v}"' for k, v in self.env().items()]
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)
        return path

    # --- components ----------------------------------------------------------------------
    def _components(self, b: Binaries) -> list[Component]:
        s, pki = self.state, self.pki
        logs = self.logs_dir

        def etcd() -> ProcRef:
            data = self.dir / "etcd"
            shutil.rmtree(data, ignore_errors=True)  # a fresh cluster every `up`
            return spawn(
                "etcd",
                cp.etcd_argv(b, data, s.ports["etcd"], s.ports["etcd-peer"]),
                logs / "etcd.log",
            )

        def apiserver() -> ProcRef:
            argv = cp.apiserver_argv(
                b,
                pki,
                s.ports["etcd"],
                s.ports["apiserver"],
                self.dir / "apiserver-certs",
                self.dir / "admission" / "admission.yaml",
                pki.cert(realnode.node.APISERVER_KUBELET_CLIENT),
            )
            return spawn("kube-apiserver", argv, logs / "kube-apiserver.log")

        def scheduler() -> ProcRef:
            config = self.dir / "kube-scheduler.yaml"
            config.write_text(
                json.dumps(cp.scheduler_config(self.dir / "kube-scheduler.kubeconfig"))
            )
            argv = cp.scheduler_argv(
                b, config, self.dir / "kube-scheduler.kubeconfig", s.ports["kube-scheduler"]
            )
            return spawn("kube-scheduler", argv, logs / "kube-scheduler.log")

        def kcm() -> ProcRef:
            argv = cp.controller_manager_argv(b, pki, self.kubeconfig, s.ports["kcm"])
            return spawn("kube-controller-manager", argv, logs / "kube-controller-manager.log")

        def node_agent(n: int = 1) -> ProcRef:
            net = s.pod_net if n == 1 else s.hollow_pod_nets[n - 2]
            argv = [
                sys.executable, "-m", "voicefleet_testbed.nodeagent",
                f"--server={self.api_server}",
                f"--token-file={pki.admin_token_file}",
                f"--ca-file={pki.ca_cert}",
                f"--node-name={hollow.node_name(n)}",
                f"--pods-dir={self.dir / hollow.pods_subdir(n)}",
                f"--pod-cidr=127.{net}.0.0/16",
                f"--scrape-targets={self.dir / hollow.targets_file(n)}",
                f"--image-table={TESTBED_DIR / 'images.yaml'}",
                f"--image-table={self.image_override}",
            ]  # fmt: skip
            return spawn(hollow.part(n), argv, logs / f"{hollow.part(n)}.log", cwd=REPO_DIR)

        def realtime() -> ProcRef:
            argv = [
                sys.executable, "-m", "voicefleet_testbed.realtime",
                f"--host={s.host}", f"--port={s.ports['realtime']}",
            ]  # fmt: skip
            ref = spawn("realtime-standin", argv, logs / "realtime-standin.log", cwd=REPO_DIR)
            # The stand-in plays the OpenAI Realtime API, a service on machines of its own.
            # Here it shares 2 cores with the system under test: ahead of it in the run
            # queue, a loaded machine starves the workers and LiveKit, not the double (at
            # 20 calls on two nodes it froze for 40 s and the workers' model connections
            # timed out). Not root: normal priority.
            with suppress(PermissionError, OSError):
                os.setpriority(os.PRIO_PROCESS, ref.pid, STANDIN_NICE)
            return ref

        def prometheus() -> ProcRef:
            assert b.prometheus is not None
            config = self.dir / "prometheus.yml"
            config.write_text(
                prometheus_config(self.dir / hollow.TARGETS_GLOB, self.extra_scrape_targets())
            )
            argv = [
                str(b.prometheus),
                f"--config.file={config}",
                f"--storage.tsdb.path={self.dir / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{s.ports['prometheus']}",
                "--web.enable-lifecycle",  # POST /-/reload after the operator starts
                "--storage.tsdb.retention.time=2h",
                "--log.level=warn",
            ]
            return spawn("prometheus", argv, logs / "prometheus.log")

        def operator() -> ProcRef:
            from . import operator_proc
            from .kube import Kube

            kubeconfig = operator_proc.prepare(Kube.admin(self), self.api_server, pki, self.dir)
            argv = operator_proc.argv(
                kubeconfig,
                s.ports["operator-metrics"],
                s.ports["operator-health"],
                self.webhook_port,
                self.prometheus_url,
            )
            return spawn(OPERATOR, argv, logs / f"{OPERATOR}.log", cwd=REPO_DIR)

        def operator_healthy() -> bool:
            from . import operator_proc

            return operator_proc.healthy(s.ports["operator-health"])

        return [
            Component("etcd", etcd, lambda: cp.etcd_healthy(s.ports["etcd"]), 30),
            Component(
                "kube-apiserver", apiserver, lambda: cp.apiserver_ready(self.api_server, pki), 90
            ),
            Component(
                "kube-controller-manager",
                kcm,
                lambda: cp.controller_manager_healthy(s.ports["kcm"]),
                60,
            ),
            Component(
                "kube-scheduler",
                scheduler,
                lambda: cp.scheduler_healthy(s.ports["kube-scheduler"]),
                60,
            ),
            *(
                Component(
                    hollow.part(n),
                    functools.partial(node_agent, n),
                    functools.partial(self._node_ready, n),
                    30,
                )
                for n in range(1, self.hollow_nodes + 1)
            ),
            *self._real_node_components(),
            *self._livekit_components(b),
            Component("realtime-standin", realtime, self._realtime_ready, 30),
            *(
                [Component("prometheus", prometheus, self._prometheus_ready, 30)]
                if b.prometheus is not None
                else []
            ),
            *self._keda_components(),
            *(
                [Component(OPERATOR, operator, operator_healthy, 60)]
                if s.operator and not s.chart
                else []
            ),
        ]

    def _keda_components(self) -> list[Component]:
        """KEDA's operator, then its metrics server (which dials the operator's gRPC
        service), when the stack runs KEDA; the first start installs its cluster objects."""
        k = self.keda
        if k is None:
            return []
        comps = []
        for name, start, ready in k.components(self.logs_dir):
            if name == keda_mod.OPERATOR:
                start = functools.partial(self._start_keda_operator, k, start)
            comps.append(Component(name, start, ready, 60))
        return comps

    def _start_keda_operator(self, k: keda_mod.Keda, start: Callable[[], ProcRef]) -> ProcRef:
        from .kube import Kube

        k.prepare(Kube.admin(self))
        return start()

    def add_keda(self) -> keda_mod.Keda:
        """Start KEDA beside the running stack (the `keda` test fixture); waits until the
        API server serves external metrics through it."""
        from .kube import Kube

        k = self.keda
        if k is not None and all(self.running().get(n) for n in keda_mod.PROCESSES):
            return k
        keda_mod.KedaBinaries.locate().require()
        self.progress("  adding KEDA (operator, metrics API server) ...")
        t0 = time.monotonic()
        self.state.keda = True
        self._pick_keda_ports(dict(self.state.ports))
        self.state.save()
        for comp in self._keda_components():
            self._start(comp)
        kube = Kube.admin(self)
        wait_for(
            lambda: keda_mod.apiservice_available(kube), 60, f"{keda_mod.APISERVICE} Available"
        )
        self.progress(f"  KEDA up in {time.monotonic() - t0:.1f}s")
        k = self.keda
        assert k is not None
        return k

    def _pick_keda_ports(self, preferred: dict[str, int]) -> None:
        taken = {v for k, v in self.state.ports.items() if k not in keda_mod.PORTS}
        for key in keda_mod.PORTS:
            port = pick_port(preferred.get(key))
            while port in taken:
                port = free_port()
            self.state.ports[key] = port
            taken.add(port)

    def _livekit_components(self, b: Binaries) -> list[Component]:
        """Redis (when the stack runs it) and every LiveKit node, in start order."""
        s = self.state
        comps = []
        if s.redis:
            comps.append(
                Component(lkn.REDIS_PART, lambda: self._start_redis(b), self._redis_ready, 30)
            )
        for n in range(1, s.livekit_nodes + 1):
            comps.append(
                Component(
                    lkn.part(n),
                    functools.partial(self._start_livekit, b, n),
                    functools.partial(self._livekit_ready, n),
                    30,
                )
            )
        return comps

    def _start_redis(self, b: Binaries) -> ProcRef:
        data = self.dir / "redis"
        shutil.rmtree(data, ignore_errors=True)  # nothing is kept between runs
        data.mkdir(parents=True)
        config = self.dir / "redis.conf"
        text = redis_config(
            port=self.state.ports["redis"], directory=data, password=self.state.redis_password
        )
        _write_private(config, text)  # the password
        argv = [str(b.require_redis()), str(config)]
        return spawn(lkn.REDIS_PART, argv, self.logs_dir / "redis.log", cwd=data)

    def _redis_ready(self) -> bool:
        return self.redis_client().ping()

    def livekit_node_config(self, n: int) -> dict[str, Any]:
        """livekit-server's config for node n (1-based), from the stack's state: its own
        ports, the shared keys, webhook receiver and Redis, its region."""
        s = self.state
        cluster = None
        if s.redis:
            cluster = Cluster(
                redis_address=f"127.0.0.1:{s.ports['redis']}",
                redis_password=s.redis_password,
                region=lkn.region(n),
                regions=lkn.regions(s.livekit_nodes),
            )
        return livekit_config(
            port=s.ports[lkn.port_key(n)],
            udp_port=s.ports[lkn.port_key(n, "rtc-udp")],
            keys={LIVEKIT_KEY: s.livekit_secret},
            # every node posts to the same receiver; nobody listens until an operator
            # under test binds the port
            webhook_api_key=LIVEKIT_KEY,
            webhook_urls=[self.webhook_url],
            addresses=self.livekit_addresses,
            cluster=cluster,
            prometheus_port=s.ports.get(lkn.port_key(n, "metrics"), 0),
        )

    def _start_livekit(self, b: Binaries, n: int) -> ProcRef:
        config = self.dir / lkn.config_name(n)
        _write_private(config, json.dumps(self.livekit_node_config(n)))  # secret, password
        argv = [str(b.livekit_server), f"--config={config}"]
        return spawn(lkn.part(n), argv, self.logs_dir / f"{lkn.part(n)}.log")

    def _real_node_components(self) -> list[Component]:
        node = self.real_node
        if node is None:
            return []
        s = self.state

        def coredns() -> ProcRef:
            from .kube import Kube

            # RBAC for CoreDNS and the apiserver's kubelet client, the kube-dns Service.
            kube = Kube.admin(self)
            for obj in node.cluster_objects():
                kube.apply(obj, manager="testbed")
            return node.start_coredns(s.ports["coredns-health"], s.ports["coredns-ready"])

        def kubelet_ready() -> bool:
            from .kube import Kube

            return Kube.admin(self).node_ready(node.name)

        def coredns_ready() -> bool:
            return realnode.node._http_ok(f"http://127.0.0.1:{s.ports['coredns-ready']}/ready")

        return [
            Component("containerd", node.start_containerd, node.containerd_ready, 60),
            Component("coredns", coredns, coredns_ready, 60),
            Component("kubelet", node.start_kubelet, kubelet_ready, 90),
            Component("kube-proxy", node.start_kube_proxy, node.kube_proxy_healthy, 60),
            Component("apiserver-relay", node.start_api_relay, node.api_relay_ready, 30),
        ]

    def extra_scrape_targets(self) -> dict[str, str]:
        """job name -> host:port of processes the testbed runs outside pods (the operator)."""
        if not self.state.operator or self.state.chart:
            return {}
        return {OPERATOR: f"127.0.0.1:{self.state.ports['operator-metrics']}"}

    def _prometheus_ready(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.prometheus_url}/-/ready", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def _realtime_ready(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.realtime_url}/healthz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def _node_ready(self, n: int = 1) -> bool:
        from .kube import Kube

        return Kube.admin(self).node_ready(hollow.node_name(n))

    def add_hollow_node(self) -> str:
        """Start one more hollow node beside the running stack (its own node agent, pods
        directory and pod network); returns its Node name. For what needs worker pods on
        more than one node, such as losing a node with every pod on it (bench/chaos.py)."""
        n = self.hollow_nodes + 1
        if n > hollow.MAX_NODES:
            raise ValueError(f"at most {hollow.MAX_NODES} hollow nodes")
        taken = {self.state.pod_net, *self.state.hollow_pod_nets}
        self.state.hollow_pod_nets.append(
            secrets.choice([x for x in range(2, 255) if x not in taken])
        )
        self.state.save()
        comp = next(
            c for c in self._components(Binaries.locate().require()) if c.name == hollow.part(n)
        )
        self._start(comp)
        return hollow.node_name(n)

    def _livekit_ready(self, n: int = 1) -> bool:
        """Node n answers 200 once its stats are fresh, i.e. once it has registered in
        Redis (when there is one) and other nodes may place rooms on it."""
        import urllib.request

        port = self.state.ports[lkn.port_key(n)]
        try:
            with urllib.request.urlopen(f"http://{self.state.host}:{port}/", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    # --- lifecycle -----------------------------------------------------------------------
    def running(self) -> dict[str, bool]:
        return {name: ref.alive() for name, ref in self.state.procs.items()}

    def up(
        self,
        operator: bool = False,
        real_node: bool = False,
        *,
        livekit_nodes: int | None = None,
        redis: bool | None = None,
        keda: bool = False,
    ) -> Stack:
        """Start whatever is not running; a stack that is fully up is left alone.

        `operator`: also install the CRD and RBAC and run the operator from this checkout
        under its own ServiceAccount (`make up`); tests run their own and leave it off.
        `real_node`: also run a real node (kubelet, containerd, kube-proxy, CoreDNS); one
        per machine (see realnode/node.py). Tests add it with `add_real_node` when needed.
        `livekit_nodes`: how many livekit-server nodes (more than one run multi-node, with
        Redis); `redis`: run Redis and point LiveKit at it (LiveKit's SIP API needs it even
        on one node; implied by `livekit_nodes > 1`). Left out (None), a running stack keeps
        its shape and a new one gets one node without Redis. A running stack asked for
        another shape restarts its LiveKit nodes and Redis only.
        `keda`: also run KEDA (operator and metrics API server, keda.py); a running stack
        gets it added. Tests add it with `add_keda` (the `keda` fixture).
        """
        b = Binaries.locate().require()
        if real_node:
            NodeBinaries.locate().require()
        alive = self.running()
        up_already = bool(alive) and all(alive.values())
        nodes, with_redis = self._livekit_shape(livekit_nodes, redis, keep=up_already)
        if with_redis:
            b.require_redis()
        if keda:
            keda_mod.KedaBinaries.locate().require()
        if up_already and real_node and not self.state.real_node:
            self.add_real_node()
        if up_already and keda and not self.state.keda:
            self.add_keda()
        if up_already and (nodes, with_redis) != (self.state.livekit_nodes, self.state.redis):
            self._reshape_livekit(b, nodes, with_redis)
        if alive and all(alive.values()) and self.state.chart:
            self.progress(f"testbed already up ({self.dir}); the operator's chart:")
            self._install_chart()  # an upgrade to rebuilt images, else a no-op
            return self
        if alive and all(alive.values()) and (OPERATOR in alive) == operator:
            self.progress(f"testbed already up ({self.dir})")
            return self
        if alive and all(alive.values()) and operator:
            self.progress("  adding the operator to the running testbed ...")
            self.state.operator = True
            for n in ("operator-metrics", "operator-health"):
                self.state.ports[n] = pick_port(self.state.ports.get(n))
            self._start(self._components(b)[-1])
            self.write_env_file()
            return self
        if alive and all(alive.values()):
            self.progress(f"testbed already up, with the operator ({self.dir})")
            return self
        if alive:
            dead = [n for n, ok in alive.items() if not ok]
            self.progress(
                f"recovering a stale testbed in {self.dir} (not running: {', '.join(dead)})"
            )
            self.down(quiet=True)
        self.state.operator = operator
        self.state.real_node = real_node
        self.state.keda = keda
        self.state.livekit_nodes, self.state.redis = nodes, with_redis
        self._prepare()
        t0 = time.monotonic()
        for comp in self._components(b):
            if comp.name == OPERATOR:
                self._bootstrap()  # the operator's ServiceAccount needs the token controller
            self._start(comp)
        if OPERATOR not in self.state.procs:
            self._bootstrap()
        if self.state.keda:
            from .kube import Kube

            kube = Kube.admin(self)
            wait_for(
                lambda: keda_mod.apiservice_available(kube), 60, f"{keda_mod.APISERVICE} Available"
            )
        if self.state.chart:
            self._install_chart()
        self.write_env_file()
        self.progress(f"testbed up in {time.monotonic() - t0:.1f}s")
        return self

    def _livekit_shape(self, nodes: int | None, redis: bool | None, keep: bool) -> tuple[int, bool]:
        """(nodes, redis) wanted: what was asked, else what runs (`keep`), else 1 node
        without Redis; several nodes always with Redis."""
        if nodes is None:
            nodes = self.state.livekit_nodes if keep else 1
        if redis is None:
            redis = (keep and self.state.redis) or nodes > 1
        lkn.check_shape(nodes, redis)
        return nodes, redis

    def _reshape_livekit(self, b: Binaries, nodes: int, redis: bool) -> None:
        """Stop the running LiveKit nodes and Redis and start the asked shape, leaving the
        rest of the stack running."""
        old = (self.state.livekit_nodes, self.state.redis)
        self.progress(
            f"  LiveKit: {old[0]} node(s){' with Redis' if old[1] else ''} -> "
            f"{nodes} node(s){' with Redis' if redis else ''} ..."
        )
        for name in [*(lkn.part(n) for n in range(old[0], 0, -1)), lkn.REDIS_PART]:
            ref = self.state.procs.pop(name, None)
            if ref is not None:
                stop(ref, grace=5)
        self.state.livekit_nodes, self.state.redis = nodes, redis
        self._pick_livekit_ports(dict(self.state.ports))
        self.state.save()
        for comp in self._livekit_components(b):
            self._start(comp)
        self.write_env_file()

    def _pick_livekit_ports(self, preferred: dict[str, int]) -> None:
        """Ports for Redis and every LiveKit node (signalling, UDP media, and metrics when
        there is Redis), keeping `preferred` ones that are still free."""
        s = self.state
        if self.is_default:
            preferred = preferred | {"livekit": LIVEKIT_DEFAULT_PORT}
        for key in [k for k in s.ports if k == "redis" or k.startswith("livekit")]:
            del s.ports[key]

        def take(key: str, tcp: bool = True) -> None:
            taken = set(s.ports.values())
            want = preferred.get(key) if tcp else None  # a TCP-free port is usually UDP-free
            port = pick_port(want if want not in taken else None)
            while port in taken:
                port = free_port()
            s.ports[key] = port

        if s.redis:
            take("redis")
            s.redis_password = s.redis_password or secrets.token_hex(16)
        for n in range(1, s.livekit_nodes + 1):
            take(lkn.port_key(n))
            take(lkn.port_key(n, "rtc-udp"), tcp=False)
            if s.redis:
                take(lkn.port_key(n, "metrics"))

    def _install_chart(self) -> None:
        from .kube import Kube

        try:
            user_install.install(self, Kube.admin(self), self.progress)
        finally:
            self.state.save()

    def add_real_node(self) -> realnode.RealNode:
        """Start a real node beside the running stack (the `real_node` test fixture)."""
        if self.real_node is not None and all(
            self.running().get(n)
            for n in ("containerd", "coredns", "kubelet", "kube-proxy", "apiserver-relay")
        ):
            return self.real_node
        NodeBinaries.locate().require()
        self.progress("  adding a real node (kubelet, containerd, kube-proxy, CoreDNS) ...")
        t0 = time.monotonic()
        self.state.real_node = True
        self._prepare_real_node()
        for comp in self._real_node_components():
            self._start(comp)
        self.progress(f"  real node up in {time.monotonic() - t0:.1f}s")
        node = self.real_node
        assert node is not None
        return node

    def stop_real_node(self) -> list[str]:
        """Stop the real node and tear it down (the rest of the stack keeps running);
        returns what tear-down could not remove (empty when clean)."""
        node = self.real_node
        host = Host([])
        if node is None:
            return []
        for name in ("apiserver-relay", "kube-proxy", "kubelet", "coredns", "containerd"):
            ref = self.state.procs.pop(name, None)
            if ref is None:
                continue
            if name == "containerd" and ref.alive():
                node.remove_pods(host)
            stop(ref, grace=5)
        node.teardown(host)
        from .kube import Kube

        try:  # a node that is gone for good leaves the cluster (its pods are collected)
            Kube.admin(self).core.delete_node(node.name)
        except Exception as e:  # the API server may be down already
            if getattr(e, "status", None) != 404:
                host.errors.append(f"delete node {node.name}: {e}")
        self.state.real_node = False
        self.state.save()
        return host.errors

    def _prepare_real_node(self) -> None:
        import random
        import subprocess

        routes = subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True)
        used = node_config.used_pod_net_indexes(routes.stdout)
        if self.state.node_net:
            used.discard(self.state.node_net)  # ours, from a previous run: reuse it
            choice = self.state.node_net
        else:
            choice = random.randint(2, 254)
        self.state.node_net = node_config.pick_pod_net(self.is_default, used, choice).index
        self.state.save()
        node = self.real_node
        assert node is not None
        try:
            node.prepare()
        except realnode.NodeBusy:
            self.state.real_node = False
            self.state.save()
            raise

    def _start(self, comp: Component) -> None:
        self.progress(f"  starting {comp.name} ...")
        try:
            ref = comp.start()
        except Exception as e:
            self.down(quiet=True)
            raise RuntimeError(f"{comp.name} did not start: {e}") from None
        self.state.procs[comp.name] = ref
        self.state.save()
        try:
            _wait_ready(comp, ref)
        except (Timeout, Abort) as e:
            self.down(quiet=True)
            raise RuntimeError(f"{comp.name} did not start: {e}") from None

    def _prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(exist_ok=True)
        for pods in self.dir.glob("pods*"):  # every hollow node's, from an earlier `up`
            shutil.rmtree(pods, ignore_errors=True)
        self.state.hollow_pod_nets = []  # a stack starts with one hollow node
        ensure_pki(self.dir / "pki").ensure_front_proxy()
        names = [
            "etcd",
            "etcd-peer",
            "apiserver",
            "kcm",
            "prometheus",
            "realtime",
            "operator-metrics",
            "operator-health",
            "operator-webhook",
            "kube-scheduler",
            "coredns-health",
            "coredns-ready",
        ]
        # Keep the ports of a previous run when they are still free (stable URLs).
        preferred = dict(self.state.ports)
        if self.is_default:
            preferred["realtime"] = REALTIME_DEFAULT_PORT
        self.state.ports = {n: pick_port(preferred.get(n)) for n in names}
        self._pick_livekit_ports(preferred)
        if self.state.keda:
            self._pick_keda_ports(preferred)
        self.state.livekit_secret = LIVEKIT_SECRET
        # A /16 of loopback per stack, so stacks side by side never hand out the same pod IP.
        self.state.pod_net = self.state.pod_net or _pick_pod_net(self.dir)
        self.state.procs = {}
        self.kubeconfig.write_text(
            cp.kubeconfig_yaml(self.api_server, self.pki.ca_cert, self.pki.admin_token())
        )
        self.kubeconfig.chmod(0o600)
        # A stack started with a real node (`make up`) runs pods as a user's cluster would:
        # on the real node, under Pod Security `restricted` unless a namespace says otherwise.
        user = self.state.real_node
        admission = scheduling.admission_files(
            self.dir / "admission",
            default="real" if user else scheduling.DEFAULT_NODE,
            enforce="restricted" if user else "privileged",
        )
        for path, text in admission.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        pki = self.pki
        pki.issue(realnode.node.APISERVER_KUBELET_CLIENT, realnode.node.APISERVER_KUBELET_CLIENT)
        cert, key = pki.issue("kube-scheduler", "system:kube-scheduler")
        sched_kubeconfig = self.dir / "kube-scheduler.kubeconfig"
        sched_kubeconfig.write_text(json.dumps(node_config.cert_kubeconfig(
            self.api_server, pki.ca_cert, cert, key, "system:kube-scheduler")))  # fmt: skip
        sched_kubeconfig.chmod(0o600)
        self.state.chart = False
        self.state.host = "127.0.0.1"
        self.state.save()
        if self.state.real_node:
            self._prepare_real_node()
            node = self.real_node
            assert node is not None
            self.state.host = node.net.gateway
            self.state.chart = self.state.operator
            self.state.save()

    def _bootstrap(self) -> None:
        """Cluster objects every test expects: the node (registered by the agent) and the
        default ServiceAccount in `default` (made by the controller-manager)."""
        from .kube import Kube

        kube = Kube.admin(self)
        wait_for(
            lambda: kube.service_account_exists("default", "default"),
            30,
            "the default ServiceAccount",
        )

    def down(self, quiet: bool = False) -> list[str]:
        """Stop every process this stack started, in reverse order, by PID."""
        stopped = []
        node = self.real_node
        host = Host([])
        for name in reversed(list(self.state.procs)):
            ref = self.state.procs[name]
            if name == "containerd" and node is not None and ref.alive():
                node.remove_pods(host)  # the kubelet is gone; containerd still answers
            if ref.alive():
                stop(ref, grace=15 if name.startswith(hollow.NODE_AGENT_PART) else 5)
                stopped.append(name)
        from .nodeagent.agent import kill_leftovers

        leftovers = sum(
            kill_leftovers(self.dir / hollow.pods_subdir(n))
            for n in range(1, self.hollow_nodes + 1)
        )
        if node is not None:
            try:
                node.teardown(host)
            except realnode.NodeBusy as e:
                host.errors.append(str(e))
            if host.errors and not quiet:
                self.progress("real node tear-down left errors:\n  " + "\n  ".join(host.errors))
        self.state.procs = {}
        if self.state.file.parent.exists():
            self.state.save()
        if not quiet:
            what = ", ".join(stopped) if stopped else "nothing was running"
            extra = f"; killed {leftovers} leftover pod processes" if leftovers else ""
            self.progress(f"testbed down: stopped {what}{extra}")
        return stopped

    def stop_part(self, part: str, grace: float = 5.0) -> None:
        """Stop one part (SIGTERM, SIGKILL after `grace`); `restart` starts it again."""
        ref = self.state.procs.get(part)
        if ref is None:
            raise ValueError(f"no running part {part!r}; parts: {', '.join(self.state.procs)}")
        if ref.alive():
            stop(ref, grace=grace)

    def kill_part(self, part: str) -> None:
        """SIGKILL one part, as a crash (e.g. `kill_part("livekit-server-2")`: the node gets
        no chance to drain or to unregister from Redis); `restart` starts it again. A
        SIGTERM (`stop_part`) makes livekit-server drain: it stops taking rooms and waits for
        every participant to leave."""
        ref = self.state.procs.get(part)
        if ref is None:
            raise ValueError(f"no running part {part!r}; parts: {', '.join(self.state.procs)}")
        kill(ref)

    def restart(self, part: str, grace: float = 5.0) -> None:
        """Stop one part (SIGTERM, SIGKILL after `grace`) and start it again on the same
        ports, waiting until it is ready: e.g. `restart("livekit-server")`."""
        comps = {c.name: c for c in self._components(Binaries.locate().require())}
        if part not in comps:
            raise ValueError(f"no running part {part!r}; parts: {', '.join(self.state.procs)}")
        self.stop_part(part, grace)
        self._start(comps[part])

    def status(self) -> list[tuple[str, bool, str]]:
        """(component, alive, detail) for every process the stack started."""
        rows = []
        where = self._part_addresses()
        for name, ref in self.state.procs.items():
            alive = ref.alive()
            detail = (
                f"{where[name] + ', ' if name in where else ''}pid {ref.pid}, log {ref.log}"
                if alive
                else f"NOT RUNNING; last log lines:\n{tail(ref.log, 8)}"
            )
            rows.append((name, alive, detail))
        if self.state.chart and rows:
            from .kube import Kube

            rows.append(user_install.status_row(Kube.admin(self)))
        return rows

    def _part_addresses(self) -> dict[str, str]:
        """Where the LiveKit nodes and Redis serve, by part name (for `status`)."""
        out = {lkn.part(n): url for n, url in enumerate(self.livekit_urls, start=1)}
        if self.redis_address:
            out[lkn.REDIS_PART] = self.redis_address
        return out

    def _livekit_summary(self) -> list[str]:
        v, s = versions(), self.state
        if s.livekit_nodes == 1 and not s.redis:
            return [
                f"  livekit-server  {self.livekit_url}  (v{v['LIVEKIT_VERSION']}, key {LIVEKIT_KEY})"
            ]
        lines = [
            f"  livekit-server  {url}  (node {n}, region {lkn.region(n)}; v{v['LIVEKIT_VERSION']}, "
            f"key {LIVEKIT_KEY}; metrics {self.state.host}:{s.ports[lkn.port_key(n, 'metrics')]})"
            for n, url in enumerate(self.livekit_urls, start=1)
        ]
        lines.append(
            f"  redis           {self.redis_address}  (LiveKit's routing, rooms, bus and SIP "
            f"store; password in {self.dir / 'redis.conf'})"
        )
        return lines

    def summary(self) -> str:
        v = versions()
        return "\n".join(
            [
                f"testbed state: {self.dir}",
                f"  kube-apiserver  {self.api_server}  (Kubernetes v{v['KUBERNETES_VERSION']})",
                *self._livekit_summary(),
                *(
                    [
                        f"                  in the cluster: {user_install.livekit_service_url()}"
                        f" (a Service); the stand-in: {user_install.realtime_service_url()}"
                    ]
                    if self.state.chart
                    else []
                ),
                f"  prometheus      {self.prometheus_url}  (discovers worker pods through the API server)",
                f"  realtime        {self.openai_base_url()}  (OpenAI Realtime API stand-in; OPENAI_BASE_URL)",
                f"  node agent      hollow node testbed-node (tainted): pods run as processes; logs in {self.pods_dir}/<ns>/<pod>/<container>.log",
                *(
                    [
                        f"  real node       {node.name}: kubelet v{v['KUBERNETES_VERSION']}, containerd "
                        f"{v['CONTAINERD_VERSION']}, pod network {node.net.subnet} on bridge {node.net.bridge}, "
                        f"cluster DNS {node_config.DNS_SERVICE_IP}",
                        f"                  pods go there from namespaces annotated "
                        f"{scheduling.NODE_SELECTOR_ANNOTATION}={scheduling.node_selector('real')}",
                    ]
                    if (node := self.real_node) is not None
                    else []
                ),
                *(
                    [
                        f"  keda            operator and metrics API server v{v['KEDA_VERSION']} "
                        f"({keda_mod.APISERVICE} on 127.0.0.1:{self.state.ports['keda-metrics-apiserver']}); "
                        f"logs {self.logs_dir}/keda-*.log"
                    ]
                    if self.keda is not None
                    else []
                ),
                f"  logs            {self.logs_dir}",
                *(
                    [
                        f"  operator        charts/voicefleet, release {user_install.RELEASE} in "
                        f"{user_install.NAMESPACE}, from the images `make images` built, on the "
                        "real node; every namespace enforces Pod Security restricted",
                        "  try             kubectl apply -f examples/voiceagent.yaml && "
                        "kubectl get va -w",
                        "  call page       "
                        + "  then ".join(user_install.call_page_forward())
                        + "  (a browser on this machine)",
                    ]
                    if self.state.chart
                    else []
                ),
                *(
                    [
                        f"  operator        from this checkout, as ServiceAccount "
                        f"voicefleet-system/{OPERATOR}; log {self.logs_dir / (OPERATOR + '.log')}",
                        "note: without the real node, examples/voiceagent.yaml's Service URLs "
                        "do not resolve here (make down && make up once the real node is free)",
                    ]
                    if OPERATOR in self.state.procs
                    else []
                ),
                "next:",
                f"  . {self.dir / 'env'} && kubectl get nodes",
                "  make status   # what runs, what is unhealthy",
                "  make down     # stop everything",
            ]
        )


def _wait_ready(comp: Component, ref: ProcRef) -> None:
    def check() -> bool:
        if not ref.alive():
            raise Abort(f"{ref.name} exited; last log lines:\n{tail(ref.log)}")
        return comp.ready()

    wait_for(
        check,
        comp.timeout,
        f"{comp.name} to become ready",
        interval=0.2,
        on_fail=lambda: f"--- last lines of {ref.log}:\n{tail(ref.log)}",
    )


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, from the first byte (it holds a secret)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _pick_pod_net(directory: Path) -> int:
    """127.1/16 for the checkout's own stack; a random other /16 for test stacks."""
    if directory == default_dir().resolve():
        return 1
    return secrets.choice(range(2, 255))


def default_dir() -> Path:
    return REPO_DIR / ".testbed"


def describe(value: Any) -> str:
    return json.dumps(value, indent=2, default=str)
