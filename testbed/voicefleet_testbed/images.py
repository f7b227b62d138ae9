"""The project's images, built here without a registry (`make images`): what to build, under
which names, keyed by which inputs, and what was built (the manifest the node imports).

Everything here is a pure decision or a file read; imagebuild.py runs the tools.

- Each image (operator, worker) is built from its own Dockerfile, unchanged, with the repo
  root as context. Its cache key hashes what the build reads: the Dockerfile, .dockerignore,
  every context file a COPY names (after .dockerignore), the build args and the keys of the
  base images. A warm run whose key has an archive builds nothing.
- The base images a Dockerfile names (`python:3.11.x-slim-<suite>`, `ghcr.io/astral-sh/uv:<v>`)
  are stand-ins made from Debian's and PyPI's packages, tagged under those exact names.
- Built images are tagged `<chart repository>:dev-<key[:12]>` (a content tag: a source change
  gives a new tag, so a Deployment rolls; unchanged source keeps it) and exported as OCI
  archives whose index names that full reference (`ctr images import` takes it as is).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from .binaries import REPO_DIR, cache_dir

# Bump when the build procedure changes in a way the inputs below do not show.
SCHEMA = 2
IMAGE_NAMES = ("operator", "worker")
DOCKERFILES = {"operator": "operator/Dockerfile", "worker": "worker/Dockerfile"}
TAG_PREFIX = "dev-"
MANIFEST_NAME = "images.json"
# Archives kept per image name (each a few hundred MB): the current ones plus recent others.
KEEP_ARCHIVES = 3
# A label on the built images and stand-ins: the key they were built from.
KEY_LABEL = "dev.voicefleet.build-key"

# Debian's Python per suite: a python:<minor>.x-slim-<suite> stand-in must match it.
SUITE_PYTHON = {"bookworm": "3.11", "trixie": "3.13"}
# What python:*-slim has that the Dockerfiles use: python/python3, venv (ensurepip), pip,
# CA certificates, /etc/services. pip is Debian's, with the PEP 668 marker removed, as in
# the slim image (whose pip installs into the system Python).
PYTHON_PACKAGES = (
    "python3",
    "python3-venv",
    "python3-pip",
    "python-is-python3",
    "ca-certificates",
    "netbase",
)
# The slim image's PATH (its Python is in /usr/local/bin; Debian's is in /usr/bin, and the
# stand-in links /usr/local/bin/python{,3} to it so absolute paths still work).
PYTHON_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}


class ImageError(RuntimeError):
    """A Dockerfile or a cache entry this build cannot use; the message names it."""


# --- Dockerfiles -----------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    op: str  # upper case
    args: str
    line: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined; comments and parser directives dropped."""
    out: list[Instruction] = []
    buf: list[str] = []
    start = 0
    for n, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not buf):
            continue  # a comment inside a continuation is dropped too, as Docker does
        if not buf:
            start = n
        if stripped.endswith("\\"):
            buf.append(stripped[:-1].strip())
            continue
        buf.append(stripped)
        line = " ".join(p for p in buf if p)
        buf = []
        op, _, rest = line.partition(" ")
        out.append(Instruction(op.upper(), rest.strip(), start))
    if buf:
        line = " ".join(p for p in buf if p)
        op, _, rest = line.partition(" ")
        out.append(Instruction(op.upper(), rest.strip(), start))
    return out


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def _substitute(s: str, args: Mapping[str, str], where: str) -> str:
    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in args:
            raise ImageError(f"{where}: ${name} has no value (no ARG default, no build arg)")
        return args[name]

    return _VAR.sub(repl, s)


def _flags(args: str) -> tuple[dict[str, str], list[str]]:
    flags: dict[str, str] = {}
    rest: list[str] = []
    for tok in args.split():
        if tok.startswith("--") and not rest:
            k, _, v = tok[2:].partition("=")
            flags[k] = v
        else:
            rest.append(tok)
    return flags, rest


