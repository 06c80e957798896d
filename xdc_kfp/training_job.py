"""Multi-node training through the Kubeflow Training Operator: a train-encoder step that needs
several nodes creates a PyTorchJob (kubeflow.org/v1) and waits for it.

The job comes from one template, ``xdc_kfp/templates/pytorchjob.yaml`` (also reachable as
``manifests/templates/pytorchjob.yaml``): :func:`pytorchjob_manifest` fills it in, and
:func:`run_pytorchjob` creates it, follows its conditions and returns when it succeeded, or raises
:class:`~xdc_core.errors.RunError`. :func:`job_state` reads a job's ``.status``; it is a pure
function, so the interpretation is tested without a cluster.

No kfp import, and the ``kubernetes`` client (a kfp dependency) imported only where it is used.

Why not the Kubeflow Training SDK (``kubeflow-training`` 1.9.4, ``TrainingClient``): it installs
beside our pins, but its calls are the same ``CustomObjectsApi`` calls this module makes, and it
lacks what the waiting here is for. Measured against the test's API server: a second create (a
retried task) raises instead of attaching; one HTTP 503 while polling ends
``wait_for_job_conditions``; and its timeout counts polls, not seconds, and leaves the job holding
its GPUs.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from xdc_core.errors import ConfigError, RunError
from xdc_kfp.placement import Placement

GROUP, VERSION, PLURAL, KIND = "kubeflow.org", "v1", "pytorchjobs", "PyTorchJob"
DEFAULT_NAMESPACE = "xdc"  # manifests/base/kustomization.yaml
CONTAINER = "pytorch"  # the Training Operator finds the training container by this name
REPLICAS = ("Master", "Worker")
TEMPLATE = "templates/pytorchjob.yaml"  # inside the xdc_kfp package
MAX_NAME = 63  # a DNS-1035 label, which the operator's webhook requires of a PyTorchJob's name

_DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")  # a namespace's name
# Where a pod learns its namespace when KFP_NAMESPACE is not set (any pod with a token mounted).
_SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


# ---- names and namespaces ----------------------------------------------------------------------


def job_name(run_id: str, step: str) -> str:
    """A PyTorchJob name for one step of one run: the same for every try of the step (a retried
    KFP task finds the job its first try created), different for every run and step.

    ``xdc-<step>-<hash>``: the step in a readable form (shortened to fit), then 10 hex digits of
    the SHA-256 of run id and step, which alone keep names apart. At most 48 characters, so that
    the operator's pod and Service names (``<name>-worker-<i>``) stay within a 63-character label.
    """
    if not run_id or not run_id.strip():
        raise ConfigError("run_id is empty: a PyTorchJob's name needs the run's id (KFP: dsl.PIPELINE_JOB_ID_PLACEHOLDER) "
                          "so that two runs never share a job")
    if not step or not step.strip():
        raise ConfigError("step is empty: name the step the PyTorchJob trains, e.g. 'train-video-2'")
    digest = hashlib.sha256(f"{run_id}\0{step}".encode()).hexdigest()[:10]
    slug = re.sub(r"[^a-z0-9]+", "-", step.lower()).strip("-")[:48 - len("xdc--") - len(digest)].strip("-")
    return f"xdc-{slug}-{digest}" if slug else f"xdc-{digest}"


def current_namespace(env: Mapping[str, str] | None = None) -> str:
    """The namespace this task runs in: ``KFP_NAMESPACE`` (KFP v2 sets it on every task), else
    the pod's service-account namespace file, else ``xdc``."""
    env = os.environ if env is None else env
    if env.get("KFP_NAMESPACE"):
        return env["KFP_NAMESPACE"]
    try:
        return _SA_NAMESPACE.read_text().strip() or DEFAULT_NAMESPACE
    except OSError:
        return DEFAULT_NAMESPACE


def torchrun_command(gpus_per_node: int, args: Sequence[str]) -> list[str]:
    """``torchrun ... -m xdc_cli.main <args>`` for a PyTorchJob pod, one process per GPU: the
    node count and rank come from ``PET_NNODES``/``PET_NODE_RANK`` and the master's address from
    ``MASTER_ADDR``/``MASTER_PORT``, which the operator sets on each pod (Kubernetes expands
    ``$(VAR)`` from the container's environment)."""
    _check_count("gpus_per_node", gpus_per_node, 1)
    return ["torchrun", "--nnodes=$(PET_NNODES)", f"--nproc-per-node={gpus_per_node}",
            "--node-rank=$(PET_NODE_RANK)", "--master-addr=$(MASTER_ADDR)", "--master-port=$(MASTER_PORT)",
            "-m", "xdc_cli.main", *args]


