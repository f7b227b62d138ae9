"""Kubernetes Events on a VoiceAgent, posted through kopf by whichever loop has news."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

import kopf

PostEvent = Callable[[str, str, str], None]  # (type, reason, message)


def object_ref(body: Mapping[str, Any]) -> dict[str, Any]:
    """What kopf needs to post an Event about an object: its kind, name and uid."""
    meta = body["metadata"]
    return {
        "apiVersion": body["apiVersion"],
        "kind": body["kind"],
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
    }


def poster(body: Mapping[str, Any]) -> PostEvent:
    """A `post(type, reason, message)` for this object (its ref is taken now)."""
    ref = kopf.Body(cast(kopf.RawBody, object_ref(body)))

    def post(kind: str, reason: str, message: str) -> None:
        kopf.event(ref, type=kind, reason=reason, message=message)

    return post
