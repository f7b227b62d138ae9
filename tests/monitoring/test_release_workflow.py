"""The release workflow (.github/workflows/release.yml) cannot run here: actionlint checks
it, and these tests check that it publishes what the chart installs."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from voicefleet_testbed.binaries import Binaries

from .chart import CHART, REPO

WORKFLOW = REPO / ".github" / "workflows" / "release.yml"


def actionlint(*files: Path) -> subprocess.CompletedProcess[str]:
    path = Binaries.locate().actionlint
    if not path.is_file():
        pytest.fail(f"actionlint is missing ({path}): run `make binaries`")
    return subprocess.run(
        [str(path), "-no-color", *map(str, files)], capture_output=True, text=True, timeout=60
    )


def steps(job: dict[str, Any], uses: str) -> list[dict[str, Any]]:
    return [s for s in job["steps"] if str(s.get("uses", "")).startswith(uses)]


def test_every_workflow_passes_actionlint() -> None:
    files = sorted((REPO / ".github" / "workflows").glob("*.yml"))
    assert WORKFLOW in files
    out = actionlint(*files)
    assert out.returncode == 0, out.stdout + out.stderr


def test_actionlint_would_catch_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "release.yml"
    broken.write_text(
        WORKFLOW.read_text().replace("needs.version.outputs", "needs.versoin.outputs")
    )
    out = actionlint(broken)
    assert out.returncode != 0 and "versoin" in out.stdout, out.stdout


def test_it_publishes_both_images_multi_arch_and_the_chart_as_oci() -> None:
    wf = yaml.safe_load(WORKFLOW.read_text())
    assert wf[True]["push"]["tags"] == ["v*.*.*"]  # `on:` is YAML 1.1's true
    jobs = wf["jobs"]
    images = jobs["images"]
    names = images["strategy"]["matrix"]["image"]
    assert sorted(names) == ["operator", "worker"]
    for name in names:
        assert (REPO / name / "Dockerfile").is_file()
    (build,) = steps(images, "docker/build-push-action")
    assert build["with"]["file"] == "${{ matrix.image }}/Dockerfile"
    assert set(build["with"]["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert build["with"]["push"] is True
    assert steps(images, "docker/setup-qemu-action")  # arm64 on an amd64 runner
    chart_job = jobs["chart"]
    assert "images" in chart_job["needs"]  # never a chart naming images not pushed yet
    run = "\n".join(s.get("run", "") for s in chart_job["steps"])
    assert 'helm push "dist/voicefleet-$VERSION.tgz" "oci://$REGISTRY/charts"' in run
    assert "helm lint --strict charts/voicefleet" in run


def test_the_images_it_pushes_are_the_ones_the_chart_names() -> None:
    """Pushed as ghcr.io/<owner>/{operator,worker}:<version>; the chart's defaults are
    ghcr.io/voicefleet/{operator,worker} with the chart's appVersion (= the tag's version,
    which the workflow's first job checks)."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["image"]["repository"] == "ghcr.io/voicefleet/operator"
    assert values["worker"]["image"]["repository"] == "ghcr.io/voicefleet/worker"
    assert values["image"]["tag"] == "" and values["worker"]["image"]["tag"] == ""
    wf = yaml.safe_load(WORKFLOW.read_text())
    (build,) = steps(wf["jobs"]["images"], "docker/build-push-action")
    tag = build["with"]["tags"]
    assert tag.endswith("/${{ matrix.image }}:${{ needs.version.outputs.version }}"), tag
    check = "\n".join(s.get("run", "") for s in wf["jobs"]["version"]["steps"])
    assert "pyproject.toml" in check and "Chart.yaml" in check
