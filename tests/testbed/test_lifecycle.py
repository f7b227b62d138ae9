"""`testbed up/status/down` on a stack of its own without the real node (`--no-real-node`,
the operator then runs as a process): idempotent up, a crashed part is reported, a stale
state directory is recovered, and down leaves no process behind. `make up` with the real
node, the chart's operator and the example answered: test_make_up.py."""

from __future__ import annotations

import os
import signal
import urllib.request
from pathlib import Path

import pytest

from voicefleet_testbed.cli import main as cli
from voicefleet_testbed.procs import wait_for
from voicefleet_testbed.stack import Stack

pytestmark = [pytest.mark.cluster, pytest.mark.livekit, pytest.mark.slow]


def processes_under(directory: Path) -> list[int]:
    """PIDs of live processes whose command line names `directory` (our stack's parts)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if str(directory) in cmdline and stat.rsplit(")", 1)[1].split()[0] != "Z":
            found.append(int(entry.name))
    return found


def check_operator(stack: Stack) -> None:
    """`make up`'s operator runs from this checkout under its ServiceAccount, with the
    CRD installed, and turns the example VoiceAgent into a Ready fleet."""
    import yaml

    from voicefleet_testbed import user_install
    from voicefleet_testbed.binaries import REPO_DIR
    from voicefleet_testbed.kube import Kube

    kubeconfig = yaml.safe_load((stack.dir / "operator.kubeconfig").read_text())
    token = kubeconfig["users"][0]["user"]["token"]
    assert token != stack.pki.admin_token()
    op = Kube.with_token(stack, token)
    review = op.api.call_api(
        *op.api.param_serialize(
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
            header_params={"Content-Type": "application/json", "Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
    )
    who = yaml.safe_load(review.read())  # type: ignore[no-untyped-call]
    username = who["status"]["userInfo"]["username"]
    assert username == "system:serviceaccount:voicefleet-system:voicefleet-operator"
    from kubernetes import client

    with pytest.raises(client.ApiException) as denied:
        op.core.list_namespace()  # least privilege: not even namespaces
    assert denied.value.status == 403

    # The example, with the worker image mapped to the fake worker (this checkout may
    # not have the real one); its Services do not resolve on the host, so its LiveKit and
    # stand-in URLs are this stack's.
    stack.image_override.write_text(
        yaml.safe_dump(
            [
                {
                    "image": "ghcr.io/voicefleet/worker*",
                    "entrypoint": ["{python}", "-m", "voicefleet_testbed.fake_worker"],
                }
            ]
        )
    )
    admin = Kube.admin(stack)
    text = (REPO_DIR / "examples" / "voiceagent.yaml").read_text()
    text = text.replace(user_install.livekit_service_url(), stack.livekit_url)
    for doc in yaml.safe_load_all(
        text.replace(user_install.realtime_service_url(), stack.openai_base_url())
    ):
        admin.create(doc, namespace="default")

    def ready() -> bool:
        va = admin.get("voicefleet.dev/v1alpha1", "VoiceAgent", "support", "default") or {}
        conds = va.get("status", {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

    wait_for(ready, 90, "the example VoiceAgent Ready under make up's operator")


def test_up_twice_status_crash_recover_down(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "tb"
    try:
        assert cli(["--dir", str(d), "up", "--no-real-node"]) == 0
        stack = Stack(d)
        pids = {n: r.pid for n, r in stack.state.procs.items()}
        assert set(pids) >= {
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "node-agent",
            "livekit-server",
            "realtime-standin",
        }
        env = (d / "env").read_text()
        for var in (
            "KUBECONFIG",
            "LIVEKIT_URL",
            "LIVEKIT_API_KEY",
            "LIVEKIT_API_SECRET",
            "OPENAI_BASE_URL",
        ):
            assert f"export {var}=" in env
        with urllib.request.urlopen(stack.livekit_url.replace("ws://", "http://"), timeout=5) as r:
            assert r.status == 200
        with urllib.request.urlopen(f"{stack.realtime_url}/healthz", timeout=5) as r:
            assert r.status == 200

        # The operator (what `make up` adds): the CRD, its own least-privilege identity.
        assert "voicefleet-operator" in pids
        check_operator(stack)

        # A second up is harmless: same processes.
        assert cli(["--dir", str(d), "up", "--no-real-node"]) == 0
        assert "already up" in capsys.readouterr().out
        assert {n: r.pid for n, r in Stack(d).state.procs.items()} == pids

        # A crashed part is reported, not ignored.
        os.kill(pids["livekit-server"], signal.SIGKILL)
        wait_for(lambda: not Stack(d).running()["livekit-server"], 10, "livekit-server to die")
        capsys.readouterr()
        assert cli(["--dir", str(d), "status"]) == 1
        assert "DOWN livekit-server" in capsys.readouterr().out

        # up recovers the stale stack.
        assert cli(["--dir", str(d), "up", "--no-real-node"]) == 0
        assert "recovering a stale testbed" in capsys.readouterr().out
        assert all(Stack(d).running().values())
        assert cli(["--dir", str(d), "status"]) == 0
    finally:
        cli(["--dir", str(d), "down"])
    assert not any(Stack(d).running().values())
    assert processes_under(d) == []