# ---- the manifest ------------------------------------------------------------------------------


def template_text() -> str:
    """The template as shipped in the package (the file manifests/templates/ links to)."""
    return resources.files("xdc_kfp").joinpath(TEMPLATE).read_text(encoding="utf-8")


def load_template() -> dict[str, Any]:
    """The template parsed, with the structure the filling relies on checked, so that an edit
    that breaks it fails here with the template named, not as a KeyError somewhere below."""
    doc = yaml.safe_load(template_text())
    where = f"xdc_kfp/{TEMPLATE}"
    try:
        if (doc["apiVersion"], doc["kind"]) != (f"{GROUP}/{VERSION}", KIND):
            raise RunError(f"{where} is a {doc['apiVersion']} {doc['kind']}, not a {GROUP}/{VERSION} {KIND}")
        specs = doc["spec"]["pytorchReplicaSpecs"]
        if set(specs) != set(REPLICAS):
            raise RunError(f"{where} must have exactly the replicas {', '.join(REPLICAS)}, has {', '.join(specs)}")
        for rtype in REPLICAS:
            pod = specs[rtype]["template"]["spec"]
            if [c["name"] for c in pod["containers"]] != [CONTAINER]:
                raise RunError(f"{where}: {rtype} must have one container, named {CONTAINER!r}")
            missing = [k for k in ("nodeSelector", "tolerations", "securityContext", "volumes") if k not in pod]
            missing += [] if any(v["name"] == "dshm" and "emptyDir" in v for v in pod.get("volumes", [])) \
                else ["volumes[dshm].emptyDir"]
            missing += [f"containers[{CONTAINER}].env"] if "env" not in pod["containers"][0] else []
            if missing:
                raise RunError(f"{where}: {rtype}'s pod lacks {', '.join(missing)}, which xdc_kfp/training_job.py fills in")
    except (KeyError, IndexError, TypeError) as err:
        raise RunError(f"{where} lacks a part xdc_kfp/training_job.py fills in ({err!r})") from err
    return doc


