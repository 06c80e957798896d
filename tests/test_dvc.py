"""`dvc repro` of the XDC loop: the repository's dvc.yaml and params.yaml, run by real DVC.

dvc.yaml is generated from the step declarations (``xdc dvc-yaml``). The pipeline is copied into a
fresh git repository with the tiny settings of conftest.py (16 videos, k=3, two iterations); then
the whole loop runs and computes what ``xdc run`` computes, a change of cluster.k re-runs exactly
the stages that read it or depend on what they wrote, so does a change of the training code, what
was pushed to a real S3 server (``rclone serve s3``) pulls back into a fresh clone byte for byte,
and ``dvc exp run -S cluster.iterations=N`` runs N iterations.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import TINY_SETTINGS
from s3_server import CLIENT_ENV, S3Server

from xdc_cli.dvc_yaml import dvc_yaml
from xdc_cli.settings import load_settings_file
from xdc_core.config import Config, build_config, load_config
from xdc_core.errors import ConfigError
from xdc_core.run import run

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DVC = BIN / "dvc"
TINY_VIDEOS = 16


pytestmark = pytest.mark.integration


def declared_params(stage: dict[str, Any]) -> list[str]:
    return [p for p in stage.get("params", []) if isinstance(p, str)]


def lookup(tree: dict[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        node = node[part]
    return node


# -- the files themselves ---------------------------------------------------------------------


def test_params_yaml_is_the_cpu_demo_preset_in_full():
    params = load_settings_file(REPO / "params.yaml")  # unknown keys would be errors
    assert params == load_config(REPO / "xdc_core" / "presets" / "cpu-demo.yaml")
    # every setting is written out, so each is a DVC parameter a stage can declare; and the
    # pipeline's own parameters: the dataset it decodes
    tree = yaml.safe_load((REPO / "params.yaml").read_text())
    assert tree.pop("dvc") == {"dataset": "data/sample"}
    assert tree == json.loads(params.model_dump_json())
    with pytest.raises(ConfigError, match="dvc"):  # the section is DVC's params.yaml's only
        load_config(REPO / "params.yaml")


def test_dvc_yaml_is_generated_from_the_declarations():
    """The committed dvc.yaml is what `xdc dvc-yaml` writes: no setting lives in it."""
    assert (REPO / "dvc.yaml").read_text() == dvc_yaml(), "dvc.yaml is stale: run `xdc dvc-yaml`"


def test_generated_stages_declare_their_params_and_code():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    stages = yaml.safe_load(dvc_yaml())["stages"]
    assert list(stages) == ["sample_data", "decode", "pretrain", "evaluate"]
    assert stages["evaluate"]["deps"][:2] == ["runs/dvc/decoded", "runs/dvc/pretrain"]
    for name, stage in stages.items():
        for p in declared_params(stage):
            lookup(params, p)  # a KeyError names a declared parameter params.yaml does not have
        code = [d for d in stage["deps"] if d.startswith("xdc_core/")]
        assert code and all((REPO / d).exists() for d in code), name  # each lists its code, and it exists
        if name != "sample_data":
            assert stage["cmd"].startswith(("xdc step ", "xdc decode ")) and "--config params.yaml" in stage["cmd"], name
    # the loop lists what each step of it reads, and the code of each step it runs by declaration
    assert {"cluster.iterations", "cluster.k", "train", "model", "seed"} <= set(declared_params(stages["pretrain"]))
    assert {"xdc_core/train.py", "xdc_core/kmeans.py", "xdc_core/embed.py", "xdc_core/gallery.py"} <= \
        set(stages["pretrain"]["deps"])
    assert "xdc_core/gallery.py" not in stages["evaluate"]["deps"]
    for name in ("sample_data", "decode"):
        assert not any(p.startswith("cluster") for p in declared_params(stages[name])), name
    assert Config.model_fields.keys() | {"dvc"} == params.keys()


def leaves(tree: Any) -> list[str]:
    if isinstance(tree, dict):
        return [f"{k}: {v}" if isinstance(v, str) else leaf for k, v in tree.items() for leaf in leaves(v)]
    if isinstance(tree, list):
        return [leaf for item in tree for leaf in leaves(item)]
    return [str(tree)]


def test_the_committed_lock_is_that_of_the_committed_code_and_params(tmp_path):
    """dvc.lock records the `dvc repro` of the sample pipeline. A checkout without the outputs
    (a fresh clone before `dvc pull`) may only miss them (deleted, not in cache): every dependency
    that is there, the code, params.yaml and the stages' commands, must be what the lock recorded."""
    assert (REPO / "dvc.lock").is_file(), "no dvc.lock: run `make dvc-lock` and commit it"
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    tracked = {"dvc.yaml", "dvc.lock", "params.yaml", ".dvc/config", ".dvcignore", ".gitignore",
               *(d for s in stages.values() for d in s.get("deps", []) if (REPO / d).is_file())}
    for name in tracked:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / name, tmp_path / name)
    git(tmp_path, "init", "-q")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(tmp_path / ".site-cache")}
    r = subprocess.run([str(DVC), "status", "--json"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    stale = [f"{stage}: {leaf}" for stage, changes in json.loads(r.stdout).items() for leaf in leaves(changes)
             if not leaf.endswith((": deleted", ": not in cache"))]
    assert not stale, "dvc.lock is stale (run `make dvc-lock` and commit it):\n" + "\n".join(stale)


# -- a tiny pipeline in its own repository ----------------------------------------------------


@dataclass
class Pipeline:
    path: Path
    env: dict[str, str]
    first_repro: str

    def run(self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, check: bool = True
            ) -> subprocess.CompletedProcess:
        exe = str(DVC) if args[0] == "dvc" else args[0]
        r = subprocess.run([exe, *args[1:]], cwd=cwd or self.path, env=env or self.env, capture_output=True,
                           text=True, timeout=900, check=False)
        if check:
            assert r.returncode == 0, f"{' '.join(args)} failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
        return r


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def tiny_pipeline(videos: int) -> dict[str, Any]:
    """dvc.yaml for ``videos`` sample videos of two classes."""
    pipeline = yaml.safe_load(dvc_yaml())
    for v in pipeline["vars"]:
        if "sample_videos" in v:
            v["sample_videos"] = videos
        if "sample_classes" in v:
            v["sample_classes"] = 2  # every class keeps test videos (one in four)
    return pipeline


STAGES = {"sample_data", "decode", "pretrain", "evaluate"}


def ran_and_skipped(output: str) -> tuple[set[str], set[str]]:
    return (set(re.findall(r"Running stage '([^']+)'", output)),
            set(re.findall(r"Stage '([^']+)' didn't change, skipping", output)))


def git(path: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=path, check=True, capture_output=True)


def sha256_tree(root: Path, parts: tuple[str, ...]) -> dict[str, str]:
    """sha256 of every file under ``root/part`` for each part, by path relative to ``root``."""
    out = {}
    for part in parts:
        for f in sorted((root / part).rglob("*")):
            if f.is_file():
                out[str(f.relative_to(root))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Pipeline:
    if not DVC.is_file():
        pytest.skip(f"no dvc at {DVC} (pip install -e '.[storage]')")
    path = tmp_path_factory.mktemp("dvc") / "repo"
    path.mkdir()
    for name in (".gitignore", ".dvcignore", ".dvc/config", ".dvc/.gitignore"):
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / name, path / name)
    (path / "dvc.yaml").write_text(yaml.safe_dump(tiny_pipeline(TINY_VIDEOS), sort_keys=False))
    shutil.copytree(REPO / "xdc_core", path / "xdc_core", ignore=shutil.ignore_patterns("__pycache__"))  # code deps
    params = merge(yaml.safe_load((REPO / "params.yaml").read_text()), TINY_SETTINGS)
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    load_settings_file(path / "params.yaml")
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # the stages call `xdc`
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(path.parent / "dvc-site-cache"),
        "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com",
    }
    git(path, "init", "-q")
    git(path, "add", "-A")
    git(path, "commit", "-qm", "the XDC pipeline, tiny settings")
    p = Pipeline(path, env, "")
    r = p.run("dvc", "repro")
    p.first_repro = r.stdout + r.stderr
    return p


def test_repro_runs_the_whole_loop_then_metrics_and_plots(pipeline):
    ran, skipped = ran_and_skipped(pipeline.first_repro)
    assert ran == STAGES and not skipped
    assert "up to date" in pipeline.run("dvc", "status").stdout

    shown = pipeline.run("dvc", "metrics", "show").stdout
    assert "probe.video.top1" in shown and "baseline_random.audio.top1" in shown
    data = json.loads(pipeline.run("dvc", "metrics", "show", "--json").stdout)
    (workspace,) = data.values()  # keyed "" (dvc 3.67) or "workspace"
    metrics = workspace["data"]["runs/dvc/metrics.json"]["data"]
    assert metrics["k"] == 3 and metrics["method"] == "xdc"
    for key in ("probe", "baseline_random"):
        for m in ("video", "audio"):
            r = metrics[key][m]
            assert r["test_videos"] == TINY_VIDEOS // 4
            assert round(r["top1"] * r["test_videos"], 6) == round(r["top1"] * r["test_videos"])  # a count of videos

    plots = json.loads(pipeline.run("dvc", "plots", "show", "--json").stdout)
    assert not plots.get("errors"), plots.get("errors")
    assert set(plots["data"]) == {"cluster quality", "video-audio cluster agreement", "cluster sizes",
                                  "pretraining loss", "linear probe top-1"}

    def rows(plot_id: str) -> list[dict[str, Any]]:
        return plots["data"][plot_id][0]["content"]["data"]["values"]

    assert {(r["filename::field"], r["iteration"]) for r in rows("cluster quality")} >= {
        ("clusters_video.json::purity", 1), ("clusters_audio.json::nmi_previous", 2)}
    agreement = rows("video-audio cluster agreement")
    assert {r["iteration"] for r in agreement} == set(range(1, TINY_SETTINGS["cluster"]["iterations"] + 1))
    loss = [r for r in rows("pretraining loss") if r["filename::field"] == "loss_video.json::train_loss"]
    epochs = TINY_SETTINGS["train"]["total_epochs"] * TINY_SETTINGS["cluster"]["iterations"]
    assert [r["epoch"] for r in loss] == list(range(1, epochs + 1))
    assert {r["encoder"] for r in rows("linear probe top-1")} == {
        f"{m}: {what}" for m in ("video", "audio") for what in ("XDC linear probe", "random init linear probe")}
    pipeline.run("dvc", "plots", "show", "-o", str(pipeline.path.parent / "plots-html"))
    assert (pipeline.path.parent / "plots-html" / "index.html").is_file()
    assert (pipeline.path / "runs/dvc/plots/curves.png").is_file()
    for it in range(1, TINY_SETTINGS["cluster"]["iterations"] + 1):  # the kmeans stages' galleries
        assert f"XDC clusters, iteration {it}" in \
            (pipeline.path / f"runs/dvc/pretrain/iter_{it:02d}/gallery.html").read_text()


def test_changing_k_reruns_kmeans_and_what_follows_only(pipeline):
    params_file = pipeline.path / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params["cluster"]["k"] = 2
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))

    status = json.loads(pipeline.run("dvc", "status", "--json").stdout)
    assert set(status) == {"pretrain", "evaluate"}, status
    assert status["pretrain"] == [{"changed deps": {"params.yaml": {"cluster.k": "modified"}}}]

    r = pipeline.run("dvc", "repro")
    ran, skipped = ran_and_skipped(r.stdout + r.stderr)
    assert ran == {"pretrain", "evaluate"} and skipped == {"sample_data", "decode"}
    clusters = json.loads((pipeline.path / "runs/dvc/pretrain/iter_01/kmeans.json").read_text())["clusters"]
    assert {c["k"] for name, c in clusters.items() if name != "cross_modal"} == {2}
    assert json.loads((pipeline.path / "runs/dvc/metrics.json").read_text())["k"] == 2


