"""The component image, built and run: `make images` builds the CPU flavour (docker/build.sh), then
the pretraining pipeline runs in it as Kubeflow runs it -- each task's compiled command
(`python3 -m kfp.dsl.executor_main`) in a container of the image, as its non-root user, the
pipeline root bind-mounted -- through kfp.local's DockerRunner, on buildah (tests/buildah_runner.py).

The GPU flavour is only resolved here (no GPU on these machines): its pinned dependencies for the
image's Python, by pip inside the built image. docker/README.md says how to check it on a GPU node.

buildah (and mmdebstrap, for the local base) come with .ci/test-tools; without buildah these tests
skip on a developer's machine and fail in CI (CI=true).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from buildah_runner import BUILDAH, buildah_available, buildah_docker_runner
from conftest import TINY_SETTINGS
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from xdc_core.config import build_config
from xdc_kfp.runner import run_local, task_outputs

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
IMAGE = f"xdc:{VERSION}-cpu"  # the tag `make images` gives the CPU flavour
IMAGE_UID = 10001  # docker/Dockerfile's USER


def _need_buildah() -> None:
    if buildah_available():
        return
    message = "buildah is not installed (.ci/test-tools installs it: apt-get install buildah mmdebstrap)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def cpu_image() -> str:
    """The CPU image, built by `make images` (layers cached by buildah: seconds when nothing changed)."""
    _need_buildah()
    r = subprocess.run(["make", "images", "FLAVOURS=cpu", "ENGINE=buildah"], cwd=ROOT, capture_output=True,
                       text=True, timeout=3600, check=False)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    return IMAGE


def test_pipeline_runs_in_the_cpu_image_as_its_user(cpu_image, tiny_sample, tmp_path):
    """decode → embed → k-means → train → evaluate, each task in its own container of the image."""
    out = tmp_path / "kfp"
    pipeline_root = out / "pipeline_root"
    # The container's user writes the run's folders into the mounted root, as on a shared volume.
    pipeline_root.mkdir(parents=True)
    pipeline_root.chmod(0o1777)
    # Only the pipeline root is mounted (as with Docker): the tiny data goes inside it.
    inputs = shutil.copytree(tiny_sample.parent, pipeline_root / "inputs")
    for path in [inputs, *inputs.rglob("*")]:  # readable by the container's user (pytest's folders are 0700)
        path.chmod(0o755 if path.is_dir() else 0o644)
    data = inputs / tiny_sample.name

    with buildah_docker_runner() as containers:
        result = run_local(data, out, build_config(TINY_SETTINGS), 1, {}, image=cpu_image)

    run_dir = Path(result["run_dir"])
    tasks = task_outputs(run_dir)
    # Every file of the run was written inside a container, by the image's uid (this test runs as
    # another user: root, or one that runs buildah through sudo).
    owners = {p.stat().st_uid for p in run_dir.rglob("*")}
    assert owners == {IMAGE_UID}, f"owners of the run's files: {owners}"
    # one container per task, each running the command kfp compiled for it, in the image
    executed = sorted(p.parent.relative_to(run_dir).as_posix() for p in run_dir.rglob("executor_output.json"))
    assert len(containers) == len(executed) >= 10, (len(containers), executed)
    for ran in containers:
        assert ran.image == cpu_image and ran.returncode == 0
        assert "python3 -m kfp.dsl.executor_main" in " ".join(ran.command), ran.command

    by_output = {name: task for task, outputs in tasks.items() for name in outputs}
    for name in ("decoded", "features", "clusters", "encoder", "report"):
        assert name in by_output, f"no task produced {name!r}: {sorted(tasks)}"
    assert set(result["encoders"]) == {"video", "audio"}
    assert all(Path(uri).is_file() for uri in result["encoders"].values())
    report = result["results"]
    for m in ("video", "audio"):
        assert 0.0 <= report["probe"][m]["top1"] <= 1.0, report["probe"][m]
    assert {f"{m}_probe_top1" for m in ("video", "audio")} <= set(result["metrics"])


def _in_image(image: str, command: list[str], volumes: tuple[str, ...] = (), env: tuple[str, ...] = ()) -> str:
    """``command``'s output, run in a container of ``image`` (as its user)."""
    container = subprocess.run([*BUILDAH, "from", "--pull-never", "--quiet", image],
                               capture_output=True, text=True, check=True).stdout.strip()
    try:
        r = subprocess.run([*BUILDAH, "run", "--isolation", "chroot", *(f"--volume={v}" for v in volumes),
                            *(f"--env={e}" for e in env), container, "--", *command],
                           capture_output=True, text=True, timeout=900, check=False)
    finally:
        subprocess.run([*BUILDAH, "rm", container], capture_output=True, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


def test_gpu_flavour_resolves_for_the_image_python(cpu_image, tmp_path):
    """pip, in the image (its Python, its glibc), resolves what the GPU flavour installs from PyPI
    (`pip install --dry-run`): every pin, a binary wheel for torch with its CUDA libraries as wheels,
    and one CUDA runtime: faiss-cpu, no faiss-gpu, no CUDA 12 wheel beside torch's CUDA 13. Only a
    GPU node can run its CUDA: docker/README.md says how to check it there."""
    project = PYPROJECT["project"]
    extras = ("gpu", "pipelines", "storage")  # docker/build.sh's gpu flavour
    requirements = [*PYPROJECT["build-system"]["requires"], *project["dependencies"],
                    *(r for e in extras for r in project["optional-dependencies"][e])]
    work = tmp_path / "gpu"
    work.mkdir()
    work.chmod(0o1777)  # the image's user writes the report
    (work / "requirements.txt").write_text("\n".join(requirements) + "\n")
    mounts, env = [f"{work}:/check"], []
    ca = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE")  # as docker/build.sh hands it to pip
    if ca:
        mounts.append(f"{ca}:/run/pip-ca:ro")
        env.append("PIP_CERT=/run/pip-ca")
    python = _in_image(cpu_image, ["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]).strip()
    _in_image(cpu_image, ["pip", "install", "--quiet", "--dry-run", "--ignore-installed", "--report",
                          "/check/report.json", "-r", "/check/requirements.txt"], tuple(mounts), tuple(env))
    report = json.loads((work / "report.json").read_text())
    assert report["environment"]["python_version"] == python
    resolved = {canonicalize_name(i["metadata"]["name"]): i for i in report["install"]}
    for requirement in map(Requirement, requirements):
        for pin in (s.version for s in requirement.specifier if s.operator == "=="):
            assert resolved[canonicalize_name(requirement.name)]["metadata"]["version"] == pin, requirement
    assert "faiss-cpu" in resolved and "faiss-gpu" not in resolved
    assert not [n for n in resolved if n.startswith("nvidia-") and n.endswith("-cu12")], sorted(resolved)
    for name in ("torch",):
        wheel = resolved[name]["download_info"]["url"].rsplit("/", 1)[-1]
        tag = f"cp{python.replace('.', '')}"
        assert wheel.endswith(".whl") and (f"-{tag}-" in wheel or "-abi3-" in wheel), wheel
        cuda = [r for r in resolved[name]["metadata"].get("requires_dist", []) if r.startswith("nvidia-")]
        assert cuda, f"{name} {wheel} depends on no nvidia-* (CUDA) wheel"
