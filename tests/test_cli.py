"""The `xdc` console script, through a real subprocess."""

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path


def xdc(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("xdc") or str(Path(sys.executable).parent / "xdc")
    return subprocess.run([exe, *args], capture_output=True, text=True)


def test_help_lists_every_command():
    out = xdc("--help")
    assert out.returncode == 0
    for command in ("run", "sample-data", "decode", "step", "dvc-yaml", "dvc-remote", "dataset", "checkpoint", "regress", "pipeline",
                    "probe",
                    "config"):
        assert f"    {command}" in out.stdout, command


def test_library_and_help_import_no_kubeflow_nor_dvc():
    """xdc_core never imports kfp or dvc; the CLI imports kfp only for `xdc pipeline` commands."""
    code = ("import sys, contextlib, io\n"
            "import xdc_core, xdc_core.run, xdc_core.steps, xdc_cli.main\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "    xdc_cli.main.main(['--help'])\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "    xdc_cli.main.main(['pipeline', 'compile', '--help'])\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'kfp', 'dvc', 'xdc_kfp.runner'}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


# Source folder → the package it installs as (pyproject.toml: components/ and pipelines/ live at the
# top level, where KFP users look, and install under xdc_kfp).
SOURCE_PACKAGES = {"xdc_core": "xdc_core", "xdc_cli": "xdc_cli", "xdc_kfp": "xdc_kfp",
                   "components": "xdc_kfp.components", "pipelines": "xdc_kfp.pipelines"}


def _import_graph() -> dict[str, set[str]]:
    """Module → the project modules it imports (anywhere in it, functions included; not under
    ``if TYPE_CHECKING``), read from the source."""
    root = Path(__file__).resolve().parents[1]
    files = {}
    for folder, package in SOURCE_PACKAGES.items():
        for f in (root / folder).rglob("*.py"):
            name = ".".join((package, *f.relative_to(root / folder).with_suffix("").parts))
            files[name.removesuffix(".__init__")] = f
    graph = {}
    for module, f in files.items():
        tree = ast.parse(f.read_text())
        typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
        package = module if f.name == "__init__.py" else module.rpartition(".")[0]
        found = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], *filter(None, [base])])
                found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names}
        graph[module] = {m for m in found if m in files and m != module}
    return graph


def test_no_import_circle_and_the_layers_point_one_way():
    """No module imports itself back through others; xdc_core imports neither CLI nor Kubeflow
    code (nor kfp, dvc); the Kubeflow side does not import the CLI."""
    graph = _import_graph()
    assert len(graph) > 60 and "xdc_kfp.pipelines.xdc_pretrain" in graph  # components/, pipelines/ included

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(m == goal or (m not in seen and not seen.add(m) and reaches(m, goal, seen)) for m in graph[start])

    circles = sorted(m for m in graph if reaches(m, m, set()))
    assert not circles, f"modules on an import circle: {circles}"
    for module, imported in graph.items():
        if module.startswith("xdc_core"):
            assert not {m for m in imported if m.startswith(("xdc_cli", "xdc_kfp"))}, module
        if module.startswith("xdc_kfp"):
            assert not {m for m in imported if m.startswith("xdc_cli")}, module
    root = Path(__file__).resolve().parents[1]
    for f in (root / "xdc_core").rglob("*.py"):  # third-party: kfp and dvc stay out of the library
        names = {a.name for n in ast.walk(ast.parse(f.read_text())) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in ast.walk(ast.parse(f.read_text())) if isinstance(n, ast.ImportFrom)}
        assert not {n.split(".")[0] for n in names} & {"kfp", "dvc"}, f


def test_config_takes_a_preset_name_or_a_file(tmp_path):
    r = xdc("config", "--config", "cpu-demo", "--set", "cluster.k=7")
    assert r.returncode == 0 and "k: 7" in r.stdout and "video_width: 8" in r.stdout
    r = xdc("config", "--config", "no-such-preset")
    assert r.returncode == 2 and "neither a file nor a preset" in r.stderr


def test_config_may_be_an_object_in_the_store(bucket):
    # a PyTorchJob's pods get their settings this way (xdc_kfp/training_job.py): they share no disk
    from xdc_core import store

    store.write_bytes(f"s3://{bucket}/run/settings.yaml", b"cluster:\n  k: 11\n")
    r = xdc("config", "--config", f"s3://{bucket}/run/settings.yaml", "--set", "seed=3")
    assert r.returncode == 0 and "k: 11" in r.stdout and "seed: 3" in r.stdout, r.stderr
    r = xdc("config", "--config", f"s3://{bucket}/run/missing.yaml")
    assert r.returncode == 2 and "missing.yaml" in r.stderr


def test_sample_data_then_decode(tmp_path):
    r = xdc("sample-data", "--out", str(tmp_path / "s"), "--videos", "4", "--classes", "2")
    assert r.returncode == 0, r.stderr
    r = xdc("decode", "--manifest", str(tmp_path / "s" / "manifest.csv"), "--out", str(tmp_path / "d"), "--quiet",
            "--config", "cpu-demo")
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert (summary["accepted"], summary["quarantined"]) == (4, 0)
    assert summary["labels"] == ["c0", "c1"]


