"""The workflows' supply chain (issue 20, item 8): no secret reaches a job that runs the branch's
code (a step of such a job can change the runner for every later step, through $GITHUB_ENV,
$GITHUB_PATH or as root, so the boundary is the job, not the step), the jobs that hold secrets run
only main's code, and every action is pinned by commit."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

WORKFLOWS = Path(__file__).resolve().parents[1] / ".github" / "workflows"
ACTIONS = Path(__file__).resolve().parents[1] / ".github" / "actions"
CHECKOUT = "actions/checkout@"
# What runs the checked-out code: its build, its install, its command, or the composite action that builds the images.
RUNS_CODE = re.compile(r"\bmake\b|\bpip\b|\.venv/bin/|\bpython3? |docker/build\.sh")
TRUSTED_REF = "${{ github.event.pull_request.base.sha || github.sha }}"


def _flows() -> dict[str, dict]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(WORKFLOWS.glob("*.yml"))}


def _jobs() -> list[tuple[str, str, dict]]:
    return [(name, job_name, job) for name, flow in _flows().items() for job_name, job in flow["jobs"].items()]


def _secrets_in(obj) -> set[str]:
    """The secrets an object's text names, GITHUB_TOKEN (the workflow's own token) apart."""
    return set(re.findall(r"secrets\.(\w+)", yaml.safe_dump(obj))) - {"GITHUB_TOKEN"}


def _runs_branch_code(job: dict) -> bool:
    """Whether a job checks out the triggering commit (a pull request's branch) and runs it."""
    steps = job.get("steps", [])
    branch = [s for s in steps if s.get("uses", "").startswith(CHECKOUT)
              and s.get("with", {}).get("ref") != TRUSTED_REF and "sparse-checkout" not in s.get("with", {})]
    runs = [s for s in steps if RUNS_CODE.search(s.get("run", "")) or s.get("uses", "").startswith("./")]
    return bool(branch and runs)


def test_no_secret_in_workflow_or_job_env():
    for name, flow in _flows().items():
        leaked = [k for k, v in (flow.get("env") or {}).items() if "secrets." in str(v)]
        assert not leaked, f"{name}: workflow-level env hands {leaked} to every step"
        for job_name, job in flow["jobs"].items():
            leaked = [k for k, v in (job.get("env") or {}).items() if "secrets." in str(v)]
            assert not leaked, f"{name} {job_name}: job-level env hands {leaked} to every step"


def test_jobs_that_run_the_branchs_code_hold_no_secret_and_no_write_token():
    branch_jobs = [(n, j) for n, j, job in _jobs() if _runs_branch_code(job)]
    assert {("gate.yml", "build"), ("gate.yml", "compile")} <= {(n, j) for n, j in branch_jobs}
    for name, job_name, job in _jobs():
        if not _runs_branch_code(job) or name in {"images.yml"}:  # images: only main and tags, see below
            continue
        assert not _secrets_in(job) and "GITHUB_TOKEN" not in yaml.safe_dump(job), (name, job_name)
        assert set((job.get("permissions") or {}).values()) <= {"read", "none"}, (name, job_name)
        for step in job["steps"]:
            if step.get("uses", "").startswith(CHECKOUT):
                assert step["with"]["persist-credentials"] is False, (name, job_name)


def test_jobs_with_the_cluster_secrets_run_only_mains_code():
    """The gate job: main's code (the pull request's base) is checked out and run; the branch's
    files come in only as its regression/ folder, which is read as data."""
    with_secrets = [(n, j, job) for n, j, job in _jobs() if _secrets_in(job) and "steps" in job]
    assert sorted((n, j) for n, j, _ in with_secrets) == [("gate.yml", "gate"), ("gate.yml", "ready")]
    for name, job_name, job in with_secrets:
        steps = job["steps"]
        for step in steps:
            w = step.get("with", {})
            if step.get("uses", "").startswith(CHECKOUT):
                trusted = w.get("ref") == TRUSTED_REF and w.get("path") == "trusted"
                data = w.get("sparse-checkout", "").replace("/", "").split() in (["regression"],
                                                                                ["regression", "pyproject.toml"])
                assert trusted or data, (job_name, step)
                assert w["persist-credentials"] is False
            run = step.get("run", "")
            if RUNS_CODE.search(run):
                assert step.get("working-directory") == "trusted" or "trusted/.venv/bin/xdc regress" in run, step
    ready = _flows()["gate.yml"]["jobs"]["ready"]
    used = re.findall(r"secrets\.\w+[^&}]*", yaml.safe_dump(ready, width=10**6))
    assert used and all(re.fullmatch(r"secrets\.\w+ != '' ?", u) for u in used), used  # set or not, never the value


def test_the_push_token_never_shares_a_job_with_the_branchs_build():
    gate = _flows()["gate.yml"]["jobs"]
    assert gate["push"]["permissions"]["packages"] == "write"
    assert not _runs_branch_code(gate["push"]) and not any(s.get("uses", "").startswith(CHECKOUT)
                                                           for s in gate["push"]["steps"])
    assert "packages" not in gate["build"]["permissions"]
    baseline = _flows()["regression-baseline.yml"]["jobs"]["propose"]
    assert not _runs_branch_code(baseline) and not _secrets_in(baseline)


def test_images_workflow_builds_and_pushes_only_main_and_tags():
    """The one job where the push token shares a runner with a build: it runs on pushes to main and
    version tags only, code that is already merged."""
    triggers = _flows()["images.yml"][True]
    assert set(triggers) == {"push", "workflow_dispatch"} and triggers["push"]["branches"] == ["main"]


def test_everything_downstream_of_ready_is_skipped_when_the_gate_cannot_run():
    gate = _flows()["gate.yml"]["jobs"]
    for job_name, job in gate.items():
        if job_name != "ready":
            assert job["if"] == "needs.ready.outputs.run == 'true'" and "ready" in job["needs"], job_name


@pytest.mark.parametrize("path", sorted(WORKFLOWS.glob("*.yml")) + sorted(ACTIONS.glob("*/action.yml")),
                         ids=lambda p: p.name if p.parent == WORKFLOWS else p.parent.name)
def test_actions_are_pinned_by_commit(path):
    uses = re.findall(r"^\s*(?:-\s*)?uses:\s*(\S+)", path.read_text(), re.M)
    remote = [u for u in uses if not u.startswith("./")]
    assert all(re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", u) for u in remote), remote
