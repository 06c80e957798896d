"""Multi-node training's PyTorchJob (xdc_kfp/training_job.py): the manifest it renders, checked
against the Kubeflow Training Operator's CRD schema (vendored in manifests/tests/crds/, strict:
a field the CRD does not know fails, as the API server would silently prune it), the pods in it
against the Kubernetes core/v1 schemas (kubernetes-validate, strict), and against the rules of
the operator's admission webhook; the reading of a job's status; and run_pytorchjob through the
real `kubernetes` client against a small fake of the API server on loopback, which keeps
PyTorchJobs as the API server would and plays the operator's part by a script of statuses.

checkov's scan of the same job is in tests/test_manifests.py, with the other manifests'.
"""

from __future__ import annotations

import fnmatch
import json
import re
import threading
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import jsonschema
import kubernetes_validate
import pytest
import yaml

from xdc_core.config import load_config, preset_path
from xdc_core.errors import ConfigError, RunError
from xdc_kfp import training_job as tj
from xdc_kfp.placement import Placement

# the CPU requests as a pipeline resolves them from its settings
PLACEMENT = Placement().resolved(load_config(preset_path("paper")))

REPO = Path(__file__).resolve().parents[1]
CRD = REPO / "manifests" / "tests" / "crds" / "kubeflow.org_pytorchjobs.yaml"
K8S_VERSIONS = ["1.30.0", kubernetes_validate.utils.latest_version()]
IMAGE = "ghcr.io/xdc-project/xdc:0.1.0-gpu"
RUN_ID = "5c1f0a2e-7d3b-4c8e-9b1a-0123456789ab"  # a KFP run id is a UUID


