"""`testbed up|down|status|env`: the local stack from the command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .binaries import MissingBinary
from .stack import Stack, default_dir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="testbed", description="voicefleet's local stack")
    p.add_argument(
        "--dir",
        type=Path,
        default=Path(os.environ.get("VOICEFLEET_TESTBED", default_dir())),
        help="state directory (default: .testbed/ in the checkout, or $VOICEFLEET_TESTBED)",
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start the stack in the background (harmless when already up)")
    up.add_argument(
        "--no-operator",
        action="store_true",
        help="without the VoiceAgent CRD and operator (to run the operator tests against it)",
    )
    up.add_argument(
        "--no-real-node",
        action="store_true",
        help="without the real node (kubelet, containerd, kube-proxy, CoreDNS)",
    )
    up.add_argument(
        "--livekit-nodes",
        type=int,
        metavar="N",
        help="run N livekit-server nodes, multi-node with Redis (default: what runs, else 1)",
    )
    up.add_argument(
        "--redis",
        action=argparse.BooleanOptionalAction,
        help="run Redis and point LiveKit at it (its SIP API needs it; implied by "
        "--livekit-nodes above 1; default: what runs, else off)",
    )
    up.add_argument(
        "--keda",
        action="store_true",
        help="also run KEDA (operator and external metrics API server) for autoscaling "
        "mode keda; build it first: bash testbed/build/binaries.sh keda",
    )
    sub.add_parser("down", help="stop everything the stack started")
    sub.add_parser("status", help="what runs and what is unhealthy (exit 1 if anything is down)")
    sub.add_parser("env", help="print the shell exports for the stack")
    demo = sub.add_parser(
        "demo", help="start the stack, apply the example VoiceAgent and call it (make demo)"
    )
    demo.add_argument("--callers", type=int, default=3, help="simulated callers (default 3)")
    demo.add_argument("--turns", type=int, default=3, help="turns per call (default 3)")
    args = p.parse_args(argv)
    stack = Stack(args.dir)
    try:
        if args.cmd == "up":
            real_node = not args.no_real_node
            holder = stack.real_node_elsewhere() if real_node else None
            if holder:
                print(f"note: the testbed in {holder} runs this machine's real node; "
                      "starting without one")  # fmt: skip
                real_node = False
            stack.up(
                operator=not args.no_operator,
                real_node=real_node,
                livekit_nodes=args.livekit_nodes,
                redis=args.redis,
                keda=args.keda,
            )
            print(stack.summary())
        elif args.cmd == "down":
            stack.down()
        elif args.cmd == "status":
            rows = stack.status()
            if not rows:
                print(f"testbed is not running ({stack.dir}); start it with: make up")
                return 1
            for name, alive, detail in rows:
                print(f"{'ok  ' if alive else 'DOWN'} {name:<24} {detail}")
            return 0 if all(a for _, a, _ in rows) else 1
        elif args.cmd == "env":
            print(stack.write_env_file().read_text(), end="")
        elif args.cmd == "demo":
            from .demo import run_demo

            return run_demo(stack, callers=args.callers, turns=args.turns)
    except MissingBinary as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