def base_images(text: str, build_args: Mapping[str, str], where: str) -> list[str]:
    """The images a Dockerfile reads from outside itself (FROM and COPY --from), in order."""
    args: dict[str, str] = {}
    stages: list[str] = []
    out: list[str] = []
    seen_from = False

    def add(ref: str) -> None:
        if ref not in out and ref != "scratch":
            out.append(ref)

    for ins in parse_dockerfile(text):
        w = f"{where}:{ins.line}"
        if ins.op == "ARG" and not seen_from:
            name, eq, default = ins.args.partition("=")
            if name in build_args:
                args[name] = build_args[name]
            elif eq:
                args[name] = default.strip().strip('"')
        elif ins.op == "FROM":
            seen_from = True
            _, rest = _flags(ins.args)
            if not rest:
                raise ImageError(f"{w}: FROM names no image")
            ref = _substitute(rest[0], args, w)
            if ref not in stages:
                add(ref)
            if len(rest) >= 3 and rest[1].upper() == "AS":
                stages.append(rest[2])
        elif ins.op in ("COPY", "ADD"):
            flags, _ = _flags(ins.args)
            src = flags.get("from")
            if src is not None and src not in stages and not src.isdigit():
                add(_substitute(src, args, w))
    return out


def copy_sources(text: str, where: str) -> list[str]:
    """Context paths the Dockerfile's COPY/ADD read (not those copied from another image)."""
    out: list[str] = []
    for ins in parse_dockerfile(text):
        if ins.op not in ("COPY", "ADD"):
            continue
        flags, rest = _flags(ins.args)
        if "from" in flags:
            continue
        if rest and rest[0].startswith("["):
            rest = [str(x) for x in json.loads(" ".join(rest))]
        if len(rest) < 2:
            raise ImageError(f"{where}:{ins.line}: {ins.op} needs a source and a destination")
        for src in rest[:-1]:
            if any(c in src for c in "*?[") or "://" in src:
                raise ImageError(f"{where}:{ins.line}: {src}: globs and URLs are not keyed")
            out.append(src)
    return out


def entrypoint(text: str) -> list[str]:
    """The last stage's ENTRYPOINT in exec form."""
    entry: list[str] = []
    for ins in parse_dockerfile(text):
        if ins.op == "FROM":
            entry = []
        elif ins.op == "ENTRYPOINT":
            entry = [str(x) for x in json.loads(ins.args)]
    return entry


# --- references and stand-ins ------------------------------------------------------------


def normalize(ref: str) -> str:
    """Docker's normalization: `python:3` -> `docker.io/library/python:3`."""
    name, _, digest = ref.partition("@")
    first, slash, _ = name.partition("/")
    if not slash:
        name = f"docker.io/library/{name}"
    elif "." not in first and ":" not in first and first != "localhost":
        name = f"docker.io/{name}"
    if not digest and ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return f"{name}@{digest}" if digest else name


@dataclass(frozen=True)
class PythonBase:
    """python:<minor>.x-slim-<suite> from Debian's packages (Debian's own patch level)."""

    suite: str
    python: str  # major.minor

    def key(self, arch: str) -> str:
        return _digest(
            {
                "schema": SCHEMA,
                "kind": "python",
                "suite": self.suite,
                "packages": PYTHON_PACKAGES,
                "env": PYTHON_ENV,
                "arch": arch,
            }
        )


@dataclass(frozen=True)
class UvBase:
    """ghcr.io/astral-sh/uv:<version>: /uv and /uvx from the uv wheel on PyPI."""

    version: str

    def key(self, arch: str) -> str:
        return _digest({"schema": SCHEMA, "kind": "uv", "version": self.version, "arch": arch})


StandIn = PythonBase | UvBase

_PYTHON_REF = re.compile(
    r"docker\.io/library/python:(?P<minor>3\.\d+)(?:\.\d+)?-slim-(?P<suite>[a-z]+)"
)
_UV_REF = re.compile(r"ghcr\.io/astral-sh/uv:(?P<version>\d+\.\d+\.\d+)")


def stand_in(ref: str) -> StandIn:
    """Which local stand-in serves a base image a Dockerfile names."""
    full = normalize(ref)
    if m := _PYTHON_REF.fullmatch(full):
        suite, minor = m["suite"], m["minor"]
        if suite not in SUITE_PYTHON:
            raise ImageError(f"{ref}: no stand-in for Debian suite {suite!r}")
        if SUITE_PYTHON[suite] != minor:
            raise ImageError(f"{ref}: Debian {suite} has Python {SUITE_PYTHON[suite]}, not {minor}")
        return PythonBase(suite, minor)
    if m := _UV_REF.fullmatch(full):
        return UvBase(m["version"])
    raise ImageError(
        f"{ref}: no local stand-in for this base image (known: python:3.x.y-slim-<suite>, "
        "ghcr.io/astral-sh/uv:<version>)"
    )