def pytorchjob_manifest(name: str, image: str, nodes: int, gpus_per_node: int, command: Sequence[str],
                        placement: Placement, namespace: str = DEFAULT_NAMESPACE,
                        env: Mapping[str, str] | None = None, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The PyTorchJob for one training step on ``nodes`` nodes of ``gpus_per_node`` GPUs each.

    One Master and ``nodes - 1`` Workers, one pod per node, the same pod for all: ``image``
    running ``command`` (e.g. :func:`torchrun_command`) as the images' non-root user, with
    ``gpus_per_node`` GPUs (``placement.accelerator``), ``placement``'s CPU, memory, /dev/shm, GPU
    node selector and toleration, and the object store's keys from ``placement.s3_secret`` as
    ``XDC_S3_*`` variables; ``env`` adds variables (``XDC_RUN_ID``, ...) and ``labels`` labels,
    to the job and its pods. ``placement.gpus_per_task`` does not apply: ``gpus_per_node`` does.

    Raises :class:`~xdc_core.errors.ConfigError` naming each argument out of range.
    """
    if placement.gpu_cpu is None:
        raise ValueError("the placement's CPU requests are open: apply Placement.resolved(settings) first")
    errors = []
    if not isinstance(name, str) or not _DNS1035.fullmatch(name) or len(name) > MAX_NAME:
        errors.append(f"name {name!r} is not a DNS-1035 label (a-z, 0-9 and '-', starting with a letter, "
                      f"at most {MAX_NAME} characters): use job_name(run_id, step)")
    elif _is_count(nodes, 2) and len(f"{name}-worker-{nodes - 2}") > MAX_NAME:
        errors.append(f"name {name!r} is too long: the operator names pods and Services {name}-worker-<i>, "
                      f"which must stay within {MAX_NAME} characters")
    if not _is_count(nodes, 2):
        errors.append(f"nodes must be an integer >= 2, got {nodes!r} (one node trains in the task's own pod, "
                      "without a PyTorchJob)")
    if not _is_count(gpus_per_node, 1):
        errors.append(f"gpus_per_node must be an integer >= 1, got {gpus_per_node!r}")
    if not isinstance(image, str) or not image.strip() or any(ch.isspace() for ch in image):
        errors.append(f"image must be an image reference, got {image!r}")
    if isinstance(command, str) or not command or not all(isinstance(a, str) for a in command):
        errors.append(f"command must be a non-empty list of strings, got {command!r}")
    elif command[0] == "torchrun" and _is_count(gpus_per_node, 1):
        nproc = [a.split("=", 1)[1] for a in command if re.match(r"--nproc[-_]per[-_]node=", a)]
        if nproc and nproc != [str(gpus_per_node)]:
            errors.append(f"command starts torchrun with --nproc-per-node={','.join(nproc)}, "
                          f"but gpus_per_node is {gpus_per_node}")
    if not isinstance(namespace, str) or not _DNS1123.fullmatch(namespace) or len(namespace) > MAX_NAME:
        errors.append(f"namespace {namespace!r} is not a namespace name")
    if errors:
        raise ConfigError("cannot make the PyTorchJob: " + "; ".join(errors))

    job = load_template()
    job["metadata"]["name"] = name
    job["metadata"]["namespace"] = namespace
    job["metadata"].setdefault("labels", {}).update(labels or {})
    job["spec"]["nprocPerNode"] = str(gpus_per_node)
    specs = job["spec"]["pytorchReplicaSpecs"]
    specs["Master"]["replicas"] = 1
    specs["Worker"]["replicas"] = nodes - 1
    for rtype in REPLICAS:
        template = specs[rtype]["template"]
        template.setdefault("metadata", {}).setdefault("labels", {}).update(labels or {})
        _fill_pod(template["spec"], image, gpus_per_node, list(command), placement, env or {})
    return job


def _fill_pod(pod: dict[str, Any], image: str, gpus: int, command: list[str], p: Placement,
              env: Mapping[str, str]) -> None:
    """The per-job values of one replica's pod spec; the rest stays as the template has it."""
    key, value = p.gpu_node_label
    pod["nodeSelector"] = {key: value}
    # The GPU pool's taint: the toleration follows the accelerator's name, as on_gpu()'s does.
    pod["tolerations"] = [{**t, "key": p.accelerator} if t.get("key") == "nvidia.com/gpu" else t
                          for t in pod["tolerations"]]
    pod["securityContext"]["runAsUser"] = pod["securityContext"]["runAsGroup"] = p.run_as_user
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    shm["emptyDir"]["sizeLimit"] = p.shm_size

    c = next(c for c in pod["containers"] if c["name"] == CONTAINER)
    c["image"] = image
    c["command"] = command
    c.pop("args", None)
    count = str(gpus)
    # Memory limit: the request plus /dev/shm, which is charged to the same cgroup; no CPU limit
    # (it would throttle the DataLoader workers).
    c["resources"] = {"requests": {"cpu": p.gpu_cpu, "memory": p.gpu_memory, p.accelerator: count},
                      "limits": {"memory": _add_quantities(p.gpu_memory, p.shm_size), p.accelerator: count}}

    access, secret = p.s3_secret_keys
    filled = {
        "XDC_S3_ACCESS_KEY": {"valueFrom": {"secretKeyRef": {"name": p.s3_secret, "key": access}}},
        "XDC_S3_SECRET_KEY": {"valueFrom": {"secretKeyRef": {"name": p.s3_secret, "key": secret}}},
        "XDC_S3_ENDPOINT": {"value": p.s3_endpoint},
        "XDC_S3_SECURE": {"value": "true" if p.s3_secure else "false"},
    }
    variables = [{"name": e["name"], **filled[e["name"]]} if e["name"] in filled else e for e in c["env"]]
    extra = dict(env)
    if p.pushgateway:
        extra.setdefault("XDC_PUSHGATEWAY", p.pushgateway)
    taken = {e["name"] for e in variables}
    clash = sorted(taken & extra.keys())
    if clash:
        raise ConfigError(f"env sets {', '.join(clash)}, which the PyTorchJob template already sets "
                          f"(xdc_kfp/{TEMPLATE}); the object-store settings come from the Placement")
    c["env"] = variables + [{"name": k, "value": str(v)} for k, v in extra.items()]


def _add_quantities(a: str, b: str) -> str:
    """``a + b`` as a memory quantity, in the largest binary unit that divides it (``48Gi`` + ``16Gi`` = ``64Gi``)."""
    from kubernetes.utils.quantity import parse_quantity

    try:
        total = int(parse_quantity(a) + parse_quantity(b))
    except ValueError as err:
        raise ConfigError(f"{a!r} + {b!r}: not memory quantities such as 48Gi ({err})") from None
    for power, unit in ((60, "Ei"), (50, "Pi"), (40, "Ti"), (30, "Gi"), (20, "Mi"), (10, "Ki")):
        if total % 2**power == 0:
            return f"{total // 2**power}{unit}"
    return str(total)


def _is_count(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _check_count(what: str, value: object, minimum: int) -> None:
    if not _is_count(value, minimum):
        raise ConfigError(f"{what} must be an integer >= {minimum}, got {value!r}")


# ---- the job's state ---------------------------------------------------------------------------

PENDING, CREATED, RUNNING, RESTARTING, SUSPENDED, SUCCEEDED, FAILED = (
    "Pending", "Created", "Running", "Restarting", "Suspended", "Succeeded", "Failed")


@dataclass(frozen=True)
class JobState:
    """What a PyTorchJob's status says: ``phase`` is the condition in force (``Pending`` before
    the operator wrote any), ``reason`` and ``message`` are that condition's, ``replicas`` sums
    up each replica type's pods (``Master: 1 active``)."""

    phase: str
    reason: str = ""
    message: str = ""
    replicas: str = ""

    @property
    def finished(self) -> bool:
        return self.phase in (SUCCEEDED, FAILED)

    def describe(self) -> str:
        """``Failed: PyTorchJobFailed - <message> (Master: 1 failed)``, as much of it as is known."""
        detail = " - ".join(x for x in (self.reason, self.message) if x)
        text = f"{self.phase}: {detail}" if detail else self.phase
        return f"{text} ({self.replicas})" if self.replicas else text


def job_state(status: Mapping[str, Any] | None) -> JobState:
    """Interpret a PyTorchJob's ``.status`` as the Training Operator writes it.

    The operator keeps one condition per type (pkg/util/status.go): a new Running replaces
    Restarting and the other way round, Succeeded or Failed turn Running to False, and after
    Failed nothing changes. So: Failed if a Failed condition is True, else Succeeded if a
    Succeeded one is, else the last True condition in the list (Suspended, Restarting, Running,
    Created), else ``Pending`` (no condition yet: the operator has not seen the job).
    """
    status = status or {}
    conditions = [c for c in status.get("conditions") or [] if str(c.get("status")) == "True"]
    by_type = {c.get("type"): c for c in conditions}
    chosen = by_type.get(FAILED) or by_type.get(SUCCEEDED) or (conditions[-1] if conditions else None)
    replicas = []
    for rtype, counts in sorted((status.get("replicaStatuses") or {}).items()):
        shown = [f"{counts[k]} {k}" for k in ("active", "succeeded", "failed") if counts.get(k)]
        if shown:
            replicas.append(f"{rtype}: {', '.join(shown)}")
    summary = "; ".join(replicas)
    if chosen is None:
        return JobState(PENDING, replicas=summary)
    return JobState(str(chosen.get("type")), str(chosen.get("reason") or ""), str(chosen.get("message") or ""), summary)


# ---- creating and waiting ----------------------------------------------------------------------

# Hints for a job that stays in one phase this long: what usually holds it there.
_HINTS = {
    PENDING: (120.0, ("no status from the Training Operator yet: is it running "
                      "(kubectl -n kubeflow get deploy training-operator)?")),
    CREATED: (600.0, ("pods not all running yet: they may wait for GPU nodes or the namespace's quota "
                      "(kubectl -n {ns} get pods -l training.kubeflow.org/job-name={name})")),
    SUSPENDED: (60.0, "the job is suspended (spec.runPolicy.suspend, or a queue such as Kueue holds it)"),
}
_TRANSIENT = {429, 500, 502, 503, 504}
_MAX_POLL_ERRORS = 10  # consecutive failed polls before giving up on the API server


def run_pytorchjob(manifest: Mapping[str, Any], timeout_s: float, poll_s: float = 15.0,
                   log: Callable[[str], None] = print, *, api: Any = None,
                   clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> JobState:
    """Create the PyTorchJob ``manifest`` and wait, polling every ``poll_s`` seconds, until it
    succeeds (returns its final state) or fails (raises :class:`~xdc_core.errors.RunError` with
    the operator's reason and message). Each change of phase or of the pods' counts is logged.

    A job of that name that exists already is a retried task's: a running or finished one is
    attached to (a task retried after its node went away must not start the training twice), a
    failed one is deleted and created again, which is what a retry is for. A job still running
    after ``timeout_s`` is deleted, so that it gives its GPUs back, and the step fails.

    ``api`` is a ``kubernetes.client.CustomObjectsApi``; by default one for the in-cluster
    service account, else for the local kubeconfig.
    """
    if not timeout_s > 0 or not poll_s > 0:
        raise ConfigError(f"timeout_s and poll_s must be > 0 seconds, got {timeout_s!r} and {poll_s!r}")
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    api = api if api is not None else _custom_objects_api()
    ns, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    ref = f"PyTorchJob {ns}/{name}"
    start = clock()
    deadline = start + timeout_s

    try:
        job = _create_or_attach(api, manifest, ref, log, deadline, clock, sleep)
    except (HTTPError, OSError) as err:  # urllib3's, after its own retries: no API server at that address
        raise RunError(f"cannot reach the Kubernetes API server to create {ref}: {err}") from err
    last: tuple[str, str] | None = None
    since = clock()
    hinted = False
    errors = 0
    while True:
        state = job_state(job.get("status"))
        if (state.phase, state.replicas) != last:
            if last is None or state.phase != last[0]:
                since, hinted = clock(), False
            log(f"{ref}: {state.describe()} [{clock() - start:.0f} s]")
            last = (state.phase, state.replicas)
        if state.phase == SUCCEEDED:
            return state
        if state.phase == FAILED:
            raise RunError(f"{ref} failed: {state.describe()}. The pods' logs: "
                           f"kubectl -n {ns} logs -l training.kubeflow.org/job-name={name} --prefix")
        hint = _HINTS.get(state.phase)
        if hint and not hinted and clock() - since >= hint[0]:
            log(f"{ref}: still {state.phase} after {clock() - since:.0f} s: {hint[1].format(ns=ns, name=name)}")
            hinted = True
        now = clock()
        if now >= deadline:
            _delete(api, ns, name, log, ref, why=f"it did not finish within {timeout_s:.0f} s")
            raise RunError(f"{ref} did not finish within {timeout_s:.0f} s (last: {state.describe()}); "
                           "it was deleted. Raise the step's timeout, or look for what held it above")
        sleep(min(poll_s, deadline - now))
        try:
            job = api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
            errors = 0
        except ApiException as err:
            if err.status == 404:
                raise RunError(f"{ref} was deleted while this step waited for it (by hand, or by its "
                               "ttlSecondsAfterFinished)") from err
            errors += 1
            if err.status not in _TRANSIENT or errors >= _MAX_POLL_ERRORS:
                raise RunError(f"cannot read {ref}: {_api_message(err)}") from err
            log(f"{ref}: reading it failed ({_api_message(err)}); trying again")
        except (HTTPError, OSError) as err:  # no connection: the API server may be restarting
            errors += 1
            if errors >= _MAX_POLL_ERRORS:
                raise RunError(f"cannot reach the Kubernetes API server to read {ref}: {err}") from err
            log(f"{ref}: reading it failed ({err}); trying again")


def _create_or_attach(api: Any, manifest: Mapping[str, Any], ref: str, log: Callable[[str], None],
                      deadline: float, clock: Callable[[], float], sleep: Callable[[float], None]) -> dict[str, Any]:
    """Create the job; if it exists, attach to it, or replace it if it failed."""
    from kubernetes.client.exceptions import ApiException

    ns, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    try:
        job = api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, dict(manifest))
        log(f"{ref}: created ({_size(manifest)})")
        return job
    except ApiException as err:
        if err.status != 409:
            raise _create_error(err, ref, ns) from err
    try:
        existing = api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    except ApiException as err:  # e.g. deleted right after the create found it
        raise RunError(f"{ref} exists, but cannot be read: {_api_message(err)}") from err
    state = job_state(existing.get("status"))
    created = existing.get("metadata", {}).get("creationTimestamp", "?")
    if state.phase != FAILED:
        log(f"{ref}: exists already (created {created}, {state.phase}): a retried task; attaching to it")
        return existing
    _delete(api, ns, name, log, ref, why=f"an earlier try of this step left it failed ({state.describe()})")
    # Foreground deletion: the job is gone only once its pods and Services are, so the new job's
    # pods (same names) cannot collide with the old ones.
    while True:
        try:
            api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        except ApiException as err:
            if err.status == 404:
                break
            raise RunError(f"cannot read {ref} while it is being deleted: {_api_message(err)}") from err
        if clock() >= deadline:
            raise RunError(f"{ref} (failed, from an earlier try) was still being deleted when the step's time ran out")
        sleep(2.0)
    try:
        job = api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, dict(manifest))
    except ApiException as err:
        raise _create_error(err, ref, ns) from err
    log(f"{ref}: created again ({_size(manifest)})")
    return job


def _delete(api: Any, ns: str, name: str, log: Callable[[str], None], ref: str, why: str) -> None:
    from kubernetes.client.exceptions import ApiException

    log(f"{ref}: deleting it: {why}")
    try:
        api.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, propagation_policy="Foreground")
    except ApiException as err:
        if err.status != 404:
            log(f"{ref}: could not delete it ({_api_message(err)}); delete it by hand: "
                f"kubectl -n {ns} delete pytorchjob {name}")