def test_repro_computes_what_xdc_run_computes(pipeline, tmp_path):
    """Same data, settings and seed: `dvc repro` (one process per step) and `xdc run` (one process)
    give identical encoders and metrics."""
    cfg = load_settings_file(pipeline.path / "params.yaml")
    run(pipeline.path / "data/sample/manifest.csv", tmp_path / "run", cfg, progress=False, log=lambda _: None)
    for m in ("video", "audio"):
        ours = torch.load(pipeline.path / f"runs/dvc/pretrain/{m}_encoder.pt", weights_only=True)
        theirs = torch.load(tmp_path / "run" / f"{m}_encoder.pt", weights_only=True)
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs), m
    assert json.loads((pipeline.path / "runs/dvc/metrics.json").read_text()) == \
        json.loads((tmp_path / "run" / "metrics.json").read_text())


def test_editing_the_training_code_reruns_the_training_stages(pipeline):
    train_py = pipeline.path / "xdc_core" / "train.py"
    train_py.write_text(train_py.read_text() + "\n# an edit\n")
    status = json.loads(pipeline.run("dvc", "status", "--json").stdout)
    assert set(status) == {"pretrain", "evaluate"}, status  # evaluate lists train.py too: its probe trains
    r = pipeline.run("dvc", "repro")
    ran, skipped = ran_and_skipped(r.stdout + r.stderr)
    assert ran == {"pretrain", "evaluate"} and skipped == {"sample_data", "decode"}


