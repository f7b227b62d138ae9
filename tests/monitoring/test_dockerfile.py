"""operator/Dockerfile (no engine here to build it) agrees with the chart, the image table
and the lock: its user is the chart's runAsUser, its entrypoint what the testbed runs for
the operator image, its base and tools pinned, everything it copies exists."""

from __future__ import annotations

import re

import yaml

from .chart import CHART, REPO

DOCKERFILE = REPO / "operator" / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def test_runs_as_the_charts_non_root_user() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    uid, gid = values["podSecurityContext"]["runAsUser"], values["podSecurityContext"]["runAsGroup"]
    users = [rest for op, rest in instructions() if op == "USER"]
    assert users[-1] == f"{uid}:{gid}"
    assert uid != 0


def test_entrypoint_is_what_the_testbed_runs_for_the_operator_image() -> None:
    table = yaml.safe_load((REPO / "testbed" / "images.yaml").read_text())
    rule = next(r for r in table if r["image"] == "ghcr.io/voicefleet/operator*")
    (entry,) = [rest for op, rest in instructions() if op == "ENTRYPOINT"]
    assert yaml.safe_load(entry)[1:] == rule["entrypoint"][1:]  # python -m voicefleet_operator


def test_base_image_and_tools_are_pinned() -> None:
    args = dict(rest.split("=", 1) for op, rest in instructions() if op == "ARG" and "=" in rest)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", args["PYTHON_IMAGE"])
    uv_make = re.search(r"^UV_VERSION := (\S+)", (REPO / "Makefile").read_text(), re.M)
    assert uv_make is not None
    assert f"uv=={uv_make.group(1)}" in DOCKERFILE.read_text()
    assert "--frozen" in DOCKERFILE.read_text() and "--no-dev" in DOCKERFILE.read_text()


def test_copied_paths_exist() -> None:
    for op, rest in instructions():
        if op == "COPY" and not rest.startswith("--from"):
            *sources, _dest = rest.split()
            for src in sources:
                assert (REPO / src).exists(), src


def test_exposes_the_charts_ports() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    (exposed,) = [rest for op, rest in instructions() if op == "EXPOSE"]
    assert {int(p) for p in exposed.split()} == {
        values["operator"]["metricsPort"],
        values["operator"]["healthPort"],
        values["webhook"]["port"],
    }