def _size(manifest: Mapping[str, Any]) -> str:
    specs = manifest["spec"]["pytorchReplicaSpecs"]
    nodes = sum(int(s.get("replicas", 1)) for s in specs.values())
    return f"{nodes} nodes x {manifest['spec'].get('nprocPerNode')} GPUs"


def _create_error(err: Any, ref: str, ns: str) -> RunError:
    """What a refused create means, and what to do about it."""
    if err.status == 404:
        return RunError(f"cannot create {ref}: this cluster has no {KIND} kind ({GROUP}/{VERSION}); install the "
                        "Kubeflow Training Operator (docs/kubeflow.md, 'Multi-node training')")
    if err.status == 403:
        return RunError(f"cannot create {ref}: this task's service account may not create pytorchjobs in namespace "
                        f"{ns}; apply manifests/base/rbac-training.yaml with your runner's account as subject "
                        f"({_api_message(err)})")
    return RunError(f"cannot create {ref}: {_api_message(err)}")


def _api_message(err: Any) -> str:
    """The API server's own message (a Status object's ``message``), else the HTTP status line."""
    import json

    try:
        message = json.loads(err.body).get("message")
    except (TypeError, ValueError, AttributeError):
        message = None
    return f"HTTP {err.status}: {message or err.reason}"


