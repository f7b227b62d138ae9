"""The private parts of livekit-agents the worker reads (lk_private.py) are still there,
with the meaning it relies on. A failure here after an upgrade of livekit-agents means:
re-check the named read (and load.py for `_get_effective_load`), then update this test."""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
from types import SimpleNamespace

import pytest
from livekit.agents import AgentServer
from livekit.agents.job import JobContext, RunningJobInfo

from voicefleet_worker import lk_private

# sha256 of `AgentServer._get_effective_load`'s source in livekit-agents 1.8.9, whose
# formula load.effective_load restates (tests/worker/test_load.py checks ours).
EFFECTIVE_LOAD_SOURCE = "8ee72dab9eeba32f"


def test_the_server_still_has_the_connection_state_the_worker_reads() -> None:
    server = AgentServer()
    for name in lk_private.READS["AgentServer"]:
        assert hasattr(server, name), f"AgentServer.{name} is gone: re-check lk_private"
    server._connecting, server._connection_failed = False, False
    assert lk_private.server_connected(server) is True
    server._connecting = True  # (re)connecting
    assert lk_private.server_connected(server) is False
    server._connecting, server._connection_failed = False, True  # gave up
    assert lk_private.server_connected(server) is False


def test_the_effective_load_formula_is_the_one_load_py_restates() -> None:
    source = inspect.getsource(AgentServer._get_effective_load)
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    assert digest == EFFECTIVE_LOAD_SOURCE, (
        "AgentServer._get_effective_load changed: compare it with load.effective_load"
    )


def test_the_job_context_still_keeps_when_the_offer_came() -> None:
    assert "self._info = info" in inspect.getsource(JobContext.__init__)
    assert "received_at" in {f.name for f in dataclasses.fields(RunningJobInfo)}
    assert (
        lk_private.job_received_at(SimpleNamespace(_info=SimpleNamespace(received_at=12.5))) == 12.5
    )


@pytest.mark.parametrize("ctx", [SimpleNamespace(), SimpleNamespace(_info=None)])
def test_an_unknown_offer_time_is_zero(ctx: object) -> None:
    assert lk_private.job_received_at(ctx) == 0.0


def test_the_server_still_keeps_the_rtc_session_entrypoint() -> None:
    server = AgentServer()
    assert lk_private.server_entrypoint(server) is None

    async def entrypoint(ctx: JobContext) -> None: ...

    server.rtc_session()(entrypoint)
    assert lk_private.server_entrypoint(server) is entrypoint