def pick_uv_wheel(
    files: Sequence[Mapping[str, Any]], version: str, machine: str
) -> Mapping[str, Any]:
    """The glibc Linux wheel of uv for this machine from PyPI's simple index (JSON) files."""
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    for f in files:
        name = str(f.get("filename", ""))
        if (
            name.startswith(f"uv-{version}-")
            and name.endswith(".whl")
            and "manylinux" in name
            and re.search(rf"[._]{re.escape(arch)}(\.|$)", name.removesuffix(".whl"))
        ):
            return f
    raise ImageError(f"uv=={version}: PyPI has no manylinux wheel for {arch}")


# --- context and keys ----------------------------------------------------------------------


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def dockerignore(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(exclude?, pattern) per .dockerignore line; `!` re-includes; the last match wins."""
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pat = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((not include, _pattern_regex(pat)))
    return rules


def ignored(path: str, rules: Sequence[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether a context path (relative, `/`-separated) is left out of the build context.
    A pattern that matches a parent directory leaves out everything below it."""
    parts = path.split("/")
    result = False
    for exclude, rx in rules:
        if any(rx.fullmatch("/".join(parts[:i])) for i in range(1, len(parts) + 1)):
            result = exclude
    return result


def context_files(
    root: Path, sources: Iterable[str], rules: Sequence[tuple[bool, re.Pattern[str]]]
) -> list[str]:
    """Every file the COPY sources bring into the build, relative to root, sorted."""
    out: set[str] = set()
    for src in sources:
        rel = os.path.normpath(src).lstrip("/")
        p = root / rel
        if not p.exists():
            raise ImageError(f"COPY {src}: {p} does not exist")
        if p.is_dir():
            for dirpath, dirnames, filenames in os.walk(p):
                d = Path(dirpath).relative_to(root).as_posix()
                dirnames[:] = sorted(x for x in dirnames if not ignored(f"{d}/{x}", rules))
                out.update(f"{d}/{f}" for f in filenames if not ignored(f"{d}/{f}", rules))
        elif not ignored(rel, rules):
            out.add(rel)
    return sorted(out)


def file_digest(path: Path) -> list[object]:
    """What of a file a COPY carries into an image: its bytes and its executable bit."""
    return [hashlib.sha256(path.read_bytes()).hexdigest(), bool(path.stat().st_mode & 0o111)]


def image_key(
    dockerfile: str,
    dockerignore_text: str,
    files: Mapping[str, Sequence[object]],
    base_keys: Mapping[str, str],
    build_args: Mapping[str, str],
) -> str:
    return _digest(
        {
            "schema": SCHEMA,
            "dockerfile": dockerfile,
            "dockerignore": dockerignore_text,
            "files": dict(files),
            "bases": dict(base_keys),
            "build_args": dict(build_args),
        }
    )


def image_tag(key: str) -> str:
    return f"{TAG_PREFIX}{key[:12]}"


def chart_repositories(repo: Path = REPO_DIR) -> dict[str, str]:
    """The image repositories the chart's values name, so built images match them."""
    values = yaml.safe_load((repo / "charts" / "voicefleet" / "values.yaml").read_text())
    return {
        "operator": str(values["image"]["repository"]),
        "worker": str(values["worker"]["image"]["repository"]),
    }


# --- the plan --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImagePlan:
    name: str  # operator | worker
    dockerfile: str  # relative to the repo
    repository: str
    tag: str
    key: str
    bases: dict[str, StandIn]  # as the Dockerfile names them -> stand-in
    build_args: dict[str, str]

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"

    def archive(self, images_dir: Path) -> Path:
        return images_dir / f"{self.name}-{self.key[:16]}.oci.tar"

    def record(self, images_dir: Path) -> Path:
        return images_dir / f"{self.name}-{self.key[:16]}.json"


def images_dir() -> Path:
    return cache_dir() / "images"


def plan(
    repo: Path = REPO_DIR,
    arch: str | None = None,
    build_args: Mapping[str, Mapping[str, str]] | None = None,
) -> list[ImagePlan]:
    """What `make images` builds for this checkout: names, tags and keys. Reads files only."""
    arch = arch or os.uname().machine
    repos = chart_repositories(repo)
    ignore_path = repo / ".dockerignore"
    ignore_text = ignore_path.read_text() if ignore_path.exists() else ""
    rules = dockerignore(ignore_text)
    out = []
    for name in IMAGE_NAMES:
        rel = DOCKERFILES[name]
        text = (repo / rel).read_text()
        args = dict((build_args or {}).get(name, {}))
        bases = {ref: stand_in(ref) for ref in base_images(text, args, rel)}
        files = {
            f: file_digest(repo / f) for f in context_files(repo, copy_sources(text, rel), rules)
        }
        key = image_key(text, ignore_text, files, {r: b.key(arch) for r, b in bases.items()}, args)
        out.append(ImagePlan(name, rel, repos[name], image_tag(key), key, bases, args))
    return out


# --- what was built (the manifest) -----------------------------------------------------------


@dataclass(frozen=True)
class BuiltImage:
    """One built image: import `archive` into the node's runtime (e.g. `ctr -n k8s.io images
    import <archive>`); it comes up as `ref`, with `image_id` as the CRI's image id."""

    name: str
    ref: str
    repository: str
    tag: str
    archive: str  # an OCI image layout tar whose index names `ref`
    image_id: str  # sha256:<config digest>: docker/buildah/containerd image id
    manifest_digest: str  # sha256:<manifest digest>: what a registry would serve
    key: str
    archive_bytes: int
    size_bytes: int  # uncompressed layers
    built_at: str
    build_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BuiltImage:
        try:
            return cls(**{f: d[f] for f in cls.__dataclass_fields__})
        except KeyError as e:
            raise ImageError(f"image record: missing field {e.args[0]}") from None


def chart_values(images: Mapping[str, BuiltImage]) -> dict[str, Any]:
    """The chart values that install the operator from the built images and make it run
    workers from the built worker image (`helm install -f` this as YAML or JSON)."""
    op, wk = images["operator"], images["worker"]
    return {
        "image": {"repository": op.repository, "tag": op.tag, "pullPolicy": "IfNotPresent"},
        "worker": {"image": {"repository": wk.repository, "tag": wk.tag}},
    }


def manifest_document(images: Mapping[str, BuiltImage]) -> dict[str, Any]:
    """images.json: every image's record, and the chart values that use them."""
    return {
        "schema": SCHEMA,
        "images": {n: i.to_dict() for n, i in images.items()},
        "chart_values": chart_values(images),
    }


def read_archive_index(index: Mapping[str, Any]) -> tuple[str, str | None]:
    """(manifest digest, ref name) of the single image an OCI archive's index.json holds."""
    manifests = index.get("manifests") or []
    if len(manifests) != 1:
        raise ImageError(f"OCI index: expected one manifest, found {len(manifests)}")
    m = manifests[0]
    return str(m["digest"]), (m.get("annotations") or {}).get("org.opencontainers.image.ref.name")


def stale_archives(
    archives: Iterable[tuple[str, str, float]], current: Iterable[str], keep: int = KEEP_ARCHIVES
) -> list[tuple[str, str]]:
    """(name, key) of archives to delete: per image name, all but the `keep` newest by
    mtime, never a current key (checkouts share the cache: another one's images stay a while)."""
    now = set(current)
    by_name: dict[str, list[tuple[float, str]]] = {}
    for name, key, mtime in archives:
        by_name.setdefault(name, []).append((mtime, key))
    out = []
    for name, entries in sorted(by_name.items()):
        for _, key in sorted(entries, reverse=True)[keep:]:
            if key not in now:
                out.append((name, key))
    return out


def name_in_index(index: Mapping[str, Any], ref: str) -> dict[str, Any]:
    """The index with its one image named `ref` both ways: `io.containerd.image.name`
    (what `ctr images import` takes as the name) and `org.opencontainers.image.ref.name`."""
    read_archive_index(index)
    (m,) = index["manifests"]
    notes = {
        **(m.get("annotations") or {}),
        "io.containerd.image.name": ref,
        "org.opencontainers.image.ref.name": ref,
    }
    return {**index, "manifests": [{**m, "annotations": notes}]}


class MissingImages(RuntimeError):
    pass


def built(repo: Path = REPO_DIR, directory: Path | None = None) -> dict[str, BuiltImage]:
    """The images `make images` built for this checkout's current sources.

    Raises MissingImages (saying to run `make images`) when any is not built."""
    d = directory or images_dir()
    out: dict[str, BuiltImage] = {}
    missing = []
    for p in plan(repo):
        rec = p.record(d)
        if not rec.is_file() or not p.archive(d).is_file():
            missing.append(f"{p.name} ({p.ref})")
            continue
        out[p.name] = BuiltImage.from_dict(json.loads(rec.read_text()))
    if missing:
        raise MissingImages(
            "images not built for the current sources: "
            + ", ".join(missing)
            + "\n  build them with: make images"
        )
    return out
