"""kopf's diff-base storage, with the same essence built for less.

kopf builds an object's "essence" (what its on.update handlers compare) for every event of
every object it watches: worker pods, Deployments and the rest, not only VoiceAgents. Its
builder deep-copies the whole body and then drops the status and most of the metadata
(managedFields, the largest part). With 1,000 VoiceAgents that copy was the operator's
largest single CPU cost while creating them (py-spy, bench/reconcile.py). This one hands
kopf's builder only what it keeps, so the copy is of that alone. The result is the same
essence (tests/operator/test_kopf_storage.py compares it with kopf's own on a table of
bodies)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, cast

import kopf

# Stanzas the essence never holds (unless a handler names a field in them).
DROPPED = ("apiVersion", "kind", "metadata", "status")
KEPT_METADATA = ("labels", "annotations")


def lean_body(body: Mapping[str, Any], extra_fields: Iterable[Any]) -> dict[str, Any]:
    """`body` without what kopf's essence drops: the same top-level objects (not copies),
    so this costs a few dict entries. A stanza an extra field points into is kept whole.
    Pure."""
    roots = {_root(f) for f in extra_fields}
    out = {k: v for k, v in body.items() if k not in DROPPED or k in roots}
    if "metadata" not in roots:
        meta = body.get("metadata") or {}
        out["metadata"] = {k: meta[k] for k in KEPT_METADATA if k in meta}
    return out


def _root(field: Any) -> str:
    """A kopf field spec's first key: "status.x", ("status", "x") or ["status", "x"]."""
    if isinstance(field, str):
        return field.split(".", 1)[0]
    return str(next(iter(field), ""))


class LeanDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> Any:
        fields = list(extra_fields or ())
        essence = kopf.DiffBaseStorage.build(
            self, body=kopf.Body(cast(kopf.RawBody, lean_body(body, fields))), extra_fields=fields
        )
        # As kopf.AnnotationsDiffBaseStorage.build does after its builder: its own
        # annotation is not part of the essence (keys made from the real body).
        self.remove_annotations(essence, set(self.make_keys(self.key, body=body)))
        self.remove_empty_stanzas(essence)
        return essence
