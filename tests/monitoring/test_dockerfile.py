"""operator/Dockerfile and worker/Dockerfile agree with the chart, the operator's pod
template, the image table and the lock; and the images `make images` builds from them carry
that configuration and run (as their non-root user) what the chart and the operator start.

The tests marked `images` use the built images (OCI archives in ~/.cache/voicefleet/images)
and build them first when they are missing (buildah, a few minutes cold; `make test` runs
`make images` before pytest)."""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from voicefleet_contract import CONFIG_FILE_KEY, CONFIG_MOUNT_PATH, Env
from voicefleet_operator.render import Owner, render_children
from voicefleet_operator.settings import Settings
from voicefleet_operator.spec import parse_spec
from voicefleet_testbed import imagebuild
from voicefleet_testbed.images import BuiltImage, chart_values, entrypoint, images_dir, plan

from .chart import CHART, REPO, by_kind, template

DOCKERFILES = {
    "operator": REPO / "operator" / "Dockerfile",
    "worker": REPO / "worker" / "Dockerfile",
}
IMAGE_RULES = {"operator": "ghcr.io/voicefleet/operator*", "worker": "ghcr.io/voicefleet/worker*"}


def instructions(name: str = "operator") -> list[tuple[str, str]]:
    text = DOCKERFILES[name].read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def values() -> dict[str, Any]:
    return dict(yaml.safe_load((CHART / "values.yaml").read_text()))


def chart_ports() -> set[int]:
    v = values()
    return {v["operator"]["metricsPort"], v["operator"]["healthPort"], v["webhook"]["port"]}


def worker_children() -> Any:
    """What the operator renders for the example VoiceAgent (ConfigMap, Deployment...)."""
    docs = list(yaml.safe_load_all((REPO / "examples" / "voiceagent.yaml").read_text()))
    va = next(d for d in docs if d["kind"] == "VoiceAgent")
    spec = parse_spec(va["metadata"]["name"], "voice", va["spec"])
    return render_children(
        spec, Owner(spec.name, "voice", "uid-1"), Settings(default_image="worker:test")
    )


def worker_container() -> dict[str, Any]:
    return dict(worker_children().deployment["spec"]["template"]["spec"]["containers"][0])


# --- the Dockerfiles ------------------------------------------------------------------------


def test_runs_as_the_charts_non_root_user() -> None:
    sc = values()["podSecurityContext"]
    users = [rest for op, rest in instructions() if op == "USER"]
    assert users[-1] == f"{sc['runAsUser']}:{sc['runAsGroup']}"
    assert sc["runAsUser"] != 0


@pytest.mark.parametrize("name", ["operator", "worker"])
def test_user_is_numeric_and_not_root(name: str) -> None:
    # runAsNonRoot (restricted Pod Security) can only be verified for a numeric image user
    users = [rest for op, rest in instructions(name) if op == "USER"]
    assert re.fullmatch(r"[1-9]\d*:\d+", users[-1]), users


@pytest.mark.parametrize("name", ["operator", "worker"])
def test_entrypoint_is_what_the_testbed_runs_for_the_image(name: str) -> None:
    table = yaml.safe_load((REPO / "testbed" / "images.yaml").read_text())
    rule = next(r for r in table if r["image"] == IMAGE_RULES[name])
    entry = entrypoint(DOCKERFILES[name].read_text())
    assert entry[1:] == rule["entrypoint"][1:]  # python -m voicefleet_<name>


def test_base_image_and_tools_are_pinned() -> None:
    args = dict(rest.split("=", 1) for op, rest in instructions() if op == "ARG" and "=" in rest)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", args["PYTHON_IMAGE"])
    uv_make = re.search(r"^UV_VERSION := (\S+)", (REPO / "Makefile").read_text(), re.M)
    assert uv_make is not None
    assert f"uv=={uv_make.group(1)}" in DOCKERFILES["operator"].read_text()
    assert f"ghcr.io/astral-sh/uv:{uv_make.group(1)}" in DOCKERFILES["worker"].read_text()
    for name in DOCKERFILES:
        text = DOCKERFILES[name].read_text()
        assert "--frozen" in text and "--no-dev" in text, name


@pytest.mark.parametrize("name", ["operator", "worker"])
def test_copied_paths_exist(name: str) -> None:
    for op, rest in instructions(name):
        if op == "COPY" and not rest.startswith("--from"):
            *sources, _dest = rest.split()
            for src in sources:
                assert (REPO / src).exists(), src


def test_exposes_the_charts_ports() -> None:
    (exposed,) = [rest for op, rest in instructions() if op == "EXPOSE"]
    assert {int(p) for p in exposed.split()} == chart_ports()


def test_worker_exposes_the_pod_templates_ports() -> None:
    (exposed,) = [rest for op, rest in instructions("worker") if op == "EXPOSE"]
    ports = {p["containerPort"] for p in worker_container()["ports"]}
    assert {int(p) for p in exposed.split()} == ports


# --- the built images -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def images() -> dict[str, BuiltImage]:
    return imagebuild.build()  # a no-op when `make images` built these sources already


@pytest.fixture(scope="module")
def buildah(images: dict[str, BuiltImage]) -> imagebuild.Buildah:
    b = imagebuild.Buildah(images_dir())
    for img in images.values():
        b.load(img)
    return b


def config(img: BuiltImage) -> dict[str, Any]:
    return dict(imagebuild.archive_config(Path(img.archive))["config"])


