"""`python -m voicefleet_testbed.caller --agent NAME --callers N --turns K`

Simulated callers against a LiveKit server (LIVEKIT_URL, LIVEKIT_API_KEY and
LIVEKIT_API_SECRET from the environment, as `. .testbed/env` sets them). Prints one line
per turn and a JSON summary; exits 1 if a call went unanswered, dropped, or failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from .core import Caller
from .fleet import run_callers
from .report import TurnResult


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.0f}ms"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m voicefleet_testbed.caller")
    ap.add_argument("--agent", required=True, help="the agent name to dispatch")
    ap.add_argument("--callers", type=int, default=1)
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--speech-seconds", type=float, default=1.0)
    ap.add_argument("--answer-timeout", type=float, default=15.0)
    ap.add_argument("--join-timeout", type=float, default=30.0)
    ap.add_argument("--dispatch", choices=["token", "api", "none"], default="token")
    ap.add_argument("--room-prefix", default=None)
    ap.add_argument("--json", action="store_true", help="print every call's full report")
    args = ap.parse_args(argv)
    try:
        url = os.environ["LIVEKIT_URL"]
        key, secret = os.environ["LIVEKIT_API_KEY"], os.environ["LIVEKIT_API_SECRET"]
    except KeyError as e:
        print(f"error: {e.args[0]} is not set (try: . .testbed/env)", file=sys.stderr)
        return 2

    def on_turn(caller: Caller, t: TurnResult) -> None:
        print(
            f"{caller.room_name} turn {t.index + 1}: latency {_ms(t.latency_s)}"
            f" answer {_ms(t.answer_s)}",
            flush=True,
        )

    summary = asyncio.run(
        run_callers(
            args.callers,
            args.turns,
            url=url,
            api_key=key,
            api_secret=secret,
            agent_name=args.agent,
            speech_s=args.speech_seconds,
            answer_timeout=args.answer_timeout,
            join_timeout=args.join_timeout,
            dispatch=args.dispatch,
            room_prefix=args.room_prefix,
            on_turn=on_turn,
        )
    )
    if args.json:
        print(json.dumps([c.to_dict() for c in summary.calls], indent=2))
    print(json.dumps(summary.to_dict(), indent=2))
    return 0 if summary.ok() else 1


if __name__ == "__main__":
    sys.exit(main())
