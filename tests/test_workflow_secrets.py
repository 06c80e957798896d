"""The regression workflow's supply chain (issue 20, item 8): its secrets reach only the step that
needs them, never one that runs the branch's build code, and every action is pinned by commit."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

WORKFLOW = Path(__file__).resolve().parents[1] / ".github" / "workflows" / "regression.yml"


def _gate() -> tuple[dict, dict]:
    flow = yaml.safe_load(WORKFLOW.read_text())
    return flow, flow["jobs"]["gate"]


def test_no_secret_in_workflow_or_job_env():
    flow, job = _gate()
    for where, env in (("workflow", flow.get("env", {})), ("job", job.get("env", {}))):
        leaked = [k for k, v in env.items() if "secrets." in str(v)]
        assert not leaked, f"{where}-level env hands {leaked} to every step, `make install` included"


def test_secrets_only_in_steps_that_run_no_install():
    _, job = _gate()
    with_secrets = [s for s in job["steps"] if "secrets." in yaml.safe_dump(s)]
    assert with_secrets, "the gate step needs the cluster's secrets"
    for step in with_secrets:
        assert "make install" not in step.get("run", "") and "pip" not in step.get("run", ""), step
        assert "xdc regress" in step.get("run", ""), step


def test_actions_are_pinned_by_commit():
    _, job = _gate()
    uses = [s["uses"] for s in job["steps"] if "uses" in s]
    assert uses and all(re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", u) for u in uses), uses
