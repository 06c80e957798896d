"""The Kubeflow side: the compiled pipeline YAML, and the real pipeline through kfp.local."""

import base64
import io
import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY_SETTINGS
from PIL import Image
from kfp import compiler, dsl, local
from kfp.components import load_component_from_file
from test_cli import xdc

from xdc_core.config import build_config, load_config
from xdc_core.run import run
from xdc_kfp.components import build_components
from xdc_kfp.pipelines.ucf101_eval import build_eval_pipeline
from xdc_kfp.pipelines.xdc_pretrain import build_pretrain_pipeline
from xdc_kfp.placement import Placement
from xdc_kfp.run_parameters import RUN_PARAMETERS
from xdc_kfp.runner import PACKAGES, task_outputs


REPO = Path(__file__).parents[1]
GPU_STEPS = ("embed", "kmeans", "train-encoder", "evaluate")


def _compile(tmp_path: Path, iterations: int = 2) -> tuple[dict, dict]:
    cfg = load_config(REPO / "xdc_core" / "presets" / "cpu-demo.yaml")
    path = tmp_path / "xdc_pretrain.yaml"
    compiler.Compiler().compile(build_pretrain_pipeline(iterations, cfg, image="registry.test/xdc:1",
                                                        config="cpu-demo"), str(path))
    load_component_from_file(str(path))  # kfp's own loader accepts it
    spec, platform = yaml.safe_load_all(path.read_text())
    return spec, platform


def _tasks_by_display_name(spec: dict) -> dict[str, dict]:
    """Every task by its display name, those inside a sub-DAG (the run_evaluation branch, the
    sharded decode and its loop) too; ``_key`` is its name in its DAG, ``_dag`` the display name
    of the group it is in (None: the pipeline's own DAG)."""
    found: dict[str, dict] = {}

    def walk(dag: dict, group: str | None) -> None:
        for key, task in dag["tasks"].items():
            found[task["taskInfo"]["name"]] = task | {"_key": key, "_dag": group}
            component = spec["components"][task["componentRef"]["name"]]
            if "dag" in component:
                walk(component["dag"], task["taskInfo"]["name"])

    walk(spec["root"]["dag"], None)
    return found


# groups of tasks, not tasks: the run_evaluation condition, the sharded decode and its loop
DAGS = ("run-evaluation", "decode", "decode-shards")
DECODE = "decode"  # the sharded decode: its output is the one decoded dataset


def test_compiled_pipeline_has_each_iterations_tasks_and_dependencies(tmp_path):
    spec, _ = _compile(tmp_path, iterations=2)
    tasks = _tasks_by_display_name(spec)
    expected = {"settings", *DAGS, "plan decode shards", "decode shard", "merge decoded", "evaluate",
                "final video encoder", "final audio encoder"} | {
        f"iter {i}: {step}" for i in (1, 2)
        for step in ("embed video", "embed audio", "k-means", "train video encoder", "train audio encoder")
    }
    assert expected <= set(tasks), sorted(tasks)
    key = {name: t["_key"] for name, t in tasks.items()}

    def deps(name: str) -> set[str]:
        artifacts = tasks[name]["inputs"].get("artifacts", {}).values()
        producers = {a["taskOutputArtifact"]["producerTask"] for a in artifacts if "taskOutputArtifact" in a}
        return producers | set(tasks[name].get("dependentTasks", []))

    # every task reads the settings task's output: the run parameters merged into the settings
    merged = key["settings"]
    assert deps("settings") == set() and deps(DECODE) == {merged}
    # inside the decode: it fans out over the plan's shards; the merge waits for all of them
    assert deps("plan decode shards") == set() and deps("decode-shards") == {key["plan decode shards"]}
    assert deps("merge decoded") == {key["decode-shards"]}
    for m in ("video", "audio"):
        assert deps(f"iter 1: embed {m}") == {merged, key[DECODE]}  # the random init: no encoder input
        assert deps(f"iter 2: embed {m}") == {merged, key[DECODE], key[f"iter 1: train {m} encoder"]}
        previous_encoder = key[f"iter 1: train {m} encoder"]
        assert deps(f"iter 2: train {m} encoder") == {merged, key[DECODE], key["iter 2: k-means"], previous_encoder}
    # k-means reads the decoded videos too: the thumbnails of its gallery
    assert deps("iter 1: k-means") == {merged, key[DECODE], key["iter 1: embed video"], key["iter 1: embed audio"]}
    assert deps("iter 2: k-means") == {merged, key[DECODE], key["iter 2: embed video"], key["iter 2: embed audio"],
                                       key["iter 1: k-means"]}
    # the final encoders: the last iteration's, judged by the held-out losses in their metadata
    for m in ("video", "audio"):
        assert deps(f"final {m} encoder") == {merged, key[f"iter 2: train {m} encoder"]}
    # evaluate sits inside the run_evaluation condition, which receives the final encoders and the
    # last clusters (their metadata holds every iteration's statistics, for the learning curves)
    final = {merged, key[DECODE], key["final video encoder"], key["final audio encoder"], key["iter 2: k-means"]}
    assert deps("run-evaluation") >= final
    for name, t in tasks.items():
        # run-evaluation and the tasks in a group: through the group's input
        if name not in ("settings", "run-evaluation") and t["_dag"] is None:
            assert t["inputs"]["parameters"]["settings"]["taskOutputParameter"]["producerTask"] == merged, name
        if name in DAGS:
            continue
        assert t["retryPolicy"]["maxRetryCount"] == 2
        assert t["cachingOptions"]["enableCache"] is True


