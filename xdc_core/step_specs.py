"""Each step of the loop, declared once: its function, its named inputs and outputs (where they live
in the run layout), the settings it reads, and (derived from its imports) the code it depends on.

The callers are generated from these declarations: ``xdc run``'s calls (:func:`call`, with the
paths of :meth:`StepSpec.paths`), the ``xdc step`` sub-commands (one flag per port) and the
stages of dvc.yaml (ports as ``deps``/``outs``, settings as ``params``, code as ``deps``). The
Kubeflow components are typed by hand, as kfp reads their annotations; a test holds their
parameters to the ports declared here. Adding a step: its function (steps.py), its declaration
(here) and its component.

A port's name is the step function's keyword parameter, the ``xdc step`` flag (``--video-features``)
and, for a component, the parameter it maps to (:attr:`Port.component`).
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import MODALITIES, Config
from .layout import CROSS_MODAL, RunLayout


@dataclass(frozen=True)
class Slot:
    """Which instance of a step: its iteration, the one before it (``prev``), the last one of the
    run, and its modality."""

    iteration: int = 0
    prev: int = 0
    last: int = 0
    modality: str = ""

    @classmethod
    def of(cls, iteration: int, last: int, modality: str = "") -> Slot:
        return cls(iteration, iteration - 1, last, modality)


@dataclass(frozen=True)
class Port:
    """A named input or output of a step and where it lives in a run."""

    name: str  # the step function's parameter; the `xdc step` flag
    where: Callable[[RunLayout, Slot], Path]
    help: str
    folder: bool = False
    optional: bool = False  # the step runs without it (the flag may be left out)
    direct: bool = False  # passed as given (a folder or an s3:// prefix the step writes to as it goes)
    tracked: bool = True  # a DVC dependency/output (False: read for a statistic only, or resumable state)
    component: str | None = None  # the component's parameter, when it is named otherwise


@dataclass(frozen=True)
class StepSpec:
    """One step: ``function(**ports, cfg=…)``, and ``modality``, ``iteration``, ``progress``, ``log`` where it takes them."""

    name: str
    # "module:function" (default module xdc_core.steps); by name: declaring imports nothing heavy (`xdc --help`)
    function_name: str
    help: str
    inputs: tuple[Port, ...] = ()
    outputs: tuple[Port, ...] = ()
    params: tuple[str, ...] = ()  # the settings it reads, as dotted keys of params.yaml
    per_modality: bool = False
    per_iteration: bool = False
    data_parallel: bool = False  # may run in several processes (--nproc-per-node)
    # what the runner records of what the step measured: (result, cfg, slot, seconds, paths)
    record: Callable[[Any, Config, Slot, float, dict[str, Any]], None] | None = None
    # one line saying what it computed, for the command line: (result, cfg, slot)
    report: Callable[[Any, Config, Slot], str] | None = None
    component: str | None = None  # its Kubeflow component (components/<name>.py), when it has one
    # a step made of declared steps, which it runs in turn: their settings and code are its own too
    runs: Callable[[], Sequence[StepSpec]] | None = None

    @property
    def target(self) -> str:
        return self.function_name if ":" in self.function_name else f"{__package__}.steps:{self.function_name}"

    @property
    def function(self) -> Callable[..., Any]:
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)

    @property
    def ports(self) -> tuple[Port, ...]:
        return (*self.inputs, *self.outputs)

    def paths(self, layout: RunLayout, slot: Slot) -> dict[str, Path]:
        return {p.name: p.where(layout, slot) for p in self.ports}

    def settings(self) -> list[str]:
        """The settings it reads (dotted keys of params.yaml), with those of the steps it runs; a key
        under another one listed (``train.split`` under ``train``) is left out."""
        keys = [*self.params, *(k for s in (self.runs() if self.runs else ()) for k in s.settings())]
        return [k for i, k in enumerate(keys) if k not in keys[:i]
                and not any(k.startswith(other + ".") for other in keys)]

    def code(self) -> list[str]:
        """The files (relative to the repository) its outputs depend on: the modules the step
        function uses, and every module of the package they import, followed transitively (and
        those of the steps it runs: it calls them by their declarations, not by name)."""
        return code_of(self.target, *(s.target for s in (self.runs() if self.runs else ())))


def call(spec: StepSpec, cfg: Config, paths: dict[str, Any], slot: Slot = Slot(), progress: bool = False,
         processes: int = 1, log: Callable[[str], None] = print) -> Any:
    """Run the step with the given port paths; the runner's edge: what it measured is recorded
    (Prometheus) here, never inside the step. ``processes`` > 1: data-parallel on this machine."""
    takes = inspect.signature(spec.function).parameters
    given = {"progress": progress, "modality": slot.modality, "iteration": slot.iteration, "log": log}
    kwargs: dict[str, Any] = {**paths, "cfg": cfg, **{k: v for k, v in given.items() if k in takes}}
    started = time.perf_counter()
    if spec.data_parallel:
        from . import distributed

        # torchrun's engine names the processes after the entry point, which a bare partial lacks
        entry = functools.update_wrapper(functools.partial(spec.function, **kwargs), spec.function)
        result = distributed.launch(entry, (), processes)
    else:
        result = spec.function(**kwargs)
    if spec.record is not None:
        spec.record(result, cfg, slot, time.perf_counter() - started, paths)
    return result


# -- what the runner records --------------------------------------------------------------------


def _videos(path: Path, key: str | None = None) -> int:
    import numpy as np

    with np.load(path) as z:
        return len(z[key or z.files[0]])


def _report_kmeans(result: Any, cfg: Config, slot: Slot) -> str:
    from .report import format_clusters

    return " | ".join(format_clusters(name, c) for name, c in result.items())


def _report_train(result: Any, cfg: Config, slot: Slot) -> str:
    from .report import format_train

    return format_train(slot.modality, result)


def _report_evaluate(result: Any, cfg: Config, slot: Slot) -> str:
    from .report import format_results
    from .steps import metrics_summary

    return format_results(metrics_summary(cfg, result))


def _record_embed(result: Any, cfg: Config, slot: Slot, seconds: float, paths: dict[str, Any]) -> None:
    clips = _videos(paths["out"], "index") * cfg.embed.clips
    from . import metrics

    metrics.EMBED_RATE.labels(modality=slot.modality).set(clips / seconds if seconds > 0 else 0.0)


def _record_kmeans(result: Any, cfg: Config, slot: Slot, seconds: float, paths: dict[str, Any]) -> None:
    from . import metrics

    metrics.record_clusters(result, cfg.cluster.method, slot.iteration, seconds, _videos(paths["out"]),
                            CROSS_MODAL)


def _record_evaluate(result: Any, cfg: Config, slot: Slot, seconds: float, paths: dict[str, Any]) -> None:
    from . import metrics

    metrics.record_accuracies(result)


# -- the declarations ------------------------------------------------------------------------------

DATA = Port("data", lambda L, s: L.decoded, "decoded dataset folder", folder=True, component="decoded")


def _encoder_before(modality: str | None = None) -> Port:
    return Port("encoder", lambda L, s: L.encoder(s.prev, modality or s.modality),
                "encoder checkpoint to start from (default: the random init of the seed)", optional=True,
                component="previous_encoder")


INIT = StepSpec(
    "init", "init_step", "random-init encoders (iteration 0) → DIR/{video,audio}_encoder.pt",
    outputs=(Port("out", lambda L, s: L.iteration(0), "output folder", folder=True),),
    params=("seed", "model"),
)

EMBED = StepSpec(
    "embed", "embed_step", "per-video features of the pretraining videos → .npz",
    inputs=(DATA, Port("encoder", lambda L, s: L.encoder(s.prev, s.modality),
                       "encoder checkpoint (default: the random init of the seed)", optional=True)),
    outputs=(Port("out", lambda L, s: L.features(s.iteration, s.modality), "features file (.npz)",
                  component="features"),),
    params=("data", "model", "embed", "train.split", "device"),
    per_modality=True, per_iteration=True, data_parallel=True, record=_record_embed, component="embed",
)

KMEANS = StepSpec(
    "kmeans", "kmeans_step", "cluster the features as cluster.method says → pseudo-labels (.npz)",
    inputs=(
        *(Port(f"{m}_features", functools.partial(lambda m, L, s: L.features(s.iteration, m), m),
               f"{m} features of this iteration (.npz)") for m in MODALITIES),
        # the previous clusters only feed a statistic (NMI; iteration 1 has none): a change there
        # changes this iteration's features anyway
        Port("previous", lambda L, s: L.clusters(s.prev), "the previous iteration's clusters, for the NMI "
             "statistic (ignored at iteration 1)", optional=True, tracked=False, component="previous_clusters"),
        Port("data", DATA.where, "decoded dataset folder: the videos of the gallery's thumbnails", folder=True,
             optional=True, component="decoded"),
    ),
    outputs=(
        Port("out", lambda L, s: L.clusters(s.iteration), "clusters file (.npz)", component="clusters"),
        Port("stats", lambda L, s: L.kmeans_stats(s.iteration), "cluster statistics (kmeans.json)", optional=True),
        Port("gallery", lambda L, s: L.gallery(s.iteration), "also write the cluster gallery (one self-contained "
             ".html page); needs --data", optional=True),
    ),
    params=("cluster.method", "cluster.k", "cluster.pca_dim", "cluster.niter", "seed", "device"),
    per_iteration=True, record=_record_kmeans, report=_report_kmeans, component="kmeans",
)

TRAIN = StepSpec(
    "train", "train_step", "train one encoder on the pseudo-labels its method assigns it",
    inputs=(DATA, Port("clusters", lambda L, s: L.clusters(s.iteration), "clusters file of this iteration (.npz)"),
            _encoder_before()),
    outputs=(
        Port("out", lambda L, s: L.encoder(s.iteration, s.modality), "trained encoder checkpoint (.pt)",
             component="encoder"),
        Port("stats", lambda L, s: L.train_stats(s.iteration, s.modality),
             "training history (train_<modality>.json)", optional=True),
        Port("checkpoints", lambda L, s: L.checkpoints(s.iteration, s.modality),
             "folder or object-store prefix (s3://…) of the resumable checkpoints, written every epoch and every "
             "train.checkpoint_minutes: a rerun continues from the last one", folder=True, optional=True,
             direct=True, tracked=False),
    ),
    params=("data", "model", "train", "cluster.method", "seed", "device"),
    per_modality=True, per_iteration=True, data_parallel=True, report=_report_train, component="train_encoder",
)

EVALUATE = StepSpec(
    "evaluate", "evaluate_run_step", "linear probe of the encoders and of the random init → metrics.json",
    inputs=(
        Port("data", DATA.where, "decoded dataset folder (labelled train/test splits)", folder=True,
             component="decoded"),
        # the run's final encoders: the last iteration's, or the random init of one that learned nothing
        *(Port(f"{m}_encoder", functools.partial(lambda m, L, s: L.final_encoder(m), m), f"{m} encoder (.pt)")
          for m in MODALITIES),
        Port("run", lambda L, s: L.root, "run folder whose iter_01..iter_NN (N = cluster.iterations) hold the "
             "statistics", folder=True, optional=True, component="clusters"),
    ),
    outputs=(
        Port("out", lambda L, s: L.metrics, "metrics file (.json)", component="metrics"),
        Port("plots", lambda L, s: L.plots, "folder for plot data (clusters_*.json, loss_*.json, probe.json) and "
             "curves.png; needs --run", folder=True, optional=True),
    ),
    params=("data", "model", "evaluate", "embed.batch_size", "cluster.method", "cluster.k", "cluster.iterations",
            "seed", "device"),
    record=_record_evaluate, report=_report_evaluate, component="evaluate",
)



def iteration_steps() -> list[StepSpec]:
    """The steps of one iteration, in their order."""
    return [s for s in STEPS if s.per_iteration]


# The loop between decoding and evaluation as one step: DVC's stage (DVC cannot make stages from
# the number cluster.iterations, so `dvc exp run -S cluster.iterations=N` needs the loop in one).
PRETRAIN = StepSpec(
    "pretrain", "xdc_core.run:pretrain_step",
    "the random init, then cluster.iterations x [embed, k-means, train] → DIR (iter_00..iter_NN and the final "
    "encoders, as xdc run writes them)",
    inputs=(DATA,),
    outputs=(Port("out", lambda L, s: L.root, "output folder (the run layout's iter_NN and "
                  "{video,audio}_encoder.pt)", folder=True),),
    params=("cluster.iterations",),
    runs=lambda: [INIT, *iteration_steps()],
)

# In the order data flows; the per-iteration ones in the order of an iteration.
STEPS: tuple[StepSpec, ...] = (INIT, EMBED, KMEANS, TRAIN, PRETRAIN, EVALUATE)


# -- code dependencies, derived from imports -------------------------------------------------------

PACKAGE = Path(__file__).resolve().parent  # xdc_core/
REPO = PACKAGE.parent


def _module_file(module: str) -> Path | None:
    """The file of a module of this package (``xdc_core.media.logmel`` → xdc_core/media/logmel.py)."""
    parts = module.split(".")
    if parts[0] != PACKAGE.name:
        return None
    base = PACKAGE.joinpath(*parts[1:])
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.is_file():
            return f
    return None


def _module_name(f: Path) -> str:
    rel = f.relative_to(REPO).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imported(node: ast.AST, module: str, is_package: bool) -> dict[str, str]:
    """``{local name: module or module.attribute}`` of the imports in ``node`` (not under TYPE_CHECKING)."""
    package = module if is_package else module.rpartition(".")[0]
    names: dict[str, str] = {}
    for n in ast.walk(node):
        if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test):
            continue
        if isinstance(n, ast.Import):
            names |= {(a.asname or a.name).split(".")[0]: a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom):
            base = n.module or ""
            if n.level:
                up = package.split(".")[: len(package.split(".")) - n.level + 1]
                base = ".".join([*up, *filter(None, [base])])
            names |= {a.asname or a.name: f"{base}.{a.name}" for a in n.names}
    return names


def _resolve(target: str) -> Path | None:
    """The file of ``module`` or of ``module.attribute``."""
    return _module_file(target) or _module_file(target.rpartition(".")[0])


@functools.cache
def module_deps(f: Path) -> frozenset[Path]:
    """The package's files that the module ``f`` imports anywhere (functions included), transitively,
    with ``f`` itself; a package's ``__init__`` comes with each of its modules (Python runs it)."""
    seen: set[Path] = set()
    todo = [f]
    while todo:
        cur = todo.pop()
        if cur in seen:
            continue
        seen.add(cur)
        name = _module_name(cur)
        for target in _imported(ast.parse(cur.read_text()), name, cur.name == "__init__.py").values():
            dep = _resolve(target)
            if dep is not None:
                todo.append(dep)
        parent = cur.parent / "__init__.py"
        if cur.name != "__init__.py" and parent.is_file():
            todo.append(parent)
    return frozenset(seen)


