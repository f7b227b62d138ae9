"""`make images`: build the operator and worker images from their Dockerfiles with buildah,
with no registry and no Docker, into OCI archives under ~/.cache/voicefleet/images.

    python -m voicefleet_testbed.imagebuild [build] [--rebuild]   build what is missing
    python -m voicefleet_testbed.imagebuild manifest              JSON of this checkout's images
    python -m voicefleet_testbed.imagebuild plan                  names, tags, keys; builds nothing

The decisions (keys, tags, stand-ins) are in images.py; this runs the tools. buildah keeps
its own storage under the cache (not /var/lib/containers), so nothing else on the machine
sees or disturbs it.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import hashlib
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from .binaries import REPO_DIR
from .images import (
    KEY_LABEL,
    MANIFEST_NAME,
    PYTHON_ENV,
    PYTHON_PACKAGES,
    BuiltImage,
    ImageError,
    ImagePlan,
    MissingImages,
    PythonBase,
    StandIn,
    UvBase,
    built,
    images_dir,
    manifest_document,
    name_in_index,
    normalize,
    pick_uv_wheel,
    plan,
    read_archive_index,
    stale_archives,
)

TOOLS = {"buildah": "buildah", "mmdebstrap": "mmdebstrap"}  # command -> Debian package


def build_volumes(d: Path) -> list[str]:
    """Build-time mounts (read-only, not in the image): the build reaches PyPI through the
    host's certificate store, for pip (Debian's, which reads /etc/ssl/certs) and for uv (told
    by a system-level uv.toml to use it instead of its bundled roots)."""
    uv_toml = d / "build" / "uv.toml"
    uv_toml.parent.mkdir(parents=True, exist_ok=True)
    uv_toml.write_text("system-certs = true\n")
    return ["/etc/ssl/certs:/etc/ssl/certs:ro", f"{uv_toml}:/etc/uv/uv.toml:ro"]


def step(msg: str) -> None:
    print(f"==> [{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class BuildFailed(RuntimeError):
    pass


def run_logged(name: str, argv: Sequence[str], log: Path, *, every: float = 30.0) -> None:
    """Run a tool with its output in `log`, a progress line every `every` s, the tail on error."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        while True:
            try:
                proc.wait(timeout=every)
                break
            except subprocess.TimeoutExpired:
                print(
                    f"    ... {name}: {time.monotonic() - t0:.0f}s, {_last_line(log)}", flush=True
                )
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise BuildFailed(f"{name} failed (exit {proc.returncode}); log: {log}\n{tail}")


def _last_line(log: Path) -> str:
    with log.open("rb") as f:
        f.seek(max(0, log.stat().st_size - 400))
        lines = f.read().decode(errors="replace").strip().splitlines()
    return (lines[-1] if lines else "")[:100]


