"""`make demo`: the main job on the local stack."""

from __future__ import annotations

from .stack import Stack


def run_demo(stack: Stack) -> int:
    stack.up()
    print(stack.summary())
    print("\nThe stack is up. Voice calls on it come with the operator and worker.")
    return 0
