"""The GitHub workflows: linted by actionlint, and wired to what they claim to run."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
ACTIONLINT = shutil.which("actionlint") or str(Path(sys.executable).parent / "actionlint")


def test_the_three_workflows_exist():
    assert [w.name for w in WORKFLOWS] == ["ci.yml", "images.yml", "regression.yml"]


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_actionlint_finds_nothing(workflow):
    if not Path(ACTIONLINT).is_file():
        pytest.fail(f"no actionlint at {ACTIONLINT}: pip install -e '.[dev]'")
    r = subprocess.run([ACTIONLINT, "-no-color", str(workflow)], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr


def test_ci_runs_the_readme_test_command_and_the_gate_runs_xdc_regress():
    ci = yaml.safe_load((REPO / ".github/workflows/ci.yml").read_text())
    assert any(step.get("run") == "bash .ci/run" for step in ci["jobs"]["test"]["steps"])
    assert "make test" in (REPO / ".ci/run").read_text()
    gate = yaml.safe_load((REPO / ".github/workflows/regression.yml").read_text())
    triggers = gate[True]  # YAML 1.1 reads the key `on` as true
    assert set(triggers) == {"pull_request", "schedule", "workflow_dispatch"}
    assert {"xdc_core/**", "xdc_kfp/**"} <= set(triggers["pull_request"]["paths"])
    assert gate["concurrency"]["cancel-in-progress"] is False
    runs = " ".join(step.get("run", "") for step in gate["jobs"]["gate"]["steps"])
    assert "xdc regress --host" in runs and "--baseline regression/ucf101_split1.json" in runs