def function_deps(target: str) -> set[Path]:
    """The package's files that the function ``target`` (``"xdc_core.steps:embed_step"``) uses: its
    module, the modules of the names it refers to (and of the functions of its own module that it
    calls, followed), each with :func:`module_deps`. Per function, not per module: steps.py imports
    the code of every step, and editing the training code must not re-run embedding."""
    module, _, fn = target.partition(":")
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ValueError(f"{target}: no module {module}")
    f = Path(spec.origin).resolve()
    tree = ast.parse(f.read_text())
    top = _imported(ast.Module(body=[n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))],
                               type_ignores=[]), module, f.name == "__init__.py")
    local = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    if fn not in local:
        raise ValueError(f"{target}: no function {fn} in {f}")
    files, done, todo = {f}, set(), [fn]
    while todo:
        name = todo.pop()
        if name in done or name not in local:
            continue
        done.add(name)
        node = local[name]
        inner = _imported(node, module, False)
        for n in ast.walk(node):
            if isinstance(n, ast.Name):
                if n.id in local:
                    todo.append(n.id)
                if (t := top.get(n.id)) is not None and (dep := _resolve(t)) is not None:
                    files.add(dep)
        files |= {d for t in inner.values() if (d := _resolve(t)) is not None}
    out: set[Path] = set()
    for dep in files:
        out |= module_deps(dep) if dep != f else {f}
    return {p for p in out if p.is_relative_to(REPO)}


def code_of(*targets: str) -> list[str]:
    """The repository-relative files the functions depend on (:func:`function_deps`), sorted."""
    found: set[Path] = set()
    for target in targets:
        found |= function_deps(target)
    return sorted(str(p.relative_to(REPO)) for p in found)