def test_editing_a_module_a_stage_imports_reruns_that_stage(pipeline):
    """media/logmel.py is imported by the dataset code, not named by any stage: the derived code
    dependencies make every stage that reads clips re-run, and only those (decoding writes them)."""
    logmel = pipeline.path / "xdc_core" / "media" / "logmel.py"
    original = logmel.read_text()
    logmel.write_text(original + "\n# an edit\n")
    try:
        dry = pipeline.run("dvc", "repro", "--dry")
        ran, _ = ran_and_skipped(dry.stdout + dry.stderr)
        assert ran == {"pretrain", "evaluate"}, ran
    finally:
        logmel.write_text(original)
    assert "up to date" in pipeline.run("dvc", "status").stdout


def test_the_dataset_is_a_parameter(pipeline):
    """params.yaml's dvc.dataset names the folder the decode stage decodes: another dataset
    re-runs decoding and all that follows, and nothing before it."""
    other = pipeline.path / "data" / "other"
    shutil.copytree(pipeline.path / "data" / "sample", other)
    (other / "manifest.csv").write_text("\n".join((other / "manifest.csv").read_text().splitlines()[:-1]) + "\n")
    params_file = pipeline.path / "params.yaml"
    original = params_file.read_text()
    params = yaml.safe_load(original)
    params["dvc"]["dataset"] = "data/other"
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        dry = pipeline.run("dvc", "repro", "--dry")
        ran, _ = ran_and_skipped(dry.stdout + dry.stderr)
        assert "decode" in ran and "sample_data" not in ran, ran
        assert "--manifest data/other/manifest.csv" in dry.stdout
    finally:
        params_file.write_text(original)
        shutil.rmtree(other)
    assert "up to date" in pipeline.run("dvc", "status").stdout


