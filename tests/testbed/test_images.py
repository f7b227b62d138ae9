"""images.py: the decisions behind `make images` (what a Dockerfile reads, which stand-in
serves a base image, cache keys, tags, pruning), table-tested without building anything."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from voicefleet_testbed.images import (
    BuiltImage,
    ImageError,
    MissingImages,
    PythonBase,
    UvBase,
    base_images,
    built,
    chart_repositories,
    context_files,
    copy_sources,
    dockerignore,
    entrypoint,
    ignored,
    image_key,
    image_tag,
    name_in_index,
    normalize,
    parse_dockerfile,
    pick_uv_wheel,
    plan,
    read_archive_index,
    stale_archives,
    stand_in,
)

REPO = Path(__file__).resolve().parents[2]

MULTISTAGE = """\
# syntax=docker/dockerfile:1
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG UV=ghcr.io/astral-sh/uv:0.13.9
FROM ${PYTHON_IMAGE} AS build
COPY --from=$UV /uv /usr/local/bin/uv
RUN echo one \\
 # a comment inside a continuation
 && echo two
COPY --chown=1:1 pyproject.toml uv.lock ./
COPY src/ src/
FROM build AS test
FROM ${PYTHON_IMAGE}
COPY --from=build /opt/venv /opt/venv
COPY --from=0 /x /x
ENTRYPOINT ["python", "-m", "app"]
"""


def test_parse_joins_continuations_and_drops_comments() -> None:
    run = [i for i in parse_dockerfile(MULTISTAGE) if i.op == "RUN"]
    assert [(i.args, i.line) for i in run] == [("echo one && echo two", 6)]
    assert all(not i.op.startswith("#") for i in parse_dockerfile(MULTISTAGE))


@pytest.mark.parametrize(
    ("build_args", "expected"),
    [
        ({}, ["python:3.11.14-slim-bookworm", "ghcr.io/astral-sh/uv:0.13.9"]),
        (
            {"PYTHON_IMAGE": "python:3.11.11-slim-bookworm"},
            ["python:3.11.11-slim-bookworm", "ghcr.io/astral-sh/uv:0.13.9"],
        ),
    ],
)
def test_base_images_resolve_args_and_skip_stages(
    build_args: dict[str, str], expected: list[str]
) -> None:
    assert base_images(MULTISTAGE, build_args, "Dockerfile") == expected


def test_base_image_without_a_value_names_the_line() -> None:
    with pytest.raises(ImageError, match=r"Dockerfile:1: \$BASE has no value"):
        base_images("FROM $BASE\n", {}, "Dockerfile")


def test_copy_sources_are_the_context_paths_only() -> None:
    assert copy_sources(MULTISTAGE, "Dockerfile") == ["pyproject.toml", "uv.lock", "src/"]
    assert copy_sources('COPY ["a b", "c", "/d/"]\n', "D") == ["a b", "c"]
    with pytest.raises(ImageError, match=r"D:1: src/\*\.py: globs"):
        copy_sources("COPY src/*.py /x/\n", "D")


def test_entrypoint_is_the_last_stages() -> None:
    assert entrypoint(MULTISTAGE) == ["python", "-m", "app"]
    assert entrypoint('FROM a\nENTRYPOINT ["x"]\nFROM b\n') == []


@pytest.mark.parametrize(
    ("ref", "full"),
    [
        ("python:3.11.11-slim-bookworm", "docker.io/library/python:3.11.11-slim-bookworm"),
        ("python", "docker.io/library/python:latest"),
        ("astral/uv:1", "docker.io/astral/uv:1"),
        ("ghcr.io/astral-sh/uv:0.13.9", "ghcr.io/astral-sh/uv:0.13.9"),
        ("localhost/x", "localhost/x:latest"),
        ("registry:5000/x:1", "registry:5000/x:1"),
        ("python@sha256:ab", "docker.io/library/python@sha256:ab"),
    ],
)
def test_normalize(ref: str, full: str) -> None:
    assert normalize(ref) == full


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("python:3.11.11-slim-bookworm", PythonBase("bookworm", "3.11")),
        ("docker.io/library/python:3.11-slim-bookworm", PythonBase("bookworm", "3.11")),
        ("python:3.13.1-slim-trixie", PythonBase("trixie", "3.13")),
        ("ghcr.io/astral-sh/uv:0.13.9", UvBase("0.13.9")),
    ],
)
def test_stand_in(ref: str, expected: object) -> None:
    assert stand_in(ref) == expected


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("python:3.12.1-slim-bookworm", "Debian bookworm has Python 3.11, not 3.12"),
        ("python:3.11.1-slim-buster", "no stand-in for Debian suite 'buster'"),
        ("python:3.11.11-bookworm", "no local stand-in"),
        ("ghcr.io/astral-sh/uv:latest", "no local stand-in"),
        ("alpine:3", "no local stand-in"),
    ],
)
def test_stand_in_refuses_what_it_cannot_serve(ref: str, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        stand_in(ref)


def test_stand_in_keys_follow_their_inputs() -> None:
    py = PythonBase("bookworm", "3.11")
    assert py.key("x86_64") == PythonBase("bookworm", "3.11").key("x86_64")
    assert py.key("x86_64") != py.key("aarch64")
    assert UvBase("0.13.9").key("x86_64") != UvBase("0.13.8").key("x86_64")


WHEELS = [
    {"filename": "uv-0.13.9-py3-none-macosx_11_0_arm64.whl"},
    {"filename": "uv-0.13.9-py3-none-musllinux_1_1_x86_64.whl"},
    {"filename": "uv-0.13.9-py3-none-manylinux_2_17_aarch64.manylinux2014_aarch64.whl"},
    {"filename": "uv-0.13.9-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"},
    {"filename": "uv-0.13.9.tar.gz"},
    {"filename": "uv-0.13.10-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"},
]


@pytest.mark.parametrize(
    ("machine", "expected"),
    [
        ("x86_64", "uv-0.13.9-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"),
        ("amd64", "uv-0.13.9-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"),
        ("aarch64", "uv-0.13.9-py3-none-manylinux_2_17_aarch64.manylinux2014_aarch64.whl"),
    ],
)
def test_pick_uv_wheel(machine: str, expected: str) -> None:
    assert pick_uv_wheel(WHEELS, "0.13.9", machine)["filename"] == expected


def test_pick_uv_wheel_without_a_match() -> None:
    with pytest.raises(ImageError, match="no manylinux wheel for riscv64"):
        pick_uv_wheel(WHEELS, "0.13.9", "riscv64")


IGNORE = """\
# comment
.git
**/__pycache__
bench/results
*.log
!keep.log
"""


@pytest.mark.parametrize(
    ("path", "left_out"),
    [
        (".git/config", True),
        ("operator/voicefleet_operator/__pycache__/x.pyc", True),
        ("__pycache__/x.pyc", True),
        ("bench/results/a.json", True),
        ("bench/results.py", False),
        ("a.log", True),
        ("keep.log", False),
        ("sub/a.log", False),  # `*` does not cross `/`
        ("operator/voicefleet_operator/cmd.py", False),
    ],
)
def test_dockerignore(path: str, left_out: bool) -> None:
    assert ignored(path, dockerignore(IGNORE)) is left_out


def _tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_context_files_walk_copy_sources_minus_ignored(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        {
            "a.txt": "a",
            "src/m.py": "m",
            "src/__pycache__/m.pyc": "x",
            "src/sub/n.py": "n",
            "other/o.py": "o",
        },
    )
    rules = dockerignore("**/__pycache__\n")
    assert context_files(tmp_path, ["a.txt", "src/"], rules) == [
        "a.txt",
        "src/m.py",
        "src/sub/n.py",
    ]
    with pytest.raises(ImageError, match=r"COPY missing/: .* does not exist"):
        context_files(tmp_path, ["missing/"], rules)


def test_image_key_changes_with_each_input() -> None:
    base = image_key("FROM x", "", {"a": ["h", False]}, {"x": "k"}, {})
    variants = [
        image_key("FROM y", "", {"a": ["h", False]}, {"x": "k"}, {}),
        image_key("FROM x", ".git", {"a": ["h", False]}, {"x": "k"}, {}),
        image_key("FROM x", "", {"a": ["h2", False]}, {"x": "k"}, {}),
        image_key("FROM x", "", {"a": ["h", True]}, {"x": "k"}, {}),
        image_key("FROM x", "", {"b": ["h", False]}, {"x": "k"}, {}),
        image_key("FROM x", "", {"a": ["h", False]}, {"x": "k2"}, {}),
        image_key("FROM x", "", {"a": ["h", False]}, {"x": "k"}, {"A": "1"}),
    ]
    assert base == image_key("FROM x", "", {"a": ["h", False]}, {"x": "k"}, {})
    assert len({base, *variants}) == len(variants) + 1


def test_image_tag_is_a_valid_content_tag() -> None:
    tag = image_tag("0123456789abcdef" * 4)
    assert tag == "dev-0123456789ab"


def test_plan_for_this_checkout_matches_the_chart() -> None:
    plans = {p.name: p for p in plan(REPO, "x86_64")}
    repos = chart_repositories(REPO)
    assert set(plans) == {"operator", "worker"}
    for name, p in plans.items():
        assert p.repository == repos[name]
        assert p.ref == f"{repos[name]}:{image_tag(p.key)}"
    assert set(plans["worker"].bases.values()) == {PythonBase("bookworm", "3.11"), UvBase("0.13.9")}
    assert set(plans["operator"].bases.values()) == {PythonBase("bookworm", "3.11")}
    # keyed on content, not on time or order
    assert [p.key for p in plan(REPO, "x86_64")] == [plans["operator"].key, plans["worker"].key]


def test_plan_key_follows_the_files_a_build_copies(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        {
            "charts/voicefleet/values.yaml": (
                "image: {repository: r/op}\nworker: {image: {repository: r/wk}}\n"
            ),
            ".dockerignore": "**/__pycache__\n",
            "operator/Dockerfile": "FROM python:3.11.2-slim-bookworm\nCOPY operator/ /src/\n",
            "operator/m.py": "1",
            "worker/Dockerfile": "FROM python:3.11.2-slim-bookworm\nCOPY worker/ /src/\n",
            "worker/m.py": "1",
            "tests/t.py": "1",
        },
    )

    def keys() -> dict[str, str]:
        return {p.name: p.key for p in plan(tmp_path, "x86_64")}

    before = keys()
    (tmp_path / "tests/t.py").write_text("2")  # not in any context
    _tree(tmp_path, {"operator/__pycache__/m.pyc": "x"})  # ignored
    assert keys() == before
    (tmp_path / "operator/m.py").write_text("2")
    after = keys()
    assert after["worker"] == before["worker"] and after["operator"] != before["operator"]
    (tmp_path / "worker/m.py").chmod(0o755)
    assert keys()["worker"] != before["worker"]


def test_stale_archives_keep_the_newest_and_the_current() -> None:
    found = [("worker", f"k{i}", float(i)) for i in range(5)] + [("operator", "o1", 1.0)]
    assert stale_archives(found, ["k4"], keep=2) == [
        ("worker", "k2"),
        ("worker", "k1"),
        ("worker", "k0"),
    ]
    assert ("worker", "k0") not in stale_archives(found, ["k0"], keep=2)


def test_read_archive_index() -> None:
    one = {
        "manifests": [
            {
                "digest": "sha256:aa",
                "annotations": {"org.opencontainers.image.ref.name": "r/x:t"},
            }
        ]
    }
    assert read_archive_index(one) == ("sha256:aa", "r/x:t")
    with pytest.raises(ImageError, match="expected one manifest, found 0"):
        read_archive_index({"manifests": []})


def test_name_in_index_names_the_image_for_containerd_and_oci() -> None:
    index: dict[str, Any] = {
        "schemaVersion": 2,
        "manifests": [{"digest": "sha256:aa", "size": 1, "annotations": {"x": "y"}}],
    }
    named = name_in_index(index, "ghcr.io/voicefleet/worker:dev-1")
    (m,) = named["manifests"]
    assert m["annotations"] == {
        "x": "y",
        "io.containerd.image.name": "ghcr.io/voicefleet/worker:dev-1",
        "org.opencontainers.image.ref.name": "ghcr.io/voicefleet/worker:dev-1",
    }
    assert (named["schemaVersion"], m["digest"], m["size"]) == (2, "sha256:aa", 1)
    assert index["manifests"] == [  # the input is left as it was
        {"digest": "sha256:aa", "size": 1, "annotations": {"x": "y"}}
    ]


def test_built_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(
        MissingImages, match=r"(?s)operator \(ghcr.io/voicefleet/operator:dev-.*make images"
    ):
        built(REPO, tmp_path)


def test_built_reads_records_and_names_a_bad_one(tmp_path: Path) -> None:
    rec: dict[str, object] = {}
    for p in plan(REPO):
        p.archive(tmp_path).write_bytes(b"")
        rec = {
            "name": p.name,
            "ref": p.ref,
            "repository": p.repository,
            "tag": p.tag,
            "archive": str(p.archive(tmp_path)),
            "image_id": "sha256:1",
            "manifest_digest": "sha256:2",
            "key": p.key,
            "archive_bytes": 0,
            "size_bytes": 0,
            "built_at": "now",
            "build_seconds": 1.0,
        }
        p.record(tmp_path).write_text(json.dumps(rec))
    got = built(REPO, tmp_path)
    assert got["worker"] == BuiltImage.from_dict(rec)
    del rec["image_id"]
    with pytest.raises(ImageError, match="missing field image_id"):
        BuiltImage.from_dict(rec)
