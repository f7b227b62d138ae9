"""voicefleet worker: a LiveKit voice agent on the OpenAI Realtime API, with
session-based load, Prometheus metrics, /sessions and draining.

Custom agents use the same runtime::

    from voicefleet_worker import Job, run

    async def entrypoint(job: Job) -> None:
        session = job.agent_session()          # the configured Realtime model, observed
        await session.start(agent=job.agent(instructions="..."), room=job.ctx.room)

    if __name__ == "__main__":
        run(entrypoint)
"""

from .job_runtime import Runtime
from .main import run
from .sdk import Job, realtime_agent

__all__ = ["Job", "Runtime", "realtime_agent", "run"]
