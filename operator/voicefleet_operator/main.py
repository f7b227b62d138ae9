"""Entry point: flags -> settings, the metrics endpoint, then kopf with our handlers."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import kopf

from voicefleet_contract import logs

from . import cmd
from .active import ActiveLabel
from .autoscale_loop import Autoscaler
from .custom_metrics_server import CustomMetricsServer
from .failover_loop import Failover, FailoverMetrics
from .feed import SessionFeed, WorkerTokens
from .fleet_loop import FleetLoop
from .handlers import (
    register,
    register_custom_metrics,
    register_fleet,
    register_telephony,
    register_webhooks,
)
from .kube import Kube
from .metrics import OperatorMetrics
from .names import AgentNames
from .reconciler import Reconciler
from .settings import Settings
from .telephony_loop import TelephonyMetrics, TelephonySync


def setup_logging(settings: Settings) -> None:
    logs.setup_logging(settings.log_format)
    # The API client logs every request at DEBUG/INFO; keep it for real problems.
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    # kopf says "Handler succeeded" for every child event, the health server logs every
    # probe: keep their warnings, our reconciler logs what matters.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def run(settings: Settings) -> None:
    if settings.kubeconfig:
        # kopf logs in through the same kubeconfig as our client.
        os.environ["KUBECONFIG"] = settings.kubeconfig
    metrics = OperatorMetrics()
    metrics.serve(settings.bind_address, settings.metrics_port)
    registry = kopf.OperatorRegistry()
    kube = Kube.connect(settings.kubeconfig, settings.api_threads)
    feed = SessionFeed(
        on_failure=lambda ns, va, reason: metrics.as_scrape_failures.labels(ns, va, reason).inc(),
        tokens=WorkerTokens(kube),
    )
    autoscaler = Autoscaler(kube, metrics, dry_run=settings.dry_run)
    names = AgentNames()  # one agent name per LiveKit server: the reconciler and failover
    reconciler = Reconciler(kube, settings, metrics, names=names)
    register(registry, reconciler, settings, feed)
    # spec.telephony onto LiveKit's SIP service; its status.telephony becomes a condition
    # in the reconciler's next status write.
    register_telephony(
        registry,
        TelephonySync(
            kube,
            settings,
            lambda ns, n: reconciler.submit(ns, n, "telephony", full=False),
            TelephonyMetrics(metrics),
        ),
    )
    failover = Failover(
        kube,
        FailoverMetrics(metrics),
        sweep_seconds=settings.failover_sweep_seconds,
        names=names,
        dry_run=settings.dry_run,
    )
    # HA: the active replica labels its pod, which the chart's webhook Service selects.
    active = ActiveLabel(kube, *settings.pod) if settings.peering and settings.pod else None
    # One loop decides the autoscaler and failover of every VoiceAgent (fleet_loop.py).
    register_fleet(registry, FleetLoop(feed, autoscaler, failover, active, resync=reconciler))
    register_webhooks(registry, failover, settings.bind_address, settings.webhook_port, active)
    host = settings.bind_address
    if settings.custom_metrics_port:
        # Mode hpa's metric, from the feed's session counts (no metrics adapter needed).
        server = CustomMetricsServer(kube, feed, settings.custom_metrics_cert_dir)
        register_custom_metrics(registry, server, host, settings.custom_metrics_port)
    kopf.run(
        registry=registry,
        standalone=settings.standalone,
        clusterwide=not settings.namespaces,
        namespaces=list(settings.namespaces),
        liveness_endpoint=f"http://{host}:{settings.health_port}/healthz",
    )


def main(argv: Sequence[str] | None = None) -> None:
    settings = cmd.parse(argv)
    setup_logging(settings)
    logging.getLogger(__name__).info("starting with %s", settings)
    run(settings)


if __name__ == "__main__":
    main()