def test_push_to_s3_then_pull_into_a_fresh_clone(pipeline, s3_server: S3Server, bucket: str):
    """The committed remote (.dvc/config), pointed at the server of the project's S3 settings by
    `xdc dvc-remote` (keys in .dvc/config.local, never committed): push, then a fresh clone pulls."""
    env = {k: v for k, v in pipeline.env.items() if not k.startswith(("AWS_", "XDC_S3_", "MINIO_"))}
    env |= s3_server.env()  # XDC_S3_*: the settings every xdc command reads; DVC gets them from config.local
    xdc = str(BIN / "xdc")
    pipeline.run(xdc, "dvc-remote", "--url", f"s3://{bucket}/dvc", env=env)
    assert "remote = minio" in (pipeline.path / ".dvc" / "config").read_text()
    assert s3_server.secret_key in (pipeline.path / ".dvc" / "config.local").read_text()
    git(pipeline.path, "add", "-A")  # dvc.lock, .dvc/config (no credentials: config.local is ignored)
    git(pipeline.path, "commit", "-qm", "pipeline results")
    tracked = subprocess.run(["git", "ls-files"], cwd=pipeline.path, capture_output=True, text=True).stdout
    assert "dvc.lock" in tracked and ".dvc/config.local" not in tracked

    pushed = pipeline.run("dvc", "push", env=env)
    assert re.search(r"\d+ files? pushed", pushed.stdout), pushed.stdout
    assert any(s3_server.client().list_objects(bucket, prefix="dvc/", recursive=True))

    clone = pipeline.path.parent / "clone"
    subprocess.run(["git", "clone", "-q", str(pipeline.path), str(clone)], check=True, capture_output=True)
    assert not (clone / "data").exists() and not (clone / "runs").exists()
    pipeline.run(xdc, "dvc-remote", "--url", f"s3://{bucket}/dvc", cwd=clone, env=env)  # a teammate's keys
    pipeline.run("dvc", "pull", cwd=clone, env=env)

    parts = ("data/sample", "runs/dvc")
    original = sha256_tree(pipeline.path, parts)
    pulled = sha256_tree(clone, parts)
    assert len(original) > TINY_VIDEOS and pulled == original
    assert "runs/dvc/metrics.json" in pulled  # metrics and plot data travel too
    # Nothing needs recomputing in the clone.
    assert "up to date" in pipeline.run("dvc", "status", cwd=clone, env=env).stdout


def test_an_experiment_sets_the_iteration_count(pipeline):
    """`dvc exp run -S cluster.iterations=N` runs N iterations with the committed dvc.yaml; the
    stages before the loop are not re-run, and the workspace returns to the committed results."""
    n = TINY_SETTINGS["cluster"]["iterations"] + 1
    r = pipeline.run("dvc", "exp", "run", "-S", f"cluster.iterations={n}")
    ran, skipped = ran_and_skipped(r.stdout + r.stderr)
    assert ran == {"pretrain", "evaluate"} and skipped == {"sample_data", "decode"}, r.stdout
    loop = pipeline.path / "runs/dvc/pretrain"
    assert sorted(p.name for p in loop.glob("iter_*")) == [f"iter_{i:02d}" for i in range(n + 1)]
    stats = json.loads((pipeline.path / "runs/dvc/plots/clusters_cross_modal.json").read_text())
    assert [row["iteration"] for row in stats] == list(range(1, n + 1))
    shown = json.loads(pipeline.run("dvc", "exp", "show", "--json").stdout)
    assert "cluster" in json.dumps(shown) and f'"iterations": {n}' in json.dumps(shown)

    pipeline.run("git", "checkout", "--", "params.yaml", "dvc.lock")
    pipeline.run("dvc", "checkout", "--force")
    assert "up to date" in pipeline.run("dvc", "status").stdout
    assert not (loop / f"iter_{n:02d}").exists()
