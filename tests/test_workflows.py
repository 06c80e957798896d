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


def test_the_workflows_exist():
    assert [w.name for w in WORKFLOWS] == ["ci.yml", "gate.yml", "images.yml", "pretraining.yml",
                                           "regression-baseline.yml", "regression.yml"]


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_actionlint_finds_nothing(workflow):
    if not Path(ACTIONLINT).is_file():
        pytest.fail(f"no actionlint at {ACTIONLINT}: pip install -e '.[dev]'")
    r = subprocess.run([ACTIONLINT, "-no-color", str(workflow)], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr


def _flow(name: str) -> dict:
    return yaml.safe_load((REPO / ".github" / "workflows" / name).read_text())


def test_ci_runs_the_readme_test_command():
    ci = _flow("ci.yml")
    assert any(step.get("run") == "bash .ci/run" for step in ci["jobs"]["test"]["steps"])
    assert "make test" in (REPO / ".ci/run").read_text()


def test_the_gates_build_the_branchs_image_and_pass_it_to_xdc_regress():
    """gate.yml builds the GPU image of the commit with `make images`, pushes it tagged by commit,
    compiles the commit's pipeline for that image, and `xdc regress --host` submits that package."""
    gate = _flow("gate.yml")["jobs"]
    build = gate["build"]["steps"]
    uses = [s.get("uses") for s in build]
    assert "./.github/actions/build-images" in uses
    action = yaml.safe_load((REPO / ".github/actions/build-images/action.yml").read_text())
    assert any(s.get("run") == "make images" for s in action["runs"]["steps"])
    assert build[uses.index("./.github/actions/build-images")]["with"]["commit"] == "${{ steps.commit.outputs.short }}"
    ready = " ".join(s.get("run", "") for s in gate["ready"]["steps"])
    assert 'image=$REGISTRY/xdc:$version-gpu-${GITHUB_SHA::12}' in ready
    compile_run = " ".join(s.get("run", "") for s in gate["compile"]["steps"])
    assert '.venv/bin/xdc pipeline compile "${what[@]}" --image "$IMAGE"' in compile_run
    assert gate["compile"]["steps"][-2]["env"]["IMAGE"] == "${{ needs.ready.outputs.image }}"
    push = " ".join(s.get("run", "") for s in gate["push"]["steps"])
    assert 'skopeo copy "oci-archive:$RUNNER_TEMP/xdc-gpu.tar" "docker://$IMAGE"' in push
    run = " ".join(s.get("run", "") for s in gate["gate"]["steps"])
    assert "--host \"$KFP_HOST\" --package gate-pipeline.yaml" in run and "xdc regress" in run
    assert "KF_PIPELINES_SA_TOKEN_PATH" in run and gate["gate"]["steps"][-2]["env"]["KFP_NAMESPACE"]


def test_the_gates_run_when_they_should_one_run_per_branch():
    regression, pretraining = _flow("regression.yml"), _flow("pretraining.yml")
    triggers = regression[True]  # YAML 1.1 reads the key `on` as true
    assert set(triggers) == {"pull_request", "schedule", "workflow_dispatch"}
    assert {"xdc_core/**", "xdc_kfp/**", "components/**", "pipelines/**", "docker/**"} <= \
        set(triggers["pull_request"]["paths"])
    assert regression["jobs"]["evaluation"]["with"]["gate"] == "evaluation"
    assert set(pretraining[True]) == {"schedule", "workflow_dispatch", "pull_request"}
    assert pretraining["jobs"]["pretraining"]["with"]["gate"] == "pretraining"
    assert "'pretraining-gate'" in pretraining["jobs"]["pretraining"]["if"]
    for flow in (regression, pretraining):
        assert flow["concurrency"]["cancel-in-progress"] is True and "github.ref" in flow["concurrency"]["group"]
    baseline = _flow("regression-baseline.yml")
    assert set(baseline[True]) == {"workflow_dispatch"} and baseline["jobs"]["measure"]["with"]["write_baseline"]
    assert "gh pr create" in baseline["jobs"]["propose"]["steps"][-1]["run"]


def test_a_gate_without_secrets_or_baseline_is_skipped_with_its_reason():
    """The ready job: no secrets (a fork) or no baseline → run=false and a notice; the later jobs
    are then skipped (tests/test_workflow_secrets.py checks their conditions)."""
    ready = _flow("gate.yml")["jobs"]["ready"]["steps"][-1]["run"]
    assert "no baseline yet ($baseline): run the regression-baseline workflow" in ready
    assert 'echo "run=false"' in ready and "exit 0" in ready


def test_regression_workflow_baselines_exist_or_are_explained():
    """The files the gates compare with: each there, or the README of regression/ says how to make it."""
    readme = (REPO / "regression" / "README.md").read_text()
    for name in ("ucf101_split1.json", "pretraining_ucf101_split1.json"):
        assert (REPO / "regression" / name).is_file() or name in readme
    assert (REPO / "regression" / "pretraining.yaml").is_file()