def test_probe_prints_streams_and_fails_on_bad_file(tmp_path):
    (tmp_path / "x.mp4").write_text("nope")
    r = xdc("probe", str(tmp_path / "x.mp4"))
    assert r.returncode == 1 and "x.mp4: cannot open as a media container" in r.stderr


# -- the steps, declared once (xdc_core/step_specs.py) ------------------------------------------


def test_each_step_depends_on_the_code_it_imports():
    """The code a stage lists is derived from the imports of its step function: media/ (which the
    dataset imports) is there, and the training code is not a dependency of embedding."""
    from xdc_core.step_specs import EMBED, EVALUATE, KMEANS, STEPS, TRAIN, module_deps

    for spec in (EMBED, KMEANS, TRAIN, EVALUATE):  # each reads the decoded clips through dataset.py
        assert {"xdc_core/dataset.py", "xdc_core/media/logmel.py", "xdc_core/steps.py"} <= set(spec.code()), spec.name
    assert "xdc_core/train.py" in TRAIN.code() and "xdc_core/train.py" not in EMBED.code()
    assert "xdc_core/gallery.py" in KMEANS.code() and "xdc_core/gallery.py" not in TRAIN.code()
    # the closure follows imports inside functions too, and a package's __init__ comes with its modules
    root = Path(__file__).resolve().parents[1]
    dataset = {str(p.relative_to(root)) for p in module_deps(root / "xdc_core" / "dataset.py")}
    assert {"xdc_core/media/__init__.py", "xdc_core/media/logmel.py", "xdc_core/clip_cache.py"} <= dataset
    assert all(s.code() for s in STEPS)


def test_the_components_hold_to_the_declarations():
    """Each declared step's component takes each required port (by its component name), a
    modality and an iteration where the step has them; each artifact it takes is a declared port."""
    import inspect
    import typing

    from xdc_kfp import components
    from xdc_core.step_specs import STEPS

    for spec in STEPS:
        if spec.component is None:
            continue
        params = inspect.signature(getattr(components, spec.component)).parameters
        names = {p.component or p.name: p for p in spec.ports}
        for name, port in names.items():
            assert port.optional or name in params, (spec.name, name)
        assert ("modality" in params) == spec.per_modality and ("iteration" in params) == spec.per_iteration, spec.name
        for name, param in params.items():
            if "Input" in str(param.annotation) or typing.get_origin(param.annotation) is typing.Union:
                assert name in names, f"components/{spec.component}.py takes {name}, which {spec.name} does not declare"


def count_step(data: Path, cfg, iteration: int, out: Path) -> dict:
    """A toy step: how many pretraining videos → ``out`` (JSON)."""
    from xdc_core.steps import pretrain_videos
    from xdc_core.store import write_json

    result = {"videos": pretrain_videos(data, cfg), "iteration": iteration}
    write_json(out, result)
    return result


def test_a_new_step_is_picked_up_from_its_declaration(monkeypatch, tiny_decoded, tmp_path):
    """One declaration: `xdc step count`, its settings and code in DVC's loop stage, and a file in
    every iteration of `xdc run`, at the place the run layout gives it."""
    import dataclasses

    import yaml

    from conftest import TINY_SETTINGS
    from xdc_cli.dvc_yaml import dvc_yaml
    from xdc_cli.main import main
    from xdc_core import step_specs
    from xdc_core.config import build_config
    from xdc_core.run import run

    toy = step_specs.StepSpec(
        "count", f"{__name__}:count_step", "count the pretraining videos",
        inputs=(step_specs.DATA,),
        outputs=(step_specs.Port("out", lambda L, s: L.iteration(s.iteration) / "count.json", "count (.json)"),),
        params=("train.split",), per_iteration=True)
    monkeypatch.setattr(step_specs, "STEPS", (*step_specs.STEPS, toy))
    settings = tmp_path / "tiny.yaml"
    settings.write_text(yaml.safe_dump({**TINY_SETTINGS, "cluster": {"k": 3, "iterations": 1}}))

    assert main(["step", "count", "--data", str(tiny_decoded), "--iteration", "1", "--out", str(tmp_path / "c.json"),
                 "--config", str(settings)]) == 0
    assert json.loads((tmp_path / "c.json").read_text()) == {"videos": 12, "iteration": 1}

    # DVC runs it inside the loop's stage: its settings and its code are that stage's dependencies
    stage = yaml.safe_load(dvc_yaml())["stages"]["pretrain"]
    assert {"runs/dvc/decoded", "tests/test_cli.py", "xdc_core/steps.py", "xdc_core/store.py"} <= set(stage["deps"])
    reading = dataclasses.replace(toy, params=("evaluate.workers",))  # a setting no other loop step reads
    monkeypatch.setattr(step_specs, "STEPS", (*step_specs.STEPS[:-1], reading))
    assert "evaluate.workers" in yaml.safe_load(dvc_yaml())["stages"]["pretrain"]["params"]
    monkeypatch.setattr(step_specs, "STEPS", (*step_specs.STEPS[:-1], toy))

    run(tiny_decoded, tmp_path / "run", build_config(yaml.safe_load(settings.read_text())), evaluate=False,
        progress=False, log=lambda _: None)
    assert json.loads((tmp_path / "run" / "iter_01" / "count.json").read_text()) == {"videos": 12, "iteration": 1}