def run_entrypoint(
    b: imagebuild.Buildah, img: BuiltImage, args: list[str], **kw: Any
) -> tuple[int, str, str]:
    cfg = config(img)
    argv = list(cfg.get("Entrypoint") or []) + args
    p = b.run(img.ref, argv, user=cfg["User"], **kw)
    return p.returncode, p.stdout, p.stderr


@pytest.mark.images
def test_archives_hold_the_current_sources_under_their_refs(
    images: dict[str, BuiltImage],
) -> None:
    for p in plan(REPO):
        img = images[p.name]
        assert (img.ref, img.key) == (p.ref, p.key)
        manifest, config_digest, ref = imagebuild.archive_info(Path(img.archive))
        assert (manifest, config_digest, ref) == (img.manifest_digest, img.image_id, img.ref)
        with tarfile.open(img.archive) as t:
            index = json.load(t.extractfile("index.json"))  # type: ignore[arg-type]
        # the name `ctr images import` gives it
        assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == img.ref
    doc = json.loads((images_dir() / "images.json").read_text())
    assert {n: i["ref"] for n, i in doc["images"].items()} == {n: i.ref for n, i in images.items()}


@pytest.mark.images
def test_operator_image_config_is_what_the_chart_expects(images: dict[str, BuiltImage]) -> None:
    cfg = config(images["operator"])
    sc = values()["podSecurityContext"]
    assert cfg["User"] == f"{sc['runAsUser']}:{sc['runAsGroup']}"
    assert {int(p.split("/")[0]) for p in cfg["ExposedPorts"]} == chart_ports()
    assert cfg["Entrypoint"] == entrypoint(DOCKERFILES["operator"].read_text())
    # readOnlyRootFilesystem: Python writes no bytecode next to the sources
    assert "PYTHONDONTWRITEBYTECODE=1" in cfg["Env"]


@pytest.mark.images
def test_worker_image_config_is_what_the_pod_template_expects(
    images: dict[str, BuiltImage],
) -> None:
    cfg = config(images["worker"])
    container = worker_container()
    # the pod template sets no command: the image's entrypoint is the agent
    assert "command" not in container and "args" not in container
    assert cfg["Entrypoint"] == entrypoint(DOCKERFILES["worker"].read_text())
    assert {p["containerPort"] for p in container["ports"]} <= {
        int(p.split("/")[0]) for p in cfg["ExposedPorts"]
    }
    assert re.fullmatch(r"[1-9]\d*:\d+", cfg["User"])
    assert any(e.startswith("PATH=/opt/venv/bin:") for e in cfg["Env"])


@pytest.mark.images
def test_operator_image_takes_every_argument_the_chart_passes(
    images: dict[str, BuiltImage], buildah: imagebuild.Buildah
) -> None:
    template = (CHART / "templates" / "deployment.yaml").read_text()
    flags = set(re.findall(r"^\s*- (--[a-z][a-z-]*)=", template, re.M))
    assert "--default-image" in flags
    code, out, err = run_entrypoint(buildah, images["operator"], ["--help"])
    assert code == 0, err
    assert not flags - set(re.findall(r"--[a-z][a-z-]*", out)), out


@pytest.mark.images
def test_worker_image_reads_the_operators_config_as_its_user(
    images: dict[str, BuiltImage], buildah: imagebuild.Buildah, tmp_path: Path
) -> None:
    """The rendered agent.json, mounted where the pod template mounts the ConfigMap, with the
    template's literal env and none of its Secrets: the worker parses the config and stops
    at the first missing Secret (exit 2, the field named), not at the config."""
    children = worker_children()
    conf = tmp_path / "config"
    conf.mkdir(mode=0o755)
    (conf / CONFIG_FILE_KEY).write_text(children.configmap["data"][CONFIG_FILE_KEY])
    (conf / CONFIG_FILE_KEY).chmod(0o644)
    tmp_path.chmod(0o755)
    env = {e["name"]: e["value"] for e in worker_container()["env"] if "value" in e}
    assert env[Env.CONFIG_FILE].startswith(CONFIG_MOUNT_PATH + "/")
    code, _, err = run_entrypoint(
        buildah, images["worker"], [], env=env, volumes=[f"{conf}:{CONFIG_MOUNT_PATH}:ro"]
    )
    assert code == 2, err
    assert f"invalid configuration: {Env.LIVEKIT_API_KEY}: environment variable is required" in err


@pytest.mark.images
def test_worker_image_imports_its_runtime_as_its_user(
    images: dict[str, BuiltImage], buildah: imagebuild.Buildah
) -> None:
    img = images["worker"]
    p = buildah.run(
        img.ref,
        [
            "python",
            "-c",
            "import os, livekit.agents, livekit.plugins.openai, voicefleet_worker.lifecycle;"
            "print(os.getuid(), os.getgid(), os.environ['HOME'])",
        ],
        user=config(img)["User"],
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["10001", "10001", "/tmp"]


@pytest.mark.images
def test_chart_values_install_the_built_images(images: dict[str, BuiltImage]) -> None:
    v = chart_values(images)
    (dep,) = by_kind(
        template(
            {
                "image.repository": v["image"]["repository"],
                "image.tag": v["image"]["tag"],
                "worker.image.repository": v["worker"]["image"]["repository"],
                "worker.image.tag": v["worker"]["image"]["tag"],
            }
        ),
        "Deployment",
    )
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert container["image"] == images["operator"].ref
    assert f"--default-image={images['worker'].ref}" in container["args"]
    doc = json.loads((images_dir() / "images.json").read_text())
    assert doc["chart_values"] == v