def test_kmeans_and_evaluate_tasks_output_html_pages_for_the_kfp_ui(tmp_path):
    """Each k-means task's gallery and the evaluate task's curves are HTML artifacts, which the KFP
    UI renders next to the task."""
    spec, _ = _compile(tmp_path, iterations=2)
    tasks = _tasks_by_display_name(spec)

    def html_outputs(task: str) -> set[str]:
        artifacts = spec["components"][tasks[task]["componentRef"]["name"]]["outputDefinitions"]["artifacts"]
        return {name for name, a in artifacts.items() if a["artifactType"]["schemaTitle"] == "system.HTML"}

    assert html_outputs("iter 1: k-means") == html_outputs("iter 2: k-means") == {"gallery"}
    assert html_outputs("evaluate") == {"curves"}


def test_only_gpu_tasks_ask_for_a_gpu_and_carry_its_placement(tmp_path):
    spec, platform = _compile(tmp_path)
    tasks = _tasks_by_display_name(spec)
    assert {"settings", "plan decode shards", "decode shard", "merge decoded", "evaluate"} <= set(tasks)
    executors = spec["deploymentSpec"]["executors"]
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name, task in tasks.items():
        if name in DAGS:
            continue
        comp = spec["components"][task["componentRef"]["name"]]
        exe = comp["executorLabel"]
        container = executors[exe]["container"]
        assert container["image"] == "registry.test/xdc:1"
        assert "pip install" not in json.dumps(container)  # everything is in the image
        # every task runs as the images' non-root user
        assert k8s[exe]["securityContext"] == {"runAsUser": "10001", "runAsGroup": "10001", "runAsNonRoot": True}
        if name == "settings":  # resolves the settings (config may be an s3:// URI): any node, default resources
            assert "resources" not in container
            assert set(k8s[exe]) == {"securityContext", "fieldPathAsEnv", "secretAsEnv"}
            continue
        if name == "plan decode shards":  # reads the manifest only: any node, the default resources
            assert "resources" not in container and "nodeSelector" not in k8s[exe]
        gpu = container.get("resources", {}).get("accelerator")
        if name in ("plan decode shards", "decode shard", "merge decoded"):
            assert gpu is None
            assert "tolerations" not in k8s.get(exe, {}) and "nodeSelector" not in k8s.get(exe, {})
            if name != "plan decode shards":  # a core per decode worker (cpu-demo: 2); the merge only links files
                assert container["resources"]["resourceCpuRequest"] == "2"
            # they read s3:// data: keys from the Kubernetes secret, never in the spec
            secret = k8s[exe]["secretAsEnv"][0]
            assert secret["secretName"] == "mlpipeline-minio-artifact"
            assert {(m["secretKey"], m["envVar"]) for m in secret["keyToEnv"]} == {
                ("accesskey", "XDC_S3_ACCESS_KEY"), ("secretkey", "XDC_S3_SECRET_KEY")}
            env = {e["name"]: e["value"] for e in container["env"]}
            assert env["XDC_S3_ENDPOINT"] == "minio-service.kubeflow:9000"
            continue
        if name.startswith("final "):  # copies or re-creates one encoder: a CPU node, one core
            assert gpu is None and "tolerations" not in k8s[exe] and "secretAsEnv" not in k8s[exe]
            assert container["resources"]["resourceCpuRequest"] == "1"
            continue
        # only the train tasks reach the object store: their resumable checkpoints go there
        assert ("secretAsEnv" in k8s[exe]) == ("train" in name), name
        # the train tasks ask for the gpus_per_node run parameter's GPUs, the others for one
        count = "{{$.inputs.parameters['pipelinechannel--gpus_per_node']}}" if "train" in name else "1"
        assert gpu["resourceType"] == "nvidia.com/gpu" and gpu["resourceCount"] == count, name
        assert k8s[exe]["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in k8s[exe]["tolerations"]
        assert k8s[exe]["emptyDirMounts"][0]["mountPath"] == "/dev/shm"
        assert k8s[exe]["emptyDirMounts"][0]["medium"] == "Memory"
        # a core per DataLoader worker of the busiest step (cpu-demo: 2) and one for the task's own process
        assert container["resources"]["resourceCpuRequest"] == "3"
        assert container["resources"]["resourceMemoryRequest"]


def test_compiled_pipelines_fan_decode_out_and_train_on_gpus_per_node(tmp_path):
    """The decode runs as a ParallelFor over the plan's shards, at most Placement.decode_parallelism
    at once, collected by one merge task; the train tasks get the gpus_per_node and nodes run
    parameters, and ask for gpus_per_node GPUs."""
    cfg = load_config(REPO / "xdc_core" / "presets" / "cpu-demo.yaml")
    place = Placement(decode_parallelism=3)
    for pipeline in (build_pretrain_pipeline(1, cfg, placement=place), build_eval_pipeline(cfg, placement=place)):
        path = tmp_path / "p.yaml"
        compiler.Compiler().compile(pipeline, str(path))
        spec = next(yaml.safe_load_all(path.read_text()))
        assert spec["root"]["inputDefinitions"]["parameters"]["decode_shards"]["defaultValue"] == 1
        tasks = _tasks_by_display_name(spec)
        loop, shard, merge = tasks["decode-shards"], tasks["decode shard"], tasks["merge decoded"]
        assert {t["_dag"] for t in (tasks["plan decode shards"], loop, merge)} == {DECODE}
        assert tasks[DECODE]["inputs"]["parameters"]["shards"] == {"componentInputParameter": "decode_shards"}
        assert loop["iteratorPolicy"] == {"parallelismLimit": 3}
        items = loop["parameterIterator"]
        assert items["items"]["inputParameter"] == f"pipelinechannel--{tasks['plan decode shards']['_key']}-Output"
        assert tasks["plan decode shards"]["inputs"]["parameters"]["shards"] == {"componentInputParameter": "shards"}
        assert loop["inputs"]["parameters"]["pipelinechannel--shards"] == {"componentInputParameter": "shards"}
        assert shard["inputs"]["parameters"]["shard"] == {"componentInputParameter": items["itemInput"]}
        assert shard["inputs"]["parameters"]["shards"] == {"componentInputParameter": "pipelinechannel--shards"}
        # the merge reads every shard's dataset (dsl.Collected: an artifact list out of the loop)
        collected = merge["inputs"]["artifacts"]["shards"]["taskOutputArtifact"]
        assert collected["producerTask"] == loop["_key"]
        outputs = spec["components"][loop["componentRef"]["name"]]["outputDefinitions"]["artifacts"]
        assert outputs[collected["outputArtifactKey"]]["isArtifactList"] is True
        # the merge's dataset is the decode's output, which evaluate reads (in the pretraining
        # pipeline through the run_evaluation condition's input)
        sub = spec["components"][tasks[DECODE]["componentRef"]["name"]]["dag"]["outputs"]["artifacts"]["Output"]
        assert sub["artifactSelectors"] == [{"outputArtifactKey": "decoded", "producerSubtask": merge["_key"]}]
        decode = tasks[DECODE]["_key"]
        assert tasks["evaluate"]["inputs"]["artifacts"]["decoded"] in (
            {"taskOutputArtifact": {"outputArtifactKey": "Output", "producerTask": decode}},
            {"componentInputArtifact": f"pipelinechannel--{decode}-Output"})
    spec, _ = _compile(tmp_path, iterations=2)
    defaults = {n: p.get("defaultValue") for n, p in spec["root"]["inputDefinitions"]["parameters"].items()}
    assert defaults["gpus_per_node"] == defaults["nodes"] == 1
    executors = spec["deploymentSpec"]["executors"]
    trains = {name: t for name, t in _tasks_by_display_name(spec).items() if "train" in name}
    assert len(trains) == 4
    for name, t in trains.items():
        params = t["inputs"]["parameters"]
        assert params["gpus"] == {"componentInputParameter": "gpus_per_node"}, name
        assert params["nodes"] == {"componentInputParameter": "nodes"}, name
        assert params["pipelinechannel--gpus_per_node"] == {"componentInputParameter": "gpus_per_node"}, name
        exe = spec["components"][t["componentRef"]["name"]]["executorLabel"]
        gpu = executors[exe]["container"]["resources"]["accelerator"]
        assert gpu["resourceCount"] == "{{$.inputs.parameters['pipelinechannel--gpus_per_node']}}", name


def test_run_form_is_typed_described_and_keeps_the_config_by_default(tmp_path):
    """What the KFP UI's run form shows: the settings by name, typed values that keep the config's
    own unless set, a description for every parameter, and the iteration count in the name."""
    spec, _ = _compile(tmp_path)
    params = spec["root"]["inputDefinitions"]["parameters"]
    defaults = {name: p.get("defaultValue") for name, p in params.items()}
    assert defaults["config"] == "cpu-demo" and defaults["overrides"] == ""
    assert {name: defaults[name] for name in RUN_PARAMETERS} == {n: p.unset for n, p in RUN_PARAMETERS.items()}
    assert defaults["data_uri"] == "" and defaults["run_evaluation"] is True
    assert defaults["decode_shards"] == defaults["gpus_per_node"] == defaults["nodes"] == 1
    assert all(len(p.get("description", "")) > 20 for p in params.values()), params
    assert "(cpu-demo: 16)" in params["k"]["description"]  # what 0 keeps
    assert spec["pipelineInfo"]["name"] == "xdc-pretrain-2it"
    assert "2 clustering iterations" in spec["pipelineInfo"]["description"]
    # only the settings task takes the run parameters; every other task reads them from its output
    components = {name: set(c["inputDefinitions"]["parameters"]) for name, c in spec["components"].items()
                  if "executorLabel" in c}
    assert components.pop("comp-settings") == {"config", "overrides", "iterations", "data_uri", *RUN_PARAMETERS}
    structural = {"settings", "modality", "iteration", "data_uri", "run_evaluation", "check_pretraining",
                  "shard", "shards", "gpus", "nodes", "image", "placement", "job_timeout_h"}
    assert components and all(params <= structural for params in components.values()), components


# The placeholders KFP replaces with a value of the run (backend/src/v2/driver/resolve.go).
RUN_PLACEHOLDERS = ("{{$.pipeline_job_uuid}}", "{{$.pipeline_job_name}}", "{{$.pipeline_job_resource_name}}",
                    "{{$.pipeline_task_uuid}}", "{{$.pipeline_job_create_time_utc}}")


def _cache_keys(spec: dict, arguments: dict, run: dict[str, str]) -> dict[str, str]:
    """Each container task's cache key as the KFP driver computes it (backend/src/v2/driver/cache.go,
    getFingerPrint; cacheutils/cache.go, GenerateCacheKey): its resolved input parameters, input
    artifacts (by producer), command, args and image — for a run with ``arguments`` whose
    run-specific placeholders resolve to ``run``'s values."""
    executors = spec["deploymentSpec"]["executors"]
    keys = {}

    def resolve(value: dict) -> object:
        if "runtimeValue" in value:
            constant = value["runtimeValue"]["constant"]
            return run.get(constant, constant) if isinstance(constant, str) else constant
        if "componentInputParameter" in value:  # the pipeline's own parameters, or a DAG's channel
            name = value["componentInputParameter"]
            return arguments.get(name, ("channel", name))
        return json.dumps(value, sort_keys=True)  # another task's output: the same in both runs

    for name, task in _tasks_by_display_name(spec).items():
        component = spec["components"][task["componentRef"]["name"]]
        if "executorLabel" not in component:
            continue
        container = executors[component["executorLabel"]]["container"]
        inputs = task.get("inputs", {})
        keys[name] = json.dumps({
            "parameters": {k: resolve(v) for k, v in inputs.get("parameters", {}).items()},
            "artifacts": inputs.get("artifacts", {}),
            "cmd_args": container.get("command", []) + container.get("args", []),
            "image": container["image"],
        }, sort_keys=True, default=str)
    return keys


def test_two_submissions_of_one_run_have_the_same_cache_keys(tmp_path):
    """The run id reaches tasks from their pod's label (an environment variable), never as an input:
    two runs with the same arguments give every task the same cache key, so a rerun is served from
    KFP's cache; a changed argument changes the keys of the tasks that read it."""
    spec, platform = _compile(tmp_path)
    assert not any(p in yaml.safe_dump(spec) for p in RUN_PLACEHOLDERS)
    first = {p: "run-1" for p in RUN_PLACEHOLDERS}
    second = {p: "run-2" for p in RUN_PLACEHOLDERS}
    arguments = {"data_uri": "s3://data/manifest.csv", "k": 8}
    keys = _cache_keys(spec, arguments, first)
    assert len(keys) >= 10 and keys == _cache_keys(spec, arguments, second)
    changed = _cache_keys(spec, arguments | {"k": 9}, first)
    assert changed["settings"] != keys["settings"]
    # every task gets the run id from the pipeline/runid label the KFP API server puts on each pod
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for executor in executors.values():
        assert {"name": "XDC_RUN_ID", "fieldPath": "metadata.labels['pipeline/runid']"} in executor["fieldPathAsEnv"]


def test_committed_pipelines_are_what_compile_writes_today(tmp_path):
    """pipelines/*.yaml, the files a KFP UI user uploads, are exactly what `xdc pipeline packages`
    writes from this code, and kfp's loader accepts each."""
    r = xdc("pipeline", "packages", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    for name in PACKAGES:
        committed = REPO / "pipelines" / name
        assert committed.is_file(), f"{committed} is missing: run `xdc pipeline packages`"
        assert committed.read_text() == (tmp_path / name).read_text(), \
            f"{committed} is stale: run `xdc pipeline packages` and commit the result"
        load_component_from_file(str(committed))
    shipped = {p.name for p in (REPO / "pipelines").glob("*.yaml")}
    assert shipped == set(PACKAGES), shipped


@pytest.mark.integration  # kfp.local or an `xdc` subprocess
def test_settings_component_resolves_the_run_parameters(tmp_path, capfd):
    """What every task reads: the config with the run parameters in place (unset ones keep the
    config's), or a failure naming the setting; a paper-scale budget on the sample data is refused."""
    _local(tmp_path)
    merge = build_components().settings
    unset = {name: p.unset for name, p in RUN_PARAMETERS.items()}
    common = {"config": json.dumps(TINY_SETTINGS), "overrides": "cluster.pca_dim=4", "iterations": 3,
              "data_uri": "s3://data/manifest.csv"}
    given = {"method": "sdc", "k": 2, "epochs": 3, "epoch_size": 40, "lr": 0.2, "batch_size": 4, "seed": 7}
    merged = json.loads(merge(**common, **given).output)
    assert (merged["cluster"]["method"], merged["cluster"]["k"], merged["seed"]) == ("sdc", 2, 7)
    assert (merged["train"]["total_epochs"], merged["train"]["lr"], merged["train"]["batch_size"]) == (3, 0.2, 4)
    assert (merged["train"]["epoch_size"], merged["cluster"]["pca_dim"], merged["cluster"]["iterations"]) == (40, 4, 3)
    assert merged["model"] == build_config(TINY_SETTINGS).model.model_dump()  # the rest as given
    kept = json.loads(merge(**common, **unset).output)
    assert kept["cluster"]["k"] == TINY_SETTINGS["cluster"]["k"] and kept["seed"] == build_config(TINY_SETTINGS).seed
    paper = json.loads(merge(**(common | {"config": "paper", "overrides": ""}), **unset).output)
    assert paper["train"]["epoch_size"] == 1_000_000 and paper["cluster"]["k"] == 256
    with pytest.raises(RuntimeError):
        merge(**common, **(given | {"k": 1}))
    err = capfd.readouterr()
    assert "cluster.k: Input should be greater than or equal to 2 (got 1)" in err.out + err.err
    with pytest.raises(RuntimeError):  # the defaults of a paper pipeline: no data_uri
        merge(**(common | {"config": "paper", "overrides": "", "data_uri": ""}), **unset)
    err = capfd.readouterr()
    assert "would pretrain on the embedded sample data" in err.out + err.err
    assert "Set data_uri to your manifest" in err.out + err.err and "config to cpu-demo" in err.out + err.err


@pytest.mark.integration  # kfp.local or an `xdc` subprocess
def test_compile_command_writes_loadable_yaml_for_both_pipelines(tmp_path):
    r = xdc("pipeline", "compile", "--iterations", "3", "--decode-parallelism", "5", "--out", str(tmp_path / "p.yaml"))
    assert r.returncode == 0, r.stderr
    spec = next(yaml.safe_load_all((tmp_path / "p.yaml").read_text()))
    names = {t["taskInfo"]["name"] for t in spec["root"]["dag"]["tasks"].values()}
    assert "iter 3: k-means" in names and "iter 4: k-means" not in names
    assert _tasks_by_display_name(spec)["decode-shards"]["iteratorPolicy"] == {"parallelismLimit": 5}
    assert spec["root"]["inputDefinitions"]["parameters"]["config"]["defaultValue"] == "paper"
    assert spec["pipelineInfo"]["name"] == "xdc-pretrain-3it"
    r = xdc("pipeline", "compile", "--pipeline", "ucf101-eval", "--out", str(tmp_path / "e.yaml"))
    assert r.returncode == 0, r.stderr
    load_component_from_file(str(tmp_path / "e.yaml"))
    r = xdc("pipeline", "compile", "--out", str(tmp_path / "x.yaml"), "--set", "cluster.k=1")
    assert r.returncode == 2 and "cluster.k" in r.stderr


@pytest.mark.integration  # kfp.local or an `xdc` subprocess
def test_submit_to_an_unreachable_host_says_so():
    r = xdc("pipeline", "submit", "--host", "http://127.0.0.1:9", "--k", "8")
    assert r.returncode == 2
    assert "cannot reach the Kubeflow Pipelines API at http://127.0.0.1:9" in r.stderr
    assert "--host" in r.stderr


@pytest.mark.integration  # kfp.local or an `xdc` subprocess
def test_bad_run_parameter_fails_before_anything_runs(tmp_path):
    r = xdc("pipeline", "run-local", "--out", str(tmp_path), "--k", "1")
    assert r.returncode == 2 and "cluster.k" in r.stderr
    r = xdc("pipeline", "run-local", "--out", str(tmp_path), "--decode-shards", "0", "--nodes", "2")
    assert r.returncode == 2 and "decode_shards must be a whole number of at least 1 (got 0)" in r.stderr
    assert "nodes" not in r.stderr  # 2 is fine
    assert not (tmp_path / "pipeline_root").exists()


@pytest.fixture(scope="module")
def tiny_config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("settings") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_SETTINGS))
    return path


