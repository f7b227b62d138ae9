"""A minimal livekit-agents worker for failover tests (no model): it registers under the
VoiceAgent's agent name, joins the room on dispatch and stays until told otherwise.

Run as a worker pod through the node agent's image table: it reads what the operator puts
in the pod (LIVEKIT_URL/_API_KEY/_API_SECRET, POD_IP, VOICEFLEET_CONFIG) and serves the
contract's `/sessions` on POD_IP:9464 (long-polled with `?since=&wait=` as the contract
says), plus test controls:
- `POST /control/crash`: SIGKILL this process (jobs run in threads, so they die with it);
- `POST /control/end?room=R`: the agent ends the call on purpose (leaves the room);
- `GET /control/seen?room=R`: how many `/sessions` answers (other than to the test's own
  reads, `?test=1`) listed R: the test's proof that the operator has seen the session.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import threading
import time
from typing import Any

from aiohttp import web
from livekit.agents import AgentServer, JobContext, JobExecutorType

from voicefleet_contract import HEALTH_PORT, METRICS_PORT, READY_PATH, Env
from voicefleet_contract.capacity import DEFAULT_TARGET_LOAD, full_threshold, reported_load
from voicefleet_contract.sessions import (
    SESSIONS_PATH,
    ChangeNotifier,
    parse_long_poll,
    serve_long_poll,
)

POD_IP = os.environ.get(Env.POD_IP, "127.0.0.1")
with open(os.environ[Env.CONFIG_FILE]) as f:
    AGENT_NAME = str(json.load(f)["agentName"])
CAPACITY = 10
jobs: dict[str, tuple[JobContext, asyncio.AbstractEventLoop, float]] = {}
seen: dict[str, int] = {}
lock = threading.Lock()
changes = ChangeNotifier()  # jobs changed (from the job threads)

server = AgentServer(
    job_executor_type=JobExecutorType.THREAD,
    num_idle_processes=0,
    host=POD_IP,
    port=int(os.environ.get(Env.HEALTH_PORT, HEALTH_PORT)),
    # The contract's capacity model, as the real worker reports it (LiveKit's target_load).
    load_fnc=lambda: reported_load(len(jobs), CAPACITY, DEFAULT_TARGET_LOAD),
    load_threshold=full_threshold(DEFAULT_TARGET_LOAD),
    drain_timeout=5,
)


@server.rtc_session(agent_name=AGENT_NAME)
async def entry(ctx: JobContext) -> None:
    await ctx.connect()
    room = ctx.room.name
    with lock:
        jobs[room] = (ctx, asyncio.get_running_loop(), time.time())
    changes.notify()

    async def gone(_reason: str) -> None:
        with lock:
            jobs.pop(room, None)
        changes.notify()

    ctx.add_shutdown_callback(gone)


def report() -> dict[str, Any]:
    with lock:
        rooms = [
            {
                "room": room,
                "jobId": ctx.job.id,
                "startedAt": started,
                "participant": ctx.room.local_participant.identity,
            }
            for room, (ctx, _loop, started) in jobs.items()
        ]
    return {"activeSessions": len(rooms), "capacity": CAPACITY, "rooms": rooms}


async def sessions(request: web.Request) -> web.Response:
    try:
        poll = parse_long_poll(request.query)
    except ValueError as e:
        return web.Response(status=400, text=f"{e}\n")
    body = await serve_long_poll(report, changes, poll)
    if "test" not in request.query:
        with lock:
            for r in body["rooms"]:
                seen[r["room"]] = seen.get(r["room"], 0) + 1
    return web.json_response(body)


registered = False


def on_registered(*_: Any) -> None:
    global registered
    registered = True


async def ready(_: web.Request) -> web.Response:
    """The readiness probe the operator renders: 200 once registered with LiveKit."""
    return web.Response(status=200 if registered else 503)


async def seen_by_others(request: web.Request) -> web.Response:
    with lock:
        return web.json_response({"seen": seen.get(request.query["room"], 0)})


async def crash(_: web.Request) -> web.Response:
    os.kill(os.getpid(), signal.SIGKILL)
    return web.Response(text="unreachable")


async def end(request: web.Request) -> web.Response:
    with lock:
        found = jobs.get(request.query["room"])
    if found is None:
        return web.Response(status=404)
    ctx, loop, _ = found
    loop.call_soon_threadsafe(ctx.shutdown, "the agent ended the call")
    return web.Response(text="ending\n")


async def main() -> None:
    app = web.Application()
    app.router.add_get(SESSIONS_PATH, sessions)
    app.router.add_get(READY_PATH, ready)
    server.on("worker_registered", on_registered)
    app.router.add_post("/control/crash", crash)
    app.router.add_get("/control/seen", seen_by_others)
    app.router.add_post("/control/end", end)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, POD_IP, int(os.environ.get(Env.METRICS_PORT, METRICS_PORT))).start()
    await server.run()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    asyncio.run(main())