def _strict(schema: dict) -> dict:
    """The CRD's schema with unknown fields rejected wherever it lists the fields
    (``properties``) and does not say to keep unknown ones: the API server prunes those silently,
    so a misspelt field would vanish instead of failing."""
    schema = dict(schema)
    if "properties" in schema and "additionalProperties" not in schema \
            and not schema.get("x-kubernetes-preserve-unknown-fields"):
        schema["additionalProperties"] = False
    for key in ("properties", "patternProperties"):
        if key in schema:
            schema[key] = {k: _strict(v) for k, v in schema[key].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            schema[key] = _strict(schema[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in schema:
            schema[key] = [_strict(s) for s in schema[key]]
    return schema


def _crd_version() -> dict:
    crd = yaml.safe_load(CRD.read_text())
    return next(v for v in crd["spec"]["versions"] if v["name"] == tj.VERSION)


SCHEMA = _strict(_crd_version()["schema"]["openAPIV3Schema"])


def _webhook_errors(job: dict) -> list[str]:
    """The checks of the Training Operator's validating webhook for PyTorchJobs
    (pkg/webhooks/pytorch/pytorchjob_webhook.go and pkg/webhooks/utils/utils.go, same repository
    as the CRD), which a schema cannot express, and the values the CRD's descriptions list."""
    errors = []
    name = job["metadata"]["name"]
    if not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 63:
        errors.append(f"metadata.name {name!r} is not a DNS-1035 label")
    specs = job["spec"]["pytorchReplicaSpecs"]
    for rtype, spec in specs.items():
        if rtype not in ("Master", "Worker"):
            errors.append(f"replica type {rtype} not supported")
        containers = spec["template"]["spec"].get("containers") or []
        if not any(c.get("name") == "pytorch" for c in containers):
            errors.append(f"{rtype}: no container named pytorch")
        if any(not c.get("image") for c in containers):
            errors.append(f"{rtype}: a container without image")
        if rtype == "Master" and spec.get("replicas") != 1:
            errors.append("Master.replicas must be 1")
        if rtype == "Worker" and spec.get("replicas", 1) < 1:
            errors.append("Worker.replicas must be at least 1")
        if spec.get("restartPolicy", "Never") not in ("Always", "OnFailure", "Never", "ExitCode"):
            errors.append(f"{rtype}: restartPolicy {spec['restartPolicy']}")
    if job["spec"].get("runPolicy", {}).get("cleanPodPolicy", "None") not in ("None", "Running", "All"):
        errors.append("runPolicy.cleanPodPolicy")
    return errors


def _validate(job: dict) -> None:
    """Everything the API server and the operator would check before the job runs: the CRD's
    schema, each replica's pod template as core/v1 (with the job's metadata as ObjectMeta), and
    the webhook's rules. Raises on the first problem."""
    jsonschema.validate(job, SCHEMA)
    for version in K8S_VERSIONS:
        for spec in job["spec"]["pytorchReplicaSpecs"].values():
            # A PodTemplate is the core/v1 kind that holds exactly a PodTemplateSpec.
            wrapper = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": job["metadata"],
                       "template": spec["template"]}
            kubernetes_validate.validate(wrapper, version, strict=True)
    errors = _webhook_errors(job)
    if errors:
        raise AssertionError("; ".join(errors))


def _render(nodes: int = 2, gpus: int = 1, placement: Placement | None = None, **kw) -> dict:
    return tj.pytorchjob_manifest(tj.job_name(RUN_ID, "train-video-2"), IMAGE, nodes, gpus,
                                  tj.torchrun_command(gpus, ["step", "train", "--out", "s3://runs/r/encoder"]),
                                  placement or PLACEMENT, **kw)


def _pod(job: dict, rtype: str) -> dict:
    return job["spec"]["pytorchReplicaSpecs"][rtype]["template"]["spec"]


# ---- the manifest against the CRD --------------------------------------------------------------


def test_vendored_crd_is_the_training_operators_pytorchjob():
    crd = yaml.safe_load(CRD.read_text())
    assert crd["metadata"]["name"] == "pytorchjobs.kubeflow.org"
    assert (crd["spec"]["group"], crd["spec"]["names"]["kind"], crd["spec"]["names"]["plural"]) == \
        (tj.GROUP, tj.KIND, tj.PLURAL)
    assert "github.com/kubeflow/training-operator/blob/c20bf65e03b85543c0b2ff25b14c7e335cce34f9/" in CRD.read_text()
    spec = _crd_version()["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["required"] == ["pytorchReplicaSpecs"]
    assert spec["properties"]["nprocPerNode"] == {"type": "string"}


@pytest.mark.parametrize("nodes", [2, 4])
@pytest.mark.parametrize("gpus", [1, 8])
def test_rendered_job_validates(nodes, gpus):
    job = _render(nodes, gpus)
    _validate(job)
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert (specs["Master"]["replicas"], specs["Worker"]["replicas"]) == (1, nodes - 1)
    assert job["spec"]["nprocPerNode"] == str(gpus)
    assert "elasticPolicy" not in job["spec"]
    for rtype in tj.REPLICAS:
        (c,) = _pod(job, rtype)["containers"]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == c["resources"]["requests"]["nvidia.com/gpu"] == str(gpus)
        assert f"--nproc-per-node={gpus}" in c["command"] and c["command"][0] == "torchrun"
        assert c["image"] == IMAGE


def test_template_as_shipped_validates():
    """manifests/templates/pytorchjob.yaml is also an example an operator may read or apply."""
    _validate(yaml.safe_load(tj.template_text()))


def test_the_checks_can_fail():
    """Each layer of _validate catches what it is there for."""
    job = _render()
    job["spec"]["runPolicy"]["cleanupPodPolicy"] = job["spec"]["runPolicy"].pop("cleanPodPolicy")  # misspelt
    with pytest.raises(jsonschema.ValidationError, match="cleanupPodPolicy"):
        _validate(job)
    job = _render()
    job["spec"]["nprocPerNode"] = 8  # an int where the CRD wants a string
    with pytest.raises(jsonschema.ValidationError):
        _validate(job)
    job = _render()
    job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["nodeSelecter"] = {"a": "b"}  # misspelt
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(job)
    job = _render()
    job["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"] = 2
    with pytest.raises(AssertionError, match="Master.replicas must be 1"):
        _validate(job)
    job = _render()
    _pod(job, "Worker")["containers"][0]["name"] = "main"
    with pytest.raises(AssertionError, match="no container named pytorch"):
        _validate(job)


# ---- what the manifest says ----------------------------------------------------------------------


def test_pods_run_like_the_pipelines_gpu_tasks():
    job = _render(4, 8)
    p = PLACEMENT
    for rtype in tj.REPLICAS:
        pod = _pod(job, rtype)
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        assert pod["securityContext"]["runAsUser"] == pod["securityContext"]["runAsGroup"] == 10001
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        (c,) = pod["containers"]
        ctx = c["securityContext"]
        assert ctx["readOnlyRootFilesystem"] is True and ctx["allowPrivilegeEscalation"] is False
        assert ctx["capabilities"] == {"drop": ["ALL"]}
        shm = next(v for v in pod["volumes"] if v["name"] == "dshm")["emptyDir"]
        assert shm == {"medium": "Memory", "sizeLimit": p.shm_size}
        assert {"name": "dshm", "mountPath": "/dev/shm"} in c["volumeMounts"]
        assert c["resources"]["requests"] == {"cpu": p.gpu_cpu, "memory": p.gpu_memory, "nvidia.com/gpu": "8"}
        assert c["resources"]["limits"] == {"memory": "64Gi", "nvidia.com/gpu": "8"}  # 48Gi + the 16Gi /dev/shm
        env = {e["name"]: e for e in c["env"]}
        assert env["XDC_S3_ACCESS_KEY"]["valueFrom"] == {"secretKeyRef": {"name": p.s3_secret, "key": "accesskey"}}
        assert env["XDC_S3_SECRET_KEY"]["valueFrom"] == {"secretKeyRef": {"name": p.s3_secret, "key": "secretkey"}}
        assert (env["XDC_S3_ENDPOINT"]["value"], env["XDC_S3_SECURE"]["value"]) == (p.s3_endpoint, "false")
        assert "XDC_PUSHGATEWAY" not in env
    assert _pod(job, "Master") == _pod(job, "Worker")  # one pod for every node
    assert job["spec"]["runPolicy"]["cleanPodPolicy"] == "Running"
    assert job["spec"]["runPolicy"]["backoffLimit"] >= 1


def test_placement_and_extra_settings_reach_every_pod():
    p = Placement(accelerator="amd.com/gpu", gpu_node_label=("pool", "mi300"), gpu_cpu="32", gpu_memory="200Gi",
                  shm_size="512Mi", s3_secret="xdc-s3", s3_secret_keys=("ak", "sk"), s3_endpoint="storage.googleapis.com",
                  s3_secure=True, run_as_user=20002, pushgateway="xdc-pushgateway.xdc:9091")
    job = _render(3, 2, p, namespace="ml-team", env={"XDC_RUN_ID": RUN_ID}, labels={"xdc/run-id": "r1"})
    _validate(job)
    assert job["metadata"]["namespace"] == "ml-team"
    assert job["metadata"]["labels"]["xdc/run-id"] == "r1"
    for rtype in tj.REPLICAS:
        template = job["spec"]["pytorchReplicaSpecs"][rtype]["template"]
        assert template["metadata"]["labels"]["xdc/run-id"] == "r1"
        pod = template["spec"]
        assert pod["nodeSelector"] == {"pool": "mi300"}
        assert [t["key"] for t in pod["tolerations"]] == ["amd.com/gpu"]
        assert pod["securityContext"]["runAsUser"] == 20002
        (c,) = pod["containers"]
        assert c["resources"]["requests"] == {"cpu": "32", "memory": "200Gi", "amd.com/gpu": "2"}
        assert c["resources"]["limits"] == {"memory": "205312Mi", "amd.com/gpu": "2"}  # 200Gi + 512Mi
        env = {e["name"]: e for e in c["env"]}
        assert env["XDC_S3_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "xdc-s3", "key": "ak"}
        assert env["XDC_S3_SECURE"]["value"] == "true"
        assert env["XDC_PUSHGATEWAY"]["value"] == "xdc-pushgateway.xdc:9091"
        assert env["XDC_RUN_ID"]["value"] == RUN_ID


def test_rendering_does_not_change_the_template():
    before = tj.template_text()
    first = _render(4, 8)
    _render(2, 1)
    assert tj.template_text() == before and _render(4, 8) == first


def test_memory_limit_adds_quantities_of_any_unit():
    assert tj._add_quantities("1.5Gi", "512Mi") == "2Gi"
    assert tj._add_quantities("500M", "12Mi") == str(500_000_000 + 12 * 2**20)  # decimal units: bytes
    with pytest.raises(ConfigError, match="not memory quantities such as 48Gi"):
        tj._add_quantities("lots", "16Gi")


def test_torchrun_reads_what_the_operator_sets():
    """The command's $(VAR)s are the variables the operator puts on each pod (PET_NNODES,
    PET_NODE_RANK, MASTER_ADDR, MASTER_PORT: pkg/controller.v1/pytorch/envvar.go and master.go),
    and torchrun (the installed torch) parses the command as meant."""
    from torch.distributed.run import get_args_parser

    cmd = tj.torchrun_command(8, ["step", "train", "--modality", "video"])
    env = {"PET_NNODES": "4", "PET_NODE_RANK": "2", "MASTER_ADDR": "xdc-x-master-0", "MASTER_PORT": "23456"}
    assert set(re.findall(r"\$\((\w+)\)", " ".join(cmd))) == set(env)
    expanded = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in cmd[1:]]
    args = get_args_parser().parse_args(expanded)
    assert (args.nnodes, args.nproc_per_node, args.node_rank) == ("4", "8", 2)
    assert (args.master_addr, args.master_port, args.module) == ("xdc-x-master-0", 23456, True)
    assert (args.training_script, args.training_script_args) == ("xdc_cli.main", ["step", "train", "--modality", "video"])


# ---- one template, in the package and in manifests/ ----------------------------------------------


def test_manifests_template_is_the_packages():
    link = REPO / "manifests" / "templates" / "pytorchjob.yaml"
    assert link.is_symlink(), "manifests/templates/pytorchjob.yaml must link to the package's template"
    assert link.resolve() == (REPO / "xdc_kfp" / tj.TEMPLATE).resolve()
    assert link.read_text() == tj.template_text()


def test_template_ships_in_the_package():
    """pyproject's package data covers the template, so an installed xdc (the images: pip install
    ./) has it."""
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert any(fnmatch.fnmatch(tj.TEMPLATE, pattern) for pattern in data.get("xdc_kfp", [])), data


def test_a_broken_template_is_named(monkeypatch):
    doc = yaml.safe_load(tj.template_text())
    del doc["spec"]["pytorchReplicaSpecs"]["Worker"]
    monkeypatch.setattr(tj, "template_text", lambda: yaml.safe_dump(doc))
    with pytest.raises(RunError, match=r"xdc_kfp/templates/pytorchjob.yaml must have exactly the replicas"):
        _render()


# ---- invalid arguments ---------------------------------------------------------------------------


@pytest.mark.parametrize("change, message", [
    ({"nodes": 1}, "nodes must be an integer >= 2, got 1"),
    ({"nodes": 0}, "nodes must be an integer >= 2"),
    ({"nodes": True}, "nodes must be an integer >= 2"),
    ({"nodes": "4"}, "nodes must be an integer >= 2"),
    ({"gpus_per_node": 0}, "gpus_per_node must be an integer >= 1, got 0"),
    ({"gpus_per_node": 1.5}, "gpus_per_node must be an integer >= 1"),
    ({"name": "Train-Video"}, "is not a DNS-1035 label"),
    ({"name": "2-train"}, "is not a DNS-1035 label"),
    ({"name": "train_video"}, "is not a DNS-1035 label"),
    ({"name": "a" * 64}, "is not a DNS-1035 label"),
    ({"name": "a" * 55}, "pods and Services"),  # aaa...-worker-0 is over 63
    ({"image": ""}, "image must be an image reference"),
    ({"command": []}, "command must be a non-empty list of strings"),
    ({"command": "torchrun -m xdc_cli.main"}, "command must be a non-empty list of strings"),
    ({"command": ["torchrun", "--nproc-per-node=4", "-m", "xdc_cli.main"]},
     "--nproc-per-node=4, but gpus_per_node is 8"),
    ({"namespace": "My_NS"}, "namespace 'My_NS' is not a namespace name"),
])
def test_invalid_arguments_are_named(change, message):
    args = {"name": "xdc-train-video-2-0123456789", "image": IMAGE, "nodes": 2, "gpus_per_node": 8,
            "command": tj.torchrun_command(8, ["step", "train"]), "placement": PLACEMENT} | change
    with pytest.raises(ConfigError, match=re.escape(message)):
        tj.pytorchjob_manifest(**args)


def test_all_bad_arguments_are_named_at_once():
    with pytest.raises(ConfigError) as err:
        tj.pytorchjob_manifest("BAD", IMAGE, 1, 0, ["x"], PLACEMENT)
    assert all(s in str(err.value) for s in ("name 'BAD'", "nodes must", "gpus_per_node must"))


def test_env_may_not_override_the_templates():
    with pytest.raises(ConfigError, match="XDC_S3_ENDPOINT"):
        _render(env={"XDC_S3_ENDPOINT": "elsewhere:9000"})


def test_torchrun_command_needs_a_gpu():
    with pytest.raises(ConfigError, match="gpus_per_node must be an integer >= 1"):
        tj.torchrun_command(0, ["step", "train"])


# ---- names ---------------------------------------------------------------------------------------


def test_job_name_is_deterministic_distinct_and_valid():
    name = tj.job_name(RUN_ID, "train-video-2")
    assert name == tj.job_name(RUN_ID, "train-video-2")  # every try of the step finds the same job
    assert name.startswith("xdc-train-video-2-")
    others = {tj.job_name(RUN_ID, "train-audio-2"), tj.job_name(RUN_ID, "train-video-3"),
              tj.job_name("another-run", "train-video-2")}
    assert name not in others and len(others) == 3
    for step in ("train-video-2", "Train Video #2", "x" * 200, "___", "train/video/2"):
        n = tj.job_name(RUN_ID, step)
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", n) and len(n) <= 48, n
        # The operator's pod names still fit a label at 10 000 nodes.
        assert len(f"{n}-worker-9998") <= 63


@pytest.mark.parametrize("run_id, step", [("", "train-video-2"), ("  ", "train-video-2"), (RUN_ID, "")])
def test_job_name_needs_a_run_and_a_step(run_id, step):
    with pytest.raises(ConfigError, match="is empty"):
        tj.job_name(run_id, step)


def test_current_namespace(tmp_path, monkeypatch):
    assert tj.current_namespace({"KFP_NAMESPACE": "team-a"}) == "team-a"
    sa = tmp_path / "namespace"
    sa.write_text("team-b\n")
    monkeypatch.setattr(tj, "_SA_NAMESPACE", sa)
    assert tj.current_namespace({}) == "team-b"
    monkeypatch.setattr(tj, "_SA_NAMESPACE", tmp_path / "missing")
    assert tj.current_namespace({}) == "xdc"


# ---- the status ----------------------------------------------------------------------------------


def _cond(type_: str, status: str = "True", reason: str = "", message: str = "") -> dict:
    return {"type": type_, "status": status, "reason": reason or f"PyTorchJob{type_}", "message": message,
            "lastTransitionTime": "2026-01-01T00:00:00Z", "lastUpdateTime": "2026-01-01T00:00:00Z"}


STATUS_SCHEMA = SCHEMA["properties"]["status"]
STATUSES = {
    # As the operator writes them (pkg/util/status.go): one condition per type, in order of change.
    "new": ({}, tj.PENDING),
    "created": ({"conditions": [_cond("Created")]}, tj.CREATED),
    "running": ({"conditions": [_cond("Created"), _cond("Running")],
                 "replicaStatuses": {"Master": {"active": 1}, "Worker": {"active": 3}}}, tj.RUNNING),
    # A Restarting condition replaces Running, and the other way round.
    "restarting": ({"conditions": [_cond("Created"), _cond("Restarting")],
                    "replicaStatuses": {"Master": {"active": 1}, "Worker": {"active": 2, "failed": 1}}}, tj.RESTARTING),
    "running again": ({"conditions": [_cond("Created"), _cond("Running")]}, tj.RUNNING),
    # Succeeded turns Running False.
    "succeeded": ({"conditions": [_cond("Created"), _cond("Running", "False"), _cond("Succeeded")],
                   "replicaStatuses": {"Master": {"succeeded": 1}, "Worker": {"succeeded": 3}}}, tj.SUCCEEDED),
    "failed": ({"conditions": [_cond("Created"), _cond("Running", "False"),
                               _cond("Failed", message="PyTorchJob xdc/x is failed because 1 Master replica(s) failed.")],
                "replicaStatuses": {"Master": {"failed": 1}, "Worker": {"active": 1}}}, tj.FAILED),
    "suspended": ({"conditions": [_cond("Created"), _cond("Running", "False"), _cond("Suspended")]}, tj.SUSPENDED),
    "resumed": ({"conditions": [_cond("Created"), _cond("Suspended", "False", "PyTorchJobResumed"), _cond("Running")]},
                tj.RUNNING),
}


@pytest.mark.parametrize("case", STATUSES)
def test_job_state(case):
    status, phase = STATUSES[case]
    jsonschema.validate(status, STATUS_SCHEMA)  # the fixtures are statuses the CRD allows
    state = tj.job_state(status)
    assert state.phase == phase
    assert state.finished == (phase in (tj.SUCCEEDED, tj.FAILED))


def test_job_state_carries_the_reason_and_the_pods():
    state = tj.job_state(STATUSES["failed"][0])
    assert (state.reason, state.message) == ("PyTorchJobFailed", "PyTorchJob xdc/x is failed because 1 Master replica(s) failed.")
    assert state.replicas == "Master: 1 failed; Worker: 1 active"
    assert state.describe() == ("Failed: PyTorchJobFailed - PyTorchJob xdc/x is failed because 1 Master replica(s) "
                                "failed. (Master: 1 failed; Worker: 1 active)")
    assert tj.job_state(None) == tj.JobState(tj.PENDING)
    assert tj.job_state({"conditions": None}).describe() == "Pending"


def test_failed_wins_over_whatever_follows():
    """After Failed the operator changes nothing, but a status read in between may hold both."""
    status = {"conditions": [_cond("Failed"), _cond("Succeeded")]}
    assert tj.job_state(status).phase == tj.FAILED


# ---- creating and waiting, through the real client -----------------------------------------------


class FakeApiServer:
    """The part of the Kubernetes API a PyTorchJob's creator uses, on 127.0.0.1: create (409 if
    the name exists), get (404 if not), delete (foreground: the job lingers a few gets); errors
    to answer by method; and, standing in for the operator, a script of statuses for each job
    (``script[name]``, taken by the job its create makes, or ``_script`` in a job put in
    ``jobs`` directly), which each get moves one step along."""

    PATH = re.compile(r"/apis/kubeflow\.org/v1/namespaces/([^/]+)/pytorchjobs(?:/([^/]+))?")

    def __init__(self) -> None:
        self.jobs: dict[str, dict] = {}
        self.script: dict[str, list[dict]] = {}
        self.errors: dict[str, list[int]] = {}
        self.requests: list[tuple[str, str, dict]] = []
        self.created: list[dict] = []
        self.gets_until_gone = 0  # a deleted job lingers for this many gets (foreground deletion)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, code: int, body: dict) -> None:
                data = json.dumps({k: v for k, v in body.items() if not k.startswith("_")}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _status(self, code: int, reason: str, message: str) -> None:
                self._reply(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                                   "reason": reason, "code": code})

            def _handle(self, method: str) -> None:
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else {}
                server.requests.append((method, url.path, parse_qs(url.query) | {"body": body}))
                m = FakeApiServer.PATH.fullmatch(url.path)
                if not m:
                    return self._status(404, "NotFound", f"the server could not find the requested resource {url.path}")
                if server.errors.get(method):
                    code = server.errors[method].pop(0)
                    return self._status(code, {403: "Forbidden", 404: "NotFound"}.get(code, "InternalError"),
                                        f"injected {code}")
                name = m.group(2)
                if method == "POST":
                    name = body["metadata"]["name"]
                    if name in server.jobs:
                        return self._status(409, "AlreadyExists", f'pytorchjobs.kubeflow.org "{name}" already exists')
                    server.jobs[name] = body | {"metadata": body["metadata"] | {"creationTimestamp": "2026-01-01T00:00:00Z"},
                                                "_script": server.script.pop(name, [])}
                    server.created.append(body)
                    return self._reply(201, server.jobs[name])
                job = server.jobs.get(name)
                if job is None:
                    return self._status(404, "NotFound", f'pytorchjobs.kubeflow.org "{name}" not found')
                if method == "GET":
                    if job.get("_deleting"):
                        if server.gets_until_gone <= 0:
                            del server.jobs[name]
                            return self._status(404, "NotFound", f'pytorchjobs.kubeflow.org "{name}" not found')
                        server.gets_until_gone -= 1
                    elif job.get("_script"):
                        job["status"] = job["_script"].pop(0)
                    return self._reply(200, job)
                if method == "DELETE":
                    job["_deleting"] = True
                    return self._reply(200, {"kind": "Status", "status": "Success"})
                return self._status(405, "MethodNotAllowed", method)

            def do_POST(self):
                self._handle("POST")

            def do_GET(self):
                self._handle("GET")

            def do_DELETE(self):
                self._handle("DELETE")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def methods(self) -> list[str]:
        return [m for m, _, _ in self.requests]


@pytest.fixture
def apiserver():
    server = FakeApiServer()
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.fixture
def api(apiserver):
    """A real kubernetes.client.CustomObjectsApi for the fake server, as from a kubeconfig."""
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = apiserver.url
    return client.CustomObjectsApi(client.ApiClient(configuration))


class Clock:
    """Time that passes only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.now += seconds


def _run(api, job: dict, timeout_s: float = 3600, poll_s: float = 10) -> tuple[tj.JobState, list[str], Clock]:
    clock, lines = Clock(), []
    state = tj.run_pytorchjob(job, timeout_s, poll_s, lines.append, api=api, clock=clock, sleep=clock.sleep)
    return state, lines, clock


def _script(*cases: str) -> list[dict]:
    return [STATUSES[c][0] for c in cases]


def test_creates_the_job_and_waits_until_it_succeeds(apiserver, api):
    job = _render(4, 8)
    name = job["metadata"]["name"]
    apiserver.script[name] = _script("created", "running", "running", "restarting", "running again", "succeeded")
    state, lines, clock = _run(api, job)
    assert state.phase == tj.SUCCEEDED
    assert apiserver.created == [job]  # what reached the API server is the rendered manifest, once
    assert apiserver.requests[0][1] == "/apis/kubeflow.org/v1/namespaces/xdc/pytorchjobs"
    assert apiserver.methods() == ["POST"] + ["GET"] * 6
    assert clock.now == 60  # six polls, 10 s apart
    assert lines[0] == f"PyTorchJob xdc/{name}: created (4 nodes x 8 GPUs)"
    phases = [re.match(rf"PyTorchJob xdc/{name}: (\w+)", line).group(1) for line in lines[1:]]
    # Every change is logged once: "running" twice in a row is one line.
    assert phases == ["Pending", "Created", "Running", "Restarting", "Running", "Succeeded"]
    assert "(Master: 1 active; Worker: 2 active, 1 failed)" in lines[4]


def test_a_failed_job_raises_with_the_operators_message(apiserver, api):
    job = _render()
    apiserver.script[job["metadata"]["name"]] = _script("created", "running", "failed")
    with pytest.raises(RunError, match=r"failed: Failed: PyTorchJobFailed - PyTorchJob xdc/x is failed because "
                                       r"1 Master replica\(s\) failed\..*kubectl -n xdc logs"):
        _run(api, job)
    assert "DELETE" not in apiserver.methods()  # a failed job stays, for its pods' logs


def test_a_retried_task_attaches_to_the_running_job(apiserver, api):
    job = _render()
    name = job["metadata"]["name"]
    apiserver.jobs[name] = job | {"metadata": job["metadata"] | {"creationTimestamp": "2026-01-01T00:00:00Z"},
                                  "status": STATUSES["running"][0], "_script": _script("running", "succeeded")}
    state, lines, _ = _run(api, job)
    assert state.phase == tj.SUCCEEDED
    assert apiserver.created == []  # no second job, no second training
    assert "exists already (created 2026-01-01T00:00:00Z, Running): a retried task; attaching to it" in lines[0]


def test_a_retried_task_replaces_a_failed_job(apiserver, api):
    job = _render()
    name = job["metadata"]["name"]
    apiserver.jobs[name] = job | {"status": STATUSES["failed"][0]}
    apiserver.gets_until_gone = 2  # its pods take a while to go
    apiserver.script[name] = _script("running", "succeeded")
    state, lines, _ = _run(api, job)
    assert state.phase == tj.SUCCEEDED
    assert apiserver.methods() == ["POST", "GET", "DELETE", "GET", "GET", "GET", "POST", "GET", "GET"]
    delete = next(q for m, _, q in apiserver.requests if m == "DELETE")
    assert delete.get("propagationPolicy") == ["Foreground"] or delete["body"].get("propagationPolicy") == "Foreground"
    assert apiserver.created == [job]
    assert any("deleting it: an earlier try of this step left it failed" in line for line in lines)
    assert any("created again" in line for line in lines)


def test_a_job_past_its_time_is_deleted(apiserver, api):
    job = _render()
    apiserver.script[job["metadata"]["name"]] = _script("created", "running", "running", "running", "running")
    with pytest.raises(RunError, match="did not finish within 25 s .*it was deleted"):
        _run(api, job, timeout_s=25, poll_s=10)
    assert apiserver.methods()[-1] == "DELETE"
    assert apiserver.methods().count("GET") == 3  # at 10, 20 and 25 s


def test_a_job_that_stays_pending_gets_a_hint(apiserver, api):
    job = _render()
    apiserver.script[job["metadata"]["name"]] = _script(*["new"] * 13, "created", "running", "succeeded")
    _, lines, _ = _run(api, job)
    hints = [line for line in lines if "still Pending" in line]
    assert len(hints) == 1 and "is it running" in hints[0]


def test_transient_api_errors_are_retried(apiserver, api):
    job = _render()
    apiserver.script[job["metadata"]["name"]] = _script("running", "succeeded")
    apiserver.errors["GET"] = [503, 500]
    state, lines, _ = _run(api, job)
    assert state.phase == tj.SUCCEEDED
    assert sum("reading it failed (HTTP 503" in line or "reading it failed (HTTP 500" in line for line in lines) == 2


@pytest.mark.parametrize("code, message", [
    (404, "this cluster has no PyTorchJob kind (kubeflow.org/v1); install the Kubeflow Training Operator"),
    (403, "may not create pytorchjobs in namespace xdc; apply manifests/base/rbac-training.yaml"),
    (422, "HTTP 422: injected 422"),
])
def test_refused_creates_say_what_to_do(apiserver, api, code, message):
    apiserver.errors["POST"] = [code]
    with pytest.raises(RunError, match=re.escape(message)):
        _run(api, _render())


def test_a_job_deleted_while_waiting_fails_the_step(apiserver, api):
    job = _render()
    name = job["metadata"]["name"]
    apiserver.script[name] = _script("running")

    def sleep_then_delete(seconds: float) -> None:  # someone deletes the job between two polls
        apiserver.jobs.pop(name, None)

    with pytest.raises(RunError, match="was deleted while this step waited"):
        tj.run_pytorchjob(job, 3600, 10, lambda _: None, api=api, clock=Clock(), sleep=sleep_then_delete)


def test_an_unreachable_api_server_fails_the_step_in_the_end(apiserver, api):
    """Polls that cannot connect are retried, up to ten in a row; then the step fails."""
    job = _render()
    apiserver.script[job["metadata"]["name"]] = _script("running")
    lines: list[str] = []

    def sleep_server_gone(seconds: float) -> None:
        if apiserver.thread.is_alive():
            apiserver.httpd.shutdown()
            apiserver.httpd.server_close()

    with pytest.raises(RunError, match="cannot reach the Kubernetes API server to read"):
        tj.run_pytorchjob(job, 3600, 10, lines.append, api=api, clock=Clock(), sleep=sleep_server_gone)
    assert sum("reading it failed" in line for line in lines) == 9


def test_the_default_client_reads_the_kubeconfig(apiserver, tmp_path, monkeypatch):
    """Outside a pod (no KUBERNETES_SERVICE_HOST) the client comes from $KUBECONFIG."""
    from kubernetes import client

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": apiserver.url}}],
        "users": [{"name": "test", "user": {"token": "test-token"}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}]}))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setattr(client.Configuration, "_default", None)  # restored after the test
    job = _render()
    apiserver.script[job["metadata"]["name"]] = _script("succeeded")
    clock = Clock()
    state = tj.run_pytorchjob(job, 60, 5, lambda _: None, clock=clock, sleep=clock.sleep)
    assert state.phase == tj.SUCCEEDED and apiserver.created == [job]


def test_no_cluster_at_all_is_a_run_error(tmp_path, monkeypatch):
    from kubernetes import client

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    monkeypatch.setattr(client.Configuration, "_default", None)
    with pytest.raises(RunError, match="no Kubernetes API to create the PyTorchJob in"):
        tj.run_pytorchjob(_render(), 60, 5, lambda _: None)


@pytest.mark.parametrize("timeout_s, poll_s", [(0, 5), (60, 0), (-1, 5)])
def test_timeout_and_poll_must_be_positive(timeout_s, poll_s):
    with pytest.raises(ConfigError, match="must be > 0"):
        tj.run_pytorchjob(_render(), timeout_s, poll_s, lambda _: None, api=object())