@pytest.mark.integration  # kfp.local or an `xdc` subprocess
def test_run_local_matches_xdc_run(tiny_sample, tiny_config_file, tmp_path):
    """`xdc pipeline run-local` (the pipeline through kfp.local) and `xdc run` call the same steps
    with the same seeds: same encoders, same metrics. The run parameters (k, seed) given to the
    pipeline reach every task as the settings `xdc run` is given."""
    r = xdc("pipeline", "run-local", "--data", str(tiny_sample), "--config", str(tiny_config_file),
            "--iterations", "2", "--k", "2", "--seed", "1", "--out", str(tmp_path / "kfp"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "XDC linear probe" in r.stdout
    run_dir = Path(next(line.split(": ", 1)[1].rsplit(" (", 1)[0] for line in r.stdout.splitlines()
                        if line.startswith("kfp.local run: ")))
    tasks = task_outputs(run_dir)
    merged = json.loads((run_dir / "settings" / "executor_output.json").read_text())["parameterValues"]["Output"]
    assert (json.loads(merged)["cluster"]["k"], json.loads(merged)["seed"]) == (2, 1)
    assert [out["clusters"]["metadata"]["k"] for out in tasks.values() if "clusters" in out] == [2, 2]
    galleries = sorted(Path(out["gallery"]["uri"]).read_text() for out in tasks.values() if "gallery" in out)
    assert [f"XDC clusters, iteration {it}" in page for it, page in enumerate(galleries, 1)] == [True, True]
    curves_page = Path(tasks["evaluate"]["curves"]["uri"]).read_text()
    png = base64.b64decode(curves_page.split("data:image/png;base64,", 1)[1].split("'", 1)[0])
    # the history of both k-means tasks and of the train tasks reached evaluate: cluster panels and
    # the pseudo-label loss above the probe's (3 rows, as `xdc run` draws them; 1 without the history)
    assert Image.open(io.BytesIO(png)).size == (960, 960)
    cfg = load_config(tiny_config_file, {"cluster.k": 2, "seed": 1})
    expected = run(tiny_sample, tmp_path / "run", cfg, progress=False, log=lambda _: None)

    final = {a["metadata"]["modality"]: a["uri"] for out in tasks.values() for name, a in out.items()
             if name == "encoder" and a["metadata"].get("final")}
    assert set(final) == {"video", "audio"} and all(f"{m} encoder: {uri}" in r.stdout for m, uri in final.items())
    for m, uri in final.items():
        ours = torch.load(uri, weights_only=True)
        theirs = torch.load(tmp_path / "run" / f"{m}_encoder.pt", weights_only=True)
        assert all(torch.allclose(ours[k], theirs[k], atol=1e-6) for k in theirs), m
    metrics = tasks["evaluate"]["metrics"]["metadata"]  # the evaluate component's Metrics artifact
    report = json.loads(Path(tasks["evaluate"]["report"]["uri"]).read_text())
    for kind in ("probe", "baseline_random"):
        for m in ("video", "audio"):
            assert metrics[f"{m}_{kind}_top1"] == pytest.approx(expected[kind][m]["top1"])
            assert report[kind][m]["top1"] == pytest.approx(expected[kind][m]["top1"])
    for m in ("video", "audio"):  # the paired difference from random init, with its interval
        assert metrics[f"{m}_probe_vs_random_delta"] == pytest.approx(expected["probe_vs_random"][m]["delta"])
        assert report["probe_vs_random"][m]["ci95"] == expected["probe_vs_random"][m]["ci95"]

    # The same run again: every task comes from the cache (no run id among the inputs), and the
    # command finds their outputs and prints the same results.
    again = xdc("pipeline", "run-local", "--data", str(tiny_sample), "--config", str(tiny_config_file),
                "--iterations", "2", "--k", "2", "--seed", "1", "--out", str(tmp_path / "kfp"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "kfp.local reused 17 finished tasks from its cache" in again.stdout, again.stdout[-3000:]
    assert "Executing task" not in again.stdout, again.stdout[-3000:]
    table = r.stdout.split("kfp.local run: ")[0].strip().splitlines()[-6:]
    assert all(line in again.stdout for line in table), (table, again.stdout[-2000:])
    assert all(f"{m} encoder: {uri}" in again.stdout for m, uri in final.items())


def _local(tmp_path: Path) -> None:
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))


@pytest.mark.integration  # kfp.local or an `xdc` subprocess
def test_component_names_itself_and_the_bad_input(tiny_decoded, tmp_path, capfd):
    garbage = tmp_path / "encoder.pt"
    garbage.write_bytes(b"not a checkpoint")
    c = build_components()

    @dsl.pipeline(name="bad-encoder")
    def bad_encoder() -> None:
        decoded = dsl.importer(artifact_uri=str(tiny_decoded), artifact_class=dsl.Dataset)
        encoder = dsl.importer(artifact_uri=str(garbage), artifact_class=dsl.Model)
        c.embed(decoded=decoded.output, encoder=encoder.output, modality="video", iteration=2,
                settings=json.dumps(TINY_SETTINGS))

    _local(tmp_path)
    with pytest.raises(RuntimeError):
        bad_encoder()
    err = capfd.readouterr()
    text = err.out + err.err
    assert "embed (video, iteration 2): bad input artifact 'encoder'" in text
    assert str(garbage) in text

    @dsl.pipeline(name="missing-dataset")
    def missing_dataset() -> None:
        decoded = dsl.importer(artifact_uri=str(tmp_path / "nowhere"), artifact_class=dsl.Dataset)
        c.embed(decoded=decoded.output, modality="audio", iteration=1, settings=json.dumps(TINY_SETTINGS))

    with pytest.raises(RuntimeError):
        missing_dataset()
    err = capfd.readouterr()
    assert "embed (audio, iteration 1): bad input artifact 'decoded'" in err.out + err.err
    assert "index.csv is missing" in err.out + err.err


@pytest.mark.integration  # kfp.local or an `xdc` subprocess
def test_final_encoder_task_returns_the_random_init_of_an_encoder_that_learned_nothing(tmp_path):
    """The final-encoder task judges the run by the held-out losses that come with the last
    trained encoder (its metadata's history, as the train tasks chain it): the trained encoder
    where one iteration beat chance (ln 3 = 1.10) by train.learned_margin standard errors, else
    the random init of the settings' seed, as `xdc run` decides."""
    from xdc_core.steps import init_encoder, save_encoder

    cfg = build_config(TINY_SETTINGS | {"seed": 3})
    trained = tmp_path / "trained.pt"
    save_encoder(init_encoder("audio", build_config(TINY_SETTINGS | {"seed": 9})), trained)  # not seed 3's init

    def history(best):  # two iterations with early stopping on, each keeping epoch 1
        return [{"iteration": i, "val_loss": [best], "val_loss_se": [0.05], "best_epoch": 1,
                 "early_stop": "early stop on: 100 held-out videos"} for i in (1, 2)]

    c = build_components()

    @dsl.pipeline(name="final-encoders")
    def final_encoders() -> None:
        for name, best in (("learned", 0.9), ("noise", 1.05)):  # 1.05 + 2 x 0.05 > ln 3
            imported = dsl.importer(artifact_uri=str(trained), artifact_class=dsl.Model,
                                    metadata={"iteration": 2, "modality": "audio", "history": history(best)})
            c.final_encoder(trained=imported.output, modality="audio",
                            settings=json.dumps(cfg.model_dump(mode="json"))).set_display_name(name)

    _local(tmp_path)
    final_encoders()
    [run_dir] = (tmp_path / "root").glob("final-encoders-*")
    finals = [out["encoder"] for out in task_outputs(run_dir).values() if "encoder" in out]
    by_source = {int(a["metadata"]["from_iteration"]): torch.load(a["uri"], weights_only=True) for a in finals}
    assert sorted(by_source) == [0, 2] and all(a["metadata"]["final"] for a in finals)
    assert all(torch.equal(by_source[2][k], v) for k, v in torch.load(trained, weights_only=True).items())
    assert all(torch.equal(by_source[0][k], v) for k, v in init_encoder("audio", cfg).state_dict().items())


@pytest.mark.integration  # kfp.local or an `xdc` subprocess
def test_eval_pipeline_scores_given_checkpoints(tiny_sample, tmp_path):
    """ucf101_eval on a labelled manifest and two checkpoints, as the CI regression gate uses it."""
    cfg = build_config(TINY_SETTINGS)
    expected = run(tiny_sample, tmp_path / "run", cfg, progress=False, log=lambda _: None)
    _local(tmp_path)
    pipeline = build_eval_pipeline(cfg, placement=Placement())
    pipeline(data_uri=str(tiny_sample), video_encoder_uri=str(tmp_path / "run" / "video_encoder.pt"),
             audio_encoder_uri=str(tmp_path / "run" / "audio_encoder.pt"))
    reports = list((tmp_path / "root").glob("ucf101-eval-*/evaluate/report"))
    assert len(reports) == 1
    report = json.loads(reports[0].read_text())
    for m in ("video", "audio"):
        assert report["probe"][m]["top1"] == pytest.approx(expected["probe"][m]["top1"])


@pytest.mark.integration  # kfp.local or an `xdc` subprocess
def test_decode_component_reads_raw_videos_from_the_bucket(tiny_sample, bucket, tmp_path):
    """The decode component given an s3:// manifest (credentials from the environment, as the
    Kubernetes secret provides them in a pod) fetches the videos from the bucket."""
    from xdc_core import store

    store.upload_dir(tiny_sample.parent, f"s3://{bucket}/raw")
    _local(tmp_path)
    task = build_components().decode(data_uri=f"s3://{bucket}/raw/manifest.csv", settings=json.dumps(TINY_SETTINGS),
                                     run_evaluation=True)
    decoded = Path(task.outputs["decoded"].path)
    assert (decoded / "index.csv").is_file()
    assert task.outputs["decoded"].metadata["videos"] == 16
