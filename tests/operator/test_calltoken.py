"""The call page's decisions (calltoken.py) and its HTTP shell (callpage.py) on a real
socket: which VoiceAgents it lists, what a request must say, and what a token grants."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from livekit import api

from voicefleet_operator import callpage, calltoken

KEY, SECRET = "devkey", "a-secret-of-at-least-thirty-two-chars"


def va(ns: str, name: str, agent: str | None = None, ready: str | None = "True") -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"namespace": ns, "name": name}, "spec": {}}
    if agent:
        obj["spec"]["agentName"] = agent
    if ready:
        obj["status"] = {"conditions": [{"type": "Ready", "status": ready}]}
    return obj


def test_agents_are_listed_sorted_with_their_dispatch_name_and_readiness() -> None:
    got = calltoken.agents_from(
        [va("b", "support"), va("a", "sales", agent="sales-agent", ready="False"),
         va("a", "new", ready=None), {"metadata": {"name": "no-namespace"}}]
    )  # fmt: skip
    assert [a.as_json() for a in got] == [
        {"namespace": "a", "name": "new", "agentName": "new", "ready": False},
        {"namespace": "a", "name": "sales", "agentName": "sales-agent", "ready": False},
        {"namespace": "b", "name": "support", "agentName": "support", "ready": True},
    ]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"not json", "body: not JSON"),
        (b"[1]", "body: must be an object"),
        (b"{}", "namespace: must be a Kubernetes object name"),
        (b'{"namespace": "a"}', "name: must be a Kubernetes object name"),
        (b'{"namespace": "a", "name": "../etc"}', "name: must be a Kubernetes object name"),
        (b'{"namespace": "A", "name": "x"}', "namespace: must be a Kubernetes object name"),
        (b'{"namespace": "a", "name": 3}', "name: must be a Kubernetes object name"),
        (b"{" + b" " * calltoken.MAX_BODY + b"}", "body: larger than"),
    ],
)
def test_a_bad_request_names_the_field(body: bytes, error: str) -> None:
    with pytest.raises(calltoken.BadRequest, match=error.replace("[", r"\[")):
        calltoken.parse_call(body)


def test_only_a_listed_voiceagent_can_be_called() -> None:
    agents = calltoken.agents_from([va("a", "support")])
    assert calltoken.pick(agents, "a", "support").agent_name == "support"
    with pytest.raises(LookupError, match="no VoiceAgent a/other"):
        calltoken.pick(agents, "a", "other")


def test_the_token_joins_one_new_room_and_dispatches_the_agent_by_name() -> None:
    (agent,) = calltoken.agents_from([va("a", "support", agent="support-v2")])
    g = calltoken.grant(agent, KEY, SECRET, suffix="abcd")
    assert g.room == "call-support-abcd"
    claims = api.TokenVerifier(KEY, SECRET).verify(g.token)
    assert claims.identity == g.identity and g.identity.startswith("caller-")
    assert claims.video is not None
    assert claims.video.room == g.room and claims.video.room_join
    assert not claims.video.room_admin and not claims.video.room_create
    assert claims.room_config is not None
    assert [d.agent_name for d in claims.room_config.agents] == ["support-v2"]
    other = calltoken.grant(agent, KEY, SECRET)
    assert other.room != g.room and other.identity != g.identity  # one room per call


# --- the HTTP shell ----------------------------------------------------------------------


@pytest.fixture
def page(tmp_path: Path) -> Iterator[str]:
    web = tmp_path / "web"
    web.mkdir()
    (web / "index.html").write_text("<title>call</title>")
    (web / "app.js").write_text("console.log(1)")
    (tmp_path / "secret.txt").write_text("outside")
    objects = [va("default", "support")]
    config = callpage.Config("ws://127.0.0.1:7880", KEY, SECRET, web, ())
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), callpage.handler_for(callpage.CallPage(config, lambda: objects))
    )
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def fetch(url: str, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_the_page_its_agents_and_a_token(page: str) -> None:
    status, headers, body = fetch(page + "/")
    assert status == 200 and b"<title>call</title>" in body
    assert (
        "connect-src 'self' ws://127.0.0.1:7880 http://127.0.0.1:7880"
        in (headers["Content-Security-Policy"])
    )
    assert fetch(page + "/app.js")[1]["Content-Type"] in (
        "text/javascript",
        "application/javascript",
    )
    status, _, body = fetch(page + "/api/agents")
    assert status == 200
    assert json.loads(body)["agents"][0]["name"] == "support"
    status, _, body = fetch(page + "/api/token", b'{"namespace": "default", "name": "support"}')
    doc = json.loads(body)
    assert status == 200 and doc["url"] == "ws://127.0.0.1:7880"
    assert api.TokenVerifier(KEY, SECRET).verify(doc["token"]).video.room == doc["room"]  # type: ignore[union-attr]


def test_refusals_say_why_and_nothing_outside_the_page_is_served(page: str) -> None:
    status, _, body = fetch(page + "/api/token", b'{"namespace": "default", "name": "other"}')
    assert status == 404 and "no VoiceAgent default/other" in json.loads(body)["error"]
    status, _, body = fetch(page + "/api/token", b"{}")
    assert status == 400 and json.loads(body)["error"].startswith("namespace:")
    for path in ("/../secret.txt", "/%2e%2e/secret.txt", "/nothing.js"):
        status, _, body = fetch(page + path)
        assert status == 404 and b"outside" not in body


def test_it_will_not_start_without_what_it_needs(tmp_path: Path) -> None:
    args = callpage.parse_args(["--livekit-url", "ws://x:7880", "--web-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="LIVEKIT_API_KEY and LIVEKIT_API_SECRET"):
        callpage.config_from(args, {})
    env = {"LIVEKIT_API_KEY": KEY, "LIVEKIT_API_SECRET": SECRET}
    with pytest.raises(SystemExit, match=r"holds no index\.html"):
        callpage.config_from(args, env)
    (tmp_path / "index.html").write_text("x")
    bad = callpage.parse_args(["--livekit-url", "livekit:7880", "--web-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="--livekit-url"):
        callpage.config_from(bad, env)
    ok = callpage.config_from(
        callpage.parse_args(["--livekit-url", "wss://lk", "--web-dir", str(tmp_path),
                             "--namespaces", "a,b"]), env)  # fmt: skip
    assert ok.namespaces == ("a", "b") and ok.api_secret == SECRET
