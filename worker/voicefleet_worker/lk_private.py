"""What the worker reads from livekit-agents beyond its public API, in one place.

livekit-agents 1.8.9 has no public way to ask whether an `AgentServer` is connected to
LiveKit right now (it emits `worker_registered` on each registration but nothing when the
connection is lost), nor when a job was offered (`JobContext` keeps that in its private
`_info`); and `load.effective_load` restates `AgentServer._get_effective_load`, the
formula the server answers job offers with; and the entrypoint a user's `AgentServer`
registered with `@server.rtc_session()` has no public getter (agent_module.py runs it in
the worker's own server). tests/worker/test_lk_private.py fails when an
upgrade renames one of these or changes that formula, so each is re-checked, not broken
silently.
"""

from __future__ import annotations

from typing import Any

# class -> the private names read here (the test checks each exists)
READS: dict[str, tuple[str, ...]] = {
    "AgentServer": ("_connecting", "_connection_failed", "_get_effective_load", "_entrypoint_fnc"),
    "JobContext": ("_info",),
}


def server_connected(server: Any) -> bool:
    """The server holds a live connection to LiveKit (not connecting, not given up)."""
    return not getattr(server, "_connecting", True) and not getattr(
        server, "_connection_failed", False
    )


def job_received_at(ctx: Any) -> float:
    """When the worker received the job offer (`time.time()`), 0.0 when unknown."""
    return float(getattr(getattr(ctx, "_info", None), "received_at", 0.0) or 0.0)


def server_entrypoint(server: Any) -> Any:
    """The function registered with `@server.rtc_session()`, None when there is none."""
    return getattr(server, "_entrypoint_fnc", None)
