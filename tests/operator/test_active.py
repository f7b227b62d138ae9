"""The active replica's pod label (HA webhook routing) against the real API server."""

from __future__ import annotations

import asyncio
import uuid

import kopf
import pytest

from voicefleet_contract import LABEL_OPERATOR_ACTIVE
from voicefleet_operator.active import ActiveLabel, label_patch
from voicefleet_operator.kube import Kube as OperatorKube
from voicefleet_testbed.kube import Kube
from voicefleet_testbed.stack import Stack

pytestmark = pytest.mark.cluster


def test_label_patch_names_the_state() -> None:
    assert label_patch(True) == {"metadata": {"labels": {LABEL_OPERATOR_ACTIVE: "true"}}}
    assert label_patch(False) == {"metadata": {"labels": {LABEL_OPERATOR_ACTIVE: "false"}}}


async def test_active_while_daemons_run_standing_by_once_paused(
    stack: Stack, kube: Kube, namespace: str
) -> None:
    pod = f"operator-{uuid.uuid4().hex[:5]}"
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod},
            "spec": {
                "containers": [{"name": "operator", "image": "voicefleet.dev/none:0"}],
                "nodeName": "nowhere",  # never run: only its labels matter here
            },
        },
        namespace,
    )
    label = ActiveLabel(OperatorKube.connect(str(stack.kubeconfig)), namespace, pod)

    async def labelled(value: str) -> None:
        async with asyncio.timeout(20):
            while True:
                got = await asyncio.to_thread(kube.get, "v1", "Pod", pod, namespace)
                if ((got or {})["metadata"].get("labels") or {}).get(
                    LABEL_OPERATOR_ACTIVE
                ) == value:
                    return
                await asyncio.sleep(0.1)

    try:
        assert label.standing_by  # nothing acts here yet: webhooks get 503
        label.daemon_started()
        await labelled("true")
        assert not label.standing_by
        # A VoiceAgent deleted or the operator exiting: still the active replica.
        label.daemon_stopped(kopf.DaemonStoppingReason.RESOURCE_DELETED)
        label.daemon_stopped(kopf.DaemonStoppingReason.OPERATOR_EXITING)
        assert not label.standing_by
        label.daemon_started()
        await labelled("true")
        label.daemon_stopped(kopf.DaemonStoppingReason.OPERATOR_PAUSING)
        assert label.standing_by
        await labelled("false")
        label.daemon_started()  # resumed after the peer went
        await labelled("true")
        assert not label.standing_by
    finally:
        await label.close()