def _custom_objects_api() -> Any:
    """A CustomObjectsApi for this pod's service account, else for the local kubeconfig."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            # $KUBECONFIG read now: the client reads it once, when it is first imported.
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
        except (config.ConfigException, OSError) as err:
            raise RunError("no Kubernetes API to create the PyTorchJob in: not in a pod with a service account, "
                           f"and no usable kubeconfig ({err})") from err
    return client.CustomObjectsApi()



# ---- one train step as a PyTorchJob ------------------------------------------------------------


def train_with_pytorchjob(*, run_id: str, step: str, image: str, placement: Placement, nodes: int,
                          gpus_per_node: int, settings: str, work_uri: str, step_args: Sequence[str],
                          timeout_s: float, log: Callable[[str], None] = print) -> JobState:
    """Run ``xdc step train <step_args>`` on ``nodes`` nodes of ``gpus_per_node`` GPUs as a
    PyTorchJob and wait for it. The pods share no disk with the calling task: the settings go
    to ``work_uri``/settings.yaml in the object store, and ``step_args`` must name inputs and
    outputs by object-store URI."""
    from xdc_core import store

    settings_uri = f"{work_uri.rstrip('/')}/settings.yaml"
    store.write_bytes(settings_uri, settings.encode())
    command = torchrun_command(gpus_per_node, ["step", "train", *step_args, "--config", settings_uri])
    manifest = pytorchjob_manifest(job_name(run_id, step), image, nodes, gpus_per_node, command, placement,
                                   namespace=current_namespace(), env={"XDC_RUN_ID": run_id})
    return run_pytorchjob(manifest, timeout_s, log=log)
