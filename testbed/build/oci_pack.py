#!/usr/bin/env python3
"""Pack files into a single-layer OCI image archive (oci-archive), with no registry and no
image tool: used for the testbed's pause image (one static binary).

  usage: oci_pack.py OUT.tar NAME:TAG ENTRYPOINT USER SRC:DEST[:MODE]...

The archive names the image in `io.containerd.image.name` (what `ctr images import` uses)
and `org.opencontainers.image.ref.name`. Stdlib only: runs before `make setup`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import sys
import tarfile


def _blob(tar: tarfile.TarFile, data: bytes) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo("blobs/sha256/" + digest.split(":", 1)[1])
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))
    return digest, len(data)


def _layer(files: list[tuple[str, str, int]]) -> tuple[bytes, str]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
        for src, dest, mode in files:
            with open(src, "rb") as f:
                data = f.read()
            info = tarfile.TarInfo(dest.lstrip("/"))
            info.size, info.mtime, info.mode = len(data), 0, mode
            t.addfile(info, io.BytesIO(data))
    diff_id = "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()
    return gzip.compress(raw.getvalue(), mtime=0), diff_id


def pack(out: str, name: str, entrypoint: str, user: str, specs: list[str]) -> None:
    files = []
    for spec in specs:
        parts = spec.split(":")
        mode = int(parts[2], 8) if len(parts) > 2 else 0o755
        files.append((parts[0], parts[1], mode))
    layer, diff_id = _layer(files)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": [entrypoint], "User": user},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    with tarfile.open(out, "w") as tar:
        ldig, lsize = _blob(tar, layer)
        cdata = json.dumps(config, sort_keys=True).encode()
        cdig, csize = _blob(tar, cdata)
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": cdig,
                "size": csize,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": ldig,
                    "size": lsize,
                }
            ],
        }
        mdig, msize = _blob(tar, json.dumps(manifest, sort_keys=True).encode())
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": mdig,
                    "size": msize,
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name,
                    },
                }
            ],
        }
        for fname, body in (
            ("oci-layout", {"imageLayoutVersion": "1.0.0"}),
            ("index.json", index),
        ):
            data = json.dumps(body).encode()
            info = tarfile.TarInfo(fname)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))


if __name__ == "__main__":
    if len(sys.argv) < 6:
        sys.exit(__doc__)
    pack(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:])
