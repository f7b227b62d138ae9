"""`make demo`'s pieces that need no running stack: the example names LiveKit and the model
by the Services `make up` publishes, and a call no agent joined is not a served call."""

from __future__ import annotations

import yaml

from voicefleet_testbed import demo, user_install
from voicefleet_testbed.caller import CallReport, Summary, TurnResult
from voicefleet_testbed.images import BuiltImage
from voicefleet_testbed.realnode import config as node_config
from voicefleet_testbed.stack import LIVEKIT_DEFAULT_PORT, REALTIME_DEFAULT_PORT


def test_the_example_names_the_services_make_up_publishes() -> None:
    """Applied unchanged on the testbed and on a cluster: Service names, no address."""
    ex = demo.load_example()
    assert (ex.name, ex.agent_name, ex.silence_ms) == ("support", "support", 500.0)
    (va,) = [d for d in yaml.safe_load_all(ex.text) if d["kind"] == "VoiceAgent"]
    assert va["spec"]["livekit"]["url"] == user_install.livekit_service_url()
    assert va["spec"]["model"]["baseURL"] == user_install.realtime_service_url()
    assert "127.0.0.1" not in ex.text
    # The host ports `make up` prefers are the Services' ports (stable URLs on the host).
    assert user_install.LIVEKIT_SERVICE[2] == LIVEKIT_DEFAULT_PORT
    assert user_install.REALTIME_SERVICE[2] == REALTIME_DEFAULT_PORT


def test_the_services_point_at_the_host_servers_wherever_they_listen() -> None:
    objs = user_install.service_objects("10.244.1.1", 40001, 40002)
    services = {
        (o["metadata"]["namespace"], o["metadata"]["name"]): o
        for o in objs
        if o["kind"] == "Service"
    }
    slices = {
        (o["metadata"]["namespace"], o["metadata"]["name"]): o
        for o in objs
        if o["kind"] == "EndpointSlice"
    }
    assert set(services) == set(slices) == {("livekit", "livekit"), ("testbed", "openai-realtime")}
    lk = services[("livekit", "livekit")]["spec"]
    assert "selector" not in lk and lk["ports"][0]["port"] == 7880
    assert lk["ports"][0]["targetPort"] == 40001
    sl = slices[("livekit", "livekit")]
    assert sl["metadata"]["labels"]["kubernetes.io/service-name"] == "livekit"
    assert sl["endpoints"][0]["addresses"] == ["10.244.1.1"]
    assert sl["ports"][0]["port"] == 40001
    assert slices[("testbed", "openai-realtime")]["ports"][0]["port"] == 40002
    assert {o["metadata"]["name"] for o in objs if o["kind"] == "Namespace"} == {
        "livekit",
        "testbed",
    }
    assert node_config.host_service("a", "b", 1, "10.0.0.9", 2)[1]["addressType"] == "IPv4"


def test_make_up_installs_the_chart_with_the_built_images_and_a_webhook_node_port() -> None:
    def image(name: str, tag: str) -> BuiltImage:
        return BuiltImage(name, f"ghcr.io/voicefleet/{name}:{tag}", f"ghcr.io/voicefleet/{name}",
                          tag, "", "", "", "", 0, 0, "", 0.0)  # fmt: skip

    values = user_install.chart_values_for({"operator": image("operator", "dev-1"),
                                            "worker": image("worker", "dev-2")},
                                           "ws://10.244.1.1:7880",
                                           "http://127.0.0.1:9090")  # fmt: skip
    assert values["image"]["repository"] == "ghcr.io/voicefleet/operator"
    assert values["image"]["tag"] == "dev-1"
    assert values["worker"]["image"] == {"repository": "ghcr.io/voicefleet/worker", "tag": "dev-2"}
    # Mode keda's ScaledObjects name the stack's Prometheus (KEDA runs on the host).
    assert values["operator"] == {"prometheusUrl": "http://127.0.0.1:9090"}
    assert values["webhook"]["service"] == {
        "type": "NodePort",
        "nodePort": user_install.WEBHOOK_NODE_PORT,
    }
    assert 30000 <= user_install.WEBHOOK_NODE_PORT <= 32767  # the API server's default range
    assert user_install.webhook_url("10.244.1.1") == (
        f"http://10.244.1.1:{user_install.WEBHOOK_NODE_PORT}/livekit/webhook"
    )
    # The call page: on, LiveKit as the host reaches it, its key pair from a Secret in the
    # operator's namespace; reached as on a cluster, by kubectl port-forward to 127.0.0.1.
    cp = values["callPage"]
    assert cp["enabled"] and cp["livekitUrl"] == "ws://10.244.1.1:7880" and "service" not in cp
    secret = user_install.credentials_secret("devkey", "s3cret")
    assert secret["metadata"] == {
        "name": cp["credentialsSecret"],
        "namespace": user_install.NAMESPACE,
    }
    assert set(secret["stringData"]) == {"apiKey", "apiSecret"}
    assert user_install.call_page_forward(8090) == (
        "kubectl -n voicefleet-system port-forward svc/voicefleet-call 8090:80",
        "http://127.0.0.1:8090/",
    )


def test_a_call_no_agent_joined_is_not_ok() -> None:
    answered = CallReport("r1", "c1", "support", connected=True, dispatch_s=0.4)
    answered.turns.append(TurnResult(0, 1.0, latency_s=0.9))
    assert Summary([answered]).ok()
    lonely = CallReport("r2", "c2", "support", connected=True)
    lonely.errors.append("no agent joined within 30 s")
    assert not Summary([answered, lonely]).ok()
    unanswered = CallReport("r3", "c3", "support", connected=True, dispatch_s=0.4)
    unanswered.turns.append(TurnResult(0, 1.0))
    assert not Summary([unanswered]).ok()