class Buildah:
    """buildah on its own storage under the images cache."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # runroot holds locks and mount state: a tmpfs, per storage.
        tag = hashlib.sha256(str(root).encode()).hexdigest()[:8]
        self.global_args = [
            "--root",
            str(root / "storage"),
            "--runroot",
            f"/run/voicefleet-buildah-{tag}",
            "--storage-driver",
            "overlay",
        ]

    def argv(self, *args: str) -> list[str]:
        return ["buildah", *self.global_args, *args]

    def out(self, *args: str) -> str:
        p = subprocess.run(
            self.argv(*args), capture_output=True, text=True, stdin=subprocess.DEVNULL
        )
        if p.returncode != 0:
            raise BuildFailed(f"buildah {' '.join(args)}: {p.stderr.strip()}")
        return p.stdout.strip()

    def image_id(self, ref: str) -> str | None:
        p = subprocess.run(
            self.argv("inspect", "--type", "image", "--format", "{{.FromImageID}}", ref),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        return p.stdout.strip() or None if p.returncode == 0 else None

    def image_with_label(self, key: str) -> str | None:
        ids = self.out(
            "images",
            "--noheading",
            "--no-trunc",
            "--format",
            "{{.ID}}",
            "--filter",
            f"label={KEY_LABEL}={key}",
        )
        return ids.split()[0].removeprefix("sha256:") if ids else None

    def load(self, img: BuiltImage) -> None:
        """Make `img.ref` in storage the archive's image (another checkout's build may have
        replaced it: the archive is the source of truth)."""
        if self.image_id(img.ref) != img.image_id.removeprefix("sha256:"):
            self.out("pull", "--quiet", f"oci-archive:{img.archive}")

    def run(
        self,
        image: str,
        argv: Sequence[str],
        *,
        user: str,
        env: Mapping[str, str] | None = None,
        volumes: Sequence[str] = (),
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv in a throw-away container of `image`. chroot isolation shares the host's
        network: run nothing that listens."""
        ctr = self.out("from", "--pull=never", image)
        try:
            return subprocess.run(
                self.argv(
                    "run",
                    "--isolation=chroot",
                    "--user",
                    user,
                    *(f"--env={k}={v}" for k, v in (env or {}).items()),
                    *(f"--volume={v}" for v in volumes),
                    ctr,
                    "--",
                    *argv,
                ),
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                timeout=timeout,
            )
        finally:
            subprocess.run(self.argv("rm", ctr), capture_output=True, stdin=subprocess.DEVNULL)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """One image build per cache at a time (checkouts share it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"    waiting for another image build ({path})", flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def ensure_tools() -> None:
    missing = [pkg for cmd, pkg in TOOLS.items() if shutil.which(cmd) is None]
    if not missing:
        return
    if os.geteuid() != 0:
        raise BuildFailed(
            f"need {', '.join(missing)} (apt-get install {' '.join(missing)}, as root)"
        )
    step(f"installing Debian's {' '.join(missing)} (apt-get)")
    log = images_dir() / "logs" / "apt.log"
    env = ["env", "DEBIAN_FRONTEND=noninteractive"]
    lock = ["-o", "DPkg::Lock::Timeout=600"]
    run_logged("apt-get update", [*env, "apt-get", "update", "-q", *lock], log)
    run_logged(
        "apt-get install",
        [*env, "apt-get", "install", "-y", "-q", "--no-install-recommends", *lock, *missing],
        log,
    )


# --- stand-in base images --------------------------------------------------------------------


def build_python_base(b: Buildah, base: PythonBase, key: str, d: Path) -> str:
    """Debian's Python in a minbase root file system: mmdebstrap (host's apt sources)."""
    rootfs = d / "base" / f"debian-{base.suite}-python-{key[:16]}.tar"
    version_file = rootfs.with_suffix(".python-version")
    log = d / "logs" / f"base-python-{key[:16]}.log"
    if not rootfs.is_file() or not version_file.is_file():
        step(f"mmdebstrap {base.suite} minbase + Debian's Python (~1-2 min cold)")
        rootfs.parent.mkdir(parents=True, exist_ok=True)
        tmp = rootfs.with_suffix(".tmp.tar")
        hooks = [
            # python:*-slim has no PEP 668 marker: its pip installs into the system Python.
            'rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED',
            # Absolute /usr/local/bin/python paths of the slim image keep working.
            'ln -sf /usr/bin/python3 "$1"/usr/local/bin/python3',
            'ln -sf /usr/bin/python3 "$1"/usr/local/bin/python',
            f'chroot "$1" python3 -c "import platform; print(platform.python_version())" > {shlex.quote(str(version_file))}',
        ]
        argv = [
            "mmdebstrap",
            "--variant=minbase",
            "--include=" + ",".join(PYTHON_PACKAGES),
            *(f"--customize-hook={h}" for h in hooks),
            base.suite,
            str(tmp),
        ]
        run_logged("mmdebstrap", argv, log)
        tmp.rename(rootfs)
    py = version_file.read_text().strip()
    step(f"committing the python stand-in (Debian {base.suite}, Python {py})")
    ctr = b.out("from", "scratch")
    try:
        run_logged("buildah add", b.argv("add", ctr, str(rootfs), "/"), log)
        cfg = [f"--env={k}={v}" for k, v in PYTHON_ENV.items()]
        cfg += [f"--env=PYTHON_VERSION={py}", "--cmd", '["python3"]', f"--label={KEY_LABEL}={key}"]
        cfg += [
            f"--label=dev.voicefleet.stand-in=Debian {base.suite} python3 {py} (mmdebstrap minbase)"
        ]
        run_logged("buildah config", b.argv("config", *cfg, ctr), log)
        return b.out("commit", "--rm", "--quiet", ctr)
    except BaseException:
        subprocess.run(b.argv("rm", ctr), capture_output=True)
        raise


def build_uv_base(b: Buildah, base: UvBase, key: str, d: Path) -> str:
    """/uv and /uvx from the uv wheel on PyPI, in an image from scratch (as uv's own image)."""
    wheel_dir = d / "base" / f"uv-{base.version}"
    log = d / "logs" / f"base-uv-{key[:16]}.log"
    if not (wheel_dir / "uv").is_file() or not (wheel_dir / "uvx").is_file():
        step(f"uv {base.version}: the wheel from PyPI")
        # PyPI's simple index in its JSON form (PEP 691): every file with its sha256.
        req = urllib.request.Request(
            "https://pypi.org/simple/uv/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            files = json.load(r)["files"]
        f = pick_uv_wheel(files, base.version, os.uname().machine)
        with urllib.request.urlopen(str(f["url"]), timeout=300) as r:
            data = r.read()
        if hashlib.sha256(data).hexdigest() != f["hashes"]["sha256"]:
            raise BuildFailed(f"{f['filename']}: sha256 does not match PyPI's")
        tmp = Path(tempfile.mkdtemp(dir=d / "base"))
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            for exe in ("uv", "uvx"):
                (tmp / exe).write_bytes(z.read(f"uv-{base.version}.data/scripts/{exe}"))
                (tmp / exe).chmod(0o755)
        shutil.rmtree(wheel_dir, ignore_errors=True)
        tmp.rename(wheel_dir)
    step(f"committing the uv {base.version} stand-in")
    ctr = b.out("from", "scratch")
    try:
        for exe in ("uv", "uvx"):
            run_logged(
                "buildah copy",
                b.argv("copy", "--chmod", "0755", ctr, str(wheel_dir / exe), f"/{exe}"),
                log,
            )
        cfg = ["--entrypoint", '["/uv"]', f"--label={KEY_LABEL}={key}"]
        cfg += [f"--label=dev.voicefleet.stand-in=uv {base.version} from the PyPI wheel"]
        run_logged("buildah config", b.argv("config", *cfg, ctr), log)
        return b.out("commit", "--rm", "--quiet", ctr)
    except BaseException:
        subprocess.run(b.argv("rm", ctr), capture_output=True)
        raise


def ensure_bases(b: Buildah, plans: Sequence[ImagePlan], d: Path, arch: str) -> None:
    """Every base image the Dockerfiles name, as a stand-in tagged under that name."""
    by_key: dict[str, tuple[StandIn, list[str]]] = {}
    for p in plans:
        for ref, base in p.bases.items():
            by_key.setdefault(base.key(arch), (base, []))[1].append(normalize(ref))
    for key, (base, refs) in by_key.items():
        image = b.image_with_label(key)
        if image is None:
            if isinstance(base, PythonBase):
                image = build_python_base(b, base, key, d)
            else:
                image = build_uv_base(b, base, key, d)
        for ref in sorted(set(refs)):
            if b.image_id(ref) != image:
                b.out("tag", image, ref)


# --- the project's images --------------------------------------------------------------------


def archive_info(archive: Path) -> tuple[str, str, str | None]:
    """(manifest digest, config digest = image id, ref name) of an OCI archive's one image."""
    with tarfile.open(archive) as t:
        idx = t.extractfile("index.json")
        assert idx is not None
        manifest_digest, ref = read_archive_index(json.load(idx))
        m = t.extractfile("blobs/" + manifest_digest.replace(":", "/", 1))
        assert m is not None
        return manifest_digest, str(json.load(m)["config"]["digest"]), ref


def build_image(b: Buildah, p: ImagePlan, repo: Path, d: Path) -> BuiltImage:
    t0 = time.monotonic()
    log = d / "logs" / f"{p.name}-{p.key[:16]}.log"
    step(f"building {p.ref} from {p.dockerfile} (buildah bud, ~1-2 min cold)")
    argv = b.argv(
        "bud",
        "--pull=never",
        "--isolation=chroot",
        "--network=host",
        "--no-cache",  # keyed by our own cache; buildah keeps no intermediate layers
        "--force-rm",  # a failed build leaves no container holding its base image
        *(f"--volume={v}" for v in build_volumes(d)),
        *(f"--build-arg={k}={v}" for k, v in p.build_args.items()),
        f"--label={KEY_LABEL}={p.key}",
        "--file",
        str(repo / p.dockerfile),
        "--tag",
        p.ref,
        str(repo),
    )
    run_logged(f"buildah bud {p.name}", argv, log)
    step(f"exporting {p.ref} as an OCI archive")
    archive = p.archive(d)
    tmp = archive.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    run_logged("buildah push", b.argv("push", "--quiet", p.ref, f"oci-archive:{tmp}:{p.ref}"), log)
    named = archive.with_suffix(".named.tmp")
    name_archive(tmp, named, p.ref)
    tmp.unlink()
    tmp = named
    manifest_digest, config_digest, ref = archive_info(tmp)
    if ref != p.ref:
        raise BuildFailed(f"{tmp}: its index names {ref!r}, not {p.ref!r}")
    size = _layer_bytes(tmp)
    tmp.rename(archive)
    rec = BuiltImage(
        name=p.name,
        ref=p.ref,
        repository=p.repository,
        tag=p.tag,
        archive=str(archive),
        image_id=config_digest,
        manifest_digest=manifest_digest,
        key=p.key,
        archive_bytes=archive.stat().st_size,
        size_bytes=size,
        built_at=datetime.now(UTC).isoformat(timespec="seconds"),
        build_seconds=round(time.monotonic() - t0, 1),
    )
    p.record(d).write_text(json.dumps(rec.to_dict(), indent=2) + "\n")
    return rec


def name_archive(src: Path, dst: Path, ref: str) -> None:
    """Copy an OCI archive with its index naming `ref` for containerd too (the blobs, and so
    the image's digests, are unchanged)."""
    with tarfile.open(src) as s, tarfile.open(dst, "w") as d:
        for member in s:
            f = s.extractfile(member) if member.isfile() else None
            if member.name == "index.json" and f is not None:
                data = json.dumps(name_in_index(json.load(f), ref)).encode()
                member.size = len(data)
                d.addfile(member, io.BytesIO(data))
            else:
                d.addfile(member, f)


def archive_config(archive: Path) -> dict[str, Any]:
    """The image configuration (user, entrypoint, env, ports...) an OCI archive carries:
    what a node's runtime will run."""
    with tarfile.open(archive) as t:

        def blob(digest: str) -> Any:
            f = t.extractfile("blobs/" + digest.replace(":", "/", 1))
            assert f is not None
            return json.load(f)

        idx = t.extractfile("index.json")
        assert idx is not None
        manifest_digest, _ = read_archive_index(json.load(idx))
        return dict(blob(blob(manifest_digest)["config"]["digest"]))


def _layer_bytes(archive: Path) -> int:
    """Uncompressed size of an OCI archive's layers (what the image takes on a node's disk)."""
    total = 0
    with tarfile.open(archive) as t:
        idx = t.extractfile("index.json")
        assert idx is not None
        digest, _ = read_archive_index(json.load(idx))

        def blob(d: str) -> IO[bytes]:
            f = t.extractfile("blobs/" + d.replace(":", "/", 1))
            assert f is not None
            return f

        for layer in json.load(blob(digest))["layers"]:
            f = blob(layer["digest"])
            if layer["mediaType"].endswith("+gzip"):
                f = gzip.GzipFile(fileobj=f)  # type: ignore[assignment]
            while chunk := f.read(1 << 20):
                total += len(chunk)
    return total


def prune(b: Buildah, plans: Sequence[ImagePlan], d: Path) -> None:
    """Old archives (beyond the newest few per image) and every built image but the current
    ones from buildah's storage: the archives are what the node imports."""
    found = []
    for f in d.glob("*.oci.tar"):
        name, _, key = f.name.removesuffix(".oci.tar").partition("-")
        found.append((name, key, f.stat().st_mtime))
    for name, key in stale_archives(found, [p.key[:16] for p in plans]):
        (d / f"{name}-{key}.oci.tar").unlink(missing_ok=True)
        (d / f"{name}-{key}.json").unlink(missing_ok=True)
    current = {p.ref for p in plans}
    repos = {p.repository for p in plans}
    try:
        rows = b.out("images", "--noheading", "--format", "{{.Name}}:{{.Tag}}")
        for ref in rows.split():
            if ref.rsplit(":", 1)[0] in repos and ref not in current:
                b.out("rmi", ref)
        # untagged leftovers (a build's intermediate stages, replaced stand-ins)
        b.out("rmi", "--prune")
    except BuildFailed as e:  # a container still using an image: the next build retries
        print(f"    (pruning buildah storage: {e})", flush=True)


def build(repo: Path = REPO_DIR, *, rebuild: bool = False) -> dict[str, BuiltImage]:
    t0 = time.monotonic()
    d = images_dir()
    arch = os.uname().machine
    plans = plan(repo, arch)
    todo = [p for p in plans if rebuild or not (p.archive(d).is_file() and p.record(d).is_file())]
    if todo:
        with locked(d / ".lock"):
            ensure_tools()
            b = Buildah(d)
            todo = [
                p for p in todo if rebuild or not (p.archive(d).is_file() and p.record(d).is_file())
            ]
            if todo:
                ensure_bases(b, todo, d, arch)
            for p in todo:
                build_image(b, p, repo, d)
            if todo:
                prune(Buildah(d), plans, d)
    images = built(repo, d)
    doc = manifest_document(images)
    tmp = d / f".{MANIFEST_NAME}.{os.getpid()}"
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.rename(d / MANIFEST_NAME)
    fresh = {p.name for p in todo}
    for name, img in images.items():
        how = f"built in {img.build_seconds:.0f}s" if name in fresh else "cached"
        print(
            f"{name:<9} {img.ref}  {img.image_id[:19]}  {img.size_bytes / 1e6:.0f} MB "
            f"({img.archive_bytes / 1e6:.0f} MB archive, {how})\n          {img.archive}"
        )
    print(f"images ready in {time.monotonic() - t0:.1f}s; manifest: {d / MANIFEST_NAME}")
    return images


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m voicefleet_testbed.imagebuild", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("cmd", nargs="?", default="build", choices=["build", "manifest", "plan"])
    ap.add_argument("--rebuild", action="store_true", help="rebuild the images even when cached")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "plan":
            for p in plan():
                print(f"{p.name:<9} {p.ref}  key {p.key[:16]}  bases {', '.join(p.bases)}")
        elif args.cmd == "manifest":
            print(json.dumps(manifest_document(built()), indent=2))
        else:
            build(rebuild=args.rebuild)
    except (ImageError, BuildFailed, MissingImages) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
